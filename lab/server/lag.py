"""How far the emulator runs behind its simulated timeline, exported and logged.

Every token has a due time: when the simulation says it leaves the server. Its *lag* is how
much later the server actually hands it to the connection (``writer's clock - due time``), so
it includes a driver that came late to a step, a writer task that waited for the CPU, and a
batch of chunks written together. Near zero, clients see the simulator's latencies; large, they
see this machine's CPU, and the emulator says so:

- ``servelab:emulator_lag_seconds``, a histogram of every token's lag (the buckets below);
- a warning in the log when a token is later than the threshold (``--lag-threshold-ms``, 10 ms
  by default: the issue's target for p99), at most once per ``WARN_EVERY_S``, with the worst
  lag and the share of late tokens since the last warning; a window with late tokens is
  reported at the first token after ``WARN_EVERY_S``, late or not, and the server's summary at
  stop counts them all.

Observing is a bisect and three additions (lab/server/buckets.py): it runs for every token, so
it stays cheap.
"""

from __future__ import annotations

import logging

from prometheus_client.core import HistogramMetricFamily

from lab.server.buckets import BucketCounts

log = logging.getLogger("servelab.serve")

# Fine where the target lives (1 to 20 ms), then coarse out to seconds.
LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WARN_EVERY_S = 10.0


class LagMonitor(BucketCounts):
    def __init__(self, threshold_s: float = 0.010) -> None:
        super().__init__(LAG_BUCKETS_S)
        self.threshold_s = threshold_s
        self.max_s = 0.0
        self.late_count = 0  # tokens later than the threshold, since start
        self._window_late = 0
        self._window_count = 0
        self._window_max_s = 0.0
        self._last_warn_s = float("-inf")

    def observe(self, lag_s: float, now_s: float) -> None:
        if lag_s < 0.0:
            lag_s = 0.0  # never early: a token is not released before it is due
        self.add(lag_s)
        self._window_count += 1
        if lag_s > self.max_s:
            self.max_s = lag_s
        if lag_s > self.threshold_s:
            self.late_count += 1
            self._window_late += 1
            if lag_s > self._window_max_s:
                self._window_max_s = lag_s
        # Checked on every token, late or not: a window with late tokens is reported once
        # WARN_EVERY_S has passed even if the tokens after it are on time again. (Checked on late
        # tokens only, the first late token of a burst reported the quiet window before it, "1 of
        # 6451 late", and the burst itself waited for the next late token, which may never come.)
        if self._window_late and now_s - self._last_warn_s >= WARN_EVERY_S:
            self._warn(now_s)

    def _warn(self, now_s: float) -> None:
        log.warning(
            "The emulator is running behind its simulated timeline: a token left %.1f ms late "
            "(threshold %.1f ms); %d of %d tokens since the last report were late. This machine "
            "cannot keep up with the load: clients now measure its CPU, not the simulated GPU. "
            "See servelab:emulator_lag_seconds on /metrics.",
            1000 * self._window_max_s, 1000 * self.threshold_s, self._window_late, self._window_count)
        self._last_warn_s = now_s
        self._window_late = self._window_count = 0
        self._window_max_s = 0.0

    def metric_family(self) -> HistogramMetricFamily:
        return self.family("servelab:emulator_lag_seconds",
                           "How late each token left the server after its simulated time, in seconds.")
