"""One simulated inference engine as a SimPy process.

Each loop of the process is one engine step: ask the scheduler what to run, hold for the
step's time (from the roofline model), then append the sampled tokens and finish requests.
When there is nothing to do, the process waits until :meth:`Engine.add_request` wakes it,
so callers may drive ``env.run(until=t)`` in small increments, for instance against the
wall clock.

Fast-forward. Most steps of a busy engine are alike: most requests decode one token inside a
block they hold. With ``fast_forward=True`` the engine uses :class:`LazyDecodeScheduler` (or,
for a model with sliding-window layers, :class:`HybridLazyScheduler`), which makes the same
decisions as vLLM's scheduler but visits only the requests that need something in a step,
and when a step runs nothing but such steady decodes, the engine prices the run of identical
steps up to the next event (a request finishing, an arrival) with one numpy call and
one SimPy timeout. The results are the same as stepping one by one with the reference
scheduler (``tests/test_engine.py`` checks it); the emulator, which streams each token as it
is produced, runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import simpy

from sim.catalog import get_gpu, get_model
from sim.config import EngineConfig, vllm_scheduler_limits
from sim.errors import ConfigError
from sim.kv.hybrid import HybridKVCacheManager, group_specs_from_plan
from sim.kv.kv_manager import KVCacheManager
from sim.memory import MemoryPlan, plan_memory
from sim.precision import resolve_precision
from sim.metrics import EngineStats
from sim.request import Request, RequestStatus
from sim.sched.lazy import LazyDecodeScheduler
from sim.sched.lazy_hybrid import HybridLazyScheduler
from sim.sched.scheduler import Scheduler, SchedulerLimits, SchedulerOutput
from sim.steptime import BatchShape, make_step_model


@dataclass(frozen=True, slots=True)
class StepRecord:
    t_s: float  # when the step ended
    duration_s: float
    num_running: int
    num_waiting: int
    num_batched_tokens: int
    kv_usage: float
    num_preemptions: int
    num_steps: int = 1  # >1 for a fast-forwarded run of identical decode steps


class EngineListener(Protocol):  # every method is optional
    def on_tokens(self, request: Request, num_new_tokens: int, now_s: float) -> None: ...
    def on_finish(self, request: Request, now_s: float) -> None: ...
    def on_step(self, record: StepRecord) -> None: ...


class Engine:
    def __init__(
        self,
        env: simpy.Environment,
        config: EngineConfig,
        *,
        seed: int = 0,
        usage: Literal["serve", "offline"] = "serve",
        step_time_multiplier: float = 1.0,
        fast_forward: bool = False,
        next_arrival_s: Callable[[], float] | None = None,
        coefficients=None,
        dp_rank: int | None = None,
        run_process: bool = True,
    ) -> None:
        from sim.calibration import coefficients_for  # late: keeps import cycles out

        if config.data_parallel_size > 1 and dp_rank is None:
            raise ConfigError(
                f"--data-parallel-size {config.data_parallel_size}: one Engine is one engine core; "
                f"sim.dp.DataParallelEngines (run_engine does it) runs the ranks"
            )
        self.dp_rank = dp_rank or 0
        self.env = env
        self.config = config
        self.seed = seed
        self.model = get_model(config.model)
        self.gpu = get_gpu(config.gpu)
        # vLLM's defaults for the GPU, capped by the values the user set (a default max_num_seqs
        # is at most max_num_batched_tokens, ...), and max_num_batched_tokens raised to
        # max_model_len when chunked prefill is off.
        max_num_batched_tokens, max_num_seqs, max_model_len = vllm_scheduler_limits(
            config, self.model.max_position_embeddings, self.gpu.memory_bytes, self.gpu.name, usage, verify=False)
        if not config.enable_chunked_prefill:
            max_num_batched_tokens = max(max_num_batched_tokens, max_model_len)
        # What runs (dtypes, FP8 kernels, attention backend); the step time reads it too.
        self.precision = resolve_precision(self.model, self.gpu, config)
        self.memory: MemoryPlan = plan_memory(
            self.model, self.gpu,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            block_size=config.block_size,
            kv_cache_memory_bytes=config.kv_cache_memory_bytes,
            num_gpu_blocks_override=config.num_gpu_blocks_override,
            usage=usage,
            precision=self.precision,
            data_parallel_size=config.data_parallel_size,
            enable_expert_parallel=config.enable_expert_parallel,
            performance_mode=config.performance_mode,
        )
        # A hybrid model (sliding-window and full layers) has several KV cache groups, each with
        # its own block tables, drawing on one pool of MemoryPlan.num_gpu_blocks blocks
        # (sim.kv.hybrid). The baselines keep one table a request: they get the blocks vLLM
        # allocates with --disable-hybrid-kv-cache-manager (MemoryPlan.full_attention_blocks).
        self.hybrid_kv = uses_kv_cache_groups(config, self.memory)
        self.num_gpu_blocks = config.num_gpu_blocks_override or (
            self.memory.num_gpu_blocks if self.hybrid_kv else self.memory.full_attention_blocks)
        self.limits = SchedulerLimits(
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            max_model_len=self.memory.max_model_len,
            long_prefill_token_threshold=config.long_prefill_token_threshold,
            policy=config.scheduling_policy,
            enable_chunked_prefill=config.enable_chunked_prefill,
        )
        self.scheduler = make_scheduler(config, self.limits, self.num_gpu_blocks, self.memory, fast=fast_forward)
        self.kv = self.scheduler.kv
        self.step_model = make_step_model(
            self.model, self.gpu, config.tensor_parallel_size,
            coefficients or coefficients_for(config, self.model, self.gpu), multiplier=step_time_multiplier,
            precision=self.precision, data_parallel_size=config.data_parallel_size,
            enable_expert_parallel=config.enable_expert_parallel,
            all2all_backend=config.all2all_backend,
            cudagraph_max_tokens=max(self.memory.cudagraph_capture_sizes, default=0),
        )
        self.fast_forward = isinstance(self.scheduler, LazyDecodeScheduler)
        # vLLM's asynchronous scheduling (the default since vLLM 0.14; profiles fitted to older
        # versions turn it off) decides step N+1 when step N starts: see _take_in.
        self.async_scheduling = bool(getattr(self.step_model.coefficients, "async_scheduling", False))
        self._staged: list[Request] = []  # arrived while a step ran; the scheduler has not seen them
        self._stepping = False  # a step is in flight (from _next_batch to the end of _finish_step)
        self._last_step_s = (-math.inf, -math.inf)  # (start, end) of the last step that ended
        self._batch_shape = getattr(self.scheduler, "batch_shape", batch_shape)
        self.next_arrival_s = next_arrival_s or (lambda: math.inf)
        self.listeners: list[EngineListener] = []
        self.stats = EngineStats()
        # End time of every step: step i ended at step_end_s[i - step_base]. step_base stays 0
        # but in a server that runs for hours, which forgets what no request needs (forget_steps).
        self.step_end_s: list[float] = []
        self.step_base = 0
        self.step_log = StepLog()
        self.finished: list[Request] = []
        self._counter = 0
        self._forks: dict[str, list[Request]] = {}  # parent id -> samples to fork (copy-on-write)
        self._next_memory_sample = 0
        self._memory_sums: dict[str, float] = {}  # time-weighted sums of the memory breakdown
        self._waiting_during_run = 0  # requests waiting through a fast-forwarded run (_run)
        self._wakeup: simpy.Event | None = None
        # A DP rank in lockstep (sim.dp) is stepped by its coordinator instead of its own process.
        self.process = env.process(self._run()) if run_process else None

    # --- requests ---
    @property
    def step_time_multiplier(self) -> float:
        return self.step_model.multiplier

    @step_time_multiplier.setter
    def step_time_multiplier(self, value: float) -> None:
        if value <= 0:
            raise ConfigError(f"step_time_multiplier must be > 0, got {value}")
        self.step_model.multiplier = value

    def check_request(self, num_prompt: int, max_tokens: int, n: int = 1) -> None:
        """Raise ConfigError for a request the engine would refuse (what add_request checks
        first; the emulator checks before its simulated API server hands a request over)."""
        max_model_len = self.limits.max_model_len
        if num_prompt == 0:
            raise ConfigError("the prompt is empty: a request needs at least one prompt token")
        if num_prompt >= max_model_len:
            raise ConfigError(
                f"The decoder prompt (length {num_prompt}) is longer than the maximum model "
                f"length of {max_model_len - 1} (max_model_len={max_model_len} leaves room for "
                f"at least one output token). Make sure that `max_model_len` is no smaller than "
                f"the number of text tokens plus one."
            )
        if max_tokens <= 0:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        if n <= 0:
            raise ConfigError(f"n must be at least 1, got {n}")
        final_tokens = min(num_prompt + max_tokens, max_model_len)
        usable = self.num_gpu_blocks - 1
        max_blocks = getattr(self.kv, "max_blocks_for", None)
        needed = max_blocks(final_tokens) if max_blocks else -(-final_tokens // self.config.block_size)
        if needed > usable:
            # vLLM would admit it (its prompt fits) and then preempt it forever; refuse it now.
            raise ConfigError(
                f"a request of {num_prompt} prompt + {max_tokens} output tokens needs "
                f"{needed} KV blocks, but the cache has only "
                f"{usable}: it could never finish. Lower max_tokens, or give the cache more memory."
            )

    def add_request(
        self, prompt_token_ids: list[int], max_tokens: int, *, request_id: str | None = None,
        n: int = 1, priority: int = 0,
    ) -> list[Request]:
        """Queue a request (``n`` requests for ``n`` parallel samples), arriving now."""
        num_prompt = len(prompt_token_ids)
        self.check_request(num_prompt, max_tokens, n)
        if request_id is None:
            request_id = f"req-{self._counter}"
        self._counter += 1
        # Samples are named as vLLM's ParentRequest names them ("{k}_{parent id}").
        ids = [request_id] if n == 1 else [f"{k}_{request_id}" for k in range(n)]
        requests = [
            Request(rid, prompt_token_ids, max_tokens, arrival_s=self.env.now, priority=priority,
                    block_size=self.config.block_size, vocab_size=self.model.vocab_size)
            for rid in ids
        ]
        if n > 1 and self.config.parallel_sampling == "copy-on-write":
            # One prefill; the other samples fork from it when it samples its first token.
            self._forks[requests[0].request_id] = requests[1:]
            queued = requests[:1]
        else:
            queued = requests
        if self.async_scheduling and self._stepping:
            self._staged.extend(queued)  # the scheduler sees them at a later step's start (_take_in)
        else:
            for r in queued:
                self.scheduler.add_request(r)
        self.stats.num_requests_waiting = self.scheduler.num_waiting
        self.wake()
        return requests

    def _fork_samples(self, parent: Request, step: int) -> list[Request]:
        """Copy-on-write parallel sampling: the parent's prefill is done; its other samples
        start from the same state, sharing every block (see KVCacheManager.fork)."""
        children = self._forks.pop(parent.request_id)
        for child in children:
            child.num_computed_tokens = parent.num_computed_tokens
            child.num_output_tokens = parent.num_output_tokens
            child.num_tokens = parent.num_tokens
            child.num_cached_tokens = parent.num_cached_tokens
            child.first_scheduled_s = parent.first_scheduled_s
            child.first_token_s = parent.first_token_s
            child.token_steps = [[step, step]]
            self.scheduler.requests[child.request_id] = child
            if parent.is_finished:  # a one-token answer: nothing left to share
                child.status, child.finish_s = parent.status, parent.finish_s
                self.finished.append(child)
                self.stats.request_success_total[child.status.value] += 1
                continue
            child.status = RequestStatus.RUNNING
            self.kv.fork(parent, child)
            self.scheduler.running.append(child)
        self.stats.generation_tokens_total += len(children)
        return children

    def abort(self, request_id: str) -> None:
        staged = next((r for r in self._staged if r.request_id == request_id), None)
        if staged is not None:
            self._staged.remove(staged)
            staged.status = RequestStatus.FINISHED_ABORTED
        request = staged or self.scheduler.abort_request(request_id)
        if request is None:
            return
        request.finish_s = self.env.now
        self.stats.request_success_total["abort"] += 1
        self._refresh_gauges()
        self._notify_finish(request)
        self.wake()  # freed blocks may let a waiting request in

    def wake(self) -> None:
        """Wake the engine if it is idle or stalled (nothing fitted), to schedule again."""
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()

    def token_times(self, request: Request) -> np.ndarray:
        """When each output token of ``request`` was produced."""
        ends, base = self.step_end_s, self.step_base
        if request.token_steps and request.token_steps[0][0] < base:
            raise ValueError(f"{request.request_id}: its first tokens' steps were forgotten (forget_steps)")
        return np.array([ends[i - base] for a, b in request.token_steps for i in range(a, b + 1)])

    def forget_steps(self) -> int:
        """Forget the end times of the steps before the oldest one an unfinished request made a
        token in (a server that runs for hours calls this; offline results need every step).
        Returns how many were forgotten."""
        oldest = self.step_base + len(self.step_end_s)  # the next step's index
        for request in self.scheduler.requests.values():
            if request.token_steps:
                oldest = min(oldest, request.token_steps[0][0])
            elif getattr(request, "lazy_step", -1) >= 0:  # parked by the fast-forward scheduler
                oldest = min(oldest, request.lazy_step)
        forget = oldest - self.step_base
        del self.step_end_s[:forget]
        self.step_base = oldest
        return forget

    # --- asynchronous scheduling ---
    def _take_in(self, now: float) -> None:
        """Hand the scheduler the requests that vLLM's engine core would have seen by now.

        Under asynchronous scheduling the engine core keeps two steps queued: when step N
        starts on the GPU, it has already scheduled step N + 1, from the requests it had then
        (vllm/v1/engine/core.py: ``step_with_batch_queue``, a batch queue of 2). A request that
        arrives while step N runs therefore joins step N + 2 at the earliest: at a step that
        follows the last one back to back, the scheduler takes the requests that arrived by the
        start of that last step. After an idle gap it takes all of them."""
        last_start, last_end = self._last_step_s
        self._release(last_start if last_end == now else now)

    def _take_all(self) -> bool:
        """Step N + 1 had nothing to run: the engine core schedules afresh, with every request
        it has. True if there were staged requests."""
        return self._release(math.inf)

    def _release(self, cutoff: float) -> bool:
        """Hand the scheduler the staged requests that arrived by ``cutoff`` (they are staged in
        arrival order). True if there were any."""
        k = 0
        while k < len(self._staged) and self._staged[k].arrival_s <= cutoff:
            k += 1
        for r in self._staged[:k]:
            self.scheduler.add_request(r)
        del self._staged[:k]
        return k > 0

    def _next_batch(self, now: float) -> SchedulerOutput | None:
        """The step to run now, or None when there is nothing to run (no request, or nothing
        fits). The staged requests join as :meth:`_take_in` says, or all of them when the step
        would otherwise have had nothing to run."""
        self._take_in(now)
        if not self.scheduler.has_unfinished_requests() and not self._take_all():
            return None
        out = self._schedule()
        if out.total_num_scheduled_tokens == 0 and self._take_all():
            out = self._schedule()  # again, with the staged requests
        if not out.total_num_scheduled_tokens:
            return None
        self._stepping = True  # the step starts now; _finish_step ends it
        return out

    # --- the process ---
    def _run(self):
        env = self.env
        while True:
            out = self._next_batch(env.now)
            if out is None:
                # Nothing to run, or nothing fits: wait for the next arrival or abort.
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
                continue
            start_s = env.now
            self._note_admissions(out, start_s)
            durations = self._run_durations(out, start_s) if self.fast_forward else None
            if durations is not None:
                duration = float(durations.sum())
                # Nothing arrives before the run's last step (see _run_durations): what waits
                # now waits through the steps before it.
                self._waiting_during_run = self.scheduler.num_waiting
            else:
                duration = self.step_model.step_time(self._batch_shape(out))
            yield env.timeout(duration)
            self._finish_step(out, start_s, durations)

    def _schedule(self) -> SchedulerOutput:
        window = self.config.num_scheduler_steps
        if window > 1:
            return self.scheduler.schedule(admit=self.stats.num_steps % window == 0)
        return self.scheduler.schedule()

    def _note_admissions(self, out: SchedulerOutput, now: float) -> None:
        stats = self.stats
        for rid in out.new_request_ids:
            request = self.scheduler.requests[rid]
            request.first_scheduled_s = now
            stats.prompt_tokens_total += request.num_prompt_tokens
        stats.num_preemptions_total += len(out.preempted_request_ids)

    def _run_durations(self, out: SchedulerOutput, start_s: float) -> np.ndarray | None:
        """The durations of the run of steps exactly like this one, this one included (see
        sim/sched/lazy.py), bounded by the next arrival and, under multi-step scheduling, by
        the window's end; None when the step stands alone."""
        sched = self.scheduler
        if self._staged:
            return None  # a staged request joins within two steps: step one at a time
        limit = 1 << 30
        window = self.config.num_scheduler_steps
        if window > 1:
            limit = window - self.stats.num_steps % window
        steady = sched.steady_run_length(out, limit)
        if steady <= 1:
            return None  # the common case in a busy engine: decide cheaply
        # The steps are priced as this one plus one more token of context per request.
        shape = batch_shape(out)
        next_arrival = self.next_arrival_s()
        if next_arrival == math.inf:
            return self.step_model.decode_run(shape.num_seqs, shape.context_tokens, steady)
        # A step that starts after the arrival would see the new request.
        if start_s + self.step_model.step_time(shape) >= next_arrival:
            return None
        d = self.step_model.decode_run(shape.num_seqs, shape.context_tokens, min(steady, 4096))
        starts = start_s + np.concatenate(([0.0], np.cumsum(d[:-1])))
        steady = min(steady, int(np.searchsorted(starts, next_arrival, side="left")))
        return d[:steady] if steady > 1 else None

    def _finish_step(self, out: SchedulerOutput, start_s: float, durations: np.ndarray | None) -> None:
        env, stats, sched = self.env, self.stats, self.scheduler
        num_steps = 1 if durations is None else len(durations)
        first_step = self.step_base + len(self.step_end_s)
        if durations is None:
            self.step_end_s.append(env.now)
        else:
            ends = start_s + np.cumsum(durations)
            ends[-1] = env.now  # the same float SimPy holds, so times agree exactly
            self.step_end_s.extend(ends.tolist())
            # The run's KV usage step by step, and, for a long run, its memory breakdown at both
            # ends (it grows one token a request a step, so their mean stands for the run; a
            # short run is sampled at its end, as a single step is).
            sample = (num_steps > 2 * self.MEMORY_SAMPLE_STEPS
                      and stats.num_steps + num_steps >= self._next_memory_sample)
            breakdown_first = sched.memory_breakdown().fractions() if sample else None
            usage_first = self.kv.usage
            usage_during = np.concatenate(([usage_first], sched.skip(num_steps - 1)[:-1]))
            if sample:
                breakdown_last = sched.memory_breakdown().fractions()
                run_breakdown = {k: (v + breakdown_last[k]) / 2 for k, v in breakdown_first.items()}
        stats.generation_tokens_total += out.num_steady * num_steps
        last_step = first_step + num_steps - 1
        running_during = sched.num_running  # before the run's last step retires its finishers
        finished = sched.update_from_output(out, None, env.now)
        if self._forks:
            for request in list(out.sampled):
                if request.request_id in self._forks:
                    if request.first_token_s is None:
                        request.first_token_s = self.step_end_s[first_step - self.step_base]
                    self._fork_samples(request, last_step)
        produced = out.sampled
        previous = last_step - 1
        for request in produced:
            if request.first_token_s is None:
                request.first_token_s = self.step_end_s[first_step - self.step_base]
            runs = request.token_steps  # Request.record_token_step, inlined (hot loop)
            if runs and runs[-1][1] == previous:
                runs[-1][1] = last_step
            else:
                runs.append([last_step, last_step])
        stats.generation_tokens_total += len(produced)
        stats.num_steps += num_steps
        stats.busy_s += env.now - start_s
        for request in finished:
            stats.request_success_total[request.status.value] += 1
        self._refresh_gauges()
        self.step_log.add(start_s, out, sched, self.kv.usage, durations, env.now, running_during,
                          *((usage_during, self._waiting_during_run) if durations is not None else ()))
        if durations is not None and sample:
            self._sample_memory(env.now - start_s, run_breakdown)
        elif stats.num_steps >= self._next_memory_sample:
            self._sample_memory(env.now - start_s)
        for listener in self.listeners:
            on_tokens = getattr(listener, "on_tokens", None)
            if on_tokens is not None:
                for request in produced:
                    on_tokens(request, num_steps, env.now)
        for request in finished:
            self.finished.append(request)
            self._notify_finish(request)
        if self.listeners:
            record = StepRecord(env.now, env.now - start_s, sched.num_running, sched.num_waiting,
                                out.total_num_scheduled_tokens, self.kv.usage,
                                len(out.preempted_request_ids), num_steps)
            for listener in self.listeners:
                on_step = getattr(listener, "on_step", None)
                if on_step is not None:
                    on_step(record)
        # The step ends only now: requests the listeners sent above arrived while it ran.
        last = env.now - start_s if durations is None else float(durations[-1])
        self._last_step_s, self._stepping = (env.now - last, env.now), False

    MEMORY_SAMPLE_STEPS = 32  # how often (in steps) the KV memory breakdown is sampled

    def _sample_memory(self, weight_s: float, fractions: dict[str, float] | None = None) -> None:
        """Add the KV memory breakdown (now's, unless given), weighted by the time of the step or
        run just done."""
        self._next_memory_sample = self.stats.num_steps + self.MEMORY_SAMPLE_STEPS
        if fractions is None:
            fractions = self.scheduler.memory_breakdown().fractions()
        sums = self._memory_sums
        for key, value in fractions.items():
            sums[key] = sums.get(key, 0.0) + value * weight_s
        sums["_weight"] = sums.get("_weight", 0.0) + weight_s

    def memory_waste(self) -> dict[str, float]:
        """Time-averaged shares of the KV memory: token states, reservation, internal and
        external fragmentation, free (sampled every MEMORY_SAMPLE_STEPS steps)."""
        w = self._memory_sums.get("_weight", 0.0)
        return {k: v / w for k, v in self._memory_sums.items() if k != "_weight"} if w else {}

    def _refresh_gauges(self) -> None:
        s = self.stats
        s.num_requests_running = self.scheduler.num_running
        s.num_requests_waiting = self.scheduler.num_waiting
        s.kv_cache_usage_perc = self.kv.usage
        kv_stats = getattr(self.kv, "stats", None)
        if kv_stats is not None:
            s.prefix_cache_queries_total = kv_stats.queries
            s.prefix_cache_hits_total = kv_stats.hits

    def _notify_finish(self, request: Request) -> None:
        for listener in self.listeners:
            on_finish = getattr(listener, "on_finish", None)
            if on_finish is not None:
                on_finish(request, self.env.now)


