"""How fast the PromQL store and evaluator are on a canary rollout's worth of series.

Builds 7 hours of 15-second scrapes of 50 series (a stable and a canary service: HTTP request
counters by status, a latency histogram with Prometheus' default buckets, cost and quality,
vLLM gauges), once one scrape at a time and once as whole arrays, then times the course's
AnalysisTemplate queries at random instants, a range query over the 7 hours and the OpenMetrics
export. Prints one line per figure; run it with `python3 benchmarks/promql_speed.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.promql import SeriesStore, instant_query, range_query  # noqa: E402

BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
SERVICES = ("ai-api-stable", "ai-api-canary")
CANARY = 'service="ai-api-canary"'
STABLE = 'service="ai-api-stable"'
QUERIES = {
    "error rate": f'sum(rate(http_requests_total{{{CANARY},status=~"5.."}}[5m])) '
    f"/ sum(rate(http_requests_total{{{CANARY}}}[5m]))",
    "p99 latency ms": f"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{CANARY}}}[5m])) by (le)) * 1000",
    "p99 canary/stable": f"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{CANARY}}}[5m])) by (le)) "
    f"/ histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{STABLE}}}[5m])) by (le))",
    "cost per request ratio": f"(sum(rate(llm_cost_dollars_total{{{CANARY}}}[5m])) / sum(rate(http_requests_total{{{CANARY}}}[5m]))) "
    f"/ (sum(rate(llm_cost_dollars_total{{{STABLE}}}[5m])) / sum(rate(http_requests_total{{{STABLE}}}[5m])))",
    "quality relative": f"avg(llm_judge_quality_score{{{CANARY}}}) / avg(llm_judge_quality_score{{{STABLE}}})",
    "error rate or vector(0)": f'(sum(rate(http_requests_total{{{CANARY},status=~"5.."}}[5m])) '
    f"/ sum(rate(http_requests_total{{{CANARY}}}[5m]))) or vector(0)",
}


def scrapes(duration_s: float, seed: int):
    """Yield (t_s, {(name, labels_tuple): value}) per scrape, cumulative like a real exporter."""
    rng = np.random.default_rng(seed)
    state: dict = {}
    for t in np.arange(0.0, duration_s, 15.0):
        sample = {}
        for service, rps in zip(SERVICES, (19.0, 1.0)):
            n = rng.poisson(rps * 15)
            errors = rng.binomial(n, 0.005)
            lat = rng.lognormal(np.log(0.4), 0.7, n)
            for status, k in (("200", n - errors), ("500", errors)):
                key = ("http_requests_total", (("service", service), ("status", status)))
                state[key] = state.get(key, 0.0) + k
            counts = np.searchsorted(np.array([float(b) for b in BUCKETS]), lat, side="left")
            per_bucket = np.cumsum(np.bincount(counts, minlength=len(BUCKETS)))
            for le, c in zip(BUCKETS, per_bucket):
                key = ("http_request_duration_seconds_bucket", (("le", le), ("service", service)))
                state[key] = state.get(key, 0.0) + float(c)
            for name, inc in (
                ("http_request_duration_seconds_sum", float(lat.sum())),
                ("http_request_duration_seconds_count", float(n)),
                ("llm_cost_dollars_total", float(n) * 0.002),
            ):
                key = (name, (("service", service),))
                state[key] = state.get(key, 0.0) + inc
            sample[("llm_judge_quality_score", (("service", service),))] = 0.9 + 0.02 * rng.standard_normal()
            for gauge in (
                "vllm:num_requests_running",
                "vllm:num_requests_waiting",
                "vllm:gpu_cache_usage_perc",
                "vllm:num_preemptions",
                "vllm:cpu_cache_usage_perc",
                "vllm:lora_requests_info",
            ):
                sample[(gauge, (("service", service),))] = float(rng.integers(0, 40))
            sample[("vllm:prompt_tokens_total", (("service", service),))] = float(t) * rps * 500
        sample.update(state)
        yield t, sample


def build(samples: list, per_scrape: bool) -> SeriesStore:
    """Fill a store from pre-generated scrapes: one append per sample, or one per series."""
    store = SeriesStore()
    if per_scrape:
        for t, sample in samples:
            for (name, labels), value in sample.items():
                store.append(name, dict(labels), t, value)
        return store
    times = np.array([t for t, _ in samples])
    columns: dict = {}
    for _, sample in samples:
        for key, value in sample.items():
            columns.setdefault(key, []).append(value)
    for (name, labels), values in columns.items():
        store.append(name, dict(labels), times, np.array(values))
    return store


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=200, help="evaluations per query")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    duration_s = args.hours * 3600

    samples = list(scrapes(duration_s, args.seed))  # generated first: not part of any figure
    n_samples = sum(len(s) for _, s in samples)
    t0 = time.perf_counter()
    store = build(samples, per_scrape=True)
    per_scrape_s = time.perf_counter() - t0
    n_series = len(list(store.series()))
    print(f"store: {n_series} series, {n_samples} samples ({args.hours:g} h of 15 s scrapes)")
    print(f"append one sample at a time: {per_scrape_s:.3f} s ({per_scrape_s / n_samples * 1e6:.2f} us per sample)")
    t0 = time.perf_counter()
    build(samples, per_scrape=False)
    print(f"append one array per series (incl. gathering the columns): {time.perf_counter() - t0:.3f} s")

    rng = np.random.default_rng(args.seed)
    instants = rng.uniform(300, duration_s, args.repeat)
    print(f"instant_query, {args.repeat} random instants each (median / 95th percentile):")
    for label, q in QUERIES.items():
        first = timed(lambda q=q: instant_query(q, store, float(instants[0])), 1)[0]
        it = iter(instants)
        times = timed(lambda q=q, it=it: instant_query(q, store, float(next(it))), args.repeat)
        print(
            f"  {label:28s} {statistics.median(times) * 1e3:7.3f} ms / {np.percentile(times, 95) * 1e3:7.3f} ms"
            f"   (first call, parsing included: {first * 1e3:.3f} ms)"
        )
    steps = int(duration_s // 60) + 1
    t = timed(lambda: range_query(QUERIES["p99 latency ms"], store, 0, duration_s, 60), 1)[0]
    print(f"range_query p99 over {args.hours:g} h at 60 s steps ({steps} steps): {t:.3f} s ({t / steps * 1e3:.3f} ms per step)")
    t0 = time.perf_counter()
    text = store.to_openmetrics()
    print(f"to_openmetrics: {time.perf_counter() - t0:.3f} s, {len(text) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
