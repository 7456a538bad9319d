"""The lazy scheduler for models with sliding-window layers (several KV cache groups).

:class:`~sim.sched.lazy.LazyDecodeScheduler` parks steady decodes and takes their blocks
anonymously: with one block table a request, every block a decode takes is alike. With KV cache
groups (:mod:`sim.kv.hybrid`) that no longer holds: a sliding group gives back a *particular*
block (cached under the request's own tokens) each time the request's window slides past a block
boundary, and where that block lands in the free queue decides what is evicted later. So this
subclass keeps every parked request's block tables exact, by doing its KV work at the very step
the reference scheduler would, in the same order, with the same calls.

The reference (:meth:`Scheduler._schedule_running`) calls ``allocate_slots`` for a decode that
has computed ``c`` tokens only when something happens to its blocks:

- ``c % block_size == 0``: the token opens a new block (one from the pool per group);
- ``(c + 1) % block_size == 0``: the token fills a block, which is cached (in every group);
- ``c >= window_moves_at``: a block left a sliding window and is freed.

Each parked request is filed under the next step at which one of these holds (``_events``).
At that step its counters are brought up to the step (:meth:`_advance`, O(1), it stays parked)
and ``allocate_slots(request, 1)`` is called exactly as the reference calls it; the requests due
at one step go in running order, interleaved with the step's active requests. Between those
steps a parked request costs nothing. So the pool sees the same calls in the same order as with
the reference scheduler: the block ids, the free queue and the prefix cache are the same, not
only alike.

Exactness of the shortcuts, beyond the base class's:

- A step's blocks are checked before any is taken, counting every group's block for each
  request that opens one and none of the blocks the step's windows give back; when they might
  not all be free, the reference loop decides the step (it preempts as vLLM does).
- A run of identical steps stops before the free blocks could run short (the same count).
- When the waiting queue's head was held back only by free blocks, a run also stops before the
  first step in which a window may give a block back, or an allocation would evict a cached
  block: from then on the head may fit. (Until then it cannot: the free count only falls, and
  its prefix hits stay as they were, since decodes cache only blocks of their own output.)
"""

from __future__ import annotations

import heapq

import numpy as np

from sim.kv.hybrid import HybridKVCacheManager
from sim.request import Request, RequestStatus
from sim.sched.lazy import LazyDecodeScheduler, _run_seq
from sim.sched.scheduler import SchedulerLimits, SchedulerOutput