def uses_kv_cache_groups(config: EngineConfig, memory: MemoryPlan) -> bool:
    """Whether the engine allocates a hybrid model's KV cache groups apart (vLLM's default)."""
    return (config.engine == "vllm" and len(memory.kv_cache_groups) > 1
            and not config.disable_hybrid_kv_cache_manager)


def make_scheduler(config: EngineConfig, limits: SchedulerLimits, num_gpu_blocks: int, memory: MemoryPlan,
                   fast: bool = False):
    """vLLM's scheduler (the lazy variant for long runs: same decisions, fewer visits), or a
    baseline's."""
    if uses_kv_cache_groups(config, memory):
        # Sliding-window and full-attention groups: one block table per group (sim.kv.hybrid),
        # whose lazy scheduler does each parked request's KV work at its step (sim.sched.lazy_hybrid).
        if config.parallel_sampling == "copy-on-write":
            raise ConfigError(
                f"--parallel-sampling copy-on-write: not modelled for {config.model}, whose sliding-window "
                f"and full-attention layers have separate KV cache groups; use the default (vLLM's)")
        kv = HybridKVCacheManager(num_gpu_blocks, config.block_size, group_specs_from_plan(memory),
                                  config.enable_prefix_caching, limits.max_model_len)
        return HybridLazyScheduler(limits, kv) if fast else Scheduler(limits, kv)
    if config.engine == "vllm":
        kv = KVCacheManager(num_gpu_blocks, config.block_size, config.enable_prefix_caching, limits.max_model_len)
        if config.parallel_sampling == "copy-on-write":
            kv.copy_on_write = True
            return Scheduler(limits, kv)  # parked decodes could write into shared blocks
        return LazyDecodeScheduler(limits, kv) if fast else Scheduler(limits, kv)
    from sim.sched.baselines import make_baseline

    return make_baseline(config, limits, memory)


def batch_shape(out: SchedulerOutput) -> BatchShape:
    """What a vLLM step computes, for the step-time model (baselines have their own)."""
    counts = out.num_scheduled_tokens
    context = pairs = sampled = prefills = decode_context = 0
    for request in out.scheduled:
        n = counts[request.request_id]
        after = request.num_computed_tokens
        context += after  # the KV attention reads: context so far plus this step's tokens
        if n > 1:
            pairs += n * (after - n) + n * (n + 1) // 2
            prefills += 1
        else:
            decode_context += after
        if after >= request.num_tokens:
            sampled += 1
    steady = out.num_steady
    num_scheduled = len(out.scheduled)
    return BatchShape(out.total_num_scheduled_tokens, num_scheduled + steady, sampled + steady,
                      context + out.steady_context_tokens, pairs, prefills, num_scheduled - prefills + steady,
                      decode_context + out.steady_context_tokens)


from sim.results import EngineResult, StepLog, collect_result  # noqa: E402  (re-exported)
from sim.runner import run_engine  # noqa: E402  (re-exported: the documented entry point)
