"""vLLM's scheduler, made fast for long runs: steady decodes cost nothing per step.

In a busy engine most running requests are *steady*: each step they compute one token, and
nothing about them changes the scheduler's decisions until they finish. :class:`Scheduler`
still visits each of them every step. This subclass makes the same decisions, in the same
order, but visits only the requests that need something this step:

- a request that is prefilling, or was just admitted (a decode never needs a visit).

A decoding request is *parked* with ``lazy_step`` = the first step its counters miss; its
counters then lag one token per step and are brought up to date (``_materialize``) when it
wakes: at the end of the step that ends it (known in advance, so it is filed under that step
in ``_wake`` and finished from there), or whenever something needs to see every request
exactly (a preemption, a tight token budget, an abort).

Its blocks. A decode that crosses into a new block takes one block off the front of the free
queue at that step. Which block goes to which request is invisible (all are alike: popped,
evicted, unshared), but *when* blocks are taken is not, since frees and prefix-cache lookups
interleave with it. So parked requests take their blocks at the right step, anonymously: a
parked request that computed ``c`` tokens when parked at step ``P`` needs a block at each
step ``s`` with ``(c + s - P) % block_size == 0``. Filing parked requests by
``(P - c) % block_size`` (``_boundaries``) gives the ones that take a block at step ``s`` in
O(1), and :meth:`_settle` takes their blocks before anything else touches the pool.
The blocks wait in ``_unassigned`` until their request wakes and takes its share. Caching
the blocks a parked request fills is deferred the same way: only the request itself could
ever hit them (its output tokens are its own), and it can only do so after it was woken
and preempted, so it is done when it wakes.

When a step schedules nobody but parked decodes and nothing can be admitted, the steps up to
the next finish are all alike, and the engine runs them at once (:meth:`steady_run_length`,
:meth:`skip`), as long as the blocks they take are free.

The shortcut is only taken when it cannot change a decision. If the token budget cannot give
every request what it asks for (except the last running request, which may get the rest), the
step falls back to the reference loop, which brings every request up to date and runs
:class:`Scheduler`'s own code; so does a step whose blocks are not all free under the priority
policy. Under FCFS such a step is done here as the reference does it: the requests that need a
block, parked or not, take theirs in running order, and the last running request is preempted
until they fit.
``tests/test_engine.py::test_fast_forward_matches_step_by_step`` checks that whole runs are
identical with and without this class, and ``tests/test_vllm_reference.py`` checks both
against vLLM 0.33's own scheduler, step by step.
"""

from __future__ import annotations

import heapq

import numpy as np

