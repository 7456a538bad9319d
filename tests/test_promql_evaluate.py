"""instant_query without Prometheus: tables of small stores, queries and expected results."""

import math

import numpy as np
import pytest

from sim.promql import PromQLError, SeriesStore, instant_query, parse_query, range_query

T = np.arange(0.0, 601.0, 15.0)  # 0 .. 600 s, 15-second scrapes


@pytest.fixture(scope="module")
def store():
    s = SeriesStore()
    s.declare("http_requests_total", "counter")
    for service, ok_rps, err_rps in (("ai-api-stable", 10.0, 0.01), ("ai-api-canary", 1.0, 0.02)):
        s.append("http_requests_total", {"service": service, "status": "200"}, T, ok_rps * T)
        s.append("http_requests_total", {"service": service, "status": "500"}, T, err_rps * T)
    s.append("http_requests_total", {"service": "ai-api-canary", "status": "503"}, T, 0.0 * T)
    for le, share in (("0.5", 0.5), ("1.0", 0.9), ("+Inf", 1.0)):
        s.append("lat_seconds_bucket", {"service": "ai-api-canary", "le": le}, T, share * T)
    s.append("vllm:num_requests_running", A, T, np.full(T.size, 3.0))
    s.append("vllm:num_requests_running", B, T, np.full(T.size, 7.0))
    s.append("idle_total", {"service": "ai-api-canary"}, T, np.full(T.size, 5.0))
    s.append("other_idle_total", {"service": "ai-api-canary"}, T, np.full(T.size, 5.0))
    s.append("sparse", {}, [100.0, 400.0], [1.0, 2.0])
    return s


A = {"pod": "a"}
B = {"pod": "b", "zone": "z1"}
B_NAMED = {"__name__": "vllm:num_requests_running", **B}


def run(store, q, at=600.0):
    r = instant_query(q, store, at)
    return r.scalar if r.kind == "scalar" else [(dict(lb), v) for lb, v in r.vector]


@pytest.mark.parametrize(
    "query, expected_pods",
    [
        pytest.param('vllm:num_requests_running{pod="a"}', ["a"], id="equal"),
        pytest.param('vllm:num_requests_running{pod!="a"}', ["b"], id="not-equal"),
        pytest.param('vllm:num_requests_running{pod=~"a|b"}', ["a", "b"], id="regex-alternation"),
        pytest.param('vllm:num_requests_running{pod=~"a.*"}', ["a"], id="regex-prefix"),
        pytest.param('vllm:num_requests_running{pod=~"."}', ["a", "b"], id="regex-any-one-char"),
        pytest.param('vllm:num_requests_running{pod=~"x|"}', [], id="regex-anchored-no-partial"),
        pytest.param('vllm:num_requests_running{pod!~"a"}', ["b"], id="not-regex"),
        pytest.param('vllm:num_requests_running{zone=""}', ["a"], id="missing-label-equals-empty"),
        pytest.param('vllm:num_requests_running{zone!=""}', ["b"], id="label-present"),
        pytest.param('vllm:num_requests_running{zone=~"z.*"}', ["b"], id="regex-on-missing-label"),
        pytest.param('{__name__=~"vllm:num_.*", pod="b"}', ["b"], id="name-regex-with-colon"),
        pytest.param('{__name__="vllm:num_requests_running"}', ["a", "b"], id="name-matcher"),
    ],
)
def test_label_matchers(store, query, expected_pods):
    assert [e[0]["pod"] for e in run(store, query)] == expected_pods


def test_regexes_are_fully_anchored(store):
    assert run(store, 'http_requests_total{service="ai-api-canary", status=~"5"}') == []
    assert len(run(store, 'http_requests_total{service="ai-api-canary", status=~"5.."}')) == 2


@pytest.mark.parametrize(
    "at, expected",
    [
        pytest.param(99.999, [], id="before-first-sample"),
        pytest.param(100.0, [1.0], id="on-the-sample"),
        pytest.param(399.999, [1.0], id="latest-before"),
        pytest.param(400.0 + 300.0, [2.0], id="lookback-edge-included"),
        pytest.param(400.001 + 300.0, [], id="past-lookback"),
    ],
)
def test_lookback(store, at, expected):
    assert instant_query("sparse", store, at).values() == expected


def test_lookback_delta_is_a_parameter(store):
    assert instant_query("sparse", store, 460.0, lookback_delta_s=60.0).values() == [2.0]
    assert instant_query("sparse", store, 460.001, lookback_delta_s=60.0).values() == []


def test_offset_and_at_modifier(store):
    assert instant_query("sparse offset 5m", store, 650.0).values() == [1.0]
    assert instant_query("sparse @ 450", store, 10_000.0).values() == [2.0]


