"""Run a workload through one engine, from the first arrival to the last finish."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import simpy

from sim.config import EngineConfig
from sim.engine import Engine, EngineResult, collect_result


def run_engine(
    config: EngineConfig, workload, *, seed: int = 0,
    usage: Literal["serve", "offline"] = "offline", progress=None, fast_forward: bool = True,
    step_time_multiplier: float = 1.0, max_concurrency: int | None = None,
    coefficients=None, listeners=(),
) -> EngineResult:
    """Simulate ``workload`` on the engine ``config`` describes.

    ``progress``, if given, is called as ``progress(num_finished, num_total)`` now and then.
    ``fast_forward`` skips over runs of identical decode steps (same result, much faster).
    ``max_concurrency`` caps requests in flight, as ``vllm bench serve --max-concurrency``: a
    request due while the cap is reached is sent when an earlier one finishes.
    ``listeners`` are added to the engine's (see :class:`sim.engine.EngineListener`); one may end
    the run early by raising, as the capacity planner's SLA monitor does.
    """
    env = simpy.Environment()
    arrivals = np.asarray(workload.arrival_s, dtype=float)
    total = len(arrivals)
    state = {"next": 0}

    def next_arrival_s() -> float:
        i = state["next"]
        return float(arrivals[i]) if i < total else math.inf

    engine = Engine(env, config, seed=seed, usage=usage, fast_forward=fast_forward,
                    next_arrival_s=next_arrival_s, step_time_multiplier=step_time_multiplier,
                    coefficients=coefficients)
    vocab = engine.model.vocab_size
    requests = []
    tokens_of = getattr(workload, "prompt_token_array", None) or workload.prompt_token_ids
    n = getattr(workload, "n", 1)
    slot_freed = {"event": None}

    class _Slots:  # wakes the feeder when a request finishes, for max_concurrency
        def on_finish(self, request, now_s):
            ev = slot_freed["event"]
            if ev is not None and not ev.triggered:
                ev.succeed()

    if max_concurrency is not None:
        engine.listeners.append(_Slots())
    engine.listeners.extend(listeners)

    def in_flight() -> int:
        return len(requests) - len(engine.finished) - engine.stats.request_success_total["abort"]

    def feeder():
        i = 0
        while i < total:
            t = arrivals[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            # Every request due now, at once (as far as the concurrency cap lets).
            while i < total and arrivals[i] <= env.now:
                if max_concurrency is not None and in_flight() + n > max_concurrency:
                    state["next"] = total  # nothing can arrive before a request finishes
                    slot_freed["event"] = env.event()
                    yield slot_freed["event"]
                    slot_freed["event"] = None
                    state["next"] = i
                    continue
                requests.extend(engine.add_request(
                    tokens_of(i, vocab), int(workload.output_len[i]), request_id=str(i), n=n,
                ))
                i += 1
                state["next"] = i

    env.process(feeder())
    if progress is None:
        env.run()
    else:
        last = -1
        while env.peek() < math.inf:
            env.step()
            done = len(engine.finished)
            if done != last and (done - last >= max(1, total // 100) or done == len(requests) == total):
                progress(done, total * getattr(workload, "n", 1))
                last = done
    return collect_result(engine, requests)
