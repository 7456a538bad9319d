"""The simulated engine, advanced against the wall clock inside the server's asyncio loop.

Simulated time is wall time since the server started: ``sim_s = monotonic() - t0``. One
background task (the driver) does everything time-driven, so the work per token is small and
the same whatever the number of streams:

1. run the simulation up to now (``env.run(until=now)``); each step that ends hands its tokens
   to the runner through the engine's listener hooks (``on_tokens``, ``on_finish``,
   ``on_step``);
2. a request reaches the engine when vLLM's API server would have handed it over: after the
   work that one process does on it, HTTP and validation (``intake_s``) and tokenization
   (``intake_s_per_token`` per prompt token), first come first served with everything else it
   does (the calibration's ``http_s`` and ``tokenize_s_per_token``, :mod:`sim.frontend`; the
   emulator's own HTTP work happens meanwhile, on the wall clock);
3. a token is *released* to its request's :class:`Handle` at its due time: when vLLM's API
   server would have streamed it. That is the step's end (under the latency fault,
   ``arrival + M x (step end - arrival)``), plus the API server's streaming time: one process
   detokenizes and sends a step's tokens one after another, ``stream_s_per_token`` each (the
   calibration's ``detokenize_s_per_token``, :mod:`sim.frontend`), so the k-th token of a step
   is due k of those later, as `servelab bench serve` simulates it. Tokens due now are released
   at once; later ones wait in one timer heap (a min-heap of (due time, sequence) entries,
   the timer wheel), not in a task or a timer per token;
4. sleep until the next simulated event or the next due token, whichever is first (or until a
   new request or an abort wakes it).

Releasing a token appends it to the handle and wakes the handle's one writer (the HTTP
response), which sends everything released since it last ran in one write. So a step that
makes 256 tokens costs 256 appends and 256 wake-ups, and a writer that was late catches up in
one write instead of queueing one write per token.

Faults that act on the engine (slow GPU, KV leak, crash loop) are applied here, once a tick.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import simpy

from lab.server.faults import FaultSet, crash_downtime_s
from sim.frontend import FrontendCoefficients
from sim.results import StepLog

TICK_S = 0.25  # how often time-dependent faults are re-read when the engine is idle
KEEP_FINISHED = 100  # the engine keeps finished requests for offline results; a server keeps the last ones


@dataclass(eq=False)
class Handle:
    """One HTTP request's engine requests (one per choice), and the events released to it.

    Events: ``("token", index, None, due_s)``, ``("finish", index, status, due_s)``,
    ``("error", index, message, due_s)``, ``due_s`` in simulated seconds. The runner appends
    them when they are due; the request's writer takes all that are there at once."""

    arrival_s: float
    latency_multiplier: float = 1.0  # the latency fault in force when the request arrived
    request_ids: list[str] = field(default_factory=list)
    unfinished: set[str] = field(default_factory=set)
    events: list[tuple] = field(default_factory=list)
    timers_pending: int = 0  # events of this handle still in the timer heap (keeps their order)
    # What vLLM's metrics read of the API request, by engine request index: ``n`` (the i-th
    # index belongs to prompt i // n, as vLLM's ParentRequest groups n samples), each one's
    # max_tokens as vLLM's sampling parameters hold it, the finish reason its plan gives it
    # ("stop" or "length"; the simulated engine only knows lengths), whether its first token
    # has come out, and the tokens it generated once finished (-1 before).
    n: int = 1
    max_tokens_params: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    prefilled: list[bool] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    gone: bool = False  # the client went away (set by the writer's disconnect watcher)
    _waiter: asyncio.Future | None = None

    def push(self, event: tuple) -> None:
        self.events.append(event)
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[tuple]:
        """Every event released since the last call; waits if there is none (or until
        :meth:`wake`, which returns an empty list)."""
        if not self.events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out, self.events = self.events, []
        return out


