"""vLLM V1's scheduler: one token budget, running requests first, then the waiting queue.

There is no prefill phase and no decode phase. Each request has ``num_computed_tokens``
catching up with ``num_tokens`` (prompt plus output so far); a step gives each request some
tokens out of one budget, ``max_num_batched_tokens``. A decode is simply a request one token
behind; a long prompt is computed in chunks over several steps (chunked prefill).

One step, as vLLM 0.33's ``Scheduler.schedule``:

1. RUNNING requests, in admission order, each get what they still miss, capped by the budget
   left (and ``long_prefill_token_threshold``). If their blocks do not fit, the most recently
   admitted running request is preempted (its blocks freed, its progress reset to 0, and it
   goes to the front of the waiting queue), until the allocation fits or the request itself
   was the victim.
2. WAITING requests, only if nothing was preempted in this step, in queue order: look up the
   prefix cache, give the rest of the sequence (capped by the budget), and admit if the whole
   sequence fits in free blocks. The first request that does not fit stops admission (strict
   head-of-line blocking); so do ``max_num_seqs`` and an empty budget.

The scheduler knows budgets; it never touches a block directly (the KV manager does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.kv.kv_manager import KVCacheManager
from sim.request import Request, RequestStatus
from sim.sched.request_queue import FCFSQueue, PriorityQueue


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    long_prefill_token_threshold: int = 0  # 0 = off
    policy: str = "fcfs"  # or "priority"
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        for name in ("max_num_batched_tokens", "max_num_seqs", "max_model_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}(={getattr(self, name)}) must be > 0")
        if self.policy not in ("fcfs", "priority"):
            raise ValueError(f"policy(={self.policy!r}) must be 'fcfs' or 'priority'")


@dataclass(slots=True)
class SchedulerOutput:
    # request id -> tokens this step: running requests first (in running order), then the
    # requests admitted this step (in admission order).
    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    new_request_ids: list[str] = field(default_factory=list)
    resumed_request_ids: list[str] = field(default_factory=list)
    preempted_request_ids: list[str] = field(default_factory=list)
    num_cached_tokens: dict[str, int] = field(default_factory=dict)  # prefix hits at admission
    total_num_scheduled_tokens: int = 0
    # Requests scheduled this step, in the same order as num_scheduled_tokens.
    scheduled: list[Request] = field(default_factory=list)
    # Filled by update_from_output: the requests that sampled a token at the end of the step.
    sampled: list[Request] = field(default_factory=list)
    # Only from LazyDecodeScheduler: parked decodes that also run this step (one token each,
    # not listed above), and the KV tokens their attention reads.
    num_steady: int = 0
    steady_context_tokens: int = 0


class RequestBook:
    """What every scheduler keeps: its limits, the running list, the waiting queue and the
    requests by id. (vLLM's scheduler and the baselines differ in how they decide, not here.)"""

    def __init__(self, limits: SchedulerLimits) -> None:
        self.limits = limits
        self.running: list[Request] = []
        self.waiting = PriorityQueue() if limits.policy == "priority" else FCFSQueue()
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0
        # True when the last step's admission stopped on a request whose blocks did not fit.
        self.head_blocked = False

    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the scheduler")
        self.requests[request.request_id] = request
        self.waiting.add(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or len(self.waiting) > 0

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)


class Scheduler(RequestBook):
    def __init__(self, limits: SchedulerLimits, kv: KVCacheManager) -> None:
        super().__init__(limits)
        self.kv = kv

    # --- requests in and out ---
    def abort_request(self, request_id: str) -> Request | None:
        """Finish a request at once (a client went away); its blocks are freed now."""
        request = self.requests.pop(request_id, None)
        if request is None or request.is_finished:
            return None
        if request.status == RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        request.status = RequestStatus.FINISHED_ABORTED
        self.kv.free(request)
        return request

    # --- one step ---
    def schedule(self, admit: bool = True) -> SchedulerOutput:
        """One step's decisions. ``admit=False`` leaves the waiting queue alone (the engine uses
        it for vLLM 0.6's multi-step scheduling, which admitted only every N steps)."""
        out = SchedulerOutput()
        threshold = self.limits.long_prefill_token_threshold
        if len(self.running) + len(self.waiting) <= 1:
            threshold = 0  # vLLM ignores the threshold when only one request exists
        self.head_blocked = False
        budget = self._schedule_running(out, self.limits.max_num_batched_tokens, threshold)
        if admit and not out.preempted_request_ids:  # no admission in a step that preempted
            budget = self._schedule_waiting(out, budget, threshold)
        # Advance progress now, so a prefill chunk can continue in the next step.
        for request in out.scheduled:
            request.num_computed_tokens += out.num_scheduled_tokens[request.request_id]
        out.total_num_scheduled_tokens = self.limits.max_num_batched_tokens - budget
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int, threshold: int) -> int:
        """Phase 1: running requests, in admission order. Returns the budget left."""
        limits = self.limits
        max_model_len = limits.max_model_len
        block_size = self.kv.block_size
        scheduled_tokens = out.num_scheduled_tokens
        scheduled = out.scheduled
        running = self.running
        inline_decodes = not self.kv.copy_on_write
        # Sliding-window groups (sim.kv.hybrid): request id -> computed tokens at which its next
        # block leaves a window. None for a model without them.
        moves_at = getattr(self.kv, "window_moves_at", None)
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            computed = request.num_computed_tokens
            n = request.num_tokens - computed
            if (n == 1 and computed % block_size and (computed + 1) % block_size
                    and computed < max_model_len - 1 and inline_decodes
                    and (moves_at is None or computed < moves_at.get(request.request_id, 0))):
                # A decode that stays inside its last block needs no new block and fills none
                # to cache, and no block falls out of a sliding window at this token: the KV
                # manager would do nothing, so skip the call (the common case).
                scheduled_tokens[request.request_id] = 1
                scheduled.append(request)
                budget -= 1
                i += 1
                continue
            if 0 < threshold < n:
                n = threshold
            if n > budget:
                n = budget
            if n > max_model_len - computed - 1:
                n = max_model_len - computed - 1
            if n <= 0:
                i += 1
                continue
            while True:
                if self.kv.allocate_slots(request, n) is not None:
                    break
                victim = self._pick_victim()
                victim_index = self.running.index(victim)
                del self.running[victim_index]
                if victim_index < i:
                    i -= 1  # only under the priority policy can the victim sit before us
                budget += self._preempt(victim, out)
                if victim is request:
                    break
            if request.status != RequestStatus.RUNNING:
                if limits.policy == "priority":
                    continue  # vLLM goes on with the next running request
                break  # FCFS: the request preempted itself; nothing more fits this step
            out.num_scheduled_tokens[request.request_id] = n
            out.scheduled.append(request)
            budget -= n
            i += 1
        return budget

    def _schedule_waiting(self, out: SchedulerOutput, budget: int, threshold: int) -> int:
        """Phase 2: admit waiting requests in queue order. Returns the budget left."""
        limits = self.limits
        while budget > 0 and len(self.waiting) > 0:
            if len(self.running) >= limits.max_num_seqs:
                break
            request = self.waiting.peek()
            hits, num_hit_tokens = self.kv.get_computed_blocks(request)
            n = request.num_tokens - num_hit_tokens
            if 0 < threshold < n:
                n = threshold
            if not limits.enable_chunked_prefill and n > budget:
                break
            n = min(n, budget)
            blocks = self.kv.allocate_slots(
                request, n, num_hit_tokens, hits, full_sequence_must_fit=True
            )
            if blocks is None:
                self.head_blocked = True
                break
            self.kv.record_prefix_cache_stats(request, num_hit_tokens)
            self.waiting.pop()
            self.running.append(request)
            if request.status == RequestStatus.PREEMPTED:
                out.resumed_request_ids.append(request.request_id)
            else:
                out.new_request_ids.append(request.request_id)
                request.num_cached_tokens = num_hit_tokens
            out.num_cached_tokens[request.request_id] = num_hit_tokens
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_hit_tokens
            out.num_scheduled_tokens[request.request_id] = n
            out.scheduled.append(request)
            budget -= n
        return budget

    def total_computed_tokens(self) -> int:
        """KV tokens computed by all running requests (shared prefix blocks counted per request)."""
        return sum(r.num_computed_tokens for r in self.running)

    def memory_breakdown(self):
        """What the KV cache holds, in token slots, as the vLLM paper's Fig. 2 splits it. Paged
        memory reserves nothing ahead and has no external fragmentation; the only waste is the
        unfilled end of each request's last block (internal fragmentation)."""
        from sim.kv.contiguous import MemoryBreakdown

        bs = self.kv.block_size
        capacity = (self.kv.pool.num_gpu_blocks - 1) * bs
        used = capacity - self.kv.num_free_blocks * bs
        # Computed tokens the held blocks hold (with sliding windows, only those still in a window).
        if self.kv.sliding_windows:
            held, filled = self.kv.held_and_filled(self.running)
        else:
            held, filled = self.num_held_blocks(), self.total_computed_tokens()
        # Slots of held blocks not holding a computed token: per request, its last block's tail.
        internal = max(held * bs - filled, 0)
        # Blocks shared by several requests are counted once in `used` but per holder in
        # `held`: take the sharing out so the parts still add up to the capacity.
        shared_extra = (held - (used // bs)) * bs
        token_states = max(used - max(internal - max(shared_extra, 0), 0), 0)
        return MemoryBreakdown(capacity, token_states, 0, used - token_states, 0, capacity - used)

    def num_held_blocks(self) -> int:
        """Blocks held by running requests, a block shared by several counted per holder."""
        return self.kv.held_and_filled(self.running)[0]

    def _pick_victim(self) -> Request:
        if self.limits.policy == "priority":
            return max(self.running, key=lambda r: (r.priority, r.arrival_s))
        return self.running[-1]

    def _preempt(self, request: Request, out: SchedulerOutput) -> int:
        """Preemption by recompute: free everything, start over from the front of the queue.

        Returns the tokens given back to this step's budget (non-zero only under the priority
        policy, where the victim may already have been scheduled in this step).
        """
        self.kv.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.prepend(request)
        out.preempted_request_ids.append(request.request_id)
        restored = out.num_scheduled_tokens.pop(request.request_id, 0)
        if restored:
            out.scheduled.remove(request)
        return restored

    # --- after the model ran ---
    def update_from_output(
        self, output: SchedulerOutput, sampled: dict[str, list[int]] | None = None, now_s: float = 0.0
    ) -> list[Request]:
        """Append one sampled token to every request whose prompt is now fully computed.

        ``sampled`` is accepted for API symmetry with vLLM; ServeLab's tokens are synthetic
        (see :mod:`sim.request`), so only the count matters. Returns the finished requests,
        whose blocks are freed here.
        """
        finished = self._append_sampled(output)
        self._retire(finished, now_s)
        return finished

    def _append_sampled(self, output: SchedulerOutput) -> list[Request]:
        """Append one token to every scheduled request whose prompt is fully computed; the
        ones that reach their length, in scheduling order."""
        finished: list[Request] = []
        max_model_len = self.limits.max_model_len
        sampled_out = output.sampled
        for request in output.scheduled:  # all RUNNING: preempted ones left `scheduled`
            if request.num_computed_tokens < request.num_tokens:
                continue  # a partial prefill chunk samples nothing
            # Request.append_output_tokens(1), inlined: this runs for every request every step.
            request.num_output_tokens += 1
            request.num_tokens += 1
            sampled_out.append(request)
            if request.num_output_tokens >= request.max_tokens or request.num_tokens >= max_model_len:
                request.status = RequestStatus.FINISHED_LENGTH
                finished.append(request)
        return finished

    def _retire(self, finished: list[Request], now_s: float) -> None:
        """Take finished requests out of the running list and free their blocks, in order
        (the order decides where their blocks land in the free queue)."""
        if finished:
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
            for request in finished:
                self.kv.free(request)
                request.finish_s = now_s
                self.requests.pop(request.request_id, None)
