"""One simulated inference engine as a SimPy process.

Each loop of the process is one engine step: ask the scheduler what to run, hold for the
step's time (from the roofline model), then append the sampled tokens and finish requests.
When there is nothing to do, the process waits until :meth:`Engine.add_request` wakes it,
so callers may drive ``env.run(until=t)`` in small increments, for instance against the
wall clock.

Fast-forward. Most steps of a busy engine are alike: the same requests, one token each. With
``fast_forward=True`` the engine finds how many such steps will follow unchanged (until a
request finishes, a request arrives, or a request would need a block that is not free) and
does them at once: one numpy call prices them, the blocks they need are taken in the order
vLLM would take them, and one SimPy timeout covers them all. The results are the same as
stepping one by one (``tests/test_engine.py`` checks it); it is off for the emulator, which
streams each token when it is produced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import simpy

from sim.catalog import get_gpu, get_model
from sim.config import EngineConfig, cdiv, resolve_scheduler_limits
from sim.errors import ConfigError
from sim.kv.kv_manager import KVCacheManager
from sim.memory import MemoryPlan, plan_memory
from sim.metrics import EngineStats
from sim.request import Request, RequestStatus
from sim.sched.scheduler import Scheduler, SchedulerLimits, SchedulerOutput
from sim.steptime import BatchShape, StepTimeModel


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
    ) -> None:
        from sim.calibration import coefficients_for  # late: keeps import cycles out

        self.env = env
        self.config = config
        self.seed = seed
        self.model = get_model(config.model)
        self.gpu = get_gpu(config.gpu)
        default_tokens, default_seqs = resolve_scheduler_limits(self.gpu.memory_bytes, self.gpu.name, usage)
        max_num_batched_tokens = config.max_num_batched_tokens or default_tokens
        max_num_seqs = config.max_num_seqs or default_seqs
        max_model_len = config.max_model_len or self.model.max_position_embeddings
        if not config.enable_chunked_prefill:
            # vLLM raises max_num_batched_tokens to max_model_len when chunked prefill is off.
            max_num_batched_tokens = max(max_num_batched_tokens, max_model_len)
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
        )
        self.num_gpu_blocks = self.memory.num_gpu_blocks
        self.limits = SchedulerLimits(
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            max_model_len=self.memory.max_model_len,
            long_prefill_token_threshold=config.long_prefill_token_threshold,
            policy=config.scheduling_policy,
            enable_chunked_prefill=config.enable_chunked_prefill,
        )
        self.scheduler = make_scheduler(config, self.limits, self.num_gpu_blocks, self.memory)
        self.kv = self.scheduler.kv
        self.step_model = StepTimeModel(
            self.model, self.gpu, config.tensor_parallel_size,
            coefficients or coefficients_for(config, self.model, self.gpu), multiplier=step_time_multiplier,
        )
        self.fast_forward = fast_forward and self.scheduler.supports_fast_forward
        self.next_arrival_s = next_arrival_s or (lambda: math.inf)
        self.listeners: list[EngineListener] = []
        self.stats = EngineStats()
        self.step_end_s: list[float] = []  # end time of every step, by global step index
        self.step_log = StepLog()
        self.finished: list[Request] = []
        self._counter = 0
        self._wakeup: simpy.Event | None = None
        self.process = env.process(self._run())

    # --- requests ---
    @property
    def step_time_multiplier(self) -> float:
        return self.step_model.multiplier

    @step_time_multiplier.setter
    def step_time_multiplier(self, value: float) -> None:
        if value <= 0:
            raise ConfigError(f"step_time_multiplier must be > 0, got {value}")
        self.step_model.multiplier = value

    def add_request(
        self, prompt_token_ids: list[int], max_tokens: int, *, request_id: str | None = None,
        n: int = 1, priority: int = 0,
    ) -> list[Request]:
        """Queue a request (``n`` requests for ``n`` parallel samples), arriving now."""
        max_model_len = self.limits.max_model_len
        num_prompt = len(prompt_token_ids)
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
        if request_id is None:
            request_id = f"req-{self._counter}"
        self._counter += 1
        ids = [request_id] if n == 1 else [f"{request_id}-{k}" for k in range(n)]
        requests = [
            Request(rid, prompt_token_ids, max_tokens, arrival_s=self.env.now, priority=priority,
                    block_size=self.config.block_size, vocab_size=self.model.vocab_size)
            for rid in ids
        ]
        for r in requests:
            self.scheduler.add_request(r)
        self.stats.num_requests_waiting = self.scheduler.num_waiting
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()
        return requests

    def abort(self, request_id: str) -> None:
        request = self.scheduler.abort_request(request_id)
        if request is None:
            return
        request.finish_s = self.env.now
        self.stats.request_success_total["abort"] += 1
        self._refresh_gauges()
        self._notify_finish(request)

    def token_times(self, request: Request) -> np.ndarray:
        """When each output token of ``request`` was produced."""
        ends = self.step_end_s
        return np.array([ends[i] for a, b in request.token_steps for i in range(a, b + 1)])

    # --- the process ---
    def _run(self):
        env = self.env
        while True:
            if not self.scheduler.has_unfinished_requests():
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
                continue
            start_s = env.now
            window = self.config.num_scheduler_steps
            if window > 1:
                out = self.scheduler.schedule(admit=self.stats.num_steps % window == 0)
            else:
                out = self.scheduler.schedule()
            if out.total_num_scheduled_tokens == 0:
                # Nothing fits and nothing runs: wait for the next arrival or abort.
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
                continue
            self._note_admissions(out, start_s)
            num_steps = self._fast_forward_length(out, start_s) if self.fast_forward else 1
            if num_steps > 1:
                durations = self.step_model.decode_run(
                    len(out.scheduled), sum(r.num_computed_tokens for r in out.scheduled), num_steps
                )
                duration = float(durations.sum())
            else:
                durations = None
                duration = self.step_model.step_time(self.scheduler.batch_shape(out))
            yield env.timeout(duration)
            self._finish_step(out, start_s, durations)

    def _note_admissions(self, out: SchedulerOutput, now: float) -> None:
        stats = self.stats
        for rid in out.new_request_ids:
            request = self.scheduler.requests[rid]
            request.first_scheduled_s = now
            stats.prompt_tokens_total += request.num_prompt_tokens
        stats.num_preemptions_total += len(out.preempted_request_ids)

    def _fast_forward_length(self, out: SchedulerOutput, start_s: float) -> int:
        """How many steps, this one included, will schedule exactly the same decodes."""
        sched = self.scheduler
        running = sched.running
        if not out.is_pure_decode or len(out.scheduled) != len(running) or not running:
            return 1
        limits = self.limits
        # A waiting request could be admitted in a later step unless something stops it for
        # good until a request finishes: the seat limit, an empty budget, or no free blocks
        # (free blocks only shrink while requests decode).
        window = self.config.num_scheduler_steps
        if window == 1 and sched.num_waiting and not (
            len(running) >= limits.max_num_seqs
            or len(running) >= limits.max_num_batched_tokens
            or sched.head_blocked
        ):
            return 1
        # Until the first request finishes (it finishes at the end of step k = its remaining).
        k = min(
            min(r.max_tokens - r.num_output_tokens, limits.max_model_len - r.num_tokens)
            for r in running
        )
        if window > 1:  # multi-step scheduling: admissions happen at window starts only
            k = min(k, window - self.stats.num_steps % window)
        if k <= 1:
            return 1
        # Until a request would need a block that is not free.
        bs = self.config.block_size
        free = self.kv.num_free_blocks
        tokens = np.fromiter((r.num_tokens for r in running), dtype=np.int64, count=len(running))
        held = np.fromiter((len(self.kv.get_blocks(r.request_id)) for r in running), dtype=np.int64, count=len(running))
        k = _max_steps_within_blocks(tokens, held, bs, free, k)
        if k <= 1:
            return 1
        # Until the next arrival: a step that starts after it would see the new request.
        next_arrival = self.next_arrival_s()
        if next_arrival < math.inf:
            ctx = int(tokens.sum())
            d = self.step_model.decode_run(len(running), ctx, k)
            starts = start_s + np.concatenate(([0.0], np.cumsum(d[:-1])))
            k = min(k, int(np.searchsorted(starts, next_arrival, side="left")))
            if k <= 1:
                return 1
        return k

    def _finish_step(self, out: SchedulerOutput, start_s: float, durations: np.ndarray | None) -> None:
        env, stats, sched = self.env, self.stats, self.scheduler
        num_steps = 1 if durations is None else len(durations)
        first_step = len(self.step_end_s)
        if durations is None:
            self.step_end_s.append(env.now)
        else:
            ends = start_s + np.cumsum(durations)
            ends[-1] = env.now  # the same float SimPy holds, so times agree exactly
            self.step_end_s.extend(ends.tolist())
            # Steps 2..K: blocks, cached hashes and tokens of the skipped steps.
            extra = num_steps - 1
            sched.fast_forward(out, extra)
            for request in out.scheduled:
                request.record_token_steps(first_step, first_step + extra - 1)
            stats.generation_tokens_total += extra * len(out.scheduled)
        last_step = first_step + num_steps - 1
        finished = sched.update_from_output(out, None, env.now)
        produced = out.sampled
        previous = last_step - 1
        for request in produced:
            if request.first_token_s is None:
                request.first_token_s = self.step_end_s[first_step]
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
        self.step_log.add(start_s, out, sched, self.kv.usage, durations, env.now)
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


def _max_steps_within_blocks(tokens: np.ndarray, held: np.ndarray, bs: int, free: int, k: int) -> int:
    """Largest j <= k such that steps 2..j need at most ``free`` new blocks in total.

    At step j a decoding request with ``tokens`` tokens (at step 1) needs room for
    ``tokens + j - 1`` tokens.
    """
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


class StepLog:
    """Per-step series, stored in chunks so a fast-forwarded run costs one entry."""

    def __init__(self) -> None:
        self._chunks: list[tuple] = []

    def add(self, start_s, out, sched, kv_usage, durations, end_s) -> None:
        n = out.total_num_scheduled_tokens
        if durations is None:
            self._chunks.append(((end_s,), (end_s - start_s,), sched.num_running, sched.num_waiting, n, kv_usage,
                                 len(out.preempted_request_ids)))
        else:
            ends = start_s + np.cumsum(durations)
            ends[-1] = end_s
            self._chunks.append((ends, durations, sched.num_running + 0, sched.num_waiting, n, kv_usage, 0))

    def arrays(self) -> dict[str, np.ndarray]:
        if not self._chunks:
            keys = ("t_s", "duration_s", "num_running", "num_waiting", "num_batched_tokens", "kv_usage", "num_preemptions")
            return {k: np.zeros(0) for k in keys}
        t = np.concatenate([np.asarray(c[0], dtype=float) for c in self._chunks])
        d = np.concatenate([np.asarray(c[1], dtype=float) for c in self._chunks])
        sizes = [len(c[0]) for c in self._chunks]
        rep = lambda i, dtype: np.repeat(np.array([c[i] for c in self._chunks], dtype=dtype), sizes)
        return {
            "t_s": t, "duration_s": d,
            "num_running": rep(2, np.int64), "num_waiting": rep(3, np.int64),
            "num_batched_tokens": rep(4, np.int64), "kv_usage": rep(5, float),
            "num_preemptions": rep(6, np.int64),
        }


def make_scheduler(config: EngineConfig, limits: SchedulerLimits, num_gpu_blocks: int, memory: MemoryPlan):
    if config.engine == "vllm":
        kv = KVCacheManager(num_gpu_blocks, config.block_size, config.enable_prefix_caching, limits.max_model_len)
        return VllmScheduler(limits, kv)
    from sim.sched.baselines import make_baseline

    return make_baseline(config, limits, memory)


class VllmScheduler(Scheduler):
    """vLLM's scheduler plus what the engine needs from it: batch shapes and fast-forward."""

    supports_fast_forward = True

    def batch_shape(self, out: SchedulerOutput) -> BatchShape:
        num_tokens = out.total_num_scheduled_tokens
        context = pairs = sampled = 0
        counts = out.num_scheduled_tokens
        for request in out.scheduled:
            n = counts[request.request_id]
            after = request.num_computed_tokens
            before = after - n
            context += after  # the KV attention reads: context so far plus this step's tokens
            if n > 1:
                pairs += n * before + n * (n + 1) // 2
            if after >= request.num_tokens:
                sampled += 1
        return BatchShape(num_tokens, len(out.scheduled), sampled, context, pairs)

    def fast_forward(self, out: SchedulerOutput, extra_steps: int) -> None:
        """Do the bookkeeping of ``extra_steps`` more decode steps like ``out``.

        Called after ``out`` was scheduled, before its output is applied. For each extra step,
        every request gets its previous token appended, needs room for one more token and
        caches the blocks that become full, exactly as ``schedule`` and
        ``update_from_output`` would do step by step. New blocks are taken from the free
        queue in the order vLLM takes them: step by step, and in running order within a step.
        """
        kv, bs = self.kv, self.kv.block_size
        events: list[tuple[int, int]] = []  # (step, running index) of each new block
        for index, request in enumerate(out.scheduled):
            tokens = request.num_tokens  # at step 1
            held = len(kv.req_to_blocks[request.request_id])
            # Block number b (0-based) is needed at the first step j with tokens + j - 1 > b * bs.
            last_needed = cdiv(tokens + extra_steps, bs)
            for b in range(held, last_needed):
                events.append((b * bs - tokens + 2, index))
        if events:
            events.sort()
            blocks = kv.pool.get_new_blocks(len(events))
            for (_, index), block in zip(events, blocks):
                kv.req_to_blocks[out.scheduled[index].request_id].append(block)
        for request in out.scheduled:
            request.append_output_tokens(extra_steps)
            request.num_computed_tokens += extra_steps
            if kv.enable_caching:
                kv.cache_blocks(request, request.num_computed_tokens)


