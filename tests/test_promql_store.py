"""SeriesStore: appends, ordering, errors and the OpenMetrics export that promtool backfills."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.errors import ServeLabError
from sim.promql import SeriesStore, SeriesStoreError


def test_scalar_and_array_appends_join_in_time_order():
    store = SeriesStore()
    store.append("x", {"b": "2", "a": "1"}, 1.0, 10.0)
    store.append("x", {"a": "1", "b": "2"}, [2.0, 3.0], np.array([20.0, 30.0]))
    store.append("x", {"a": "1", "b": "2"}, 4.5, 45.0)
    (series,) = list(store.series("x"))
    assert series.labels == (("a", "1"), ("b", "2"))
    assert series.t_s.tolist() == [1.0, 2.0, 3.0, 4.5]
    assert series.values.tolist() == [10.0, 20.0, 30.0, 45.0]
    with pytest.raises(ValueError):
        series.values[0] = 1.0  # read-only view


def test_series_are_listed_by_name_then_labels():
    store = SeriesStore()
    store.append("b", {"k": "2"}, 0, 0)
    store.append("b", {"k": "1"}, 0, 0)
    store.append("a", {}, 0, 0)
    assert [(s.name, s.labels) for s in store.series()] == [("a", ()), ("b", (("k", "1"),)), ("b", (("k", "2"),))]
    assert list(store.series("missing")) == []


def test_times_are_kept_to_the_millisecond():
    store = SeriesStore()
    store.append("x", {}, [0.0001, 1.2344], [1, 2])
    assert next(store.series("x")).t_s.tolist() == [0.0, 1.234]


@pytest.mark.parametrize(
    "first, second, message",
    [
        pytest.param(([1.0, 1.0], [1, 2]), None, "strictly increasing", id="repeat-in-call"),
        pytest.param(([2.0, 1.0], [1, 2]), None, "strictly increasing", id="backwards-in-call"),
        pytest.param(([1.0, 1.0004], [1, 2]), None, "millisecond", id="same-millisecond"),
        pytest.param((5.0, 1), (5.0, 2), "after the last sample", id="repeat-across-calls"),
        pytest.param((5.0, 1), (4.0, 2), "after the last sample", id="backwards-across-calls"),
        pytest.param(([1.0, 2.0], [1.0]), None, "equal-length", id="length-mismatch"),
        pytest.param(([[1.0]], [[1.0]]), None, "1-D", id="two-dimensional"),
        pytest.param((float("nan"), 1.0), None, "finite", id="nan-time"),
        pytest.param((1e16, 1.0), None, "int64", id="time-overflows-int64-ms"),
        pytest.param((5.0, 1.0), (5.0004, 2.0), "after the last sample", id="scalar-same-millisecond"),
    ],
)
def test_bad_appends_raise_value_errors_naming_the_series(first, second, message):
    store = SeriesStore()
    with pytest.raises(SeriesStoreError, match=message) as info:
        store.append("http_requests_total", {"service": "a"}, *first)
        if second is not None:
            store.append("http_requests_total", {"service": "a"}, *second)
    assert 'http_requests_total{service="a"}' in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ServeLabError)


@pytest.mark.parametrize(
    "name, labels",
    [
        pytest.param("1x", {}, id="name-starts-with-digit"),
        pytest.param("a-b", {}, id="name-with-dash"),
        pytest.param("x", {"__name__": "y"}, id="reserved-label"),
        pytest.param("x", {"a.b": "1"}, id="bad-label-name"),
        pytest.param("x", {"a": ""}, id="empty-label-value"),
        pytest.param("x", {"a": 1}, id="non-string-label-value"),
    ],
)
def test_bad_names_are_refused(name, labels):
    with pytest.raises(SeriesStoreError):
        SeriesStore().append(name, labels, 0.0, 1.0)


def test_declare_checks_type_and_name():
    store = SeriesStore()
    with pytest.raises(SeriesStoreError, match="type must be one of"):
        store.declare("x", "timer")  # type: ignore[arg-type]
    with pytest.raises(SeriesStoreError, match="does not match"):
        store.declare("x y", "gauge")


def test_openmetrics_groups_families_and_formats_values():
    store = SeriesStore()
    store.declare("http_requests_total", "counter", "Requests.\nBy status.")
    store.declare("lat_seconds", "histogram")
    store.declare("vllm:num_requests_running", "gauge")
    store.append("http_requests_total", {"status": "200"}, [10.0, 25.5], [1.0, 2.0])
    store.append("lat_seconds_bucket", {"le": "+Inf"}, 10.0, 3.0)
    store.append("lat_seconds_count", {}, 10.0, 3.0)
    store.append("lat_seconds_sum", {}, 10.0, 0.5)
    store.append("vllm:num_requests_running", {"path": 'a"b\\c\nd'}, 10.0, float("nan"))
    store.append("other", {}, -1.5, float("-inf"))
    text = store.to_openmetrics()
    assert text.splitlines() == [
        "# HELP http_requests Requests.\\nBy status.",
        "# TYPE http_requests counter",
        'http_requests_total{status="200"} 1.0 10',
        'http_requests_total{status="200"} 2.0 25.500',
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="+Inf"} 3.0 10',
        "lat_seconds_count 3.0 10",
        "lat_seconds_sum 0.5 10",
        "# TYPE other unknown",
        "other -Inf -1.500",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{path="a\\"b\\\\c\\nd"} NaN 10',
        "# EOF",
    ]
    assert text.endswith("# EOF\n")


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), min_size=1, max_size=20))
def test_scalar_and_array_appends_interleave_exactly(plan):
    """Any mix of one-sample and array appends gives the same series as one array append."""
    store = SeriesStore()
    t_all: list[float] = []
    t = 0.0
    for as_scalar, n in plan:
        times = [t + 1.5 * (i + 1) for i in range(n if not as_scalar else 1)]
        t = times[-1]
        t_all.extend(times)
        if as_scalar:
            store.append("x", {"k": "v"}, times[0], times[0] * 2)
        else:
            store.append("x", {"k": "v"}, np.array(times), np.array(times) * 2)
        if len(t_all) % 3 == 0:
            list(store.series("x"))  # reads between appends must not lose pending samples
    (series,) = list(store.series("x"))
    assert series.t_s.tolist() == t_all
    assert series.values.tolist() == [x * 2 for x in t_all]
