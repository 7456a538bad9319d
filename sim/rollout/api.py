"""simulate() and create_simulation(): the library entry points (no printing, no files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sim.rollout.controller import PromQLProvider, RolloutSimulation
from sim.rollout.faults import Fault, parse_fault
from sim.rollout.fleet import Fleet, FleetConfig
from sim.rollout.loader import Manifests, load_manifests
from sim.rollout.surface import Surface, TrafficMix

DEFAULT_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@dataclass
class RolloutResult:
    """The outcome of one simulated rollout (DESIGN.md's JSON contract, plus detail)."""

    status: str  # Healthy, Degraded, Paused (or Progressing if max time ran out)
    promoted: bool
    aborted_at_s: float | None
    abort_reason: dict | None
    final_weight: int
    timeline: list[dict]
    requests: dict
    seed: int
    faults: list[str]
    judge: str
    duration_s: float
    measurements: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    simulation: Any = field(default=None, repr=False, compare=False)  # the RolloutSimulation (store, fleet)

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "promoted": self.promoted,
            "aborted_at_s": self.aborted_at_s,
            "abort_reason": self.abort_reason,
            "final_weight": self.final_weight,
            "timeline": self.timeline,
            "requests": self.requests,
            "seed": self.seed,
            "faults": self.faults,
            "judge": self.judge,
            "duration_s": self.duration_s,
            "analysis_runs": self.runs,
            "measurements": self.measurements,
        }


def _faults(faults) -> tuple[Fault, ...]:
    return tuple(f if isinstance(f, Fault) else parse_fault(f) for f in (faults or ()))


def create_simulation(
    manifests_dir: str | Path | Manifests = DEFAULT_MANIFESTS,
    faults=(),
    seed: int = 0,
    rate: float = 20.0,
    *,
    traffic: str = "poisson",
    judge: Literal["threshold", "kayenta"] = "threshold",
    abort_at_s: float | None = None,
    fleet_config: FleetConfig | None = None,
    mix: TrafficMix | None = None,
    fill_from: str | Path | None = None,
) -> RolloutSimulation:
    """A stepwise simulation at t = 0 (the new revision just applied).

    ``fill_from``: a folder whose Services, VirtualService and AnalysisTemplates complete
    ``manifests_dir`` where it lacks them (e.g. DEFAULT_MANIFESTS for a student's Rollout)."""
    m = manifests_dir if isinstance(manifests_dir, Manifests) else load_manifests(manifests_dir, fill_from)
    config = m.engine_config
    fc = fleet_config or FleetConfig(rate_rps=rate, traffic=traffic, model_name=config.model)
    if judge == "kayenta":
        from sim.rollout.kayenta import kayenta_manifests

        m = kayenta_manifests(m)
    elif judge != "threshold":
        raise ValueError(f"judge: expected threshold or kayenta, got {judge!r}")
    surface = Surface(config, mix or TrafficMix())
    services = {"canary": m.canary.canaryService, "stable": m.canary.stableService}
    fleet = Fleet(surface, fc, _faults(faults), np.random.default_rng(seed), services, m.replicas)
    if judge == "kayenta":
        from sim.rollout.kayenta import KayentaProvider

        provider = KayentaProvider(fleet.store, services)
    else:
        provider = PromQLProvider(fleet.store)
    return RolloutSimulation(m, fleet, provider, abort_at_s=abort_at_s)


def simulate(
    manifests_dir: str | Path | Manifests = DEFAULT_MANIFESTS,
    faults=(),
    seed: int = 0,
    rate: float = 20.0,
    *,
    traffic: str = "poisson",
    judge: Literal["threshold", "kayenta"] = "threshold",
    abort_at_s: float | None = None,
    max_s: float = 48 * 3600.0,
    fleet_config: FleetConfig | None = None,
    mix: TrafficMix | None = None,
    fill_from: str | Path | None = None,
) -> RolloutResult:
    """Run the rollout until Healthy, Degraded, an indefinite pause, or max_s."""
    sim = create_simulation(
        manifests_dir, faults, seed, rate, traffic=traffic, judge=judge, abort_at_s=abort_at_s,
        fleet_config=fleet_config, mix=mix, fill_from=fill_from,
    )
    sim.run_to_completion(max_s)
    return result_of(sim, seed, judge)


def result_of(sim: RolloutSimulation, seed: int, judge: str) -> RolloutResult:
    f = sim.fleet
    status = sim.phase if sim.phase in ("Healthy", "Degraded", "Paused") else "Progressing"
    return RolloutResult(
        status=status,
        promoted=sim.promoted,
        aborted_at_s=sim.aborted_at_s,
        abort_reason=sim.abort_reason,
        final_weight=sim.weight,
        timeline=[e.to_dict() for e in sim.timeline],
        requests={"total": f.requests_total, "canary": f.requests_canary, "canary_failed": f.canary_failed},
        seed=seed,
        faults=[x.spec for x in f.faults],
        judge=judge,
        duration_s=sim.now_s,
        measurements=[
            {"t_s": r.t_s, "run": r.run, "kind": r.kind, "metric": r.metric, "phase": r.phase,
             "value": _first(r.value), "dry_run": r.dry_run}
            for r in sim.measurements
        ],
        runs=[
            {"name": r.name, "kind": r.kind, "started_s": r.started_s, "finished_s": r.finished_s,
             "phase": r.phase.value, "message": r.message}
            for r in sim.runs
        ],
        simulation=sim,
    )


def _first(v):
    import math

    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
