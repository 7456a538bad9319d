"""A histogram kept by hand: values counted into fixed buckets, with their sum.

The emulator's own histograms (a token's lag, a client's turnaround) are observed on hot paths
(every token, every request), so observing is a bisect and three additions, and Prometheus
reads them through a collector (:meth:`BucketCounts.family`) at scrape time.
"""

from __future__ import annotations

import bisect

from prometheus_client.core import HistogramMetricFamily


class BucketCounts:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # upper bounds, ascending; a last bucket, +Inf, holds the rest
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum_s = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.count += 1
        self.sum_s += value

    @property
    def mean_s(self) -> float:
        return self.sum_s / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """``histogram_quantile``'s estimate (linear inside a bucket), for summaries and tests."""
        if self.count == 0:
            return float("nan")
        rank = q * self.count
        seen = 0
        lower = 0.0
        for i, c in enumerate(self.counts):
            upper = self.bounds[i] if i < len(self.bounds) else float("inf")
            if seen + c >= rank and c > 0:
                if upper == float("inf"):
                    return lower
                return lower + (upper - lower) * (rank - seen) / c
            seen += c
            lower = upper
        return lower

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        h = HistogramMetricFamily(name, doc)
        cumulative, buckets = 0, []
        for i, c in enumerate(self.counts):
            cumulative += c
            buckets.append((repr(self.bounds[i]) if i < len(self.bounds) else "+Inf", cumulative))
        h.add_metric([], buckets, self.sum_s)
        return h
