"""Fit the step-time model's efficiencies to measured throughput and latency points.

Each :class:`Point` is one real vLLM run: the engine setup, the workload, and a measured
value (requests/s, or a median TTFT/TPOT in ms). :func:`fit` adjusts the chosen coefficients
of :class:`sim.steptime.StepCoefficients` by least squares on the relative errors
(``scipy.optimize.least_squares``, with bounds that keep every efficiency physical), running
the simulator itself for every evaluation, so whatever the scheduler does is part of the fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from sim.config import EngineConfig
from sim.steptime import StepCoefficients

# Bounds of each coefficient a fit may move.
BOUNDS: dict[str, tuple[float, float]] = {
    "overhead_s": (0.0, 0.05),
    "per_seq_s": (0.0, 5e-4),
    "weight_bw_eff": (0.3, 1.0),
    "kv_bw_eff": (0.1, 1.0),
    "matmul_eff": (0.15, 1.0),
    "attn_eff": (0.05, 1.0),
    "comm_bw_eff": (0.1, 1.0),
    "comm_latency_s": (0.0, 1e-3),
}


@dataclass(frozen=True)
class Point:
    """One measured run. ``metric`` is requests_per_second, median_ttft_ms or median_tpot_ms."""

    source: str
    config: EngineConfig
    workload: object  # a sim.workload.WorkloadSpec
    metric: str
    measured: float
    usage: str = "offline"
    held_out: bool = False
    label: str = ""
    max_concurrency: int | None = None  # vllm bench serve --max-concurrency
    vllm: str | None = None  # the vLLM version measured, where older than today's (see sim.calibration)
    frontend: object | None = None  # sim.frontend.FrontendCoefficients: the API server, as bench serve runs it


@dataclass(frozen=True)
class ExactWorkload:
    """A workload rebuilt from a result file: the exact prompt and output lengths, in order,
    with arrivals drawn as ``vllm bench serve`` draws them (the file does not record them)."""

    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    request_rate: float = math.inf
    burstiness: float = 1.0
    name: str = "from-result-file"

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_lens)

    def build(self, rng: np.random.Generator):
        from sim.workload import Workload, arrival_times

        n = len(self.prompt_lens)
        return Workload(
            name=self.name, arrival_s=arrival_times(n, self.request_rate, self.burstiness, rng),
            prompt_len=np.array(self.prompt_lens, dtype=np.int64),
            output_len=np.array(self.output_lens, dtype=np.int64),
            prefix_len=np.zeros(n, dtype=np.int64), prefix_group=np.full(n, -1, dtype=np.int64),
            token_seed=int(rng.integers(0, 2**62)),
        )


@dataclass
class FitResult:
    coefficients: StepCoefficients
    rows: list[dict] = field(default_factory=list)  # per point: label, metric, measured, simulated, error
    num_evaluations: int = 0

    @property
    def mape(self) -> float:
        errs = [abs(r["error"]) for r in self.rows if not r["held_out"]]
        return float(np.mean(errs)) if errs else math.nan


def run_point(point: Point, coefficients: StepCoefficients, seed: int = 0):
    """The simulated run behind a point (an :class:`sim.engine.EngineResult`)."""
    from sim.engine import Engine  # noqa: F401  (imports the runner)
    from sim.runner import run_engine
    from sim.workload import build_workload

    rng = np.random.default_rng(seed)
    spec = point.workload
    workload = spec.build(rng) if hasattr(spec, "build") else build_workload(spec, rng)
    return run_engine(point.config, workload, seed=seed, usage=point.usage, coefficients=coefficients,
                      max_concurrency=point.max_concurrency, frontend=point.frontend)


def simulate(point: Point, coefficients: StepCoefficients, seed: int = 0) -> float:
    return metric_of(run_point(point, coefficients, seed), point.metric)


ARRIVAL_DRAWS = 8  # a result file's arrivals are not recorded: its points average this many draws


def simulate_many(points: list[Point], coefficients: StepCoefficients, seed: int = 0) -> list[float]:
    """Like :func:`simulate` for each point, running each distinct setup once (several
    metrics of one run are several points).

    A point rebuilt from a result file at a finite request rate (an :class:`ExactWorkload`)
    knows its lengths but not its arrival times, which are drawn: its value is the mean over
    ARRIVAL_DRAWS draws. One draw's median TTFT of a few dozen requests moves by several % with
    where arrivals fall against step boundaries, even against the step time (measured: 24
    requests at 4 req/s on an A100 gave 32.4 ms at 1 ms of step overhead and 30.2 ms at 2 ms),
    and a fit cannot follow a slope that is not there."""
    runs: dict = {}
    out = []
    for p in points:
        key = (p.config, p.workload, p.usage, p.max_concurrency, p.frontend)
        if key not in runs:
            drawn = isinstance(p.workload, ExactWorkload) and math.isfinite(p.workload.request_rate)
            runs[key] = [run_point(p, coefficients, seed + k) for k in range(ARRIVAL_DRAWS if drawn else 1)]
        out.append(float(np.mean([metric_of(run, p.metric) for run in runs[key]])))
    return out


def metric_of(result, metric: str) -> float:
    if metric == "requests_per_second":
        return len(result.request_ids) / result.elapsed_s
    if metric == "output_tokens_per_second":
        return float(result.output_len.sum()) / result.elapsed_s
    if metric == "median_ttft_ms":
        return float(np.median(result.ttft_s)) * 1000
    if metric == "median_tpot_ms":
        return float(np.median(result.tpot_s)) * 1000
    if metric == "median_e2el_ms":
        return float(np.median(result.e2el_s)) * 1000
    if metric == "mean_batched_requests":
        return steady_mean_batch(result)
    raise ValueError(f"unknown metric {metric!r}")


def steady_mean_batch(result, warmup_fraction: float = 0.1) -> float:
    """Running requests per step, weighted by step duration, over the steady part of a run:
    steps ending after the first ``warmup_fraction`` of the arrival span and before the last
    arrival. A short trace spends much of its time filling up and draining (the last long
    requests decode alone); the paper's one-hour traces did not. Offline runs (all arrivals at
    once) use every step."""
    t, d, n = result.steps["t_s"], result.steps["duration_s"], result.steps["num_running"]
    first, last = float(result.arrival_s.min()), float(result.arrival_s.max())
    keep = np.ones(len(t), dtype=bool)
    if last > first:
        keep = (t >= first + warmup_fraction * (last - first)) & (t <= last)
    w = d[keep]
    return float((n[keep] * w).sum() / w.sum()) if w.sum() else 0.0


def evaluate(points: list[Point], coefficients: StepCoefficients) -> list[dict]:
    rows = []
    for p, sim in zip(points, simulate_many(points, coefficients)):
        rows.append({
            "label": p.label, "source": p.source, "metric": p.metric, "measured": p.measured,
            "simulated": sim, "error": sim / p.measured - 1, "held_out": p.held_out,
        })
    return rows


def fit(points: list[Point], start: StepCoefficients | None = None,
        free: tuple[str, ...] = ("overhead_s", "per_seq_s", "kv_bw_eff", "matmul_eff"),
        max_evaluations: int = 60) -> FitResult:
    """Least squares on log(simulated / measured) over the points not held out.

    The search runs on each coefficient's position within its bounds (0..1), so one finite-
    difference step (2% of the range) means as much for ``overhead_s`` as for ``matmul_eff``;
    in raw units scipy's relative step would be far too large for the small time constants.
    """
    from scipy.optimize import least_squares

    start = start or StepCoefficients()
    fitted = [p for p in points if not p.held_out]
    if not fitted:
        raise ValueError("nothing to fit: every point is held out")
    lo = np.array([BOUNDS[name][0] for name in free])
    hi = np.array([BOUNDS[name][1] for name in free])
    scale = hi - lo
    x0 = np.clip(np.array([getattr(start, name) for name in free]), lo, hi)
    u0 = (x0 - lo) / scale
    count = {"n": 0}

    def coeffs(u) -> StepCoefficients:
        x = lo + np.clip(u, 0.0, 1.0) * scale
        return replace(start, **{name: float(v) for name, v in zip(free, x)})

    def residuals(x):
        count["n"] += 1
        c = coeffs(x)
        return np.array([math.log(s / p.measured) for p, s in zip(fitted, simulate_many(fitted, c))])

    sol = least_squares(residuals, u0, bounds=(np.zeros_like(u0), np.ones_like(u0)), diff_step=0.05, method="dogbox",
                        max_nfev=max_evaluations)
    best = coeffs(sol.x)
    return FitResult(best, evaluate(points, best), count["n"])


def coefficients_dict(c: StepCoefficients) -> dict:
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in asdict(c).items()}
