"""ServeLab's PromQL evaluator agrees with a real Prometheus on the same series.

The store from ``prom_fixtures.realistic_store`` is exported as OpenMetrics, backfilled with
``promtool tsdb create-blocks-from openmetrics`` and served by ``prometheus`` (Debian's 2.42) on
a loopback port. Every query below, at every instant below, must give the same kind of result,
the same series (labels) and the same values within 1e-9 relative (NaN equals NaN); a query
Prometheus rejects must raise PromQLError here. Instants sit on the edges that matter: range
windows starting exactly on a sample, lookback windows ending exactly on one, a counter reset,
a spell without traffic, a gap in scraping, before the first and after the last sample.
"""

from __future__ import annotations

import math

import pytest
from conftest import require_program
from prom_fixtures import (
    CANARY_QUIET_S,
    CANARY_RESTART_S,
    CANARY_START_S,
    DURATION_S,
    GAUGE_GAP_S,
    SCRAPE_S,
    T0_S,
    backfill,
    prometheus_server,
    query,
    query_range,
    realistic_store,
)

from sim.promql import PromQLError, instant_query, range_query

pytestmark = pytest.mark.prometheus

CANARY = 'service="ai-api-canary"'
STABLE = 'service="ai-api-stable"'
ERROR_RATE = (
    f'sum(rate(http_requests_total{{{CANARY},status=~"5.."}}[5m])) / sum(rate(http_requests_total{{{CANARY}}}[5m]))'
)
P99_MS = f"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{CANARY}}}[5m])) by (le)) * 1000"
P99_STABLE_MS = P99_MS.replace(CANARY, STABLE)
COST_PER_REQ = (
    f"sum(rate(llm_request_cost_dollars_total{{{CANARY}}}[5m])) / sum(rate(http_requests_total{{{CANARY}}}[5m]))"
)

QUERIES = [
    # The course's AnalysisTemplate shapes.
    pytest.param(ERROR_RATE, id="error-rate"),
    pytest.param(f"({ERROR_RATE}) or vector(0)", id="error-rate-or-vector0"),
    pytest.param(f"{ERROR_RATE} < 0.01", id="error-rate-filter-lt"),
    pytest.param(f"{ERROR_RATE} > bool 0.01", id="error-rate-bool-gt"),
    pytest.param(P99_MS, id="p99-ms"),
    pytest.param(f"({P99_MS}) / ({P99_STABLE_MS})", id="p99-canary-over-stable"),
    pytest.param(f"({P99_MS}) > bool 3 * ({P99_STABLE_MS})", id="p99-3x-baseline-bool"),
    pytest.param(
        f"({COST_PER_REQ}) / ({COST_PER_REQ.replace(CANARY, STABLE)})",
        id="cost-per-request-ratio",
    ),
    pytest.param(
        f"avg(llm_judge_quality_score{{{CANARY}}}) / avg(llm_judge_quality_score{{{STABLE}}})",
        id="quality-relative",
    ),
    pytest.param(f"avg_over_time(llm_judge_quality_score{{{CANARY}}}[30m])", id="quality-avg-over-time"),
    pytest.param(
        f"sum(rate(http_requests_total{{{CANARY}}}[5m])) / sum(rate(http_requests_total[5m]))",
        id="canary-traffic-share",
    ),
    # Empty results and NaN.
    pytest.param(f'sum(rate(http_requests_total{{{CANARY},status="503"}}[5m]))', id="empty-sum"),
    pytest.param('http_requests_total{service="nope"}', id="empty-selector"),
    pytest.param(f'sum(rate(http_requests_total{{{CANARY},status="503"}}[5m])) or vector(0)', id="empty-or-vector0"),
    # Building blocks, one at a time.
    pytest.param('http_requests_total{service=~"ai-api-.*",status!~"2.."}', id="selector-regex"),
    pytest.param("http_requests_total", id="selector-all"),
    pytest.param('{__name__=~"vllm:.*_total"}', id="selector-name-regex-colon"),
    pytest.param("rate(http_requests_total[5m])", id="rate"),
    pytest.param("rate(http_requests_total[1m])", id="rate-1m"),
    pytest.param(f'increase(http_requests_total{{{CANARY},status="200"}}[10m])', id="increase-reset"),
    pytest.param("irate(http_requests_total[1m])", id="irate"),
    pytest.param("delta(vllm:gpu_cache_usage_perc[10m])", id="delta-gauge"),
    pytest.param(f'rate(http_requests_total{{{STABLE},status="200"}}[5m] offset 10m)', id="rate-offset"),
    pytest.param(f'http_requests_total{{{STABLE},status="200"}} @ {T0_S + 1000}', id="at-modifier"),
    pytest.param("sum by (service) (rate(http_requests_total[5m]))", id="sum-by"),
    pytest.param("sum without (status) (rate(http_requests_total[5m]))", id="sum-without"),
    pytest.param("avg by (service) (vllm:num_requests_running)", id="avg-by-gauge"),
    pytest.param("max(vllm:gpu_cache_usage_perc)", id="max"),
    pytest.param("min by (service) (vllm:gpu_cache_usage_perc)", id="min-by"),
    pytest.param("count by (status) (http_requests_total)", id="count-by"),
    pytest.param(
        'rate(http_requests_total{status="500"}[5m]) / ignoring(status) rate(http_requests_total{status="200"}[5m])',
        id="vector-ignoring",
    ),
    pytest.param(
        "sum by (service) (rate(http_requests_total[5m])) / on(service) "
        "sum by (service) (rate(http_request_duration_seconds_count[5m]))",
        id="vector-on",
    ),
    pytest.param("vllm:num_requests_running > 20", id="filter-keeps-name"),
    pytest.param("vllm:num_requests_running > bool 20", id="bool-drops-name"),
    pytest.param("30 < vllm:num_requests_running", id="scalar-left-filter"),
    pytest.param("-vllm:num_requests_running + 1", id="negate"),
    pytest.param("http_requests_total and http_requests_total > 1000", id="and"),
    pytest.param('http_requests_total unless http_requests_total{status="500"}', id="unless"),
    pytest.param(
        "histogram_quantile(0.9, sum by (le, service) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
        id="ttft-p90-by-service",
    ),
    pytest.param("histogram_quantile(0.75, rate(skewed_latency_seconds_bucket[1m]))", id="quantile-monotonic-fix"),
    pytest.param("histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m]))", id="quantile-per-series"),
    pytest.param(
        f"sum(rate(http_request_duration_seconds_sum{{{CANARY}}}[5m])) / "
        f"sum(rate(http_request_duration_seconds_count{{{CANARY}}}[5m]))",
        id="mean-latency",
    ),
    pytest.param(
        f"sum(rate(http_requests_total{{{CANARY},status=~\"5..\"}}[5m])) / "
        f"clamp_min(sum(rate(http_requests_total{{{CANARY}}}[5m])), 0.001)",
        id="clamp-min-guard",
    ),
    pytest.param(f"scalar(sum(rate(http_requests_total{{{CANARY}}}[5m])))", id="scalar-fn"),
    pytest.param("vector(1) + 2", id="vector-literal"),
    pytest.param("2 * 3 > bool 5", id="scalar-bool"),
    pytest.param("max_over_time(vllm:num_requests_running[10m])", id="max-over-time"),
    pytest.param("last_over_time(vllm:num_requests_running[10m])", id="last-over-time-keeps-name"),
    # Queries Prometheus rejects at evaluation: ours must raise PromQLError.
    pytest.param("http_requests_total / ignoring(status) http_requests_total", id="error-many-to-many"),
    pytest.param(
        'rate({__name__=~"http_request_duration_seconds_count|llm_request_cost_dollars_total"}[5m])',
        id="error-dup-labelset",
    ),
]

