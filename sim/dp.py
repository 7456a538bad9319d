"""Data parallelism in the engine: ``dp`` engine cores behind vLLM's DP load balancer.

In vLLM 0.33 each DP rank is an engine core of its own (``v1/engine/core.py``,
``DPEngineCoreProc``) with its own scheduler, KV cache and batches. The API server sends each
request to one rank (``v1/engine/core_client.py``, ``get_core_engine_for_request``): the rank with
the lowest score ``max(requests in flight, waiting + running) + 6 x waiting x max(0, KV usage -
0.5)``, ranks tried from the first, the first lowest winning. :class:`DataParallelEngines` holds
``dp`` :class:`sim.engine.Engine` s on one SimPy environment and routes each request that way, with
live counts (vLLM's coordinator refreshes its snapshot every 100 ms; the in-flight count it also
uses is exact, as here).

Dense ranks run freely, as in vLLM. A MoE model's ranks meet in every MoE layer, so in vLLM they
step together: a step starts on every rank at once, a rank with nothing to do runs a dummy batch
(``DPEngineCoreProc``'s ``execute_dummy_batch``) and the step lasts as long as the slowest rank's.
``lockstep`` does that here: one process steps every rank, each step lasting the longest of the
ranks' step times (an idle rank's: one token of decode); no fast-forward over runs of decode steps.

It offers what :func:`sim.runner.run_engine` and :class:`sim.frontend.Frontend` use of an engine,
and :func:`collect_dp_result` merges the ranks' results.
"""

from __future__ import annotations

import numpy as np

from sim.metrics import EngineStats
from sim.request import Request

KV_PRESSURE_WEIGHT = 6.0  # the waiting penalty's slope above half KV usage (get_core_engine_for_request)


def check_data_parallel(config) -> None:
    """What the engine cannot run with several DP ranks, in one line."""
    from sim.errors import ConfigError

    if config.engine != "vllm":
        raise ConfigError(f"--data-parallel-size {config.data_parallel_size}: needs --engine vllm "
                          f"(vLLM's DP load balancer); got --engine {config.engine}")


class _Finished:
    """All ranks' finished requests, counted without copying (the runner asks often)."""

    def __init__(self, ranks) -> None:
        self.ranks = ranks

    def __len__(self) -> int:
        return sum(len(r.finished) for r in self.ranks)

    def __iter__(self):
        for rank in self.ranks:
            yield from rank.finished


class _Schedulers:
    """The ranks' live requests, by id (what the runner reads of ``engine.scheduler``)."""

    def __init__(self, ranks) -> None:
        self.ranks = ranks

    @property
    def requests(self) -> dict:
        out: dict = {}
        for rank in self.ranks:
            out.update(getattr(rank.scheduler, "requests", {}))
        return out


