"""vLLM's scheduler, made fast for long runs: steady decodes cost nothing per step.

In a busy engine most running requests are *steady*: each step they compute one token inside
a block they already hold, fill no block, and do not finish. :class:`Scheduler` still visits
each of them every step. This subclass makes the same decisions, in the same order, but
visits only the requests that need something this step:

- a request that is prefilling, or was just admitted;
- a decode that crosses into a new block (allocation) or fills its block (caching);
- a decode whose token ends the request.

A steady request is parked with ``lazy_step`` = the first step its counters miss; its
counters then lag one token per step and are brought up to date (``_materialize``) when it
wakes: the step at which it will next need something is known in advance, so it is filed
under that step in ``_wake``. When a step schedules nobody but steady requests and nothing can
be admitted, the steps until the next wake-up are all alike, and the engine runs them at once
(:meth:`steady_run_length`, :meth:`skip`).

When every running request decodes one token until the next finish (nothing prefilling,
nothing to admit), :meth:`bulk_run_length` brings everyone up to date once and
:meth:`fast_forward` does the whole run in bulk, taking the blocks the run needs from the free
queue in the order vLLM would (step by step, running order within a step).

The shortcut is only taken when it cannot change a decision. If the token budget cannot give
every request what it asks for (except the last running request, which may get the rest),
the step falls back to the reference loop, which brings every request up to date and runs
:class:`Scheduler`'s own code; so does a preemption under the priority policy. Under FCFS a
preemption is handled here as the reference does: the victim is the last running request,
parked or not. ``tests/test_engine.py::test_fast_forward_matches_step_by_step`` checks that
whole runs are identical with and without this class, and ``tests/test_vllm_reference.py``
checks both against vLLM 0.33's own scheduler, step by step.
"""

from __future__ import annotations

import heapq

import numpy as np

from sim.config import cdiv
from sim.kv.kv_manager import KVCacheManager
from sim.request import Request, RequestStatus
from sim.sched.scheduler import Scheduler, SchedulerLimits, SchedulerOutput


