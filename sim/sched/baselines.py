"""The serving systems vLLM replaced, as the vLLM paper's baselines (Kwon et al., SOSP 2023).

- ``orca-max``, ``orca-pow2``, ``orca-oracle``: Orca's iteration-level scheduling (a request
  joins or leaves the batch at any step) over contiguous KV reservations sized as
  :mod:`sim.kv.contiguous` describes. A prompt is computed in one step (no chunked prefill);
  a reservation always covers the whole sequence, so nothing is ever preempted.
- ``hf-static``: HuggingFace ``generate``-style static batching. A batch is formed only when
  the previous one has ended; prompts are padded to the batch's longest, and every sequence
  runs until the batch's longest output ends (finished ones keep occupying their slot and
  compute). Results come back when the whole batch ends.

Both speak the same interface as :class:`sim.sched.scheduler.Scheduler`, so the engine, the
step-time model and the metrics treat them alike.
"""

from __future__ import annotations

from sim.config import EngineConfig, next_power_of_two
from sim.kv.contiguous import ContiguousAllocator, MemoryBreakdown
from sim.request import Request, RequestStatus
from sim.sched.scheduler import RequestBook, SchedulerLimits, SchedulerOutput
from sim.steptime import BatchShape


class ContiguousKV:
    """What the engine reads from a KV cache (usage and free space), for contiguous reservations."""

    def __init__(self, capacity_tokens: int, block_size: int) -> None:
        self.allocator = ContiguousAllocator(capacity_tokens)
        self.block_size = block_size
        self.stats = None

    @property
    def usage(self) -> float:
        return self.allocator.usage()

    @property
    def num_free_blocks(self) -> int:
        return self.allocator.num_free_tokens // self.block_size


class _BaselineScheduler(RequestBook):
    def __init__(self, limits: SchedulerLimits, capacity_tokens: int, block_size: int) -> None:
        super().__init__(limits)
        self.kv = ContiguousKV(capacity_tokens, block_size)

    def final_length(self, request: Request) -> int:
        return min(request.num_prompt_tokens + request.max_tokens, self.limits.max_model_len)

    def memory_breakdown(self) -> MemoryBreakdown:
        alloc = self.kv.allocator
        tokens = reserved_future = internal = 0
        for owner, (_, size) in alloc.allocations.items():
            request = self.requests.get(owner)
            if request is None:
                continue
            final = self.final_length(request)
            tokens += request.num_computed_tokens
            reserved_future += max(final - request.num_computed_tokens, 0)
            internal += max(size - final, 0)
        largest = alloc.largest_free_range
        return MemoryBreakdown(
            alloc.capacity_tokens, tokens, reserved_future, internal,
            alloc.num_free_tokens - largest, largest,
        )

    def abort_request(self, request_id: str) -> Request | None:
        request = self.requests.pop(request_id, None)
        if request is None or request.is_finished:
            return None
        if request in self.running:
            self.running.remove(request)
            self.kv.allocator.free(request_id)
        else:
            self.waiting.remove(request)
        request.status = RequestStatus.FINISHED_ABORTED
        return request


class OrcaScheduler(_BaselineScheduler):
    """Iteration-level scheduling over contiguous reservations (Orca, OSDI 2022)."""

    def __init__(self, limits: SchedulerLimits, capacity_tokens: int, block_size: int, reservation: str) -> None:
        super().__init__(limits, capacity_tokens, block_size)
        if reservation not in ("max", "pow2", "oracle"):
            raise ValueError(f"reservation(={reservation!r}) must be max, pow2 or oracle")
        self.reservation = reservation

    def reservation_size(self, request: Request) -> int:
        limit = self.limits.max_model_len
        if self.reservation == "max":
            return limit
        if self.reservation == "pow2":
            return min(request.num_prompt_tokens + next_power_of_two(request.max_tokens), limit)
        return self.final_length(request)

    def schedule(self, admit: bool = True) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.limits.max_num_batched_tokens
        for request in self.running:  # every running request decodes one token
            out.num_scheduled_tokens[request.request_id] = 1
            out.scheduled.append(request)
            budget -= 1
        self.head_blocked = False
        while admit and len(self.waiting) and len(self.running) < self.limits.max_num_seqs:
            request = self.waiting.peek()
            n = request.num_prompt_tokens
            if n > budget and out.scheduled:
                break  # the whole prompt runs in one step; wait for a step with room
            if self.kv.allocator.allocate(request.request_id, self.reservation_size(request)) is None:
                self.head_blocked = True
                break
            self.waiting.pop()
            request.status = RequestStatus.RUNNING
            request.num_cached_tokens = 0
            self.running.append(request)
            out.new_request_ids.append(request.request_id)
            out.num_cached_tokens[request.request_id] = 0
            out.num_scheduled_tokens[request.request_id] = n
            out.scheduled.append(request)
            budget -= n
        for request in out.scheduled:
            request.num_computed_tokens += out.num_scheduled_tokens[request.request_id]
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values())
        return out

    def batch_shape(self, out: SchedulerOutput) -> BatchShape:
        context = pairs = prefills = decode_context = 0
        for request in out.scheduled:
            n = out.num_scheduled_tokens[request.request_id]
            context += request.num_computed_tokens
            if n > 1:
                pairs += n * (n + 1) // 2
                prefills += 1
            else:
                decode_context += request.num_computed_tokens
        b = len(out.scheduled)
        return BatchShape(out.total_num_scheduled_tokens, b, b, context, pairs, prefills, b - prefills, decode_context)

    def update_from_output(self, output: SchedulerOutput, sampled=None, now_s: float = 0.0) -> list[Request]:
        finished = []
        for request in output.scheduled:
            request.append_output_tokens(1)
            output.sampled.append(request)
            if request.num_output_tokens >= request.max_tokens or request.num_tokens >= self.limits.max_model_len:
                request.status = RequestStatus.FINISHED_LENGTH
                request.finish_s = now_s
                finished.append(request)
        if finished:
            for request in finished:
                self.running.remove(request)
                self.kv.allocator.free(request.request_id)
                self.requests.pop(request.request_id, None)
        return finished


