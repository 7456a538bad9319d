"""The simulated engine, advanced against the wall clock inside the server's asyncio loop.

Simulated time is wall time since the server started: ``sim_s = monotonic() - t0``. A background
task runs ``env.run(until=now)`` whenever the clock has moved, then sleeps until the next
simulated event is due (or until a new request wakes it). So a step that the simulator says
takes 30 ms ends 30 ms of wall time after it began, and its tokens are handed to the HTTP
streams then, through the engine's listener hooks (``on_tokens``, ``on_finish``, ``on_step``).

Faults that act on the engine (slow GPU, KV leak, crash loop) are applied here, once a tick.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import simpy

from lab.server.faults import FaultSet, crash_downtime_s

TICK_S = 0.25  # how often time-dependent faults are re-read when the engine is idle
KEEP_FINISHED = 100  # the engine keeps finished requests for offline results; a server trims them


@dataclass
class Handle:
    """One HTTP request's engine requests (one per choice) and the events they send back."""

    arrival_s: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    request_ids: list[str] = field(default_factory=list)
    unfinished: set[str] = field(default_factory=set)


class SimRunner:
    def __init__(
        self,
        build_engine: Callable[[simpy.Environment], Any],
        *,
        faults: FaultSet,
        rng: np.random.Generator,
        observers: list[Any] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = simpy.Environment()
        self.engine = build_engine(self.env)
        self.engine.listeners.append(self)
        self.faults = faults
        self.rng = rng
        self.observers = list(observers)  # objects with observe_step / observe_finished
        self.clock = clock
        self.t0 = clock()
        self._handles: dict[str, tuple[Handle, int]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.down_until_s = -math.inf
        self.next_crash_s: float | None = None
        self.crashes = 0
        self.killed_by_crash = 0
        self._leak_debt_blocks = 0.0
        self.leaked_blocks: list[Any] = []
        self._last_tick_s = 0.0
        self.lag_s = 0.0  # how late the last due event was run, on the wall clock
        self.max_lag_s = 0.0

    # -- time ----------------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.clock() - self.t0

    def wall_of(self, sim_s: float) -> float:
        return self.t0 + sim_s

    def advance(self) -> None:
        """Run the simulation up to the wall clock (never past it)."""
        now = self.now_s()
        if now > self.env.now:
            self.env.run(until=now)

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

    async def _drive(self) -> None:
        while True:
            due_s = self.env.peek()
            now_s = self.now_s()
            if due_s <= now_s:  # how late the loop came to an event that was due: CPU starvation
                self.lag_s = now_s - due_s
                self.max_lag_s = max(self.max_lag_s, self.lag_s)
            self.advance()
            self._tick()
            due_s = self.env.peek()
            delay = min(due_s - self.now_s(), TICK_S)
            self._wake.clear()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # behind the clock: catch up, but let the handlers run

    # -- requests ------------------------------------------------------------------------------
    def submit(self, items: list[tuple[list[int], int]], request_id: str) -> Handle:
        """Add one engine request per (prompt ids, max tokens) item, i.e. per choice, arriving
        now; the i-th item's events go to the handle's queue with index i.

        vLLM fans ``n`` out into ``n`` engine requests; so do we, one ``add_request`` each,
        because each choice may stop at its own length."""
        self.advance()
        handle = Handle(arrival_s=self.env.now)
        for index, (prompt_token_ids, n_tokens) in enumerate(items):
            rid = f"{request_id}-{index}"
            self._handles[rid] = (handle, index)
            handle.request_ids.append(rid)
            handle.unfinished.add(rid)
            try:
                self.engine.add_request(list(prompt_token_ids), n_tokens, request_id=rid)
            except Exception:
                handle.request_ids.pop()
                handle.unfinished.discard(rid)
                self._handles.pop(rid, None)
                self.abort(handle)  # the choices already added go too: all or nothing
                raise
        self._wake.set()
        return handle

    def abort(self, handle: Handle) -> None:
        """The client went away: abort what is unfinished, which frees its KV blocks at once."""
        for rid in handle.request_ids:  # a list: a fixed order
            if rid in handle.unfinished:
                handle.unfinished.discard(rid)
                self._handles.pop(rid, None)
                self.engine.abort(rid)
        self._wake.set()

    @property
    def num_open_requests(self) -> int:
        return len(self._handles)

    # -- engine listener hooks -----------------------------------------------------------------
    def on_tokens(self, request: Any, num_new_tokens: int, now_s: float) -> None:
        entry = self._handles.get(request.request_id)
        if entry is None or num_new_tokens <= 0:
            return
        handle, index = entry
        if num_new_tokens == 1:  # the usual case: the emulator runs the engine step by step
            times = [now_s]
        else:  # a fast-forwarded run of steps: each token at the end of its own step
            times = self.engine.token_times(request)[-num_new_tokens:].tolist()
        handle.queue.put_nowait(("tokens", index, times))

    def on_finish(self, request: Any, now_s: float) -> None:
        if request.status.value != "abort":
            times = self.engine.token_times(request)
            for obs in self.observers:
                obs.observe_finished(request, now_s, times)
        entry = self._handles.pop(request.request_id, None)
        if entry is None:
            return
        handle, index = entry
        handle.unfinished.discard(request.request_id)
        handle.queue.put_nowait(("finish", index, request.status))

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
        finished = getattr(self.engine, "finished", None)
        if finished is not None and len(finished) > 10 * KEEP_FINISHED:
            del finished[:-KEEP_FINISHED]  # a server runs for hours: do not keep every request
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
            handle.queue.put_nowait(("error", index, "the engine crashed (crash-loop fault)"))

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
        self._wake.set()


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
