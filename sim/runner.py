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
    coefficients=None, frontend=None, api_server_count: int = 1,
    closed_loop_start: Literal["together", "spread"] = "together", listeners=(),
    client_turnaround_s: float = 0.0,
) -> EngineResult:
    """Simulate ``workload`` on the engine ``config`` describes.

    ``progress``, if given, is called as ``progress(num_finished, num_total)`` now and then.
    ``fast_forward`` skips over runs of identical decode steps (same result, much faster).
    ``max_concurrency`` caps requests in flight, as ``vllm bench serve --max-concurrency``: a
    request due while the cap is reached is sent when an earlier one finishes (when its client
    has the last token).
    ``frontend`` (:class:`sim.frontend.FrontendCoefficients`) puts ``api_server_count`` API-server
    processes between the clients and the engine (see :mod:`sim.frontend`); the result's times
    are then the clients' (the engine's are in ``result.engine_times``).
    ``closed_loop_start`` "spread" sends the first ``max_concurrency`` requests of a burst evenly
    over one request's lifetime instead of all at once (see :func:`spread_first_wave`).
    ``client_turnaround_s`` (needs ``frontend``): a request that waited for the concurrency cap
    reaches the API server an exponentially distributed time of this mean after its client
    stamped it (when an earlier request's last token came), not at once. That is the load
    generator's own reaction time, which a fixed-length closed loop is sensitive to: the
    emulator measures it (``servelab:emulator_client_turnaround_seconds``). It counts in the
    client's TTFT and is drawn from a generator seeded by ``seed``.
    ``listeners`` are added to the engine's (see :class:`sim.engine.EngineListener`); one may end
    the run early by raising, as the capacity planner's SLA monitor does. They see the engine's
    times, not the clients' (which differ when ``frontend`` is set).
    """
    from sim.frontend import Frontend
    if not (0 <= client_turnaround_s < math.inf):
        raise ValueError(f"client_turnaround_s(={client_turnaround_s!r}) must be a number >= 0 (seconds)")
    if client_turnaround_s and frontend is None:
        raise ValueError("client_turnaround_s needs the simulated front end (frontend=...)")
    # A stream of its own (0x7475 is "tu"), so that the engine's own draws do not move with it;
    # made only when used (the capacity planner runs thousands of engines without one).
    turnaround_rng = np.random.default_rng([seed, 0x7475]) if client_turnaround_s else None
    env = simpy.Environment()
    arrivals = np.asarray(workload.arrival_s, dtype=float)
    total = len(arrivals)
    state = {"next": 0}

    def next_arrival_s() -> float:
        i = state["next"]
        return float(arrivals[i]) if i < total else math.inf

    front: Frontend | None = None

    def next_engine_arrival_s() -> float:
        # A request not yet sent reaches the engine no earlier than it is sent.
        return min(front.next_handoff_s(), next_arrival_s())

    engine_kwargs = dict(seed=seed, usage=usage, fast_forward=fast_forward,
                         next_arrival_s=next_engine_arrival_s if frontend is not None else next_arrival_s,
                         step_time_multiplier=step_time_multiplier, coefficients=coefficients)
    engine = make_engine(env, config, **engine_kwargs)
    if frontend is not None:
        front = Frontend(env, engine, frontend, api_server_count)
    if max_concurrency is not None and closed_loop_start == "spread":
        arrivals = spread_first_wave(arrivals, max_concurrency, request_lifetime_s(engine, workload, max_concurrency))
    vocab = engine.model.vocab_size
    requests = []
    tokens_of = getattr(workload, "prompt_token_array", None) or workload.prompt_token_ids
    n = getattr(workload, "n", 1)
    slot_freed = {"event": None}
    answered = {"clients": 0}

    def free_slot(*_) -> None:  # wakes the feeder when a client has its answer
        answered["clients"] += 1
        ev = slot_freed["event"]
        if ev is not None and not ev.triggered:
            ev.succeed()

    class _Slots:
        on_finish = staticmethod(free_slot)

    if max_concurrency is not None:
        if front is not None:
            front.on_client_done = free_slot
        else:
            engine.listeners.append(_Slots())
    engine.listeners.extend(listeners)
    sent = {"count": 0}

    def in_flight() -> int:
        if front is not None:
            return sent["count"] - answered["clients"]
        return len(requests) - len(engine.finished) - engine.stats.request_success_total["abort"]

    def feeder():
        i = 0
        while i < total:
            t = arrivals[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            held = False  # request i waited for the concurrency cap
            # Every request due now, at once (as far as the concurrency cap lets).
            while i < total and arrivals[i] <= env.now:
                if max_concurrency is not None and in_flight() + n > max_concurrency:
                    held = True
                    state["next"] = total  # nothing can arrive before a request finishes
                    slot_freed["event"] = env.event()
                    yield slot_freed["event"]
                    slot_freed["event"] = None
                    state["next"] = i
                    continue
                if front is not None:
                    delay = turnaround_rng.exponential(client_turnaround_s) if held and turnaround_rng else 0.0
                    front.submit(tokens_of(i, vocab), int(workload.output_len[i]), request_id=str(i), n=n,
                                 delay_s=float(delay))
                    sent["count"] += n
                else:
                    requests.extend(engine.add_request(
                        tokens_of(i, vocab), int(workload.output_len[i]), request_id=str(i), n=n,
                    ))
                i += 1
                state["next"] = i
                held = held and i < total and arrivals[i] < env.now  # due while the cap was full

    env.process(feeder())
    if front is not None:
        # The engine makes the requests at hand-off; list them in the order they were sent.
        requests = _HandedOff(engine)
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
    collect = collect_result
    if config.data_parallel_size > 1:
        from sim.dp import collect_dp_result as collect
    if front is None:
        return collect(engine, requests)
    handed = sorted(requests.all(), key=lambda r: front.clients[r.request_id].sent_s)
    result = collect(engine, handed)
    return with_client_times(result, [front.clients[r.request_id] for r in handed], api_server_count)


def make_engine(env: simpy.Environment, config: EngineConfig, **engine_kwargs):
    """One engine core, or ``--data-parallel-size`` of them behind vLLM's load balancer (sim.dp)."""
    if config.data_parallel_size > 1:
        from sim.dp import DataParallelEngines, check_data_parallel

        check_data_parallel(config)
        return DataParallelEngines(env, config, **engine_kwargs)
    return Engine(env, config, **engine_kwargs)


def batch_latencies(config: EngineConfig, prompts: list[list[int]], output_len: int, iterations: int, *,
                    n: int = 1, seed: int = 0) -> tuple[list[float], object]:
    """``vllm bench latency``: the same batch of ``prompts`` (each answered with ``output_len``
    tokens, ``n`` samples) sent ``iterations`` times, each time once the previous batch has
    finished; the seconds each batch took, and the engine.

    The engine runs offline (vLLM's ``LLM`` class). It is deterministic, so the iterations differ
    only by what the previous ones left in the prefix cache: with ``--enable-prefix-caching`` the
    second batch finds the whole prompts cached but the last token of each (vLLM computes at least
    one), which is why vLLM's benchmark turns caching off by default.
    """
    env = simpy.Environment()
    engine = make_engine(env, config, seed=seed, usage="offline", fast_forward=True)
    batch = {"left": 0, "done": None}

    class _BatchDone:  # an EngineListener: the last request of the batch finished
        @staticmethod
        def on_finish(request, now_s) -> None:
            batch["left"] -= 1
            if batch["left"] == 0:
                batch["done"].succeed()

    engine.listeners.append(_BatchDone())
    latencies: list[float] = []

    def bench():
        for _ in range(iterations):
            start = env.now
            batch["left"], batch["done"] = len(prompts) * n, env.event()
            requests = [r for p in prompts for r in engine.add_request(p, output_len, n=n)]
            yield batch["done"]
            # A fast-forwarded run of decode steps reports its finishes when it starts.
            end = max(r.finish_s for r in requests)
            if end > env.now:
                yield env.timeout(end - env.now)
            latencies.append(end - start)

    env.run(env.process(bench()))
    return latencies, engine


def request_lifetime_s(engine, workload, concurrency: int) -> float:
    """About how long one request of ``workload`` lives among ``concurrency`` others, from the
    engine's step model: its prefill alone, then its decodes in a batch of ``concurrency``
    (reading the mean context)."""
    from sim.steptime import BatchShape

    isl = max(1, int(np.mean(workload.prompt_len)))
    osl = max(1, int(np.mean(workload.output_len)))
    ctx = concurrency * (isl + osl // 2)
    model = engine.step_model
    prefill = model.step_time(BatchShape(isl, 1, 1, isl, isl * (isl + 1) // 2, 1, 0, 0))
    decode = model.step_time(BatchShape(concurrency, concurrency, concurrency, ctx, 0, 0, concurrency, ctx))
    return prefill + osl * decode


def spread_first_wave(arrivals: np.ndarray, clients: int, lifetime_s: float) -> np.ndarray:
    """A closed loop's first ``clients`` requests, when they are due at once, sent evenly over
    ``lifetime_s`` instead.

    Why. ``vllm bench serve --max-concurrency C --request-rate inf`` sends C requests at once;
    requests admitted in one step then finish in one step, and their clients send the next
    ones at once. On a real server the clients drift out of that lock step within a few
    rounds (the published closed-loop runs show a time to first token close to one prefill at
    low concurrency, where lock step would give several). A deterministic engine never drifts:
    every wave repeats the first. Starting the clients out of phase gives the steady state a
    long real benchmark reaches."""
    out = np.array(arrivals, dtype=float)
    n = min(clients, len(out))
    if n < 2 or out[n - 1] > out[0]:
        return out  # not a burst: the arrival times already spread the clients
    out[:n] = out[0] + np.arange(n) * (lifetime_s / n)
    out[n:] = np.maximum(out[n:], out[n - 1])
    return out


class _HandedOff:
    """The requests the engine has so far, whether finished or not (for the progress count)."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def __len__(self) -> int:
        return len(getattr(self.engine.scheduler, "requests", {})) + len(self.engine.finished)

    def all(self):
        sched = self.engine.scheduler
        live = list(getattr(sched, "requests", {}).values())
        seen = {id(r) for r in live}
        return live + [r for r in self.engine.finished if id(r) not in seen]


def with_client_times(result: EngineResult, clients, api_server_count: int) -> EngineResult:
    """The result as the clients saw it; the engine's own times move to ``engine_times``, and
    ``extra["frontend"]`` says how much of the TTFT the front end took."""
    f = lambda values: np.array([v if v is not None else np.nan for v in values], dtype=float)
    result.engine_times = {
        "engine_arrival_s": result.arrival_s, "engine_first_token_s": result.first_token_s,
        "engine_finish_s": result.finish_s,
    }
    turnaround = f([c.reached_s - c.sent_s for c in clients])
    result.arrival_s = f([c.sent_s for c in clients])
    result.first_token_s = f([c.first_token_s for c in clients])
    result.finish_s = f([c.last_token_s for c in clients])
    front = frontend_ttft_s(result) - turnaround
    ttft = result.ttft_s
    ok = np.isfinite(ttft)
    mean_ttft = float(ttft[ok].mean()) if ok.any() else 0.0
    mean_front = float(front[ok].mean()) if ok.any() else 0.0
    result.extra["frontend"] = {
        "api_server_count": api_server_count,
        "mean_ttft_ms": mean_ttft * 1e3,
        "mean_frontend_ttft_ms": mean_front * 1e3,
        "frontend_share_of_ttft": mean_front / mean_ttft if mean_ttft else 0.0,
        "mean_client_turnaround_ms": float(turnaround[ok].mean()) * 1e3 if ok.any() else 0.0,
    }
    return result


def frontend_ttft_s(result: EngineResult) -> np.ndarray:
    """Per request, the part of the TTFT spent between the client and the engine: from the
    client's stamp to the engine having it (the client's turnaround, HTTP, tokenization, queueing
    in the API server), and from the engine making the first token to the client having it
    (detokenization, streaming)."""
    e = result.engine_times
    return (e["engine_arrival_s"] - result.arrival_s) + (result.first_token_s - e["engine_first_token_s"])
