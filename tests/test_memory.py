"""vLLM's KV-cache sizing: the paper's Table 1, vLLM's arithmetic and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from sim.catalog import get_gpu, get_model
from sim.config import cdiv
from sim.errors import ConfigError, OutOfMemoryError
from sim.memory import (
    GiB,
    PAPER_TABLE_1,
    activation_peak_bytes,
    paper_table_1_plan,
    plan_memory,
)

REFERENCE = Path("/work/shared/reference/published-vllm.yaml")

# The vLLM paper's Table 1 (Kwon et al., SOSP 2023), copied from the reference file with its
# source: (model, gpus, gpu, total GPU memory GB, params GB, KV cache GB, max KV slots).
TABLE_1 = [
    pytest.param("facebook/opt-13b", 1, "a100-40gb", 40, 26, 12, 15_700, id="opt-13b-1xA100-40GB"),
    pytest.param("facebook/opt-66b", 4, "a100-40gb", 160, 132, 21, 9_700, id="opt-66b-4xA100-40GB"),
    pytest.param("facebook/opt-175b", 8, "a100-80gb", 640, 346, 264, 60_100, id="opt-175b-8xA100-80GB"),
]


def paper_plan(model_name, gpus, gpu_name, total_gb):
    """The paper's setting; the assumptions are in paper_table_1_plan's docstring and docs/memory.md."""
    return paper_table_1_plan(get_model(model_name), get_gpu(gpu_name), gpus, total_gb)


@pytest.mark.parametrize("model_name, gpus, gpu_name, total_gb, params_gb, kv_gb, slots", TABLE_1)
def test_paper_table_1_within_10_percent(model_name, gpus, gpu_name, total_gb, params_gb, kv_gb, slots):
    plan = paper_plan(model_name, gpus, gpu_name, total_gb)
    model = get_model(model_name)
    # Parameters in GB of 1e9 bytes; the KV column is in GiB (15,700 x 800 KiB = 11.98 GiB = "12").
    assert model.weight_bytes / 1e9 == pytest.approx(params_gb, rel=0.10)
    assert plan.available_kv_bytes * gpus / GiB == pytest.approx(kv_gb, rel=0.10)
    assert plan.num_gpu_blocks * plan.block_size == pytest.approx(slots, rel=0.10)


def test_table_1_rows_match_the_reference_file():
    if not REFERENCE.exists():
        pytest.skip("reference file not on this machine")
    rows = yaml.safe_load(REFERENCE.read_text())["memory_model"]["rows"]
    ours = [(p.values[0], p.values[1], p.values[2], p.values[3], p.values[4], p.values[5], p.values[6]) for p in TABLE_1]
    theirs = [(r["model"], r["gpus"], r["gpu"], r["total_gpu_mem_gb"], r["params_gb"], r["kv_cache_mem_gb"], r["max_kv_slots"])
              for r in rows]
    assert ours == theirs
    assert list(PAPER_TABLE_1) == theirs


def test_vllm_arithmetic_holds():
    plan = plan_memory(get_model("meta-llama/Llama-3.1-8B"), get_gpu("a100-80gb"), max_model_len=8192)
    assert plan.requested_bytes == math.ceil(plan.total_bytes * 0.92)
    assert plan.available_kv_bytes == (plan.requested_bytes - plan.weights_bytes_per_gpu - plan.non_torch_bytes
                                       - plan.activation_peak_bytes - plan.cudagraph_bytes)
    assert plan.num_gpu_blocks == plan.available_kv_bytes // (16 * 128 * 1024)
    assert plan.max_concurrency == plan.num_gpu_blocks / cdiv(8192, 16)
    assert plan.kv_cache_tokens == int(plan.max_concurrency * 8192)
    # A100 gets vLLM's small-GPU serve defaults.
    assert (plan.max_num_batched_tokens, plan.max_num_seqs) == (2048, 256)


def test_startup_lines_use_vllm_formats():
    plan = plan_memory(get_model("llama-2-7b"), get_gpu("a100-80gb"), max_model_len=4096)
    # vLLM 0.33: gpu_worker.py logs the GiB with format_gib (rounded, "59.37"; "54.8", not "54.80"),
    # kv_cache_utils.update_kv_cache_capacity the size and the concurrency in one line.
    available, capacity = plan.startup_log_lines()
    assert available == f"Available KV cache memory: {round(plan.available_kv_bytes / GiB, 2)} GiB"
    assert capacity == (f"GPU KV cache size: {plan.kv_cache_tokens:,} tokens, Maximum concurrency for 4,096 tokens "
                        f"per request: {plan.max_concurrency:.2f}x")


def test_available_memory_is_printed_as_vllm_rounds_it():
    # Qwen2.5-7B on an H100 keeps 54.80 GiB; vLLM's format_gib prints round(x, 2): "54.8".
    plan = plan_memory(get_model("qwen2.5-7b"), get_gpu("h100"), max_model_len=8192)
    assert f"{plan.available_kv_bytes / GiB:.2f}" == "54.80"
    assert plan.startup_log_lines()[0] == "Available KV cache memory: 54.8 GiB"


def test_more_utilization_more_blocks_and_tp_adds_blocks():
    model, gpu = get_model("llama-2-13b"), get_gpu("a100-80gb")
    low = plan_memory(model, gpu, gpu_memory_utilization=0.8)
    high = plan_memory(model, gpu, gpu_memory_utilization=0.95)
    assert high.num_gpu_blocks > low.num_gpu_blocks
    tp2 = plan_memory(model, gpu, tensor_parallel_size=2)
    one = plan_memory(model, gpu)
    # Half the weights and half the KV heads per GPU: more than twice the blocks.
    assert tp2.num_gpu_blocks > 2 * one.num_gpu_blocks


def test_kv_cache_memory_bytes_and_override_bypass_the_profile():
    model, gpu = get_model("llama-2-7b"), get_gpu("a100-80gb")
    plan = plan_memory(model, gpu, kv_cache_memory_bytes=4 * GiB)
    assert plan.available_kv_bytes == 4 * GiB
    assert plan.num_gpu_blocks == 4 * GiB // (16 * 524288)
    assert plan_memory(model, gpu, num_gpu_blocks_override=100, max_model_len=1024).num_gpu_blocks == 100


def test_a_fixed_kv_cache_too_small_for_one_sequence_advises_the_flag_that_sets_it():
    # With --kv-cache-memory-bytes the utilization does not size the cache; the advice names the flag that does.
    model, gpu = get_model("llama-3.1-8b"), get_gpu("h100")
    with pytest.raises(OutOfMemoryError) as fixed:
        plan_memory(model, gpu, kv_cache_memory_bytes=GiB)
    assert "Try increasing --kv-cache-memory-bytes or decreasing --max-model-len" in str(fixed.value)
    assert fixed.value.kind == OutOfMemoryError.MAX_MODEL_LEN
    with pytest.raises(OutOfMemoryError) as profiled:
        plan_memory(model, gpu, gpu_memory_utilization=0.3)
    assert "Try increasing --gpu-memory-utilization" in str(profiled.value)


def test_enforce_eager_drops_cuda_graphs():
    model, gpu = get_model("llama-3.1-8b"), get_gpu("h100")
    assert plan_memory(model, gpu, max_model_len=8192).cudagraph_bytes > 0
    assert plan_memory(model, gpu, max_model_len=8192, enforce_eager=True).cudagraph_bytes == 0


def test_activation_grows_with_batched_tokens_and_shrinks_with_tp():
    model = get_model("llama-2-70b")
    assert activation_peak_bytes(model, 1, 8192, 256) > activation_peak_bytes(model, 1, 2048, 256)
    assert activation_peak_bytes(model, 4, 8192, 8) < activation_peak_bytes(model, 1, 8192, 8)


# -- errors ----------------------------------------------------------------------------------
def test_model_that_does_not_fit_reports_the_numbers():
    with pytest.raises(ConfigError) as err:
        plan_memory(get_model("llama-2-70b"), get_gpu("a100-80gb"))
    msg = str(err.value)
    assert msg.startswith("No available memory for the cache blocks")
    assert "model weights take 128.48GiB" in msg
    assert "try --tensor-parallel-size 2 or more" in msg  # 2 x A100-80GB hold Llama-2-70B


def test_no_room_left_beside_the_weights_suggests_utilization():
    # Llama-3.1-8B fits an H100 at 22%, but its activation peak and CUDA graphs do not.
    with pytest.raises(ConfigError) as err:
        plan_memory(get_model("llama-3.1-8b"), get_gpu("h100"), gpu_memory_utilization=0.22, max_model_len=1024)
    assert "Try increasing --gpu-memory-utilization" in str(err.value)


def test_max_model_len_larger_than_the_cache():
    # Llama-3.1-8B's 131072-token context on an L4 (22 GiB): the KV cache cannot hold one request.
    with pytest.raises(ConfigError) as err:
        plan_memory(get_model("llama-3.1-8b"), get_gpu("l4"))
    msg = str(err.value)
    assert "To serve at least one request with the model's max seq len (131072)" in msg
    assert "the estimated maximum model length is" in msg
    estimated = int(msg.split("the estimated maximum model length is ")[1].split(".")[0])
    # That length does fit.
    plan = plan_memory(get_model("llama-3.1-8b"), get_gpu("l4"), max_model_len=estimated)
    assert plan.num_gpu_blocks >= cdiv(estimated, 16)


def test_max_model_len_beyond_the_model():
    with pytest.raises(ConfigError, match="max_position_embeddings=4096"):
        plan_memory(get_model("llama-2-7b"), get_gpu("a100-80gb"), max_model_len=8192)


@pytest.mark.parametrize("kwargs, flag", [
    ({"tensor_parallel_size": 3}, "--tensor-parallel-size"),
    ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
    ({"gpu_memory_utilization": 0}, "--gpu-memory-utilization"),
    ({"block_size": 0}, "--block-size"),
    ({"max_model_len": -5}, "--max-model-len"),
    ({"max_num_seqs": 0}, "--max-num-seqs"),
])
def test_bad_settings_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        plan_memory(get_model("llama-2-7b"), get_gpu("a100-80gb"), **kwargs)


def test_plan_for_engine_config_uses_its_flags_and_usage_defaults():
    from sim.config import EngineConfig
    from sim.memory import plan_for_config

    config = EngineConfig(model="llama-3.1-8b", gpu="h100", max_model_len=8192, gpu_memory_utilization=0.8)
    serve, offline = plan_for_config(config), plan_for_config(config, usage="offline")
    assert serve == plan_memory(get_model("llama-3.1-8b"), get_gpu("h100-80gb"), max_model_len=8192,
                                gpu_memory_utilization=0.8)
    assert (serve.max_num_batched_tokens, offline.max_num_batched_tokens) == (8192, 16384)
    assert offline.activation_peak_bytes > serve.activation_peak_bytes


def test_every_model_gpu_and_tp_plans_or_says_why():
    from sim.catalog import known_gpus, known_models

    fitted = 0
    for model_name in known_models():
        model = get_model(model_name)
        for gpu_name in known_gpus():
            for tp in (1, 2, 4, 8):
                try:
                    plan = plan_memory(model, get_gpu(gpu_name), tensor_parallel_size=tp, max_model_len=2048)
                except ConfigError as exc:
                    assert str(exc).startswith(("No available memory for the cache blocks", "--tensor-parallel-size 8",
                                                "To serve at least one request",
                                                # vLLM refuses the FP8 checkpoints on a T4 (sim/precision.py)
                                                "config.json quantization_config: The quantization method"))
                    continue
                fitted += 1
                assert plan.num_gpu_blocks >= cdiv(2048, 16) and plan.max_concurrency >= 1
                assert plan.available_kv_bytes < plan.requested_bytes <= plan.total_bytes
    assert fitted > 100
