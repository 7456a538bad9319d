"""Prometheus's numeric kernels, ported from Prometheus 2.42 (``promql/functions.go`` and
``promql/quantile.go``), the version Debian ships and the agreement test runs against.

Each function takes one series' samples inside a window (``t_ms`` int64 milliseconds and
``v`` float64, as numpy arrays) and returns a float, or ``None`` where Prometheus drops the
series from the result. Arithmetic follows Prometheus's order of operations so that results
agree to the last bit or nearly so.
"""

from __future__ import annotations

import math

import numpy as np


def extrapolated_rate(
    t_ms: np.ndarray,
    v: np.ndarray,
    range_start_ms: int,
    range_end_ms: int,
    range_ms: int,
    *,
    is_counter: bool,
    is_rate: bool,
) -> float | None:
    """``rate`` (counter, per second), ``increase`` (counter) and ``delta`` (gauge).

    Prometheus 2.42's ``extrapolatedRate``: the change between the first and last sample
    (plus, for counters, the value before each reset), extrapolated towards the window's
    edges. An edge is reached only if the gap to it is under 1.1 times the average sample
    interval; otherwise half an interval is added, since the series probably starts or ends
    inside the window. A counter is never extrapolated below zero: the gap to the start is
    capped by the time at which the counter, at its observed slope, would have been zero.

    Prometheus 3 caps the start gap at half an interval before comparing it with the zero
    point; 2.42 compares first. We follow 2.42 because that is what the test runs against.
    """
    n = v.size
    if n < 2:
        return None
    first, last = float(v[0]), float(v[-1])
    result = last - first
    if is_counter:
        prev = v[:-1]
        drops = v[1:] < prev
        if drops.any():
            # Added one by one in time order, as Prometheus does, so rounding agrees.
            for before_reset in prev[drops].tolist():
                result += before_reset
    duration_to_start = (int(t_ms[0]) - range_start_ms) / 1000
    duration_to_end = (range_end_ms - int(t_ms[-1])) / 1000
    sampled_interval = (int(t_ms[-1]) - int(t_ms[0])) / 1000
    average_between_samples = sampled_interval / (n - 1)
    if is_counter and result > 0 and first >= 0:
        duration_to_zero = sampled_interval * (first / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average_between_samples * 1.1
    extrapolate_to = sampled_interval
    extrapolate_to += duration_to_start if duration_to_start < threshold else average_between_samples / 2
    extrapolate_to += duration_to_end if duration_to_end < threshold else average_between_samples / 2
    factor = extrapolate_to / sampled_interval
    if is_rate:
        factor /= range_ms / 1000
    return result * factor


def instant_rate(t_ms: np.ndarray, v: np.ndarray, *, is_rate: bool) -> float | None:
    """``irate`` and ``idelta``: from the last two samples only (2.42's ``instantValue``)."""
    if v.size < 2:
        return None
    last, previous = float(v[-1]), float(v[-2])
    if is_rate and last < previous:
        result = last  # a counter reset: the counter restarted from zero
    else:
        result = last - previous
    interval_ms = int(t_ms[-1]) - int(t_ms[-2])
    if interval_ms == 0:
        return None
    if is_rate:
        result /= interval_ms / 1000
    return result


def over_time(func: str, v: np.ndarray) -> float | None:
    """The ``<aggregation>_over_time`` family over one window's values."""
    if v.size == 0:
        return None
    if func == "count_over_time":
        return float(v.size)
    if func == "last_over_time":
        return float(v[-1])
    if func == "sum_over_time":
        return float(sum(v.tolist()))  # left-to-right, as Prometheus 2.42 adds
    if func == "avg_over_time":
        return incremental_mean(v.tolist())
    if func == "max_over_time":
        return float(np.fmax.reduce(v))  # NaN loses to any number, as in 2.42
    if func == "min_over_time":
        return float(np.fmin.reduce(v))
    raise ValueError(func)


def incremental_mean(values: list[float]) -> float:
    """Prometheus 2.42's running mean (``avg`` and ``avg_over_time``), Inf handling included."""
    mean = 0.0
    count = 0
    for x in values:
        count += 1
        if count == 1:
            mean = x
            continue
        if math.isinf(mean):
            if math.isinf(x) and (mean > 0) == (x > 0):
                continue
            if not math.isinf(x) and not math.isnan(x):
                continue
        mean += x / count - mean / count
    return mean


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus 2.42's ``bucketQuantile`` over (upper bound, cumulative count) pairs.

    - q < 0 gives -Inf, q > 1 gives +Inf, q NaN gives NaN;
    - buckets are sorted by upper bound; without a +Inf bucket the result is NaN;
    - buckets with the same bound are merged; counts are made monotonic (a scrape can catch
      buckets mid-update, and rate() then gives a lower count to a higher bucket);
    - fewer than two buckets, or no observations, give NaN;
    - a rank in the +Inf bucket gives the highest finite bound;
    - otherwise linear interpolation inside the bucket holding the rank, the first bucket
      starting at 0 (or returning its bound when that bound is <= 0).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or not (math.isinf(ordered[-1][0]) and ordered[-1][0] > 0):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    highest = -math.inf
    for b in merged:
        if b[1] > highest:
            highest = b[1]
        elif b[1] < highest:
            b[1] = highest
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # sort.Search over all but the +Inf bucket: the first bucket whose count reaches the rank.
    b = len(merged) - 1
    for i in range(len(merged) - 1):
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end, count = merged[b]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * (rank / count)
