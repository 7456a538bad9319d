"""A Kayenta-style statistical judge (NetflixACAJudge), to compare with threshold analysis.

Instead of fixed thresholds, each judgement compares the canary's samples with the stable
baseline's over a window, metric by metric (reference section 9):

1. Samples: each metric evaluated once a minute over the window (1-minute rates), for the
   canary and the stable Service. NaN samples (no traffic that minute) are removed
   (``nanStrategy: remove``); a metric with no samples on either side is NoData.
2. Mann-Whitney U between canary and baseline with a 98% confidence interval for the shift
   (Hodges-Lehmann estimate; the interval from the normal approximation of U's
   distribution). High: the lower bound is above 0.25 x |estimate| and the means' ratio is at
   least ``allowed_increase``; Low is the mirror; otherwise Pass.
3. Score = 100 x Pass / (Pass + High + Low), 0 if a critical metric is not Pass or if half the
   metrics or more are NoData. Score >= 95 Pass (Successful), >= 75 Marginal
   (Inconclusive), else Fail (Failed), as Argo's Kayenta provider maps them.

Departure from Kayenta: one group, equal weights, and the interval from the normal
approximation only (Kayenta's R-derived code uses the exact distribution for small samples).
The p99-latency metric gets a 20% allowed increase: at 50% traffic the canary's pods carry
twice stable's per-pod load (stable keeps full size), which a strict judge would flag.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from sim.rollout.analysis import MetricSpec, ProviderError
from sim.rollout.durations import format_duration, parse_go_duration
from sim.rollout.expr import compile_expr
from sim.rollout.loader import Manifests, ResolvedAnalysis

PASS_SCORE, MARGINAL_SCORE = 95.0, 75.0
CONFIDENCE = 0.98
SAMPLE_STEP_S = 60.0


@dataclass(frozen=True)
class KayentaMetric:
    name: str
    query: str  # {svc} and {w} are filled in
    direction: str  # "increase" is bad, or "decrease"
    allowed_increase: float = 1.0
    allowed_decrease: float = 1.0
    critical: bool = False
    window: str = "1m"


METRICS = (
    KayentaMetric(
        "error-rate",
        'sum(rate(http_requests_total{{service="{svc}",status=~"5.."}}[{w}])) / sum(rate(http_requests_total{{service="{svc}"}}[{w}]))',
        "increase", critical=True,
    ),
    KayentaMetric(
        "latency-p99",
        'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{service="{svc}"}}[{w}])) by (le))',
        "increase", allowed_increase=1.2, critical=True,
    ),
    KayentaMetric(
        "cost-per-request",
        'sum(rate(llm_request_cost_dollars_total{{service="{svc}"}}[{w}])) / sum(rate(http_requests_total{{service="{svc}"}}[{w}]))',
        "increase", allowed_increase=1.1,
    ),
    KayentaMetric(
        "quality",
        'sum(rate(llm_judge_quality_score_sum{{service="{svc}"}}[{w}])) / sum(rate(llm_judge_quality_score_count{{service="{svc}"}}[{w}]))',
        "decrease", allowed_decrease=0.97, critical=True, window="5m",
    ),
)


def classify(canary: np.ndarray, baseline: np.ndarray, m: KayentaMetric) -> str:
    """Pass, High, Low or NoData for one metric (NaNs already removed)."""
    if len(canary) == 0 or len(baseline) == 0:
        return "NoData"
    diffs = np.sort(np.subtract.outer(canary, baseline).ravel())
    hl = float(np.median(diffs))
    n, k = len(canary), len(baseline)
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    c = int(math.floor(n * k / 2 - z * math.sqrt(n * k * (n + k + 1) / 12.0)))
    c = min(max(c, 0), len(diffs) - 1)
    lower, upper = float(diffs[c]), float(diffs[len(diffs) - 1 - c])
    mean_c, mean_b = float(np.mean(canary)), float(np.mean(baseline))
    ratio = mean_c / mean_b if mean_b != 0 else (math.inf if mean_c > 0 else 1.0)
    if lower > 0.25 * abs(hl) and lower > 0 and ratio >= m.allowed_increase and m.direction == "increase":
        return "High"
    if upper < -0.25 * abs(hl) and upper < 0 and ratio <= m.allowed_decrease and m.direction == "decrease":
        return "Low"
    return "Pass"


def score(classes: dict[str, str], metrics=METRICS) -> float:
    crit = {m.name for m in metrics if m.critical}
    nodata = sum(1 for c in classes.values() if c == "NoData")
    if nodata * 2 >= len(classes):
        return 0.0
    if any(classes[n] not in ("Pass",) and classes[n] != "NoData" for n in crit):
        return 0.0
    judged = [c for c in classes.values() if c != "NoData"]
    return 100.0 * sum(c == "Pass" for c in judged) / len(judged)


class KayentaProvider:
    """Answers ``kayenta:<window>`` queries with a score; anything else goes to PromQL."""

    def __init__(self, store, services: dict[str, str]):
        self.store = store
        self.services = services
        self.last_classes: dict[str, str] = {}

    def __call__(self, query: str, at_s: float):
        from sim.promql.evaluate import PromQLError, range_query

        m = re.fullmatch(r"kayenta:(\S+)", query)
        if m is None:
            raise ProviderError(f"not a kayenta query: {query!r}")
        window_s = parse_go_duration(m.group(1))
        classes = {}
        for metric in METRICS:
            step = max(SAMPLE_STEP_S, parse_go_duration(metric.window))
            # Samples at at_s, at_s - step, ... back to the window's start (or t = 0).
            first = at_s - step * math.floor(min(window_s, at_s) / step)
            samples = {}
            for version in ("canary", "stable"):
                q = metric.query.format(svc=self.services[version], w=metric.window)
                try:
                    results = range_query(q, self.store, first, at_s, step)
                except PromQLError as exc:
                    raise ProviderError(str(exc)) from None
                vals = [r.values()[0] for r in results if r.values()]
                samples[version] = np.array([v for v in vals if math.isfinite(v)])
            classes[metric.name] = classify(samples["canary"], samples["stable"], metric)
        self.last_classes = classes
        return score(classes)


def kayenta_manifests(m: Manifests) -> Manifests:
    """The same rollout with every analysis replaced by one Kayenta judgement.

    Step analyses judge the window of the pause before them; the background run judges the
    last 30 minutes every 30 minutes.
    """
    def spec(name: str, window_s: float, interval_s: float | None, delay_s: float) -> MetricSpec:
        return MetricSpec(
            name="kayenta-score",
            query=f"kayenta:{format_duration(window_s)}",
            template=name,
            success=compile_expr(f"result >= {PASS_SCORE}"),
            failure=compile_expr(f"result < {MARGINAL_SCORE}"),
            interval_s=interval_s,
            initial_delay_s=delay_s,
        )

    steps = m.canary.steps
    step_analyses = {}
    for i in m.step_analyses:
        prev = steps[i - 1] if i > 0 else None
        window = prev.pause.duration if prev is not None and prev.pause is not None and prev.pause.duration else 3600.0
        step_analyses[i] = ResolvedAnalysis(("kayenta-gate",), (spec("kayenta-gate", window, None, 0.0),))
    background = None
    if m.background is not None:
        background = ResolvedAnalysis(("kayenta-background",), (spec("kayenta-background", 1800.0, 1800.0, 1800.0),))
    return replace(m, background=background, step_analyses=step_analyses)
