"""The capacity planner's search: candidates -> pruning -> bisection per engine config -> ranking.

:func:`tune` is pure: it takes a :class:`TuneRequest` and an executor and returns a
:class:`TuneResult`; the CLI and the lab page only gather the request and show the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.errors import ConfigError
from sim.tune.evaluate import Evaluation, Job, evaluate
from sim.tune.executors import Executor, SerialExecutor
from sim.tune.prune import PruneResult, check
from sim.tune.rank import Deployment, closest, deployment, pareto_front, rank
from sim.tune.sla import SLA
from sim.tune.space import SearchSpace
from sim.workload import WorkloadSpec


@dataclass(frozen=True)
class TuneRequest:
    space: SearchSpace
    workload: WorkloadSpec  # the dataset; its request_rate is ignored (see target_load)
    sla: SLA
    prices: dict  # catalog GPU name -> GPUPrice
    mode: str = "rate"  # "rate": loads in requests/s; "concurrency": in clients (closed loop)
    target_load: float | None = None  # the whole deployment's load; None: one replica at its best
    seed: int = 0
    rel_tol: float = 0.05
    early_stop: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("rate", "concurrency"):
            raise ConfigError(f"load mode: expected rate or concurrency, got {self.mode!r}")
        if self.target_load is not None and not (self.target_load > 0 and math.isfinite(self.target_load)):
            raise ConfigError(f"target load: expected a positive number, got {self.target_load!r}")
        missing = [g for g in self.space.gpus if g not in self.prices]
        if missing:
            # Name what the table does price: a short name there may be another GPU ("a100" is the 40 GB one).
            raise ConfigError(f"--gpu-prices: no price for {', '.join(missing)}; the table prices "
                              f"{', '.join(sorted(self.prices)) or 'no GPU'}. Add an entry under the missing "
                              f"GPU's catalog name, or leave it out of --gpu")
        if not 0 < self.rel_tol < 1:
            raise ConfigError(f"--rate-tolerance: expected a fraction in (0, 1), got {self.rel_tol}")


@dataclass
class TuneCounts:
    candidates: int = 0  # deployments considered: engine configs x replica counts
    engine_configs: int = 0
    pruned_configs: int = 0
    unsimulatable_configs: int = 0  # kept by pruning, but the simulator cannot run them (see TuneResult)
    simulated_configs: int = 0
    simulations: int = 0  # engine runs, burst runs included
    stopped_early: int = 0  # runs ended by the SLA monitor
    replica_counts: int = 1
    cpu_s: float = 0.0  # CPU time of the evaluations, all workers together

    @property
    def pruned(self) -> int:
        return self.pruned_configs * self.replica_counts

    @property
    def answered(self) -> int:
        return self.candidates


@dataclass
class TuneResult:
    request: TuneRequest
    ranked: list[Deployment]  # those that meet, best first
    closest: list[Deployment]  # when none meets: those that miss by least
    pareto: list[Deployment]  # one replica of each configuration that meets, on the front
    points: list[Deployment]  # one replica of each configuration that meets (the plot's cloud)
    evaluations: list[Evaluation]  # the configurations simulated (status "meets" or "misses")
    pruned: list[PruneResult]
    counts: TuneCounts = field(default_factory=TuneCounts)
    # Kept by pruning, but their step time cannot be simulated on that GPU (no operator table
    # prices the model there, say): not SLA misses, so never among ``closest``. Each is a
    # PruneResult (plan None) whose reason and kind are the simulator's message, so that
    # sim.tune.prune.group_pruned groups them as it groups the pruned ones.
    unsimulatable: list[PruneResult] = field(default_factory=list)

    @property
    def winner(self) -> Deployment | None:
        return self.ranked[0] if self.ranked else None


def longest_request_tokens(spec: WorkloadSpec, seed: int) -> int:
    from sim.tune.evaluate import base_workload

    w, _ = base_workload(spec, seed)
    return int((w.prompt_len + w.output_len).max())


def tune(request: TuneRequest, executor: Executor | None = None,
         progress: Callable[[int, int, Evaluation | None], None] | None = None) -> TuneResult:
    """Answer every candidate of ``request.space``; ``progress(done, total, evaluation)`` after each."""
    executor = executor or SerialExecutor()
    space = request.space
    configs = space.engine_configs()
    counts = TuneCounts(candidates=len(configs) * space.max_replicas, engine_configs=len(configs),
                        replica_counts=space.max_replicas)
    longest = longest_request_tokens(request.workload, request.seed)
    checks = [check(c, longest) for c in configs]
    kept = [c for c in checks if c.kept]
    pruned = [c for c in checks if not c.kept]
    counts.pruned_configs = len(pruned)
    jobs = [Job(c.config, request.workload, request.sla.terms, request.mode, request.seed, request.rel_tol,
                request.early_stop) for c in kept]
    if progress:
        progress(0, len(jobs), None)
    evaluations: list[Evaluation] = []
    for ev in executor.map_unordered(evaluate, jobs):
        evaluations.append(ev)
        if progress:
            progress(len(evaluations), len(jobs), ev)
    order = {c.config: i for i, c in enumerate(kept)}
    evaluations.sort(key=lambda ev: order[ev.config])  # the space's order, whatever order they finished in
    unsimulatable = [PruneResult(ev.config, None, ev.error, ev.error) for ev in evaluations if ev.status == "error"]
    evaluations = [ev for ev in evaluations if ev.status != "error"]
    counts.unsimulatable_configs = len(unsimulatable)
    counts.simulated_configs = len(evaluations)
    counts.simulations = sum(ev.num_simulated for ev in evaluations)
    counts.stopped_early = sum(ev.num_stopped_early for ev in evaluations)
    counts.cpu_s = sum(ev.cpu_s for ev in evaluations)

    price = lambda ev: request.prices.get(ev.config.gpu)
    deployments = [deployment(ev, request.sla, request.target_load, price(ev), space.max_replicas) for ev in evaluations]
    points = [deployment(ev, request.sla, None, price(ev), space.max_replicas, one_replica=True)
              for ev in evaluations if ev.status == "meets"]
    ranked = rank(deployments, by_cost_per_hour=request.target_load is not None)
    return TuneResult(
        request=request, ranked=ranked, closest=[] if ranked else closest(deployments),
        pareto=pareto_front(points), points=points, evaluations=evaluations, pruned=pruned, counts=counts,
        unsimulatable=unsimulatable,
    )