class DataParallelEngines:
    """``config.data_parallel_size`` engine cores, each planned as one DP rank (sim.parallel)."""

    def __init__(self, env, config, *, lockstep: bool | None = None, **engine_kwargs) -> None:
        """``lockstep``: step the ranks together (default: for a MoE model, as vLLM does)."""
        from sim.catalog import get_model
        from sim.engine import Engine

        self.env, self.config = env, config
        self.lockstep = get_model(config.model).is_moe if lockstep is None else lockstep
        if self.lockstep:
            engine_kwargs = {**engine_kwargs, "fast_forward": False, "run_process": False}
        self.ranks = [Engine(env, config, dp_rank=r, **engine_kwargs) for r in range(config.data_parallel_size)]
        self._wakeup = None
        self.process = env.process(self._run_lockstep()) if self.lockstep else None
        self.listeners: list = []
        for rank in self.ranks:
            rank.listeners = self.listeners  # one list: a listener sees every rank
        first = self.ranks[0]
        self.model, self.gpu, self.memory, self.step_model = first.model, first.gpu, first.memory, first.step_model
        self.finished = _Finished(self.ranks)
        self.scheduler = _Schedulers(self.ranks)
        self.rank_of: dict[str, int] = {}  # request id -> the rank it was sent to

    def choose_rank(self) -> int:
        """vLLM's DP load balancer, on live counts."""
        best, best_score = 0, float("inf")
        for i, rank in enumerate(self.ranks):
            # Requests an engine core has not scheduled yet (sim.engine: _take_in) wait too.
            waiting, running = rank.scheduler.num_waiting + len(rank._staged), rank.scheduler.num_running
            in_flight = len(getattr(rank.scheduler, "requests", {})) or waiting + running
            score = max(in_flight, waiting + running)
            if waiting:
                score += waiting * KV_PRESSURE_WEIGHT * max(0.0, rank.kv.usage - 0.5)
            if score < best_score:
                best, best_score = i, score
        return best

    def add_request(self, prompt_token_ids, max_tokens: int, *, request_id: str | None = None, n: int = 1,
                    priority: int = 0) -> list[Request]:
        i = self.choose_rank()
        requests = self.ranks[i].add_request(prompt_token_ids, max_tokens, request_id=request_id, n=n,
                                             priority=priority)
        for r in requests:
            self.rank_of[r.request_id] = i
        self.wake()
        return requests

    def abort(self, request_id: str) -> None:
        i = self.rank_of.get(request_id)
        if i is not None:
            self.ranks[i].abort(request_id)
            self.wake()

    def wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()
        for rank in self.ranks:
            rank.wake()

    def _run_lockstep(self):
        """Every rank steps at once; the step lasts the slowest rank's time (see the module docstring)."""
        from sim.steptime import BatchShape

        env = self.env
        dummy = BatchShape(1, 1, 1, 1, 0, 0, 1, 1)  # one token of decode over one token of context
        while True:
            outs = [rank._next_batch(env.now) for rank in self.ranks]
            if all(o is None for o in outs):  # nothing to run anywhere: wait for a request
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
                continue
            start_s = env.now
            times = []
            for rank, out in zip(self.ranks, outs):
                if out is not None:
                    rank._note_admissions(out, start_s)
                times.append(rank.step_model.step_time(rank._batch_shape(out) if out is not None else dummy))
            yield env.timeout(max(times))
            for rank, out in zip(self.ranks, outs):
                if out is not None:
                    rank._finish_step(out, start_s, None)

    @property
    def stats(self) -> EngineStats:
        """The ranks' counters summed, gauges summed (usage: the mean), as vLLM's metrics with
        one series per engine would add up."""
        out = EngineStats()
        parts = [r.stats for r in self.ranks]
        for name in ("num_requests_running", "num_requests_waiting", "prompt_tokens_total", "generation_tokens_total",
                     "num_preemptions_total", "prefix_cache_queries_total", "prefix_cache_hits_total", "num_steps",
                     "busy_s"):
            setattr(out, name, sum(getattr(p, name) for p in parts))
        out.kv_cache_usage_perc = sum(p.kv_cache_usage_perc for p in parts) / len(parts)
        out.request_success_total = {k: sum(p.request_success_total[k] for p in parts)
                                     for k in parts[0].request_success_total}
        return out

    @property
    def step_time_multiplier(self) -> float:
        return self.ranks[0].step_time_multiplier

    @step_time_multiplier.setter
    def step_time_multiplier(self, value: float) -> None:
        for rank in self.ranks:
            rank.step_time_multiplier = value


def collect_dp_result(engines: DataParallelEngines, requests: list[Request]):
    """One :class:`sim.results.EngineResult` of every rank's requests, in ``requests``' order.

    Per-request arrays and inter-token latencies come from each request's own rank (its step
    times); the step series are the ranks' steps in time order, with a ``dp_rank`` column; the
    memory plan is one rank's (every rank's is the same)."""
    from sim.results import collect_result

    by_rank: list[list[Request]] = [[] for _ in engines.ranks]
    for r in requests:
        by_rank[engines.rank_of[r.request_id]].append(r)
    parts = [collect_result(rank, reqs) for rank, reqs in zip(engines.ranks, by_rank)]
    position = {r.request_id: i for i, r in enumerate(requests)}
    ids = [rid for p in parts for rid in p.request_ids]
    order = np.argsort([position[rid] for rid in ids], kind="stable")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[order]
    steps = {k: np.concatenate([p.steps[k] for p in parts]) for k in parts[0].steps}
    steps["dp_rank"] = np.concatenate([np.full(len(p.steps["t_s"]), i, dtype=np.int64) for i, p in enumerate(parts)])
    by_time = np.argsort(steps["t_s"], kind="stable")
    steps = {k: v[by_time] for k, v in steps.items()}
    result = parts[0]
    result.request_ids = [ids[i] for i in order]
    for name in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "prompt_len", "output_len",
                 "num_preemptions", "num_cached_tokens"):
        setattr(result, name, cat(name))
    result.itl_s = np.concatenate([p.itl_s for p in parts])
    result.steps = steps
    result.stats = engines.stats
    result.extra = {**parts[0].extra, "data_parallel": {
        "data_parallel_size": len(parts),
        "requests_per_rank": [len(reqs) for reqs in by_rank],
        "memory_waste_per_rank": [p.extra.get("memory_waste", {}) for p in parts],
    }}
    return result