class StaticBatchScheduler(_BaselineScheduler):
    """HuggingFace ``generate``-style static batches."""

    def __init__(self, limits: SchedulerLimits, capacity_tokens: int, block_size: int) -> None:
        super().__init__(limits, capacity_tokens, block_size)
        self.batch_prompt_len = 0  # prompts padded to the longest in the batch
        self.batch_steps = 0  # decode steps the batch runs: its longest output
        self.step_in_batch = 0

    def _form_batch(self, out: SchedulerOutput) -> None:
        """Take waiting requests in order while the padded batch fits in memory."""
        batch: list[Request] = []
        longest_prompt = longest_output = 0
        capacity = self.kv.allocator.capacity_tokens
        for request in self.waiting:
            if len(batch) >= self.limits.max_num_seqs:
                break
            p = max(longest_prompt, request.num_prompt_tokens)
            o = max(longest_output, request.max_tokens)
            if (len(batch) + 1) * min(p + o, self.limits.max_model_len) > capacity:
                break
            batch.append(request)
            longest_prompt, longest_output = p, o
        padded = min(longest_prompt + longest_output, self.limits.max_model_len)
        for request in batch:
            self.waiting.pop()
            self.kv.allocator.allocate(request.request_id, padded)
            request.status = RequestStatus.RUNNING
            request.num_cached_tokens = 0
            self.running.append(request)
            out.new_request_ids.append(request.request_id)
            out.num_cached_tokens[request.request_id] = 0
        self.head_blocked = len(self.waiting) > 0
        self.batch_prompt_len = longest_prompt
        self.batch_steps = longest_output
        self.step_in_batch = 0

    def schedule(self, admit: bool = True) -> SchedulerOutput:
        out = SchedulerOutput()
        if not self.running:
            self._form_batch(out)
        first = self.step_in_batch == 0
        for request in self.running:
            if request.num_output_tokens >= request.max_tokens:
                continue  # done, but its padded slot still runs until the batch ends
            n = request.num_prompt_tokens if first else 1
            out.num_scheduled_tokens[request.request_id] = n
            out.scheduled.append(request)
            request.num_computed_tokens += n
        out.total_num_scheduled_tokens = sum(out.num_scheduled_tokens.values())
        if out.total_num_scheduled_tokens == 0 and self.running:
            out.total_num_scheduled_tokens = 1  # padding only: the step still runs
        return out

    def batch_shape(self, out: SchedulerOutput) -> BatchShape:
        b = len(self.running)
        if self.step_in_batch == 0:
            p = self.batch_prompt_len
            return BatchShape(b * p, b, b, b * p, b * (p * (p + 1) // 2), num_prefills=b)
        context = b * (self.batch_prompt_len + self.step_in_batch)
        return BatchShape(b, b, b, context, 0, num_decodes=b, decode_context_tokens=context)

    def update_from_output(self, output: SchedulerOutput, sampled=None, now_s: float = 0.0) -> list[Request]:
        for request in output.scheduled:
            request.append_output_tokens(1)
            output.sampled.append(request)
        self.step_in_batch += 1
        if self.step_in_batch < self.batch_steps:
            return []
        finished = list(self.running)  # the batch ends: every result is returned now
        for request in finished:
            request.status = RequestStatus.FINISHED_LENGTH
            request.finish_s = now_s
            self.kv.allocator.free(request.request_id)
            self.requests.pop(request.request_id, None)
        self.running = []
        return finished


def make_baseline(config: EngineConfig, limits: SchedulerLimits, memory) -> _BaselineScheduler:
    capacity = memory.num_gpu_blocks * config.block_size
    # Without chunked prefill a whole prompt must fit in one step's budget, as vLLM ensures.
    if limits.max_num_batched_tokens < limits.max_model_len:
        limits = SchedulerLimits(
            limits.max_model_len, limits.max_num_seqs, limits.max_model_len,
            limits.long_prefill_token_threshold, limits.policy, False,
        )
    if config.engine == "hf-static":
        return StaticBatchScheduler(limits, capacity, config.block_size)
    return OrcaScheduler(limits, capacity, config.block_size, config.engine.split("-", 1)[1])
