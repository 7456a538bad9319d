"""Summaries of a run, with vLLM's benchmark field names, plus what only a simulator can see.

``throughput_summary`` follows ``vllm bench throughput --output-json``; ``serve_summary``
follows ``vllm bench serve --save-result``. Both add ServeLab's own fields (mean batch size,
KV-cache usage, preemptions, prefix-cache hit rate, memory waste) under names vLLM does not
use, so a real result file and a simulated one can still be compared field by field.
"""

from __future__ import annotations

import numpy as np

from sim.engine import EngineResult


def _stats_ms(values_s: np.ndarray, name: str, percentiles: tuple[float, ...]) -> dict[str, float]:
    v = np.asarray(values_s, dtype=float) * 1000.0
    out = {
        f"mean_{name}_ms": float(v.mean()) if len(v) else 0.0,
        f"median_{name}_ms": float(np.median(v)) if len(v) else 0.0,
        f"std_{name}_ms": float(v.std()) if len(v) else 0.0,
    }
    for p in percentiles:
        key = f"p{int(p) if float(p).is_integer() else p}_{name}_ms"
        out[key] = float(np.percentile(v, p)) if len(v) else 0.0
    return out


def simulator_fields(result: EngineResult) -> dict:
    """What vLLM cannot report but a student wants to see."""
    steps = result.steps
    d = steps["duration_s"]
    busy = float(d.sum()) or 1.0
    weights = d / busy
    stats = result.stats
    kv = steps["kv_usage"]
    fields = {
        "mean_batch_size": float((steps["num_running"] * weights).sum()) if len(d) else 0.0,
        "mean_num_batched_tokens": float((steps["num_batched_tokens"] * weights).sum()) if len(d) else 0.0,
        "num_steps": int(stats.num_steps),
        "num_preemptions": int(stats.num_preemptions_total),
        "prefix_cache_queries": int(stats.prefix_cache_queries_total),
        "prefix_cache_hits": int(stats.prefix_cache_hits_total),
        "prefix_cache_hit_rate": (
            stats.prefix_cache_hits_total / stats.prefix_cache_queries_total
            if stats.prefix_cache_queries_total else 0.0
        ),
        "mean_kv_cache_usage": float((kv * weights).sum()) if len(d) else 0.0,
        "max_kv_cache_usage": float(kv.max()) if len(kv) else 0.0,
        "num_gpu_blocks": int(result.memory.num_gpu_blocks),
        "kv_cache_tokens": int(result.memory.kv_cache_tokens),
        "engine": result.config.engine,
        "gpu": result.config.gpu,
    }
    fields["kv_usage_over_time"] = downsample(steps["t_s"], kv, 120)
    fields.update(result.extra)
    return fields


def downsample(t: np.ndarray, v: np.ndarray, points: int) -> list[list[float]]:
    """At most ``points`` (t, v) pairs, the mean of v over equal stretches of t."""
    if len(t) == 0:
        return []
    edges = np.linspace(float(t[0]), float(t[-1]), points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, points - 1)
    sums = np.bincount(idx, weights=v, minlength=points)
    counts = np.bincount(idx, minlength=points)
    keep = counts > 0
    centers = (edges[:-1] + edges[1:]) / 2
    return [[round(float(a), 4), round(float(b), 4)] for a, b in zip(centers[keep], sums[keep] / counts[keep])]


def throughput_summary(result: EngineResult, model_id: str, n: int = 1) -> dict:
    """As ``vllm bench throughput``: a request is a prompt (its ``n`` samples are one request),
    prompt tokens count once per prompt, output tokens count for every sample."""
    elapsed = result.elapsed_s
    total_prompt = int(result.prompt_len.sum()) // n
    total_output = int(result.output_len.sum())
    num = len(result.request_ids) // n
    out = {
        "model_id": model_id,
        "elapsed_time": elapsed,
        "num_requests": num,
        "total_num_tokens": total_prompt + total_output,
        "requests_per_second": num / elapsed if elapsed else 0.0,
        "tokens_per_second": (total_prompt + total_output) / elapsed if elapsed else 0.0,
        "output_tokens_per_second": total_output / elapsed if elapsed else 0.0,
        "total_num_prompt_tokens": total_prompt,
        "total_num_output_tokens": total_output,
    }
    out["servelab"] = simulator_fields(result)
    return out


def serve_summary(
    result: EngineResult, model_id: str, *, request_rate: float, burstiness: float,
    max_concurrency: int | None, percentile_metrics: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el"),
    metric_percentiles: tuple[float, ...] = (99.0,), save_detailed: bool = False,
) -> dict:
    finish = result.finish_s
    duration = float(finish.max() - result.arrival_s.min()) if len(finish) else 0.0
    completed = int(np.isfinite(finish).sum())
    total_input = int(result.prompt_len.sum())
    total_output = int(result.output_len.sum())
    out = {
        "backend": "servelab",
        "model_id": model_id,
        "num_prompts": len(result.request_ids),
        "request_rate": "inf" if request_rate == float("inf") else request_rate,
        "burstiness": burstiness,
        "max_concurrency": max_concurrency,
        "duration": duration,
        "completed": completed,
        "failed": len(result.request_ids) - completed,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": completed / duration if duration else 0.0,
        "output_throughput": total_output / duration if duration else 0.0,
        "total_token_throughput": (total_input + total_output) / duration if duration else 0.0,
    }
    series = {"ttft": result.ttft_s, "tpot": result.tpot_s, "itl": result.itl_s, "e2el": result.e2el_s}
    for name in percentile_metrics:
        out.update(_stats_ms(series[name], name, metric_percentiles))
    if save_detailed:  # vLLM drops the per-request arrays without --save-detailed (benchmarks/serve.py)
        out["input_lens"] = result.prompt_len.tolist()
        out["output_lens"] = result.output_len.tolist()
        out["ttfts"] = result.ttft_s.tolist()
        out["e2els"] = result.e2el_s.tolist()
    out["servelab"] = simulator_fields(result)
    return out
