"""One engine configuration, answered: the highest load per replica that meets the SLA.

This is the unit of work an executor runs (in a worker process or a Ray task), so everything
it takes and returns is a small frozen, picklable record. It builds the workload once per
process at one request per second and rescales the arrival times for every load it tries (the
same draws at every rate, so the probes differ only in load), runs the engine through
:func:`sim.runner.run_engine` with an :class:`sim.tune.sla.SLAMonitor` that ends a run as soon
as its verdict is certain, and bisects (:mod:`sim.tune.bisect`).

Loads:
* ``rate``: requests per second. The top of the bracket is the configuration's capacity,
  measured by one burst run (every request at t = 0, at least ``max_num_seqs`` of them;
  throughput = requests / elapsed); a steady stream above capacity queues without bound, so no
  rate above it counts as met even if a short run happens to meet the SLA (a configuration met
  there is reported as "at least" that rate). The bottom is capacity / 32, run in full.
* ``concurrency``: clients in a closed loop (``--max-concurrency``, requests sent as soon as
  one finishes), from 1 to ``max_num_seqs`` (more clients than that only wait in the queue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from sim.config import EngineConfig
from sim.errors import ServeLabError
from sim.tune.bisect import bisect_max_load
from sim.tune.sla import SLAMonitor, SLATerm, StopSimulation, misses
from sim.workload import Workload, WorkloadSpec, build_workload


@dataclass(frozen=True)
class Job:
    """One engine configuration to answer, and how."""

    config: EngineConfig
    workload: WorkloadSpec  # its request_rate is ignored: the search sets the load
    terms: tuple[SLATerm, ...]
    mode: str = "rate"  # "rate" (requests/s) or "concurrency" (clients)
    seed: int = 0
    rel_tol: float = 0.05
    early_stop: bool = True


@dataclass(frozen=True)
class Probe:
    load: float
    met: bool
    stopped_early: bool
    measured: dict  # term key -> ms, over the requests finished (all of them unless stopped early)
    mean_tpot_ms: float
    output_throughput: float  # output tokens/s of this replica over the run (nan if stopped early)


@dataclass(frozen=True)
class Evaluation:
    """What the search learned about one engine configuration."""

    config: EngineConfig
    status: str  # "meets" (some load meets the SLA) | "misses" (even the lowest load misses) | "error"
    mode: str
    best_load: float | None = None  # highest load per replica found to meet the SLA
    capacity: float | None = None  # the bracket's top: burst throughput (req/s) or max_num_seqs
    best: Probe | None = None  # the probe at best_load
    closest: Probe | None = None  # for "misses": a full run at the lowest load
    miss_terms: tuple = ()  # for "misses": the terms missed at the lowest load, worst first
    mean_output_len: float = 0.0  # per request, samples included
    probes: tuple = field(default_factory=tuple)  # every Probe, in the order run
    error: str = ""
    cpu_s: float = 0.0  # CPU time the evaluation took in its worker

    @property
    def num_simulated(self) -> int:
        return len(self.probes) + (1 if self.mode == "rate" and self.capacity is not None else 0)

    @property
    def num_stopped_early(self) -> int:
        return sum(p.stopped_early for p in self.probes)


@lru_cache(maxsize=8)
def base_workload(spec: WorkloadSpec, seed: int) -> tuple[Workload, float]:
    """The workload at (mean) one request per second, and the factor applied to its arrival
    times to get there (a trace's own rate; 1 for synthetic datasets, which are drawn at 1/s)."""
    if spec.dataset_name == "trace":
        w = build_workload(replace(spec, trace_time_scale=1.0), np.random.default_rng(seed))
        span = float(w.arrival_s[-1] - w.arrival_s[0]) if len(w) > 1 else 0.0
        native_rate = (len(w) - 1) / span if span > 0 else 1.0
        return w, native_rate
    return build_workload(replace(spec, request_rate=1.0), np.random.default_rng(seed)), 1.0


def at_load(spec: WorkloadSpec, seed: int, rate: float) -> Workload:
    """The workload with its arrivals rescaled to ``rate`` requests per second (inf: all at once)."""
    w, native = base_workload(spec, seed)
    arrival = np.zeros_like(w.arrival_s) if rate == math.inf else w.arrival_s * (native / rate)
    return replace(w, arrival_s=arrival)


@lru_cache(maxsize=64)
def simulated_config(config: EngineConfig, spec: WorkloadSpec, seed: int) -> EngineConfig:
    """``config`` with its KV cache trimmed to what the whole workload could ever hold at once.

    A cache larger than every request's blocks together never evicts, never preempts and never
    refuses an allocation, so trimming it to that size (plus the null block) changes no
    scheduling decision and no step time; it only spares building hundreds of thousands of
    block records for a big GPU (an H200 at TP 8 holds about 490,000 blocks of an 8B model).
    The deployment keeps the untrimmed configuration.
    """
    from sim.config import cdiv
    from sim.memory import plan_for_config

    w, _ = base_workload(spec, seed)
    bound = int(sum(cdiv(int(t), config.block_size) for t in (w.prompt_len + w.output_len))) * w.n + 2
    if config.num_gpu_blocks_override is None and plan_for_config(config).num_gpu_blocks > bound:
        return config.with_(num_gpu_blocks_override=bound)
    return config


def _run(job: Job, load: float, *, stop: bool) -> Probe:
    from sim.engine import run_engine  # late: sim.engine imports sim.runner

    spec, config = job.workload, simulated_config(job.config, job.workload, job.seed)
    if job.mode == "rate":
        workload, max_concurrency = at_load(spec, job.seed, load), None
    else:
        workload, max_concurrency = at_load(spec, job.seed, math.inf), int(load)
    n = workload.n
    monitor = SLAMonitor(job.terms, len(workload) * n, int((workload.output_len > 1).sum()) * n,
                         stop_when_met=stop and job.mode == "rate", stop_when_missed=stop)
    stopped_early = False
    try:
        result = run_engine(config, workload, seed=job.seed, usage="serve", max_concurrency=max_concurrency,
                            listeners=[monitor])
        duration = float(result.finish_s.max() - result.arrival_s.min())
        throughput = float(result.output_len.sum()) / duration if duration > 0 else math.nan
        met = monitor.verdict()
    except StopSimulation as stop_signal:
        met, stopped_early, throughput = stop_signal.met, True, math.nan
    tpot = monitor.values["tpot"]
    return Probe(load, met, stopped_early, monitor.measured(), float(np.mean(tpot)) if tpot else math.nan, throughput)


def burst_capacity(job: Job) -> float:
    """Requests per second the configuration completes with every request sent at t = 0.

    The burst holds at least ``max_num_seqs`` requests (up to four times the run's own count), so
    that the batch can fill as it would under a steady stream: a burst of fewer requests than
    the engine runs at once measures a smaller batch's throughput, not the engine's."""
    from sim.engine import run_engine
    from sim.memory import plan_for_config

    n = len(base_workload(job.workload, job.seed)[0])
    count = min(max(n, plan_for_config(job.config).max_num_seqs), 4 * n)
    spec = job.workload if count == n else replace(job.workload, num_prompts=count)
    workload = at_load(spec, job.seed, math.inf)
    result = run_engine(simulated_config(job.config, spec, job.seed), workload, seed=job.seed, usage="serve")
    return len(result.finish_s) / float(result.finish_s.max())


def evaluate(job: Job) -> Evaluation:
    """Bisect ``job.config``'s highest load per replica that meets ``job.terms``."""
    import time

    t0 = time.process_time()
    try:
        ev = _evaluate(job)
    except ServeLabError as exc:  # e.g. a request that can never fit this configuration's cache
        ev = Evaluation(job.config, "error", job.mode, error=str(exc))
    return replace(ev, cpu_s=time.process_time() - t0)


def _evaluate(job: Job) -> Evaluation:
    base, _ = base_workload(job.workload, job.seed)
    mean_output_len = float(base.output_len.mean()) * base.n
    capacity = None
    if job.mode == "rate":
        capacity = burst_capacity(job)
        lo, hi, integer = capacity / 32, capacity, False
    else:
        from sim.memory import plan_for_config

        hi = float(plan_for_config(job.config).max_num_seqs)
        lo, integer = 1.0, True
        capacity = hi
    probes: list[Probe] = []

    def probe(load: float):
        # The lowest load runs in full (no early stop), so that a miss there, which ends the
        # search, can say by how much.
        p = _run(job, load, stop=job.early_stop and load != lo)
        probes.append(p)
        return p.met, p

    found = bisect_max_load(probe, lo, hi, rel_tol=job.rel_tol, integer=integer)
    common = dict(config=job.config, mode=job.mode, capacity=capacity, mean_output_len=mean_output_len)
    if found.best_load is None:  # missed even at the lowest load
        closest = probes[-1]
        return Evaluation(status="misses", closest=closest, miss_terms=tuple(misses(job.terms, closest.measured)),
                          probes=tuple(probes), **common)
    best = next(p for p in reversed(probes) if p.load == found.best_load)
    return Evaluation(status="meets", best_load=found.best_load, best=best, probes=tuple(probes), **common)