@dataclass
class EngineResult:
    """A finished run, per request in request order, plus the per-step series."""

    request_ids: list[str]
    arrival_s: np.ndarray
    first_scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    num_preemptions: np.ndarray
    num_cached_tokens: np.ndarray
    itl_s: np.ndarray
    steps: dict[str, np.ndarray]
    stats: EngineStats
    memory: MemoryPlan
    config: EngineConfig
    extra: dict = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return float(self.finish_s.max()) if len(self.finish_s) else 0.0

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2el_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """(e2el - ttft) / (output - 1), for outputs longer than one token, as vLLM's benchmark."""
        mask = self.output_len > 1
        return (self.finish_s[mask] - self.first_token_s[mask]) / (self.output_len[mask] - 1)


def collect_result(engine: Engine, requests: list[Request]) -> EngineResult:
    ends = np.asarray(engine.step_end_s)
    itls = []
    for r in requests:
        if not r.token_steps:
            continue
        idx = np.concatenate([np.arange(a, b + 1) for a, b in r.token_steps])
        if len(idx) > 1:
            itls.append(np.diff(ends[idx]))
    f = lambda attr: np.array([getattr(r, attr) if getattr(r, attr) is not None else np.nan for r in requests], dtype=float)
    i = lambda values: np.array(values, dtype=np.int64)
    return EngineResult(
        request_ids=[r.request_id for r in requests],
        arrival_s=f("arrival_s"), first_scheduled_s=f("first_scheduled_s"),
        first_token_s=f("first_token_s"), finish_s=f("finish_s"),
        prompt_len=i([r.num_prompt_tokens for r in requests]),
        output_len=i([r.num_output_tokens for r in requests]),
        num_preemptions=i([r.num_preemptions for r in requests]),
        num_cached_tokens=i([r.num_cached_tokens for r in requests]),
        itl_s=np.concatenate(itls) if itls else np.zeros(0),
        steps=engine.step_log.arrays(), stats=engine.stats, memory=engine.memory, config=engine.config,
    )


from sim.runner import run_engine  # noqa: E402  (re-exported: the documented entry point)