@pytest.mark.parametrize(
    "query, expected",
    [
        pytest.param(
            'sum(rate(http_requests_total{service="ai-api-canary",status=~"5.."}[5m])) '
            '/ sum(rate(http_requests_total{service="ai-api-canary"}[5m]))',
            [({}, 0.02 / 1.02)],
            id="error-rate",
        ),
        pytest.param(
            'histogram_quantile(0.99, sum(rate(lat_seconds_bucket{service="ai-api-canary"}[5m])) by (le)) * 1000',
            [({}, 1000.0)],
            id="p99-in-inf-bucket-gives-highest-bound",
        ),
        pytest.param(
            'histogram_quantile(0.7, sum by (le) (rate(lat_seconds_bucket{service="ai-api-canary"}[5m])))',
            [({}, 0.5 + 0.5 * (0.2 / 0.4))],
            id="p70-interpolated",
        ),
        pytest.param(
            "sum by (service) (rate(http_requests_total[5m]))",
            [({"service": "ai-api-canary"}, 1.02), ({"service": "ai-api-stable"}, 10.01)],
            id="sum-by",
        ),
        pytest.param(
            'sum without (status) (rate(http_requests_total{status!="503"}[5m]))',
            [({"service": "ai-api-canary"}, 1.02), ({"service": "ai-api-stable"}, 10.01)],
            id="sum-without",
        ),
        pytest.param("count(http_requests_total)", [({}, 5.0)], id="count"),
        pytest.param("max(vllm:num_requests_running)", [({}, 7.0)], id="max"),
        pytest.param("min(vllm:num_requests_running)", [({}, 3.0)], id="min"),
        pytest.param("avg(vllm:num_requests_running)", [({}, 5.0)], id="avg"),
        pytest.param(
            'sum(rate(http_requests_total{status="404"}[5m])) or vector(0)', [({}, 0.0)], id="empty-or-vector0"
        ),
        pytest.param("sum(vllm:num_requests_running) or vector(0)", [({}, 10.0)], id="present-or-vector0"),
        pytest.param(
            "sum by (pod) (vllm:num_requests_running) or vector(0)",
            [({}, 0.0), (A, 3.0), ({"pod": "b"}, 7.0)],
            id="or-keeps-unmatched-labels",
        ),
        pytest.param(
            'rate(idle_total[5m]) / rate(idle_total[5m])', [({"service": "ai-api-canary"}, math.nan)], id="zero-by-zero"
        ),
        pytest.param(
            'rate(http_requests_total{service="ai-api-canary",status="500"}[5m]) '
            '/ ignoring(status) rate(http_requests_total{service="ai-api-canary",status="200"}[5m])',
            [({"service": "ai-api-canary"}, 0.02)],
            id="ignoring",
        ),
        pytest.param(
            'sum by (service) (rate(http_requests_total{status="500"}[5m])) '
            '/ on(service) sum by (service, status) (rate(http_requests_total{status="200"}[5m]))',
            [({"service": "ai-api-canary"}, 0.02), ({"service": "ai-api-stable"}, 0.001)],
            id="on",
        ),
        pytest.param("vllm:num_requests_running > 5", [(B_NAMED, 7.0)], id="filter-keeps-name"),
        pytest.param("vllm:num_requests_running > bool 5", [(A, 0.0), (B, 1.0)], id="bool-drops-name"),
        pytest.param("5 < vllm:num_requests_running", [(B_NAMED, 7.0)], id="scalar-left-keeps-vector-value"),
        pytest.param('vllm:num_requests_running{pod="a"} * 2', [(A, 6.0)], id="arithmetic-drops-name"),
        pytest.param('-vllm:num_requests_running{pod="a"}', [(A, -3.0)], id="negate-drops-name"),
        pytest.param('vllm:num_requests_running{pod="a"} / 0', [(A, math.inf)], id="divide-by-zero"),
        pytest.param('vllm:num_requests_running{pod="a"} % 2', [(A, 1.0)], id="modulo"),
        pytest.param('vllm:num_requests_running{pod="a"} ^ 2', [(A, 9.0)], id="power"),
        pytest.param("vllm:num_requests_running and vllm:num_requests_running > 5", [(B_NAMED, 7.0)], id="and"),
        pytest.param(
            'vllm:num_requests_running unless vllm:num_requests_running{pod="a"}', [(B_NAMED, 7.0)], id="unless"
        ),
        pytest.param("clamp_min(vllm:num_requests_running, 5)", [(A, 5.0), (B, 7.0)], id="clamp-min"),
        pytest.param("clamp_max(vllm:num_requests_running, 5)", [(A, 3.0), (B, 5.0)], id="clamp-max"),
        pytest.param("vector(2) * 3", [({}, 6.0)], id="vector-literal"),
        # Samples at 100 s and 400 s in [0, 600]: both gaps (100 s, 200 s) are under 1.1 x 300 s.
        pytest.param('increase(sparse[10m])', [({}, 1.0 * 600 / 300)], id="increase-sparse"),
        pytest.param('last_over_time(sparse[10m])', [({"__name__": "sparse"}, 2.0)], id="last-over-time-keeps-name"),
        pytest.param('sum(rate(nothing[5m]))', [], id="empty"),
    ],
)
def test_queries(store, query, expected):
    got = run(store, query)
    assert [lb for lb, _ in got] == [lb for lb, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize(
    "query, expected",
    [
        pytest.param("1 + 2 * 3", 7.0, id="precedence"),
        pytest.param("(1 + 2) * 3", 9.0, id="parentheses"),
        pytest.param("2 > bool 1", 1.0, id="scalar-bool"),
        pytest.param("scalar(sum(vllm:num_requests_running))", 10.0, id="scalar-of-one"),
        pytest.param("scalar(vllm:num_requests_running)", math.nan, id="scalar-of-two-is-nan"),
        pytest.param("time()", 600.0, id="time"),
        pytest.param("-Inf", -math.inf, id="minus-inf"),
        pytest.param("1 / 0", math.inf, id="scalar-divide-by-zero"),
    ],
)
def test_scalar_queries(store, query, expected):
    r = instant_query(query, store, 600.0)
    assert r.kind == "scalar"
    assert r.values() == [r.scalar]
    assert (math.isnan(expected) and math.isnan(r.scalar)) or r.scalar == expected


def test_values_is_argos_result(store):
    r = instant_query("vllm:num_requests_running", store, 600.0)
    assert r.values() == [3.0, 7.0]  # sorted by labels: pod a, then b
    assert instant_query("nothing", store, 600.0).values() == []


@pytest.mark.parametrize(
    "query, message",
    [
        pytest.param("sum(", "cannot parse", id="parse-error"),
        pytest.param("rate(x)", "cannot parse", id="type-error"),
        pytest.param("topk(3, x)", "topk", id="topk"),
        pytest.param('count_values("v", x)', "count_values", id="count-values"),
        pytest.param("rate(x[5m:1m])", "subquery", id="subquery"),
        pytest.param("x + on(a) group_left b", "group_left", id="group-left"),
        pytest.param('label_replace(x, "a", "b", "c", "d")', "label_replace", id="unsupported-function"),
        pytest.param("x[5m]", "range vector", id="range-vector-result"),
        pytest.param('"text"', "string", id="string-result"),
        pytest.param('x{a="1" or b="2"}', "'or' inside label matchers", id="or-matchers"),
        pytest.param("x" + " + x" * 1100, "at most 4096 characters", id="too-long"),
        pytest.param("(" * 200 + "x" + ")" * 200, "nests more than 128 levels", id="too-deep-parentheses"),
        pytest.param("x" + " + x" * 200, "nests more than 128 levels", id="too-deep-binary"),
        pytest.param("x @ -100", "@ modifier", id="at-before-1970"),
        pytest.param(
            "http_requests_total / ignoring(status) http_requests_total", "duplicate series", id="many-to-many"
        ),
        pytest.param(
            'rate({__name__=~".*idle_total"}[5m])',
            "same labelset",
            id="duplicate-labelset",
        ),
    ],
)
def test_errors_name_the_query_and_construct(store, query, message):
    with pytest.raises(PromQLError, match=message) as info:
        instant_query(query, store, 600.0)
    if message not in ("duplicate series",) and len(query) < 200:
        assert repr(query) in str(info.value)


def test_parse_is_cached_and_returns_the_same_tree():
    assert parse_query("sum(rate(x[5m]))") is parse_query("sum(rate(x[5m]))")


def test_range_query_matches_instant_queries(store):
    q = 'sum(rate(http_requests_total{service="ai-api-canary"}[5m]))'
    results = range_query(q, store, 300.0, 600.0, 60.0)
    assert len(results) == 6
    for i, r in enumerate(results):
        assert r == instant_query(q, store, 300.0 + 60.0 * i)


@pytest.mark.parametrize(
    "start, end, step, message",
    [
        pytest.param(0.0, 600.0, 0.0, "step_s must be positive", id="zero-step"),
        pytest.param(600.0, 0.0, 60.0, "before start_s", id="end-before-start"),
        pytest.param(0.0, 11_001.0, 1.0, "11,000 points", id="too-many-steps"),
    ],
)
def test_range_query_checks_its_grid(store, start, end, step, message):
    with pytest.raises(PromQLError, match=message):
        range_query("sparse", store, start, end, step)


@pytest.mark.parametrize("at", [math.nan, math.inf, "600"])
def test_bad_times_are_promql_errors(store, at):
    with pytest.raises(PromQLError):
        instant_query("sparse", store, at)


def test_appends_after_a_query_are_seen(store):
    s = SeriesStore()
    s.append("g", {}, 0.0, 1.0)
    assert instant_query("g", s, 10.0).values() == [1.0]
    s.append("g", {}, 5.0, 2.0)
    s.append("g", {"new": "series"}, 5.0, 3.0)
    assert instant_query("g", s, 10.0).values() == [2.0, 3.0]
