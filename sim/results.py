"""What a run leaves behind: the per-step series and, per request, its times and counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sim.config import EngineConfig
from sim.memory import MemoryPlan
from sim.metrics import EngineStats
from sim.request import Request

if TYPE_CHECKING:
    from sim.engine import Engine


class StepLog:
    """Per-step series, stored in chunks so a fast-forwarded run costs one entry."""

    def __init__(self) -> None:
        self._chunks: list[tuple] = []

    def add(self, start_s, out, sched, kv_usage, durations, end_s, running_during, usage_during=None,
            waiting_during=None) -> None:
        """One step, or a run of ``len(durations)`` alike steps whose last one may finish
        requests (``running_during``: the running count before that; ``usage_during``: the KV
        cache usage at the end of each step but the last, whose is ``kv_usage``;
        ``waiting_during``: the waiting count before the last step)."""
        n = out.total_num_scheduled_tokens
        if durations is None:
            self._chunks.append(((end_s,), (end_s - start_s,), sched.num_running, sched.num_waiting, n, kv_usage,
                                 len(out.preempted_request_ids)))
        else:
            ends = start_s + np.cumsum(durations)
            ends[-1] = end_s
            during = kv_usage if usage_during is None else np.asarray(usage_during, dtype=float)
            waiting = sched.num_waiting if waiting_during is None else waiting_during
            self._chunks.append((ends[:-1], durations[:-1], running_during, waiting, n, during, 0))
            self._chunks.append((ends[-1:], durations[-1:], sched.num_running, sched.num_waiting, n, kv_usage, 0))

    def _kv_usage(self, sizes: list[int]) -> np.ndarray:
        """The KV usage series: one value a chunk, but a run's own series (it grows as its
        decodes fill new blocks)."""
        usage = [c[5] for c in self._chunks]
        runs = [i for i, u in enumerate(usage) if isinstance(u, np.ndarray)]
        for i in runs:
            usage[i] = 0.0
        out = np.repeat(np.array(usage, dtype=float), sizes)
        starts = np.cumsum(sizes) - sizes
        for i in runs:
            out[starts[i]:starts[i] + sizes[i]] = self._chunks[i][5]
        return out

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
            "num_batched_tokens": rep(4, np.int64),
            "kv_usage": self._kv_usage(sizes),
            "num_preemptions": rep(6, np.int64),
        }


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
    extra: dict = field(default_factory=dict)  # JSON-ready fields for simulator_fields()
    # With a serving front end, the engine's own times (the fields above are then the clients'):
    # engine_arrival_s, engine_first_token_s, engine_finish_s. None without one.
    engine_times: dict | None = None

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


def collect_result(engine: "Engine", requests: list[Request]) -> EngineResult:
    if engine.step_base:
        raise ValueError(f"the engine forgot its first {engine.step_base} steps (forget_steps): results need them all")
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
        extra={"memory_waste": engine.memory_waste(), "step_time_model": engine.step_model.source},
    )
