"""Published measurements of real vLLM runs, as simulator points with their setups.

The numbers and their sources are in ``sim/data/reference/published-vllm.yaml`` (copied from
the papers and posts it names). This module turns each row into a :class:`Point`: the engine
settings of that era's vLLM and the workload the source describes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from sim.calibration_fit import Point
from sim.config import EngineConfig
from sim.workload import WorkloadSpec

REFERENCE_FILE = Path(__file__).parent / "data" / "reference" / "published-vllm.yaml"


@lru_cache(maxsize=1)
def load() -> dict:
    return yaml.safe_load(REFERENCE_FILE.read_text())


def llama2_7b_offline_points(num_prompts: int = 1000) -> list[Point]:
    """vLLM blog (2023-11-14): LLaMA-7B on one A100-80GB, offline, fixed lengths.

    vLLM of Nov 2023 (v0.2.x): gpu_memory_utilization 0.90, max_num_seqs 256, and a token
    budget of max(max_model_len, 2048) = 4096 per step, prompts computed whole.
    """
    section = load()["offline_throughput_llama7b_a100_80gb"]
    config = EngineConfig(model="meta-llama/Llama-2-7b-hf", gpu="a100-80gb", gpu_memory_utilization=0.9,
                          max_num_seqs=256, max_num_batched_tokens=4096)
    points = []
    for row in section["rows"]:
        spec = WorkloadSpec(num_prompts=num_prompts, random_input_len=row["input_len"],
                            random_output_len=row["output_len"])
        points.append(Point(section["source"], config, spec, "requests_per_second", row["vllm"], vllm="0.2",
                            label=f"llama-2-7b a100-80gb in={row['input_len']} out={row['output_len']}"))
    return points


def llama31_8b_online_points(scale: float = 1.0) -> list[Point]:
    """SGLang's reproduction of vLLM 0.6.0: Llama-3.1-8B on one A100-80GB, ShareGPT, Poisson.

    vLLM 0.6.0 ran with --num-scheduler-steps 10 (new requests join every 10 steps, which is
    most of the median TTFT), chunked prefill off (a budget of max_model_len = 4096 tokens),
    256 sequences and gpu_memory_utilization 0.9.
    """
    section = load()["online_llama31_8b_a100_80gb"]
    config = EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="a100-80gb", max_model_len=4096,
                          gpu_memory_utilization=0.9, max_num_seqs=256, max_num_batched_tokens=4096,
                          num_scheduler_steps=10)
    points = []
    for row in section["rows"]:
        n = max(100, int(row["num_prompts"] * scale))
        spec = WorkloadSpec(dataset_name="sharegpt-vllm", num_prompts=n, request_rate=row["request_rate"],
                            max_model_len=4096)
        for metric in ("median_ttft_ms", "median_tpot_ms", "median_e2el_ms"):
            points.append(Point(section["source"], config, spec, metric, row[metric], usage="serve", vllm="0.6.0",
                                label=f"llama-3.1-8b a100-80gb rate={row['request_rate']} {metric}"))
    off = section["offline"]
    spec = WorkloadSpec(dataset_name="sharegpt-vllm", num_prompts=max(200, int(off["num_prompts"] * scale)),
                        max_model_len=4096)
    points.append(Point(section["source"], config, spec, "requests_per_second", off["requests_per_second"],
                        vllm="0.6.0", label="llama-3.1-8b a100-80gb offline"))
    return points


PAPER_FILE = Path(__file__).parent / "data" / "reference" / "vllm-paper.yaml"


@lru_cache(maxsize=1)
def load_paper() -> dict:
    """The vLLM paper's stated OPT-13B results (sim/data/reference/vllm-paper.yaml)."""
    return yaml.safe_load(PAPER_FILE.read_text())
