"""Prometheus's numeric kernels, checked against values worked out by hand from functions.go."""

import math

import numpy as np
import pytest

from sim.promql.functions import bucket_quantile, extrapolated_rate, incremental_mean, instant_rate

INF = math.inf


def _rate(t_s, v, window=(0, 300), *, counter=True, rate=False):
    t_ms = np.array([round(x * 1000) for x in t_s], dtype=np.int64)
    start_ms, end_ms = window[0] * 1000, window[1] * 1000
    return extrapolated_rate(
        t_ms, np.array(v, float), start_ms, end_ms, end_ms - start_ms, is_counter=counter, is_rate=rate
    )


T_EDGES = np.arange(0, 301, 15.0)  # a sample on both window edges
T_INNER = np.arange(15, 286, 15.0)  # 15 s from each edge: under 1.1 x 15 s
T_GAPPED = np.arange(30, 271, 15.0)  # 30 s from each edge: over the threshold


@pytest.mark.parametrize(
    "t_s, v, kwargs, expected",
    [
        pytest.param(T_EDGES, T_EDGES, {}, 300.0, id="edges-covered-no-extrapolation"),
        pytest.param(T_EDGES, T_EDGES, {"rate": True}, 1.0, id="rate-per-second"),
        # 270 s observed, 15 s to each edge (< 16.5 s): extrapolated to the full 300 s.
        pytest.param(T_INNER, T_INNER + 1000, {}, 300.0, id="extrapolate-to-both-edges"),
        # First value 5 at slope 1/s: the counter was 0 five seconds before, not 15.
        pytest.param(T_INNER, T_INNER - 10, {}, 290.0, id="zero-point-caps-start"),
        # 30 s to each edge (>= 16.5 s): only half an interval (7.5 s) is added on each side.
        pytest.param(T_GAPPED, T_GAPPED + 1000, {}, 255.0, id="gaps-past-threshold-add-half-interval"),
        # Reset from 20 to 5: 15 - 10 + 20 = 25; zero point 120 s before is beyond the edge.
        pytest.param([0, 100, 200, 300], [10, 20, 5, 15], {}, 25.0, id="counter-reset"),
        pytest.param([0, 100, 200, 300], [10, 20, 5, 15], {"counter": False}, 5.0, id="delta-ignores-resets"),
        # Gauges may go negative: no zero-point cap for delta.
        pytest.param(T_INNER, T_INNER - 10, {"counter": False}, 300.0, id="delta-no-zero-cap"),
        pytest.param([0, 300], [5, 5], {}, 0.0, id="flat"),
        # One 100 s interval: 100 s gaps are under 110 s, so both edges are reached ...
        pytest.param([100, 200], [1000, 1100], {}, 300.0, id="two-samples-reach-both-edges"),
        # ... unless the counter started at 0 on the first sample: then nothing before it.
        pytest.param([100, 200], [0, 100], {}, 200.0, id="two-samples-zero-start"),
    ],
)
def test_extrapolated_rate(t_s, v, kwargs, expected):
    assert _rate(t_s, v, **kwargs) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t_s, v", [pytest.param([], [], id="empty"), pytest.param([10], [1], id="one-sample")])
def test_rate_needs_two_samples(t_s, v):
    assert _rate(t_s, v) is None


@pytest.mark.parametrize(
    "t_s, v, is_rate, expected",
    [
        pytest.param([0, 15, 30], [0, 10, 40], True, 2.0, id="irate"),
        pytest.param([0, 15, 30], [0, 40, 10], True, 10 / 15, id="irate-after-reset"),
        pytest.param([0, 15, 30], [0, 40, 10], False, -30.0, id="idelta"),
        pytest.param([0], [1], True, None, id="one-sample"),
    ],
)
def test_instant_rate(t_s, v, is_rate, expected):
    t_ms = np.array([x * 1000 for x in t_s], dtype=np.int64)
    got = instant_rate(t_ms, np.array(v, float), is_rate=is_rate)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "q, buckets, expected",
    [
        pytest.param(0.5, [(0.1, 10), (0.5, 20), (INF, 20)], 0.1, id="rank-on-bucket-edge"),
        pytest.param(0.75, [(0.1, 10), (0.5, 20), (INF, 20)], 0.3, id="interpolate-inside-bucket"),
        pytest.param(0.25, [(0.1, 10), (0.5, 20), (INF, 20)], 0.05, id="first-bucket-starts-at-zero"),
        pytest.param(0.9, [(1.0, 5), (INF, 10)], 1.0, id="rank-in-inf-bucket-gives-highest-bound"),
        pytest.param(0.2, [(-1.0, 5), (INF, 10)], -1.0, id="first-bound-not-positive"),
        pytest.param(0.75, [(INF, 20), (0.5, 20), (0.1, 10)], 0.3, id="unsorted-input"),
        pytest.param(0.5, [(0.1, 5), (0.1, 5), (INF, 10)], 0.05, id="duplicate-bounds-merged"),
        # Counts 10, 8, 20: the 0.2 bucket is lifted to 10, so rank 12 falls in (0.2, 0.5].
        pytest.param(0.6, [(0.1, 10), (0.2, 8), (0.5, 20), (INF, 20)], 0.26, id="monotonicity-fix"),
        pytest.param(0.5, [(0.1, 10), (0.5, 20)], math.nan, id="no-inf-bucket"),
        pytest.param(0.5, [(0.1, 0), (INF, 0)], math.nan, id="no-observations"),
        pytest.param(0.5, [(INF, 10)], math.nan, id="only-inf-bucket"),
        pytest.param(0.5, [], math.nan, id="no-buckets"),
        pytest.param(-0.1, [(0.1, 10), (INF, 10)], -INF, id="q-below-zero"),
        pytest.param(1.1, [(0.1, 10), (INF, 10)], INF, id="q-above-one"),
        pytest.param(math.nan, [(0.1, 10), (INF, 10)], math.nan, id="q-nan"),
    ],
)
def test_bucket_quantile(q, buckets, expected):
    got = bucket_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "values, expected",
    [
        pytest.param([1.0, 2.0, 3.0], 2.0, id="plain"),
        pytest.param([INF, 1.0], INF, id="inf-then-number"),
        pytest.param([INF, INF], INF, id="same-sign-infs"),
        pytest.param([INF, -INF], math.nan, id="opposite-infs"),
        pytest.param([1.0, math.nan], math.nan, id="nan"),
    ],
)
def test_incremental_mean(values, expected):
    got = incremental_mean(values)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