class SimRunner:
    def __init__(
        self,
        build_engine: Callable[[simpy.Environment], Any],
        *,
        faults: FaultSet,
        rng: np.random.Generator,
        observers: list[Any] = (),
        clock: Callable[[], float] = time.monotonic,
        frontend=None,
    ) -> None:
        self.env = simpy.Environment()
        # The simulated API server (one process, first come first served), from ``frontend``
        # (sim.frontend.FrontendCoefficients; None: no API server): its time to stream one
        # token, and to take in a request (HTTP and validation) and tokenize a prompt token.
        fe = frontend if frontend is not None else FrontendCoefficients()  # all zero: no API server
        self.stream_s_per_token = fe.detokenize_s_per_token
        self.intake_s, self.intake_s_per_token = fe.http_s, fe.tokenize_s_per_token
        self._api_busy_until_s = -math.inf  # when the simulated API server is done with what it has
        self.engine = build_engine(self.env)
        self.engine.listeners.append(self)
        self.faults = faults
        self.rng = rng
        # Objects with observe_step, observe_prefilled, observe_finished, observe_parent_finished.
        self.observers = list(observers)
        self.clock = clock
        self.t0 = clock()
        self._handles: dict[str, tuple[Handle, int]] = {}
        self._timers: list[tuple[float, int, Handle, tuple]] = []  # the timer heap
        self._seq = itertools.count()  # ties in the heap go in release order
        self._wake_fut: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self.down_until_s = -math.inf
        self.next_crash_s: float | None = None
        self.crashes = 0
        self.killed_by_crash = 0
        self._leak_debt_blocks = 0.0
        self.leaked_blocks: list[Any] = []
        self._last_tick_s = 0.0
        self.lag_s = 0.0  # how late the driver last ran a due simulated event, on the wall clock
        self.max_lag_s = 0.0

    # -- time ----------------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.clock() - self.t0

    def wall_of(self, sim_s: float) -> float:
        return self.t0 + sim_s

    def advance(self) -> None:
        """Run the simulation up to the wall clock (never past it), and release the tokens
        that are due."""
        now = self.now_s()
        env = self.env
        if now > env.now:
            env.run(until=now)
        # SimPy 4.1 puts run()'s own ``until`` event back in the queue when it stops (priority
        # -1, no callbacks left), so peek() would say "an event is due now" for ever and the
        # driver would spin instead of sleeping: step past it (and whatever else is due now).
        while env.peek() <= env.now:
            env.step()
        self._release_timers(now)

    @property
    def alive(self) -> bool:
        return self.now_s() >= self.down_until_s

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.t0 = self.clock() - self.env.now
        self._task = asyncio.create_task(self._drive(), name="servelab-sim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def wake(self) -> None:
        """Something changed (a request arrived or left): re-plan the driver's sleep."""
        fut = self._wake_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due_s = self.env.peek()
            now_s = self.now_s()
            if due_s <= now_s:  # how late the loop came to an event that was due: CPU starvation
                self.lag_s = now_s - due_s
                self.max_lag_s = max(self.max_lag_s, self.lag_s)
            self.advance()
            self._tick()
            next_s = self.env.peek()
            if self._timers:
                next_s = min(next_s, self._timers[0][0])
            delay = min(next_s - self.now_s(), TICK_S)
            if delay <= 0:
                await asyncio.sleep(0)  # behind the clock: catch up, but let the handlers run
                continue
            fut = self._wake_fut = loop.create_future()
            timer = loop.call_later(delay, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._wake_fut = None

    # -- requests ------------------------------------------------------------------------------
    def submit(self, items: list[tuple[list[int], int]], request_id: str, latency_multiplier: float = 1.0,
               prompt_tokens: int | None = None, received_s: float | None = None, n: int = 1,
               max_tokens_params: list[int] | None = None, finish_reasons: list[str] | None = None) -> Handle:
        """Add one engine request per (prompt ids, max tokens) item, i.e. per choice, arriving
        now; the i-th item's events go to the handle with index i. ``n`` items in a row are one
        prompt's choices; ``max_tokens_params`` are the items' max_tokens as the client's
        request set them (clipped to the context; default: the items' engine lengths), for
        vLLM's request-parameter histograms.

        vLLM fans ``n`` out into ``n`` engine requests; so do we, one ``add_request`` each,
        because each choice may stop at its own length.

        The engine gets them when the simulated API server hands them over (module docstring):
        ``intake_s`` plus ``intake_s_per_token`` x ``prompt_tokens`` (the distinct prompts'
        tokens; default: every item's) after it is free, counted from ``received_s`` (the
        simulated time the server began to read the request; default now): the emulator's own
        parsing and validation in between are the work that time stands for. A hand-over that
        would fall before now happens now. A request the engine would refuse raises
        ConfigError here, before anything is queued."""
        self.advance()
        for prompt_token_ids, n_tokens in items:  # all or nothing
            self.engine.check_request(len(prompt_token_ids), n_tokens)
        now = self.env.now
        arrived = now if received_s is None else min(max(received_s, 0.0), now)
        handle = Handle(arrival_s=arrived, latency_multiplier=latency_multiplier, n=n,
                        max_tokens_params=list(max_tokens_params or [t for _, t in items]),
                        finish_reasons=list(finish_reasons or ["length"] * len(items)),
                        prefilled=[False] * len(items), generated=[-1] * len(items))
        for index in range(len(items)):
            rid = f"{request_id}-{index}"
            self._handles[rid] = (handle, index)
            handle.request_ids.append(rid)
            handle.unfinished.add(rid)
        if prompt_tokens is None:
            prompt_tokens = sum(len(ids) for ids, _ in items)
        work = self.intake_s + self.intake_s_per_token * prompt_tokens
        handoff = max(arrived, self._api_busy_until_s) + work if work > 0 else arrived
        if work > 0:
            self._api_busy_until_s = handoff
        if handoff > now:
            self.env.process(self._hand_over(handoff, handle, items))
        else:
            self._add(handle, items)
        self.wake()
        return handle

    def _hand_over(self, at_s: float, handle: Handle, items):
        yield self.env.timeout(at_s - self.env.now)
        self._add(handle, items)

    def _add(self, handle: Handle, items) -> None:
        for rid, (prompt_token_ids, n_tokens) in zip(handle.request_ids, items):
            if rid in handle.unfinished and rid in self._handles:  # not aborted, not crashed meanwhile
                self.engine.add_request(list(prompt_token_ids), n_tokens, request_id=rid)

    def abort(self, handle: Handle) -> None:
        """The client went away: abort what is unfinished, which frees its KV blocks at once."""
        for rid in handle.request_ids:  # a list: a fixed order
            if rid in handle.unfinished:
                handle.unfinished.discard(rid)
                self._handles.pop(rid, None)
                self.engine.abort(rid)
        self.wake()

    @property
    def num_open_requests(self) -> int:
        return len(self._handles)

    # -- releasing tokens at their due time ------------------------------------------------------
    def _release(self, handle: Handle, event: tuple) -> None:
        """Hand ``event`` to its handle now if it is due, else put it in the timer heap. A
        handle with events still in the heap sends later ones through it too (order kept)."""
        if event[3] <= self.env.now and not handle.timers_pending:
            handle.push(event)
            return
        handle.timers_pending += 1
        heapq.heappush(self._timers, (event[3], next(self._seq), handle, event))

    def _release_timers(self, now_s: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now_s:
            _, _, handle, event = heapq.heappop(timers)
            handle.timers_pending -= 1
            handle.push(event)

    def _due(self, handle: Handle, t_s: float) -> float:
        m = handle.latency_multiplier
        return t_s if m == 1.0 else handle.arrival_s + m * (t_s - handle.arrival_s)

    def _streamed(self, t_s: float) -> float:
        """When the API server has streamed a token the engine hands it at ``t_s``: after the
        tokens it already has (one process, first come first served), ``stream_s_per_token`` on."""
        if not self.stream_s_per_token:
            return t_s
        done = max(t_s, self._api_busy_until_s) + self.stream_s_per_token
        self._api_busy_until_s = done
        return done

    # -- engine listener hooks -----------------------------------------------------------------
    def on_tokens(self, request: Any, num_new_tokens: int, now_s: float) -> None:
        entry = self._handles.get(request.request_id)
        if entry is None or num_new_tokens <= 0:
            return
        handle, index = entry
        if not handle.prefilled[index]:  # its first token: vLLM counts its prompt's sources now
            handle.prefilled[index] = True
            for obs in self.observers:
                obs.observe_prefilled(request)
        if num_new_tokens == 1:  # the usual case: the emulator runs the engine step by step
            self._release(handle, ("token", index, None, self._streamed(self._due(handle, now_s))))
            return
        # A fast-forwarded run of steps: each token at the end of its own step, streamed then
        # (the run's requests are handed over one after another, so the queue is not replayed).
        for t_s in self.engine.token_times(request)[-num_new_tokens:].tolist():
            self._release(handle, ("token", index, None, self._due(handle, t_s) + self.stream_s_per_token))

    def on_finish(self, request: Any, now_s: float) -> None:
        entry = self._handles.pop(request.request_id, None)
        if request.status.value != "abort":
            times = self.engine.token_times(request)
            max_tokens = request.max_tokens if entry is None else entry[0].max_tokens_params[entry[1]]
            reason = None if entry is None else entry[0].finish_reasons[entry[1]]
            for obs in self.observers:
                obs.observe_finished(request, now_s, times, max_tokens, finish_reason=reason)
            if entry is not None:
                self._note_sample_finished(entry[0], entry[1], request.num_output_tokens)
        if entry is None:
            return
        handle, index = entry
        handle.unfinished.discard(request.request_id)
        # The closing chunk follows the request's last token out of the API server.
        due = max(self._due(handle, now_s), self._api_busy_until_s)
        self._release(handle, ("finish", index, request.status, due))

    def _note_sample_finished(self, handle: Handle, index: int, num_output_tokens: int) -> None:
        """vLLM observes a prompt's ``n`` and its samples' longest output when the last of its
        ``n`` samples finishes (an aborted sample never finishes: the client left, or a crash
        failed them all)."""
        handle.generated[index] = num_output_tokens
        first = index - index % handle.n
        sample_tokens = handle.generated[first:first + handle.n]
        if min(sample_tokens) >= 0:
            for obs in self.observers:
                obs.observe_parent_finished(handle.n, max(sample_tokens))

    def on_step(self, record: Any) -> None:
        for obs in self.observers:
            obs.observe_step(record)

    # -- faults on the engine ------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.now_s()
        dt = now - self._last_tick_s
        if dt < 0.05:
            return
        self._last_tick_s = now
        self.engine.step_time_multiplier = self.faults.product("slow-gpu", now)
        # A server runs for hours: it keeps neither every finished request (each holds its prompt's
        # ids, about 20 kB for 512 tokens), nor the engine's log of every step (about 225 bytes a
        # step, 80 MB an hour at 100 steps a second), nor the end times of the steps no live
        # request made a token in (32 bytes a step): only offline results read them.
        finished = getattr(self.engine, "finished", None)
        if finished is not None and len(finished) > 2 * KEEP_FINISHED:
            del finished[:-KEEP_FINISHED]
        if getattr(self.engine, "step_log", None) is not None:
            self.engine.step_log = StepLog()
        if hasattr(self.engine, "forget_steps"):
            self.engine.forget_steps()
        self._tick_crash(now)
        self._tick_leak(now, dt)

    def _tick_crash(self, now: float) -> None:
        active = self.faults.active("crash-loop", now)
        if not active:
            self.next_crash_s = None
            return
        mtbf_s = min(f.value for f in active)
        if self.next_crash_s is None:
            self.next_crash_s = now + float(self.rng.exponential(mtbf_s))
        if now >= self.next_crash_s and now >= self.down_until_s:
            self.crash(now, crash_downtime_s(mtbf_s))
            self.next_crash_s = self.down_until_s + float(self.rng.exponential(mtbf_s))

    def crash(self, now: float, downtime_s: float) -> None:
        """The engine dies: every request in flight fails; the server is down for a while."""
        self.crashes += 1
        self.down_until_s = now + downtime_s
        for rid in list(self._handles):  # dict order: insertion order, deterministic
            handle, index = self._handles.pop(rid)
            handle.unfinished.discard(rid)
            self.engine.abort(rid)  # counted as finished_reason="error" in /metrics, not "abort"
            self.killed_by_crash += 1
            handle.push(("error", index, "the engine crashed (crash-loop fault)", now))

    def _tick_leak(self, now: float, dt: float) -> None:
        rate = self.faults.kv_leak_per_hour(now)
        if rate <= 0:
            return
        self._leak_debt_blocks += rate * self.engine.num_gpu_blocks * dt / 3600.0
        want = int(self._leak_debt_blocks)
        if want > 0:
            taken = leak_blocks(self.engine, want)
            self.leaked_blocks.extend(taken)
            self._leak_debt_blocks -= len(taken)

    def release_leak(self) -> None:
        if self.leaked_blocks:
            return_blocks(self.engine, self.leaked_blocks)
            self.leaked_blocks = []
        self._leak_debt_blocks = 0.0
        self.wake()


def leak_blocks(engine: Any, count: int) -> list[Any]:
    """Take up to ``count`` free KV blocks out of the engine's pool for good (the KV-leak fault).

    They are taken from the front of the free queue, as an allocation would take them; the
    scheduler then sees fewer free blocks, which is how a leak shows in a real vLLM: usage
    creeps up and preemptions start. Engines without vLLM's block pool (the baselines) do
    not leak."""
    pool = getattr(getattr(engine, "kv", None), "pool", None)
    if pool is None:
        return []
    count = min(count, pool.num_free_blocks)
    return pool.get_new_blocks(count) if count > 0 else []


def return_blocks(engine: Any, blocks: list[Any]) -> None:
    engine.kv.pool.free_blocks(blocks)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
