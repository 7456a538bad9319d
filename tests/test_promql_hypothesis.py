"""Property tests: the parser wrapper and the evaluator never fail with anything but PromQLError."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.promql import PromQLError, SeriesStore, instant_query, parse_query

NAMES = ["req_total", "lat_seconds_bucket", "gauge", "vllm:num_requests_running"]
LABEL_NAMES = ["service", "status", "le"]
LABEL_VALUES = ["a", "b", "200", "500", "0.1", "1", "+Inf", "x y"]


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_parse_gives_a_tree_or_promql_error(text):
    try:
        parse_query(text)
    except PromQLError:
        pass


PROMQL_ALPHABET = st.sampled_from(
    list("abcxyz_:{}[]()=!~\"',.+-*/%^<>@ 0123456789") + ["sum", "rate", "by", "on", "bool", "or", "5m", "offset"]
)


@given(st.lists(PROMQL_ALPHABET, max_size=30).map("".join))
@settings(max_examples=200, deadline=None)
def test_parse_promql_looking_noise(text):
    try:
        parse_query(text)
    except PromQLError:
        pass


# -- a grammar of the supported subset -----------------------------------------------------------

matcher = st.builds(
    lambda name, op, value: f'{name}{op}"{value}"',
    st.sampled_from(LABEL_NAMES),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from(LABEL_VALUES + ["5..", "a|b", ".*", ".+", "(", "[0-9]+"]),
)
selector = st.builds(
    lambda name, ms, off: name + ("{" + ",".join(ms) + "}" if ms else "") + off,
    st.sampled_from(NAMES),
    st.lists(matcher, max_size=2),
    st.sampled_from(["", "", " offset 1m", " @ 100"]),
)
range_selector = st.builds(
    lambda sel, d: f"{sel.split(' offset')[0].split(' @')[0]}[{d}]", selector, st.sampled_from(["15s", "1m", "5m"])
)
number = st.sampled_from(["0", "1", "0.5", "0.99", "-1", "1000", "NaN", "Inf", "1e-9"])
scalar_expr = st.deferred(
    lambda: number
    | st.builds(lambda v: f"scalar({v})", vector_expr)
    | st.just("time()")
    | st.builds(lambda a, op, b: f"({a}) {op} ({b})", scalar_expr, st.sampled_from(list("+-*/%^")), scalar_expr)
)
grouping = st.builds(
    lambda kind, labels: f" {kind} ({', '.join(labels)})" if kind else "",
    st.sampled_from(["", "by", "without"]),
    st.lists(st.sampled_from(LABEL_NAMES), max_size=2, unique=True),
)
binop = st.sampled_from(["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "> bool", "< bool"])
matching = st.sampled_from(["", " on(service)", " ignoring(status)", " on()", " ignoring(le, status)"])
vector_expr = st.deferred(
    lambda: selector
    | st.builds(
        lambda f, r: f"{f}({r})",
        st.sampled_from(
            ["rate", "irate", "increase", "delta", "idelta", "avg_over_time", "max_over_time", "count_over_time"]
        ),
        range_selector,
    )
    | st.builds(
        lambda agg, g, v: f"{agg}{g} ({v})", st.sampled_from(["sum", "avg", "max", "min", "count"]), grouping, vector_expr
    )
    | st.builds(lambda a, op, m, b: f"({a}) {op}{m} ({b})", vector_expr, binop, matching, vector_expr)
    | st.builds(lambda a, op, s: f"({a}) {op} ({s})", vector_expr, binop, scalar_expr)
    | st.builds(lambda s, op, a: f"({s}) {op} ({a})", scalar_expr, binop, vector_expr)
    | st.builds(lambda a, op, b: f"({a}) {op} ({b})", vector_expr, st.sampled_from(["or", "and", "unless"]), vector_expr)
    | st.builds(lambda q, v: f"histogram_quantile({q}, {v})", number, vector_expr)
    | st.builds(lambda f, v, s: f"{f}({v}, {s})", st.sampled_from(["clamp_min", "clamp_max"]), vector_expr, number)
    | st.builds(lambda s: f"vector({s})", scalar_expr)
    | st.builds(lambda v: f"-({v})", vector_expr)
)

series_values = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-10, max_value=1000),
        st.integers(0, 100).map(float),
    ),
    min_size=1,
    max_size=30,
)


@st.composite
def stores(draw):
    store = SeriesStore()
    # One series of every name, then a few more: most queries then select something.
    names = NAMES + draw(st.lists(st.sampled_from(NAMES), max_size=4))
    for name in names:
        keys = draw(st.lists(st.sampled_from(LABEL_NAMES), max_size=3, unique=True))
        labels = {k: draw(st.sampled_from(LABEL_VALUES)) for k in keys}
        values = draw(series_values)
        if not values:
            continue
        gaps_ms = draw(st.lists(st.integers(1, 30_000), min_size=len(values), max_size=len(values)))
        t_s = np.cumsum(gaps_ms) / 1000.0
        try:
            store.append(name, labels, t_s, values)
        except ValueError:
            pass  # the same series drawn twice with earlier times: the store refuses it, as it should
    return store


@given(stores(), st.one_of(vector_expr, scalar_expr), st.data())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_supported_grammar_never_crashes(store, query, data):
    first_s = min((float(s.t_s[0]) for s in store.series()), default=0.0)
    last_s = max((float(s.t_s[-1]) for s in store.series()), default=0.0)
    at_s = data.draw(st.floats(min_value=first_s, max_value=last_s + 400.0), label="at_s")
    try:
        result = instant_query(query, store, at_s)
    except PromQLError:
        return
    assert result.kind in ("vector", "scalar")
    if result.kind == "scalar":
        assert isinstance(result.scalar, float)
        return
    label_sets = [labels for labels, _ in result.vector]
    assert label_sets == sorted(label_sets), "vector must be sorted by labels"
    assert len(set(label_sets)) == len(label_sets), "labels must be unique"
    for labels, value in result.vector:
        assert isinstance(value, float)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels)
    assert all(isinstance(v, float) or math.isnan(v) for v in result.values())
