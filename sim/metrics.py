"""vLLM's metric names, buckets and live counters, as vLLM 0.33 exports them (``v1/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _iteration_buckets() -> tuple[float, ...]:
    return (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


# Histogram buckets by metric name (without the ``vllm:`` prefix), from ``v1/metrics/loggers.py``.
VLLM_BUCKETS: dict[str, tuple[float, ...]] = {
    "time_to_first_token_seconds": (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
    ),
    "inter_token_latency_seconds": (
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0,
    ),
    "e2e_request_latency_seconds": (
        0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
        240.0, 480.0, 960.0, 1920.0, 7680.0,
    ),
    "iteration_tokens_total": _iteration_buckets(),
}
VLLM_BUCKETS["request_time_per_output_token_seconds"] = VLLM_BUCKETS["inter_token_latency_seconds"]
for _name in ("queue", "inference", "prefill", "decode"):
    VLLM_BUCKETS[f"request_{_name}_time_seconds"] = VLLM_BUCKETS["e2e_request_latency_seconds"]


def request_length_buckets(max_model_len: int) -> tuple[int, ...]:
    """vLLM's 1-2-5 series up to ``max_model_len`` for request_{prompt,generation}_tokens."""
    out, mantissa, exponent = [], (1, 2, 5), 0
    while True:
        for m in mantissa:
            v = m * 10**exponent
            if v > max_model_len:
                return tuple(out)
            out.append(v)
        exponent += 1


@dataclass(slots=True)
class EngineStats:
    """The live vLLM counters and gauges of one engine, by vLLM's names (``vllm:`` dropped)."""

    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage_perc: float = 0.0  # 0 to 1, as vLLM
    prompt_tokens_total: int = 0  # prompt tokens of admitted requests, cached ones included
    generation_tokens_total: int = 0
    num_preemptions_total: int = 0
    prefix_cache_queries_total: int = 0
    prefix_cache_hits_total: int = 0
    request_success_total: dict[str, int] = field(
        default_factory=lambda: {"stop": 0, "length": 0, "abort": 0, "error": 0}
    )
    num_steps: int = 0
    busy_s: float = 0.0  # time spent running steps