_CANARY_PHASE = 0.25
INSTANTS_S = [
    -60.0,  # before any sample
    0.0,  # the first stable sample only
    300.0,  # rate window starts exactly on the first sample
    CANARY_START_S + _CANARY_PHASE,  # the first canary sample: one sample, no rate yet
    CANARY_START_S + 300 + _CANARY_PHASE,  # canary window starts exactly on its first sample
    1800.0,
    1800.0 + _CANARY_PHASE,
    2000.123,
    CANARY_QUIET_S[0] + 300 + _CANARY_PHASE,  # a whole window without canary traffic: 0/0
    CANARY_QUIET_S[1] + 60 + _CANARY_PHASE,  # traffic back within the window
    CANARY_RESTART_S + _CANARY_PHASE,  # the reset sample itself
    CANARY_RESTART_S + 30 + _CANARY_PHASE,  # a window holding the reset
    GAUGE_GAP_S[0] - SCRAPE_S + 300,  # gauge lookback ends exactly on the last stable sample
    GAUGE_GAP_S[0] - SCRAPE_S + 300 + _CANARY_PHASE,  # ... and on the last canary sample
    GAUGE_GAP_S[0] - SCRAPE_S + 300 + _CANARY_PHASE + 0.001,  # one millisecond too late
    DURATION_S - SCRAPE_S,  # the last stable sample
    DURATION_S - SCRAPE_S + 300,  # lookback edge after the end of the data
    DURATION_S - SCRAPE_S + 300.001,
    DURATION_S + 600,  # everything has gone stale
]


