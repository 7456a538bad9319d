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


@dataclass
class FitResult:
    coefficients: StepCoefficients
    rows: list[dict] = field(default_factory=list)  # per point: label, metric, measured, simulated, error
    num_evaluations: int = 0

    @property
    def mape(self) -> float:
        errs = [abs(r["error"]) for r in self.rows if not r["held_out"]]
        return float(np.mean(errs)) if errs else math.nan


def simulate(point: Point, coefficients: StepCoefficients, seed: int = 0) -> float:
    from sim.engine import Engine  # noqa: F401  (imports the runner)
    from sim.runner import run_engine
    from sim.workload import build_workload

    workload = build_workload(point.workload, np.random.default_rng(seed))
    result = run_engine(point.config, workload, seed=seed, usage=point.usage, coefficients=coefficients)
    if point.metric == "requests_per_second":
        return len(result.request_ids) / result.elapsed_s
    if point.metric == "output_tokens_per_second":
        return float(result.output_len.sum()) / result.elapsed_s
    if point.metric == "median_ttft_ms":
        return float(np.median(result.ttft_s)) * 1000
    if point.metric == "median_tpot_ms":
        return float(np.median(result.tpot_s)) * 1000
    if point.metric == "median_e2el_ms":
        return float(np.median(result.e2el_s)) * 1000
    raise ValueError(f"unknown metric {point.metric!r}")


def evaluate(points: list[Point], coefficients: StepCoefficients) -> list[dict]:
    rows = []
    for p in points:
        sim = simulate(p, coefficients)
        rows.append({
            "label": p.label, "source": p.source, "metric": p.metric, "measured": p.measured,
            "simulated": sim, "error": sim / p.measured - 1, "held_out": p.held_out,
        })
    return rows


def fit(points: list[Point], start: StepCoefficients | None = None,
        free: tuple[str, ...] = ("overhead_s", "per_seq_s", "kv_bw_eff", "matmul_eff"),
        max_evaluations: int = 60) -> FitResult:
    """Least squares on log(simulated / measured) over the points not held out."""
    from scipy.optimize import least_squares

    start = start or StepCoefficients()
    fitted = [p for p in points if not p.held_out]
    if not fitted:
        raise ValueError("nothing to fit: every point is held out")
    lo = np.array([BOUNDS[name][0] for name in free])
    hi = np.array([BOUNDS[name][1] for name in free])
    scale = hi - lo
    x0 = np.clip(np.array([getattr(start, name) for name in free]), lo, hi)
    count = {"n": 0}

    def coeffs(x) -> StepCoefficients:
        return replace(start, **{name: float(v) for name, v in zip(free, x)})

    def residuals(x):
        count["n"] += 1
        c = coeffs(x)
        return np.array([math.log(simulate(p, c) / p.measured) for p in fitted])

    sol = least_squares(residuals, x0, bounds=(lo, hi), x_scale=scale, diff_step=0.02,
                        max_nfev=max_evaluations)
    best = coeffs(sol.x)
    return FitResult(best, evaluate(points, best), count["n"])


def coefficients_dict(c: StepCoefficients) -> dict[str, float]:
    return {k: float(f"{v:.4g}") for k, v in asdict(c).items()}