from sim.config import cdiv
from sim.kv.block_pool import KVCacheBlock
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
        self._wake: dict[int, list[Request]] = {}  # step -> parked requests whose last step it is
        self._wake_steps: list[int] = []  # heap of the keys of _wake
        self._seq = 0
        # Parked requests by the residue of their block boundaries (see the module docstring).
        self._boundaries: list[dict[str, Request]] = [{} for _ in range(kv.block_size)]
        self._settled = -1  # the last step whose parked requests have taken their blocks
        self._unassigned: list[KVCacheBlock] = []  # taken for parked requests, not yet theirs

    # --- parking and waking ---
    def _park(self, request: Request, next_step: int) -> None:
        """After its update, park a decode-ready request until the step that ends it."""
        c = request.num_computed_tokens  # == num_tokens - 1: ready to decode
        request.lazy_step = next_step
        del self.active[request.request_id]
        self.steady[request.request_id] = request
        self.steady_base += c - next_step
        self._boundaries[(next_step - c) % self.kv.block_size][request.request_id] = request
        wake = self._last_step(request)
        bucket = self._wake.get(wake)
        if bucket is None:
            self._wake[wake] = [request]
            heapq.heappush(self._wake_steps, wake)
        else:
            bucket.append(request)

    def _settle(self, last_step: int) -> None:
        """Take the blocks parked requests need in the steps up to ``last_step``."""
        first = self._settled + 1
        if last_step < first:
            return
        bs = self.kv.block_size
        cycles, rest = divmod(last_step - first + 1, bs)
        count = cycles * len(self.steady)  # each parked request crosses once per block_size steps
        for s in range(first, first + rest):
            count += self.parked_block_allocations(s)
        if count:
            self._unassigned.extend(self.kv.pool.get_new_blocks(count))
        self._settled = last_step

    def _materialize(self, request: Request, now_step: int) -> None:
        """Bring a parked request's counters and blocks up to ``now_step`` and un-park it
        (its blocks for the steps before ``now_step`` must already be settled)."""
        kv = self.kv
        lazy_step = request.lazy_step
        c = request.num_computed_tokens
        del self._boundaries[(lazy_step - c) % kv.block_size][request.request_id]
        self.steady_base -= c - lazy_step
        k = now_step - lazy_step
        if k > 0:
            blocks = kv.req_to_blocks[request.request_id]
            owed = cdiv(c + k, kv.block_size) - len(blocks)
            if owed > 0:
                unassigned = self._unassigned
                blocks.extend(unassigned[-owed:])
                del unassigned[-owed:]
            request.num_computed_tokens += k
            request.num_tokens += k
            request.num_output_tokens += k
            request.record_token_steps(lazy_step, now_step - 1)
            if kv.enable_caching:
                kv.cache_blocks(request, request.num_computed_tokens)
        request.lazy_step = -1
        del self.steady[request.request_id]
        self.active[request.request_id] = request

    def _last_step(self, request: Request) -> int:
        """The step in which a parked request computes its last token."""
        left = min(request.max_tokens - request.num_output_tokens, self.limits.max_model_len - request.num_tokens)
        return request.lazy_step + left - 1

    def _finish_parked(self) -> list[Request]:
        """Parked requests whose last token was computed in the step just run: brought up to
        date (that token included) and marked finished."""
        last = self.step - 1
        finished = []
        while self._wake_steps and self._wake_steps[0] <= last:
            due = heapq.heappop(self._wake_steps)
            for request in self._wake.pop(due):
                if request.lazy_step < 0 or self._last_step(request) != due:
                    continue  # woken since (preempted, aborted), and parked again or not
                if due != last:
                    raise AssertionError(f"{request} ran past its last step {due}")
                self._materialize(request, last + 1)
                request.status = RequestStatus.FINISHED_LENGTH
                finished.append(request)
        return finished

    def materialize_all(self) -> None:
        """Bring every parked request up to date (before code that reads them all)."""
        self._settle(self.step - 1)
        for request in list(self.steady.values()):
            self._materialize(request, self.step)
        self._wake.clear()
        self._wake_steps.clear()

    # --- one step ---
    def schedule(self, admit: bool = True) -> SchedulerOutput:
        step = self.step
        self._settle(step - 1)
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
        self._settled = step
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

    def _active_wants(self, active: list[Request], threshold: int) -> list[int] | None:
        """The tokens each active request asks for this step, within the token budget the
        parked decodes leave; None when the budget cuts a request the fast path cannot."""
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
        return wants

    def _schedule_active(self, active: list[Request], threshold: int) -> SchedulerOutput | None:
        """Phase 1 for the requests that are not parked (the parked ones take one token and,
        at their block boundaries, one block each), or None when the reference loop must
        decide: a tight budget, or blocks that might not all be free."""
        wants = self._active_wants(active, threshold)
        if wants is None:
            return None
        kv, bs = self.kv, self.kv.block_size
        step = self.step
        crossing = self._boundaries[step % bs]  # parked requests that take a block this step
        out = SchedulerOutput()
        self.head_blocked = False
        if self._blocks_needed(active, wants) + len(crossing) <= kv.num_free_blocks:
            self._settle(step)  # every block of the step is free: the order does not matter
            for request, n in zip(active, wants):
                if n > 0:
                    self._schedule_one(request, n, out)
        elif self.limits.policy != "fcfs":
            return None  # a priority victim may sit anywhere: let the reference loop choose
        else:
            # Some request will be preempted: take the blocks in running order, as vLLM.
            want = {request.request_id: n for request, n in zip(active, wants)}
            for request in sorted([*active, *crossing.values()], key=_run_seq):
                if request.status != RequestStatus.RUNNING:
                    continue  # preempted as a victim earlier in this step
                parked = request.lazy_step >= 0
                n = 1 if parked else want[request.request_id]
                if n <= 0:
                    continue
                while (kv.num_free_blocks < 1) if parked else not self._schedule_one(request, n, out):
                    if self._preempt_newest(step, out) is request:
                        break
                if request.status != RequestStatus.RUNNING:
                    break  # it preempted itself, so it was the last running request
                if parked:
                    self._unassigned.extend(kv.pool.get_new_blocks(1))
            self._settled = step
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values()) + len(self.steady)
        return out

    def _schedule_one(self, request: Request, n: int, out: SchedulerOutput) -> bool:
        """Give an active request ``n`` tokens if its blocks fit; False if they do not."""
        if self.kv.allocate_slots(request, n) is None:
            return False
        out.num_scheduled_tokens[request.request_id] = n
        out.scheduled.append(request)
        return True

    def _preempt_newest(self, step: int, out: SchedulerOutput) -> Request:
        """Preempt the most recently admitted running request, as vLLM's loop picks its victim
        (un-parked first if it was parked); returns it."""
        victim = self.running.pop()
        if victim.lazy_step >= 0:
            self._materialize(victim, step)
        self.active.pop(victim.request_id, None)
        self._preempt(victim, out)
        return victim

    def _blocks_needed(self, active: list[Request], wants: list[int]) -> int:
        """Blocks (per KV cache group) the active requests open this step."""
        bs, max_len, kv = self.kv.block_size, self.limits.max_model_len, self.kv
        need = 0
        for request, n in zip(active, wants):
            if n > 0:
                end = min(request.num_computed_tokens + n, max_len)
                need += max(cdiv(end, bs) - kv.blocks_per_group(request.request_id), 0)
        return need

    def parked_block_allocations(self, step: int) -> int:
        """How many blocks the parked requests take at ``step`` (while none parks or wakes)."""
        return len(self._boundaries[step % self.kv.block_size])

    def steady_run_length(self, out: SchedulerOutput, max_steps: int) -> int:
        """How many steps, this one included, will be exactly like it: only parked decodes,
        nothing admitted, until the next request wakes, and no more steps than the free blocks
        last for. At most ``max_steps``."""
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
        if self._wake_steps:  # up to the next finish, that step included
            k = min(k, self._wake_steps[0] - (self.step - 1) + 1)
        return max(min(k, 1 + self._steps_within_free_blocks(k - 1)), 1)

    def _steps_within_free_blocks(self, at_most: int) -> int:
        """How many of the next steps (up to ``at_most``) the free blocks can serve."""
        bs, n = self.kv.block_size, len(self.steady)
        free = self.kv.num_free_blocks
        cycles = free // n
        if cycles * bs >= at_most:
            return at_most
        free -= cycles * n
        steps = cycles * bs
        s = self.step + steps
        while steps < at_most:
            free -= self.parked_block_allocations(s)
            if free < 0:
                break
            steps += 1
            s += 1
        return steps

    def skip(self, extra_steps: int) -> np.ndarray:
        """Account for ``extra_steps`` more steps like the last one (only parked decodes).

        Returns the KV cache usage at the end of each of those steps, as a step-by-step run
        reads it before the last step's finishers free their blocks: each step, the parked
        requests that cross into a new block take one (:meth:`parked_block_allocations`)."""
        pool, bs = self.kv.pool, self.kv.block_size
        held = pool.num_gpu_blocks - 1 - pool.num_free_blocks  # the null block is never in use
        per_residue = [len(b) for b in self._boundaries]
        if extra_steps <= 4 * bs:  # short runs, the common case online: cheaper than numpy
            taken, total = [], held
            for s in range(self.step, self.step + extra_steps):
                total += per_residue[s % bs]
                taken.append(total)
            used = np.array(taken, dtype=float)
        else:
            steps = np.arange(self.step, self.step + extra_steps)
            used = held + np.cumsum(np.array(per_residue)[steps % bs])
        self.step += extra_steps
        self._settle(self.step - 1)
        return used / (pool.num_gpu_blocks - 1)

    def total_computed_tokens(self) -> int:
        parked = self.steady_base + len(self.steady) * self.step
        return parked + sum(r.num_computed_tokens for r in self.active.values())

    def num_held_blocks(self) -> int:
        return super().num_held_blocks() + len(self._unassigned)

    # --- after the model ran ---
    def update_from_output(self, output: SchedulerOutput, sampled=None, now_s: float = 0.0) -> list[Request]:
        finished = self._append_sampled(output)
        parked = self._finish_parked()
        if parked:  # free in scheduling order, as vLLM does
            finished = sorted(finished + parked, key=_run_seq)
        self._retire(finished, now_s)
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
            self._settle(self.step - 1)
            self._materialize(request, self.step)
        self.active.pop(request_id, None)
        return super().abort_request(request_id)


def _run_seq(request: Request) -> int:
    return request.run_seq
