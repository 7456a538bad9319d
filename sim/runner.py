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
    step_time_multiplier: float = 1.0,
) -> EngineResult:
    """Simulate ``workload`` on the engine ``config`` describes.

    ``progress``, if given, is called as ``progress(num_finished, num_total)`` now and then.
    ``fast_forward`` skips over runs of identical decode steps (same result, much faster).
    """
    env = simpy.Environment()
    arrivals = np.asarray(workload.arrival_s, dtype=float)
    total = len(arrivals)
    state = {"next": 0}

    def next_arrival_s() -> float:
        i = state["next"]
        return float(arrivals[i]) if i < total else math.inf

    engine = Engine(env, config, seed=seed, usage=usage, fast_forward=fast_forward,
                    next_arrival_s=next_arrival_s, step_time_multiplier=step_time_multiplier)
    vocab = engine.model.vocab_size
    requests = []

    def feeder():
        i = 0
        while i < total:
            t = arrivals[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            # Every request due now, at once.
            while i < total and arrivals[i] <= env.now:
                requests.extend(engine.add_request(
                    workload.prompt_token_ids(i, vocab), int(workload.output_len[i]),
                    request_id=str(i), n=getattr(workload, "n", 1),
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
