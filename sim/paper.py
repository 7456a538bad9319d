"""The vLLM paper's OPT-13B experiments, simulated (Kwon et al., SOSP 2023, §6.2 and Fig. 2).

Setup (the paper's §6.1 and Table 1): OPT-13B on one A100-40GB, fp16, block size 16, vLLM of
2023: gpu_memory_utilization 0.90, at most 256 sequences and 2560 tokens per step, whole
prompts (no chunked prefill), no prefix caching, max_model_len 2048; Poisson arrivals. The
baselines are ServeLab's ``orca-max``, ``orca-pow2``, ``orca-oracle`` (contiguous reservations,
see :mod:`sim.kv.contiguous`) and ``hf-static`` (static batching). Datasets are the ShareGPT-
and Alpaca-like length distributions of :mod:`sim.workload` (means 161.31/337.99 and
19.31/58.45 tokens, as the paper's Fig. 11).

What is measured here, per run:

* normalized latency: the mean over requests of end-to-end latency / output length (s/token),
  the paper's definition (§6.1);
* mean number of batched requests: running requests per step, weighted by step duration, over
  the steady part of the run (:func:`sim.calibration_fit.steady_mean_batch`: from 10% of the
  arrival span to the last arrival; our traces are minutes, the paper's an hour);
* KV memory use: a listener samples after every step how the KV slots split into token states,
  reservation, internal and external fragmentation (the paper's Fig. 2), from each scheduler's
  ``memory_breakdown()`` (for vLLM: held block slots minus computed tokens is internal waste,
  the unfilled tail of each request's last block; no reservation, no external fragmentation).
  Shares are of the memory in use (held or unusable), time-weighted, as the paper's bars. (The
  engine's own ``memory_waste()`` samples every 32 steps and as shares of all memory.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from sim.config import EngineConfig

PAPER_ENGINES = ("vllm", "orca-oracle", "orca-pow2", "orca-max")
MEMORY_PARTS = ("token_states", "reservation", "internal_fragmentation", "external_fragmentation")


PAPER_PROFILE = Path(__file__).parent / "data" / "calibration-paper-2023.yaml"


def paper_config(engine: str, calibration: str | None = str(PAPER_PROFILE)) -> EngineConfig:
    """The paper's engine. ``calibration``: the 2023 profile fitted to the paper's Fig. 13 vLLM
    bars (see that file); None for the shipped profile (today's vLLM speed)."""
    return EngineConfig(
        model="facebook/opt-13b", gpu="a100-40gb", engine=engine, gpu_memory_utilization=0.90,
        max_model_len=2048, max_num_seqs=256, max_num_batched_tokens=2560,
        enable_chunked_prefill=False, enable_prefix_caching=False, calibration=calibration,
    )


def fig13_points(prompts: dict[str, int] | None = None):
    """The paper's two vLLM bars of Fig. 13 as calibration points (mean batched requests)."""
    from sim.calibration_fit import Point
    from sim.reference import load_paper
    from sim.workload import WorkloadSpec

    fig13 = load_paper()["fig13_batched_requests"]
    prompts = prompts or {"sharegpt": 400, "alpaca": 1200}
    config = paper_config("vllm", calibration=None)
    return [Point("vLLM paper Fig. 13 (L)", config,
                  WorkloadSpec(dataset_name=ds, num_prompts=prompts[ds], request_rate=float(fig13[ds]["rate"]),
                               max_model_len=config.max_model_len),
                  "mean_batched_requests", fig13[ds]["vllm"], usage="serve",
                  label=f"opt-13b a100-40gb {ds} {fig13[ds]['rate']} req/s vllm mean_batched_requests")
            for ds in ("sharegpt", "alpaca")]


class KVSampler:
    """Engine listener: time-weighted shares of the KV memory in use, after every step."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.weight = 0.0
        self.sums = dict.fromkeys(MEMORY_PARTS, 0.0)

    def on_step(self, record) -> None:
        parts = self.snapshot()
        used = sum(parts.values())
        if used <= 0 or record.duration_s <= 0:
            return
        self.weight += record.duration_s
        for k in MEMORY_PARTS:
            self.sums[k] += record.duration_s * parts[k] / used

    def snapshot(self) -> dict[str, int]:
        b = self.engine.scheduler.memory_breakdown()
        return {k: getattr(b, k) for k in MEMORY_PARTS}

    def shares(self) -> dict[str, float]:
        w = self.weight or 1.0
        return {k: v / w for k, v in self.sums.items()}


@dataclass(frozen=True)
class PaperRun:
    engine: str
    dataset: str
    request_rate: float
    num_prompts: int
    normalized_latency_s_per_token: float
    mean_batched_requests: float
    requests_per_second: float  # completed / (last finish - first arrival)
    memory_shares: dict
    num_preemptions: int


def run_point(engine: str, dataset: str, request_rate: float, num_prompts: int, seed: int = 0,
              calibration: str | None = str(PAPER_PROFILE)) -> PaperRun:
    """One simulated run of the paper's setup (a listener needs the Engine, so this drives it
    directly, the way :func:`sim.runner.run_engine` does)."""
    from sim.calibration_fit import steady_mean_batch
    from sim.engine import Engine, collect_result
    from sim.workload import WorkloadSpec, build_workload

    config = paper_config(engine, calibration)
    spec = WorkloadSpec(dataset_name=dataset, num_prompts=num_prompts, request_rate=request_rate,
                        max_model_len=config.max_model_len)
    workload = build_workload(spec, np.random.default_rng(seed))
    env = simpy.Environment()
    arrivals = workload.arrival_s
    state = {"next": 0}
    engine_ = Engine(env, config, seed=seed, usage="serve", fast_forward=True,
                     next_arrival_s=lambda: float(arrivals[state["next"]]) if state["next"] < len(arrivals) else math.inf)
    sampler = KVSampler(engine_)
    engine_.listeners.append(sampler)
    requests = []
    vocab = engine_.model.vocab_size

    def feeder():
        for i in range(len(arrivals)):
            if arrivals[i] > env.now:
                yield env.timeout(arrivals[i] - env.now)
            requests.extend(engine_.add_request(workload.prompt_token_ids(i, vocab), int(workload.output_len[i]),
                                                request_id=str(i)))
            state["next"] = i + 1

    env.process(feeder())
    env.run()
    result = collect_result(engine_, requests)
    mean_batch = steady_mean_batch(result)
    norm = float(np.mean(result.e2el_s / np.maximum(result.output_len, 1)))
    span = float(result.finish_s.max() - result.arrival_s.min()) if len(requests) else 0.0
    return PaperRun(engine, dataset, request_rate, num_prompts, norm, mean_batch,
                    len(requests) / span if span else 0.0, sampler.shares(), int(result.stats.num_preemptions_total))


def sustainable_rate(rates: list[float], latencies: list[float], factor: float = 2.0) -> float:
    """The highest request rate whose normalized latency stays within ``factor`` times the
    lowest-rate latency, interpolated linearly between grid points (the curve's knee).
    Returns the last grid rate when the curve never crosses (the knee lies beyond the grid)."""
    limit = factor * latencies[0]
    for i in range(1, len(rates)):
        if latencies[i] > limit:
            a, b = latencies[i - 1], latencies[i]
            return rates[i - 1] + (rates[i] - rates[i - 1]) * (limit - a) / (b - a)
    return rates[-1]