class HybridLazyScheduler(LazyDecodeScheduler):
    def __init__(self, limits: SchedulerLimits, kv: HybridKVCacheManager) -> None:
        super().__init__(limits, kv)
        self.num_groups = len(kv.tables)  # blocks a request takes when it opens a new one
        self._events: dict[int, list[Request]] = {}  # step -> parked requests with KV work then
        self._event_step: dict[str, int] = {}  # request id -> its filed step (older filings are stale)
        self._window_steps: list[int] = []  # heap: steps at which a parked request's window may move
        self._window_noted: dict[str, int] = {}  # request id -> its last step pushed there

    # --- the KV work of parked requests ---
    def _advance(self, request: Request, step: int) -> None:
        """Bring a parked request's counters to the start of ``step``; it stays parked."""
        k = step - request.lazy_step
        if k > 0:
            request.record_token_steps(request.lazy_step, step - 1)
            request.num_computed_tokens += k
            request.num_tokens += k
            request.num_output_tokens += k
            request.lazy_step = step

    def _file_next_event(self, request: Request, first: int) -> None:
        """File a parked request (counters at ``request.lazy_step``) under the first step from
        ``first`` on at which the reference would call the KV manager for it, and note when its
        window moves next."""
        bs = self.kv.block_size
        c = request.num_computed_tokens + (first - request.lazy_step)  # computed at step `first`
        moves_at = self.kv.window_moves_at.get(request.request_id, 1 << 62)
        to_window = max(moves_at - c, 0)
        step = first + min((bs - 1 - c) % bs, (-c) % bs, to_window)
        last = self._last_step(request)
        if step > last:
            return
        self._event_step[request.request_id] = step
        bucket = self._events.get(step)
        if bucket is None:
            self._events[step] = [request]
        else:
            bucket.append(request)
        window_step = first + to_window
        if window_step <= last and self._window_noted.get(request.request_id) != window_step:
            self._window_noted[request.request_id] = window_step
            heapq.heappush(self._window_steps, window_step)

    def _due(self, step: int) -> list[Request]:
        """The parked requests with KV work at ``step``, in running order."""
        bucket = self._events.pop(step, None)
        if not bucket:
            return []
        due = [r for r in bucket if r.lazy_step >= 0 and self._event_step.get(r.request_id) == step]
        due.sort(key=_run_seq)
        return due

    def _kv_event(self, request: Request, step: int) -> bool:
        """The reference's ``allocate_slots`` call for a parked decode at ``step``; False if its
        new blocks do not fit (it is filed again after its retry)."""
        self._advance(request, step)
        if self.kv.allocate_slots(request, 1) is None:
            return False
        self._file_next_event(request, step + 1)
        return True

    def _settle(self, last_step: int) -> None:
        """Do the KV work of parked requests in the steps up to ``last_step``."""
        for step in range(self._settled + 1, last_step + 1):
            for request in self._due(step):
                if not self._kv_event(request, step):
                    raise AssertionError(f"{request}: its blocks were counted free at step {step}")
        if last_step > self._settled:
            self._settled = last_step

    def skip(self, extra_steps: int) -> np.ndarray:
        """As :meth:`LazyDecodeScheduler.skip`; here parked requests also free the blocks that
        leave their sliding windows, so the usage is read after each step's KV work."""
        usage = np.empty(extra_steps)
        for i in range(extra_steps):
            self.step += 1
            self._settle(self.step - 1)
            usage[i] = self.kv.usage
        return usage

    # --- parking and waking ---
    def _park(self, request: Request, next_step: int) -> None:
        super()._park(request, next_step)
        self._file_next_event(request, next_step)

    def _materialize(self, request: Request, now_step: int) -> None:
        """Un-park: counters up to ``now_step`` (its KV work up to then is done already)."""
        c = request.num_computed_tokens
        del self._boundaries[(request.lazy_step - c) % self.kv.block_size][request.request_id]
        self.steady_base -= c - request.lazy_step
        self._advance(request, now_step)
        self._event_step.pop(request.request_id, None)
        self._window_noted.pop(request.request_id, None)
        request.lazy_step = -1
        del self.steady[request.request_id]
        self.active[request.request_id] = request

    def materialize_all(self) -> None:
        super().materialize_all()
        self._events.clear()
        self._window_steps.clear()
        self._window_noted.clear()

    # --- one step ---
    def _schedule_active(self, active: list[Request], threshold: int) -> SchedulerOutput | None:
        """Phase 1 when every block the step may take is free: active requests and parked ones
        due for KV work, in running order. None (the reference loop decides) otherwise."""
        wants = self._active_wants(active, threshold)
        if wants is None:
            return None
        kv, step = self.kv, self.step
        crossing = len(self._boundaries[step % kv.block_size])
        tight = self.num_groups * (self._blocks_needed(active, wants) + crossing) > kv.num_free_blocks
        if tight and self.limits.policy != "fcfs":
            return None  # a priority victim may sit anywhere: let the reference loop choose
        out = SchedulerOutput()
        self.head_blocked = False
        want = {request.request_id: n for request, n in zip(active, wants)}
        due = self._due(step)
        for request in sorted([*active, *due], key=_run_seq) if due and active else (due or active):
            if request.status != RequestStatus.RUNNING:
                continue  # preempted as a victim earlier in this step
            parked = request.lazy_step >= 0
            n = 1 if parked else want[request.request_id]
            if n <= 0:
                continue
            if not tight:  # every block is free: nobody is preempted
                if not (self._kv_event(request, step) if parked else self._schedule_one(request, n, out)):
                    raise AssertionError(f"{request}: its blocks were counted free at step {step}")
                continue
            # As the reference loop: preempt the most recently admitted request until it fits.
            while not (self._kv_event(request, step) if parked else self._schedule_one(request, n, out)):
                if self._preempt_newest(step, out) is request:
                    break
            if request.status != RequestStatus.RUNNING:
                break  # it preempted itself, so it was the last running request
        self._settled = step
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values()) + len(self.steady)
        return out

    def steady_run_length(self, out: SchedulerOutput, max_steps: int) -> int:
        k = super().steady_run_length(out, max_steps)
        limits = self.limits
        if k > 1 and len(self.waiting) and not (
                len(self.running) >= limits.max_num_seqs or len(self.steady) >= limits.max_num_batched_tokens):
            # Held back by free blocks only. It stays so while no window gives a block back and no
            # cached block is evicted (an evicted prefix hit of a sliding group can move its hit
            # onto blocks that running requests hold, which costs fewer free blocks).
            heap = self._window_steps
            while heap and heap[0] < self.step:
                heapq.heappop(heap)
            if heap:
                k = min(k, heap[0] - (self.step - 1))
            if k > 1:
                k = min(k, 1 + self._steps_within_free_blocks(k - 1, self._blocks_before_a_cached_one(k)))
        return max(k, 1)

    def _blocks_before_a_cached_one(self, num_steps: int) -> int:
        """How many blocks can leave the front of the free queue before a cached one would (at
        most as many as ``num_steps`` steps could take)."""
        at_most = self.num_groups * len(self.steady) * (num_steps // self.kv.block_size + 1)
        for i, block in enumerate(self.kv.pool.free_queue.values()):
            if block.block_hash is not None or i >= at_most:
                return i
        return self.kv.num_free_blocks

    def _steps_within_free_blocks(self, at_most: int, free: int | None = None) -> int:
        """How many of the next steps (up to ``at_most``) ``free`` blocks (by default the free
        ones) can serve, counting none of the blocks the windows give back."""
        bs, n, g = self.kv.block_size, len(self.steady), self.num_groups
        if free is None:
            free = self.kv.num_free_blocks
        cycles = free // (n * g)
        if cycles * bs >= at_most:
            return at_most
        free -= cycles * n * g
        steps = cycles * bs
        s = self.step + steps
        while steps < at_most:
            free -= g * len(self._boundaries[s % bs])
            if free < 0:
                break
            steps += 1
            s += 1
        return steps

    def memory_breakdown(self):
        for request in self.steady.values():  # the breakdown reads every request's counters
            self._advance(request, self.step)
        return super().memory_breakdown()