class LazyDecodeScheduler(Scheduler):
    def __init__(self, limits: SchedulerLimits, kv: KVCacheManager) -> None:
        super().__init__(limits, kv)
        self.step = 0  # index of the next step to schedule (the engine's global step index)
        self.steady: dict[str, Request] = {}  # parked decodes, in parking order
        self.active: dict[str, Request] = {}  # running requests that are not parked
        self.steady_base = 0  # sum over steady requests of (num_computed_tokens - lazy_step)
        self._wake: dict[int, list[Request]] = {}  # step -> requests to wake then
        self._wake_steps: list[int] = []  # heap of the keys of _wake
        self._seq = 0
        self._finishes: list[tuple[int, int, Request]] = []  # heap: (finish step, seq, request)

    # --- parking and waking ---
    def _park(self, request: Request, next_step: int) -> None:
        """After its update, park a decode-ready request until it next needs attention."""
        bs = self.kv.block_size
        c = request.num_computed_tokens  # == num_tokens - 1: ready to decode
        m = c % bs
        # Steps until the token that starts a new block (allocation), or, with caching, the
        # token that fills the block (caching); this runs for every request every few steps.
        wait = bs - 1 - m if self.kv.enable_caching else (bs - m) % bs
        if wait <= 0 or m == 0:
            return  # it needs attention in the very next step: stays active
        left = min(request.max_tokens - request.num_output_tokens,
                   self.limits.max_model_len - request.num_tokens) - 1  # steps before the one that ends it
        if left < wait:
            wait = left
            if wait <= 0:
                return
        heapq.heappush(self._finishes, (next_step + left, request.run_seq, request))
        request.lazy_step = next_step
        del self.active[request.request_id]
        self.steady[request.request_id] = request
        self.steady_base += c - next_step
        wake = next_step + wait
        bucket = self._wake.get(wake)
        if bucket is None:
            self._wake[wake] = [request]
            heapq.heappush(self._wake_steps, wake)
        else:
            bucket.append(request)

    def _materialize(self, request: Request, now_step: int) -> None:
        """Bring a parked request's counters up to ``now_step`` and un-park it."""
        k = now_step - request.lazy_step
        self.steady_base -= request.num_computed_tokens - request.lazy_step
        if k > 0:
            request.num_computed_tokens += k
            request.num_tokens += k
            request.num_output_tokens += k
            request.record_token_steps(request.lazy_step, now_step - 1)
        request.lazy_step = -1
        del self.steady[request.request_id]
        self.active[request.request_id] = request

    def _wake_due(self, step: int) -> None:
        while self._wake_steps and self._wake_steps[0] <= step:
            due = heapq.heappop(self._wake_steps)
            for request in self._wake.pop(due):
                if request.lazy_step >= 0 and request.request_id in self.steady:
                    self._materialize(request, step)

    def materialize_all(self) -> None:
        """Bring every parked request up to date (before code that reads them all)."""
        for request in list(self.steady.values()):
            self._materialize(request, self.step)
        self._wake.clear()
        self._wake_steps.clear()

    # --- one step ---
    def schedule(self, admit: bool = True) -> SchedulerOutput:
        step = self.step
        self._wake_due(step)
        limits = self.limits
        threshold = limits.long_prefill_token_threshold
        if len(self.running) + len(self.waiting) <= 1:
            threshold = 0
        active = self._active_in_order()
        out = self._schedule_active(active, threshold) if active is not None else None
        if out is None:
            # The shortcut could change a decision: the reference loop decides this step.
            self.materialize_all()
            out = SchedulerOutput()
            self.head_blocked = False
            budget = self._schedule_running(out, limits.max_num_batched_tokens, threshold)
        else:
            budget = limits.max_num_batched_tokens - out.total_num_scheduled_tokens
        num_before = len(out.scheduled)
        if admit and not out.preempted_request_ids:
            budget = self._schedule_waiting(out, budget, threshold)
        for request in out.scheduled[num_before:]:  # admitted: join the running order
            request.run_seq = self._seq
            self._seq += 1
            self.active[request.request_id] = request
        for rid in out.preempted_request_ids:
            self.active.pop(rid, None)
        for request in out.scheduled:
            request.num_computed_tokens += out.num_scheduled_tokens[request.request_id]
        # Steady requests each compute one token; their context is what they will have read.
        n_steady = len(self.steady)
        out.num_steady = n_steady
        out.steady_context_tokens = self.steady_base + n_steady * (step + 1)
        out.total_num_scheduled_tokens = limits.max_num_batched_tokens - budget
        if out.total_num_scheduled_tokens:
            self.step = step + 1  # a step runs (the engine waits instead when nothing does)
        return out

    def _active_in_order(self) -> list[Request] | None:
        """Running requests that are not parked, in running order; None when nothing is
        parked (then the reference loop costs the same)."""
        if not self.steady:
            return None
        return sorted(self.active.values(), key=_run_seq)

    def _schedule_active(self, active: list[Request], threshold: int) -> SchedulerOutput | None:
        """Phase 1 for the requests that are not parked, or None when the reference loop
        must decide (a tight budget, or a preemption under the priority policy)."""
        limits = self.limits
        budget = limits.max_num_batched_tokens - len(self.steady)
        wants = []
        for request in active:
            computed = request.num_computed_tokens
            n = request.num_tokens - computed
            if 0 < threshold < n:
                n = threshold
            wants.append(min(n, limits.max_model_len - computed - 1))
        total = sum(w for w in wants if w > 0)
        if total > budget:
            # Only the last running request may be cut short by the budget, and only if it
            # is active (a parked request after it would go without its token).
            if not active or active[-1] is not self.running[-1] or total - max(wants[-1], 0) >= budget:
                return None
            wants[-1] = budget - (total - wants[-1])
        if limits.policy != "fcfs" and self._blocks_needed(active, wants) > self.kv.num_free_blocks:
            return None  # a priority victim may sit anywhere: let the reference loop choose
        out = SchedulerOutput()
        self.head_blocked = False
        step = self.step
        kv, bs = self.kv, self.kv.block_size
        for request, n in zip(active, wants):
            if n <= 0 or request.status != RequestStatus.RUNNING:
                continue  # nothing to compute, or already preempted as a victim this step
            computed = request.num_computed_tokens
            if n == 1 and computed % bs and (computed + 1) % bs == 0:
                # A decode that fills its block: nothing to allocate, only the block to cache
                # (what allocate_slots would do here, without its general bookkeeping).
                if kv.enable_caching:
                    kv.cache_blocks(request, computed + 1)
                out.num_scheduled_tokens[request.request_id] = 1
                out.scheduled.append(request)
                continue
            while kv.allocate_slots(request, n) is None:
                # As the reference loop: preempt the most recently admitted request (the
                # last in running order, parked or not) until the blocks fit.
                victim = self.running.pop()
                if victim.request_id in self.steady:
                    self._materialize(victim, step)
                self.active.pop(victim.request_id, None)
                self._preempt(victim, out)
                if victim is request:
                    break
            if request.status != RequestStatus.RUNNING:
                break  # it preempted itself, so it was the last running request
            out.num_scheduled_tokens[request.request_id] = n
            out.scheduled.append(request)
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values()) + len(self.steady)
        return out

    def _blocks_needed(self, active: list[Request], wants: list[int]) -> int:
        bs, max_len = self.kv.block_size, self.limits.max_model_len
        need = 0
        for request, n in zip(active, wants):
            if n > 0:
                end = min(request.num_computed_tokens + n, max_len)
                need += max(cdiv(end, bs) - len(self.kv.req_to_blocks[request.request_id]), 0)
        return need

    def steady_run_length(self, out: SchedulerOutput, max_steps: int) -> int:
        """How many steps, this one included, will be exactly like it: only parked decodes,
        nothing admitted, until the next request wakes. At most ``max_steps``."""
        if out.scheduled or out.preempted_request_ids or not self.steady:
            return 1
        limits = self.limits
        if len(self.waiting) and not (
            len(self.running) >= limits.max_num_seqs
            or len(self.steady) >= limits.max_num_batched_tokens
            or self.head_blocked
        ):
            return 1
        k = max_steps
        if self._wake_steps:
            k = min(k, self._wake_steps[0] - (self.step - 1))
        return max(k, 1)

    def skip(self, extra_steps: int) -> None:
        """Account for ``extra_steps`` more steps like the last one (only parked decodes)."""
        self.step += extra_steps

    # Below this many steps to the next finish, a bulk run is not worth bringing every
    # request up to date for.
    MIN_BULK_STEPS = 8

    def bulk_bound(self, out: SchedulerOutput) -> int:
        """Cheap check (no request is brought up to date): 1 if the step is not a pure decode
        step that could repeat, else how many steps until the next finish."""
        if out.preempted_request_ids or out.new_request_ids or out.resumed_request_ids:
            return 1
        running = self.running
        if out.num_steady + len(out.scheduled) != len(running):
            return 1
        counts = out.num_scheduled_tokens
        limits = self.limits
        k = 1 << 30
        for request in out.scheduled:
            if counts[request.request_id] != 1 or request.num_computed_tokens != request.num_tokens:
                return 1  # a prefill chunk, or a decode that does not sample
            k = min(k, request.max_tokens - request.num_output_tokens, limits.max_model_len - request.num_tokens)
        if len(self.waiting) and not (
            len(running) >= limits.max_num_seqs or len(running) >= limits.max_num_batched_tokens
            or self.head_blocked
        ):
            return 1
        step = self.step - 1
        finishes = self._finishes
        while finishes and (finishes[0][2].status != RequestStatus.RUNNING or finishes[0][2].lazy_step < 0):
            heapq.heappop(finishes)  # stale: finished, preempted or active again
        if finishes:
            k = min(k, finishes[0][0] - step + 1)
        return k

    def bulk_run_length(self, out: SchedulerOutput, max_steps: int) -> int:
        """After a step in which every running request decodes one token and nothing else
        happens, how many such steps follow (until the next finish, and while the blocks the
        decodes will need are free). If more than one, ``out`` is rewritten to list every
        running request, up to date, so that :meth:`fast_forward` can do them in bulk."""
        k = min(self.bulk_bound(out), max_steps)
        if k < self.MIN_BULK_STEPS:
            return 1
        running = self.running
        step = self.step - 1  # the step just scheduled
        # Bring every request to "scheduled for this step, one token" and list them all.
        for request in list(self.steady.values()):
            self._materialize(request, step)
            request.num_computed_tokens += 1
        self._wake.clear()
        self._wake_steps.clear()
        self._finishes.clear()
        out.scheduled = list(running)
        out.num_scheduled_tokens = {r.request_id: 1 for r in running}
        out.num_steady = out.steady_context_tokens = 0
        tokens = np.fromiter((r.num_tokens for r in running), dtype=np.int64, count=len(running))
        held = np.fromiter((len(self.kv.req_to_blocks[r.request_id]) for r in running), dtype=np.int64,
                           count=len(running))
        return _max_steps_within_blocks(tokens, held, self.kv.block_size, self.kv.num_free_blocks, k)

    def fast_forward(self, out: SchedulerOutput, extra_steps: int) -> None:
        """Do the bookkeeping of ``extra_steps`` more steps like ``out`` (after
        :meth:`bulk_run_length`): every request gets its previous token appended, room for
        one more token, and caches the blocks that become full, as step-by-step scheduling
        would. New blocks come off the free queue in vLLM's order: step by step, and in
        running order within a step. Then the step counter moves on."""
        kv, bs = self.kv, self.kv.block_size
        first = self.step - 1
        events: list[tuple[int, int]] = []  # (step, running index) of each new block
        for index, request in enumerate(out.scheduled):
            tokens = request.num_tokens  # at the first step
            held = len(kv.req_to_blocks[request.request_id])
            # Block number b (0-based) is needed at the first step j with tokens + j - 1 > b * bs.
            for b in range(held, cdiv(tokens + extra_steps, bs)):
                events.append((b * bs - tokens + 2, index))
        if events:
            events.sort()
            blocks = kv.pool.get_new_blocks(len(events))
            for (_, index), block in zip(events, blocks):
                kv.req_to_blocks[out.scheduled[index].request_id].append(block)
        for request in out.scheduled:
            request.append_output_tokens(extra_steps)
            request.num_computed_tokens += extra_steps
            request.record_token_steps(first, first + extra_steps - 1)
            if kv.enable_caching:
                kv.cache_blocks(request, request.num_computed_tokens)
        self.step += extra_steps

    def total_computed_tokens(self) -> int:
        parked = self.steady_base + len(self.steady) * self.step
        return parked + sum(r.num_computed_tokens for r in self.active.values())

    # --- after the model ran ---
    def update_from_output(self, output: SchedulerOutput, sampled=None, now_s: float = 0.0) -> list[Request]:
        finished = super().update_from_output(output, sampled, now_s)
        for request in finished:
            del self.active[request.request_id]
        next_step = self.step
        for request in output.sampled:  # a partial prefill one token short is not a decode
            if request.status == RequestStatus.RUNNING:
                self._park(request, next_step)
        return finished

    def abort_request(self, request_id: str) -> Request | None:
        request = self.requests.get(request_id)
        if request is not None and request.request_id in self.steady:
            self._materialize(request, self.step)
        self.active.pop(request_id, None)
        return super().abort_request(request_id)


def _run_seq(request: Request) -> int:
    return request.run_seq


def _max_steps_within_blocks(tokens: np.ndarray, held: np.ndarray, bs: int, free: int, k: int) -> int:
    """Largest j <= k such that steps 2..j need at most ``free`` new blocks in total, where at
    step j a decoding request with ``tokens`` tokens (at step 1) needs room for tokens + j - 1."""
    def need(j: int) -> int:
        return int(np.maximum(-(-(tokens + j - 1) // bs) - held, 0).sum())

    if need(k) <= free:
        return k
    lo, hi = 1, k  # need(lo) <= free < need(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if need(mid) <= free:
            lo = mid
        else:
            hi = mid
    return lo
