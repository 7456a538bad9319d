"""How long the load generator takes between an answer and its next request, measured here.

A closed-loop client (``vllm bench serve --max-concurrency``) sends its next request when it
has the last chunk of its previous answer. On a real machine that takes it a while: its event
loop is busy reading other streams, then it stamps and writes the new request. A fixed-length
closed loop is very sensitive to that time (docs/emulator.md, "Under load"), and the emulator
cannot see inside the client, but it can see the client's *turnaround* on a kept-alive
connection: from the end of one response to the start of the next request on the same
connection (clients such as aiohttp reuse a connection for the next request).

``servelab:emulator_client_turnaround_seconds`` is a histogram of it. Its mean is what
``servelab bench serve --client-turnaround-ms`` takes to simulate the same client, so that
what the client measures can be compared with what the simulator predicts for that client.

Connections are keyed by the client's address and port. A gap longer than ``MAX_GAP_S`` is not
counted: a connection idle that long belongs to a client that paused (vLLM's client between its
test prompt and its main run: 2 to 5 s here), not to a closed loop waiting on its own event
loop, and one such gap would move the mean by more than the loop's reaction itself.
"""

from __future__ import annotations

from collections import OrderedDict

from prometheus_client.core import HistogramMetricFamily

from lab.server.buckets import BucketCounts

TURNAROUND_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5)
MAX_GAP_S = 1.0


class TurnaroundMonitor(BucketCounts):
    def __init__(self) -> None:
        super().__init__(TURNAROUND_BUCKETS_S)
        self._ended: OrderedDict[object, float] = OrderedDict()  # connection -> its last response's end

    def request_started(self, connection, now_s: float) -> None:
        """A request starts on ``connection``: observe the time since its previous response ended."""
        if connection is None:
            return
        ended = self._ended.pop(connection, None)
        if ended is not None and now_s - ended <= MAX_GAP_S:
            self.add(max(now_s - ended, 0.0))

    def response_ended(self, connection, now_s: float) -> None:
        """The response on ``connection`` has sent its last byte."""
        if connection is None:
            return
        self._ended[connection] = now_s
        self._ended.move_to_end(connection)
        while self._ended:  # oldest first: forget the connections idle too long to count
            oldest, at = next(iter(self._ended.items()))
            if now_s - at <= MAX_GAP_S:
                break
            del self._ended[oldest]

    def metric_family(self) -> HistogramMetricFamily:
        return self.family(
            "servelab:emulator_client_turnaround_seconds",
            "Time from the end of a response to the next request on the same connection: the load "
            "generator's own turnaround (servelab bench serve --client-turnaround-ms), in seconds.")
