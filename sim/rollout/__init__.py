"""Canary rollouts in simulation: the course's Argo Rollouts manifests against a simulated
fleet with injected faults, analysed from Prometheus-style series.

Entry points:

- :func:`simulate` runs a rollout to its end and returns a :class:`RolloutResult`;
- :func:`create_simulation` builds a stepwise :class:`RolloutSimulation` (advance, promote,
  abort, undo, status) for an interactive cluster;
- :func:`run_trials` runs many seeds and reports detection and false-alarm rates.
"""

from sim.rollout.api import RolloutResult, create_simulation, simulate
from sim.rollout.controller import RolloutSimulation
from sim.rollout.faults import Fault, FaultSpecError, parse_fault
from sim.rollout.trials import TrialsReport, run_trials

__all__ = [
    "Fault",
    "FaultSpecError",
    "RolloutResult",
    "RolloutSimulation",
    "TrialsReport",
    "create_simulation",
    "parse_fault",
    "run_trials",
    "simulate",
]
