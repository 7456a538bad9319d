"""The waiting queue: first come first served, or by (priority, arrival) as vLLM's ``priority`` policy."""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from sim.request import Request


class FCFSQueue:
    def __init__(self) -> None:
        self._q: deque[Request] = deque()

    def add(self, request: Request) -> None:
        self._q.append(request)

    def prepend(self, request: Request) -> None:
        """A preempted request goes back to the front."""
        self._q.appendleft(request)

    def peek(self) -> Request:
        return self._q[0]

    def pop(self) -> Request:
        return self._q.popleft()

    def remove(self, request: Request) -> None:
        self._q.remove(request)

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return iter(self._q)


class PriorityQueue:
    """Lowest ``(priority, arrival_s, request_id)`` first, as vLLM's ``Request.__lt__``: ties in
    priority and arrival (the samples of one request arrive together) go by request id."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, str, int, Request]] = []
        self._counter = itertools.count()

    def add(self, request: Request) -> None:
        entry = (request.priority, request.arrival_s, request.request_id, next(self._counter), request)
        heapq.heappush(self._heap, entry)

    prepend = add  # position is decided by priority, not by insertion

    def peek(self) -> Request:
        return self._heap[0][4]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[4]

    def remove(self, request: Request) -> None:
        self._heap = [e for e in self._heap if e[4] is not request]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self):
        return (e[4] for e in sorted(self._heap, key=lambda e: e[:4]))
