"""The simulator runs the pages make, cached with ``st.cache_data``.

Each function takes frozen, hashable inputs (an :class:`EngineConfig`, a :class:`RandomLoad`)
and returns plain data (dicts of numbers and numpy arrays), so Streamlit can key, pickle and
copy the result. Progress goes to an optional ``_progress`` callback, which the cache skips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import streamlit as st

from sim.config import EngineConfig


@dataclass(frozen=True)
class RandomLoad:
    """vLLM's ``random`` dataset: lengths uniform in [len x (1 - r), len x (1 + r)]."""

    num_prompts: int
    input_len: int
    output_len: int
    range_ratio: float = 0.0
    request_rate: float = math.inf  # requests per second; inf: all at t=0 (offline)
    seed: int = 0
    shared_prefix_len: int = 0  # a system prompt shared by every request


def build_workload(load: RandomLoad):
    from sim.workload import WorkloadSpec, build_workload as build

    spec = WorkloadSpec(
        dataset_name="random",
        num_prompts=load.num_prompts,
        random_input_len=load.input_len,
        random_output_len=load.output_len,
        random_range_ratio=load.range_ratio,
        request_rate=load.request_rate,
        prefix_len=load.shared_prefix_len,
    )
    return build(spec, np.random.default_rng(load.seed))


def summarize(result) -> dict:
    """The figures a page shows, with vLLM's benchmark names where vLLM has one."""
    n = len(result.finish_s)
    elapsed_s = float(result.elapsed_s)
    out_tokens = int(result.output_len.sum())
    total_tokens = out_tokens + int(result.prompt_len.sum())
    ttft_ms = np.asarray(result.ttft_s) * 1e3
    tpot_ms = np.asarray(result.tpot_s) * 1e3
    e2el_ms = np.asarray(result.e2el_s) * 1e3
    steps = result.steps
    return {
        "num_requests": n,
        "elapsed_time": elapsed_s,
        "requests_per_second": n / elapsed_s if elapsed_s > 0 else float("nan"),
        "output_throughput": out_tokens / elapsed_s if elapsed_s > 0 else float("nan"),
        "total_token_throughput": total_tokens / elapsed_s if elapsed_s > 0 else float("nan"),
        "mean_ttft_ms": float(np.mean(ttft_ms)),
        "p99_ttft_ms": float(np.percentile(ttft_ms, 99)),
        "mean_tpot_ms": float(np.nanmean(tpot_ms)) if np.isfinite(tpot_ms).any() else float("nan"),
        "p99_tpot_ms": float(np.nanpercentile(tpot_ms, 99)) if np.isfinite(tpot_ms).any() else float("nan"),
        "mean_e2el_ms": float(np.mean(e2el_ms)),
        "p99_e2el_ms": float(np.percentile(e2el_ms, 99)),
        "num_preemptions": int(np.sum(result.num_preemptions)),
        "mean_batch_size": float(np.average(steps["num_running"], weights=steps["duration_s"]))
        if len(steps["t_s"])
        else 0.0,
    }


def per_request(result) -> dict[str, np.ndarray]:
    return {
        "arrival_s": np.asarray(result.arrival_s),
        "first_scheduled_s": np.asarray(result.first_scheduled_s),
        "first_token_s": np.asarray(result.first_token_s),
        "finish_s": np.asarray(result.finish_s),
        "prompt_len": np.asarray(result.prompt_len),
        "output_len": np.asarray(result.output_len),
        "num_preemptions": np.asarray(result.num_preemptions),
    }


@st.cache_data(show_spinner=False, max_entries=64)
def engine_run(config: EngineConfig, load: RandomLoad, usage: str = "offline") -> dict:
    """One run_engine, summarized: {'summary', 'requests', 'steps', 'memory'}."""
    from sim.engine import run_engine

    result = run_engine(config, build_workload(load), seed=load.seed, usage=usage)
    return {
        "summary": summarize(result),
        "requests": per_request(result),
        "steps": {k: np.asarray(v) for k, v in result.steps.items()},
        "memory": result.memory.to_dict(),
    }


def rate_summary(job: tuple[EngineConfig, RandomLoad]) -> tuple[RandomLoad, dict]:
    """One rate of the what-if page's sweep, for a worker process: the load and its summary
    (the summary alone travels back, not the per-request arrays)."""
    from sim.engine import run_engine

    config, load = job
    return load, summarize(run_engine(config, build_workload(load), seed=load.seed, usage="serve"))


@st.cache_data(show_spinner=False, max_entries=64)
def memory_plan(config: EngineConfig, usage: str = "serve") -> dict:
    from sim.memory import plan_for_config

    plan = plan_for_config(config, usage=usage)
    return {**plan.to_dict(), "startup_log_lines": plan.startup_log_lines()}


def slot_assignment(start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
    """A batch slot for each request: the lowest slot free when it starts (interval colouring).

    Requests that run at the same time get different slots, and a slot is reused the moment its
    request finishes, which is exactly what continuous batching does with the batch.
    """
    order = np.lexsort((end_s, start_s))
    slot_free_at: list[float] = []
    slots = np.zeros(len(start_s), dtype=np.int64)
    for i in order:
        for k, free_at in enumerate(slot_free_at):
            if free_at <= start_s[i]:
                slots[i] = k
                slot_free_at[k] = end_s[i]
                break
        else:
            slots[i] = len(slot_free_at)
            slot_free_at.append(end_s[i])
    return slots