@pytest.fixture(scope="module")
def prometheus_with_store(tmp_path_factory):
    prometheus = require_program("prometheus")
    promtool = require_program("promtool")
    store = realistic_store()
    workdir = tmp_path_factory.mktemp("prometheus")
    data = backfill(store.to_openmetrics(), workdir, promtool=promtool)
    with prometheus_server(workdir, storage_dir=data, prometheus=prometheus) as base:
        yield base, store


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _rel_error(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


@pytest.mark.parametrize("promql", QUERIES)
def test_agrees_with_prometheus(prometheus_with_store, promql):
    base, store = prometheus_with_store
    problems = []
    worst = 0.0
    compared = 0
    errors = 0
    for offset_s in INSTANTS_S:
        at_s = T0_S + offset_s
        kind, expected = query(base, promql, at_s)
        where = f"at T0{offset_s:+.3f}s"
        if kind == "error":
            errors += 1
            with pytest.raises(PromQLError):
                instant_query(promql, store, at_s)
            continue
        got = instant_query(promql, store, at_s)
        if got.kind != kind:
            problems.append(f"{where}: kind {got.kind} != Prometheus {kind}")
            continue
        if kind == "scalar":
            compared += 1
            if not _same(got.scalar, expected):
                problems.append(f"{where}: {got.scalar!r} != Prometheus {expected!r}")
            worst = max(worst, _rel_error(got.scalar, expected))
            continue
        got_labels = [labels for labels, _ in got.vector]
        want_labels = [labels for labels, _ in expected]
        if got_labels != want_labels:
            problems.append(f"{where}: series {got_labels} != Prometheus {want_labels}")
            continue
        compared += 1 + len(expected)  # the label sets, then each value
        for (labels, a), (_, b) in zip(got.vector, expected):
            if not _same(a, b):
                problems.append(f"{where} {dict(labels)}: {a!r} != Prometheus {b!r}")
            worst = max(worst, _rel_error(a, b))
    print(
        f"{promql!r}: {len(INSTANTS_S)} instants, {compared} comparisons, {errors} errors, "
        f"max relative error {worst:.3g}"
    )
    assert not problems, "\n".join(problems)


def test_the_fixture_exercises_the_edges(prometheus_with_store):
    """The table must really contain NaN, empty and non-empty results, or it proves little."""
    base, _ = prometheus_with_store
    seen = {"nan": False, "empty": False, "value": False}
    for offset_s in INSTANTS_S:
        kind, result = query(base, ERROR_RATE, T0_S + offset_s)
        assert kind == "vector"
        if not result:
            seen["empty"] = True
        elif math.isnan(result[0][1]):
            seen["nan"] = True
        else:
            seen["value"] = True
    assert seen == {"nan": True, "empty": True, "value": True}


# Dense grids of instants, through /api/v1/query_range: every step is evaluated as an instant
# query, so this checks thousands of instants, including the irregular target whose gaps to
# the window edges cross the 1.1x extrapolation threshold.
RANGE_QUERIES = [
    pytest.param("rate(batch_jobs_total[1m])", id="flaky-rate-1m"),
    pytest.param("increase(batch_jobs_total[2m])", id="flaky-increase-2m"),
    pytest.param("irate(batch_jobs_total[1m])", id="flaky-irate"),
    pytest.param("delta(queue_depth[1m])", id="flaky-delta"),
    pytest.param("queue_depth", id="flaky-lookback"),
    pytest.param("avg_over_time(queue_depth[1m])", id="flaky-avg-over-time"),
    pytest.param(ERROR_RATE, id="error-rate"),
    pytest.param(P99_MS, id="p99-ms"),
    pytest.param("histogram_quantile(0.75, rate(skewed_latency_seconds_bucket[1m]))", id="quantile-monotonic-fix"),
]


@pytest.mark.parametrize("promql", RANGE_QUERIES)
def test_range_agrees_with_prometheus(prometheus_with_store, promql):
    base, store = prometheus_with_store
    start_s, end_s, step_s = T0_S - 60, T0_S + DURATION_S + 600, 7.919  # a step off the scrape grid
    expected = query_range(base, promql, start_s, end_s, step_s)
    got: dict = {}
    for i, result in enumerate(range_query(promql, store, start_s, end_s, step_s)):
        t_ms = round(start_s * 1000) + i * round(step_s * 1000)
        for labels, value in result.vector:
            got.setdefault(labels, {})[t_ms] = value
    assert sorted(got) == sorted(expected)
    problems = []
    worst = 0.0
    points = 0
    for labels, series in expected.items():
        assert sorted(got[labels]) == sorted(series), f"{dict(labels)}: different steps present"
        for t_ms, b in series.items():
            a = got[labels][t_ms]
            points += 1
            worst = max(worst, _rel_error(a, b))
            if not _same(a, b):
                problems.append(f"{dict(labels)} at {t_ms / 1000:.3f}: {a!r} != Prometheus {b!r}")
    print(f"{promql!r}: {points} points compared, max relative error {worst:.3g}")
    assert points > 100
    assert not problems, f"{len(problems)} of {points} differ:\n" + "\n".join(problems[:20])
