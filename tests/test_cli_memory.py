"""``servelab memory``: vLLM's start-up lines, the JSON fields, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli.main import main
from sim.catalog import get_gpu, get_model
from sim.memory import plan_memory


def test_prints_vllm_startup_lines(capsys):
    assert main(["memory", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--max-model-len", "2048"]) == 0
    out = capsys.readouterr().out
    plan = plan_memory(get_model("llama-2-7b"), get_gpu("a100-80gb"), max_model_len=2048)
    lines = out.splitlines()
    # vLLM's order: the attention backend and "Model loading took", then the KV-cache lines.
    loading = plan.loading_log_lines()
    assert lines[:len(loading)] == loading and loading[-1] == "Model loading took 12.55 GiB memory"
    lines = lines[len(loading):]
    assert lines[:2] == plan.startup_log_lines()
    assert lines[1] == (f"GPU KV cache size: {plan.kv_cache_tokens:,} tokens, Maximum concurrency for 2,048 tokens "
                        f"per request: {plan.max_concurrency:.2f}x")
    assert "model weights" in out and "KV cache" in out


def test_json_has_the_fields_and_flags_reach_the_plan(capsys):
    argv = ["memory", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "h100", "--tensor-parallel-size", "4",
            "--gpu-memory-utilization", "0.9", "--max-model-len", "4096", "--max-num-batched-tokens", "4096",
            "--max-num-seqs", "64", "--block-size", "32", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    for field in ("kv_cache_tokens", "num_gpu_blocks", "kv_bytes_per_token", "weights_bytes_per_gpu", "max_concurrency",
                  "available_kv_bytes", "activation_peak_bytes", "cudagraph_bytes", "requested_bytes"):
        assert field in data
    expected = plan_memory(get_model("llama-2-70b"), get_gpu("h100-80gb"), tensor_parallel_size=4,
                           gpu_memory_utilization=0.9, max_model_len=4096, max_num_batched_tokens=4096,
                           max_num_seqs=64, block_size=32)
    assert data == json.loads(json.dumps(expected.to_dict()))
    assert data["kv_bytes_per_token"] == 2 * 80 * 2 * 128 * 2


def test_kv_cache_memory_bytes_flag(capsys):
    assert main(["memory", "--model", "llama-2-7b", "--gpu", "l4", "--max-model-len", "2048",
                 "--kv-cache-memory-bytes", str(2**30), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_gpu_blocks"] == 2**30 // (16 * 524288)


@pytest.mark.parametrize("argv, expect", [
    (["--model", "gpt-9", "--gpu", "a100-80gb"], "unknown model 'gpt-9'"),
    (["--model", "llama-2-7b", "--gpu", "tpu"], "unknown GPU 'tpu'"),
    (["--model", "llama-2-7b", "--gpu", "a100-80gb", "--tensor-parallel-size", "3"], "--tensor-parallel-size 3"),
    (["--model", "llama-2-70b", "--gpu", "a100-80gb"], "No available memory for the cache blocks"),
    (["--model", "llama-3.1-8b", "--gpu", "l4"], "estimated maximum model length"),
    (["--model", "llama-2-7b", "--gpu", "l4", "--gpu-memory-utilization", "2"], "--gpu-memory-utilization"),
    (["--model", "llama-2-7b", "--gpu", "l4", "--max-model-len", "0"], "--max-model-len"),
], ids=["unknown-model", "unknown-gpu", "tp-heads", "does-not-fit", "max-model-len", "util", "zero-len"])
def test_errors_are_one_line_exit_2(capsys, argv, expect):
    assert main(["memory", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err
    assert len(err.strip().splitlines()) == 1


def test_subprocess_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "lab", "memory", "--model", "nope", "--gpu", "h100"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, expect", [
    pytest.param(["--model", "qwen3-30b-a3b", "-dp", "2", "-ep", "--all2all-backend", "foo"],
                 "--all2all-backend: 'foo' is not one of vLLM's backends", id="all2all-backend"),
    pytest.param(["--block-size", "7"], "--block-size: expected a multiple of 16", id="block-size-7"),
    pytest.param(["--block-size", "1000"], "got 1000; try 992 or 1008", id="block-size-1000"),
    pytest.param(["--max-num-batched-tokens", "100", "--max-num-seqs", "256"],
                 "--max-num-batched-tokens (100) must be greater than or equal to --max-num-seqs (256)",
                 id="mnbt-below-seqs"),
    # h200's default --max-num-batched-tokens for vllm serve is 8192, below the 10000 sequences asked for.
    pytest.param(["--max-num-seqs", "10000"], "(8192, vLLM's default for the GPU) must be greater than or equal to "
                 "--max-num-seqs (10000)", id="seqs-above-default-mnbt"),
])
def test_settings_vllm_refuses_are_one_line_exit_2(capsys, argv, expect):
    model = [] if "--model" in argv else ["--model", "llama-2-7b"]
    assert main(["memory", *model, "--gpu", "h200", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("gpu", ["h100-80gb", "a100-80gb", "b200", "l40s", "h200", "a100-40gb"])
@pytest.mark.parametrize("mode", ["balanced", "throughput"])
def test_defaults_never_trip_vllms_checks(capsys, gpu, mode):
    assert main(["memory", "--model", "llama-3.1-8b", "--gpu", gpu, "--performance-mode", mode, "--json"]) == 0


def test_a_default_max_num_seqs_is_capped_at_max_num_batched_tokens_as_in_vllm(capsys):
    # vLLM 0.33 (engine/arg_utils.py): max_num_seqs = min(default, max_num_batched_tokens) when not set.
    assert main(["memory", "--model", "llama-2-7b", "--gpu", "h200", "--max-num-batched-tokens", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["max_num_batched_tokens"], data["max_num_seqs"]) == (100, 100)


def test_help_states_each_gpus_max_num_batched_tokens_default(capsys):
    from sim.catalog import known_gpus
    from sim.config import resolve_scheduler_limits

    with pytest.raises(SystemExit):
        main(["memory", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "16384 on b200" in text and "8192 on h100-80gb, h200;" in text
    tokens_help = text[text.index("--max-num-batched-tokens TOKENS"):text.index("--max-num-seqs MAX_NUM_SEQS default")]
    for gpu in known_gpus():
        default = resolve_scheduler_limits(get_gpu(gpu).memory_bytes, gpu, "serve")[0]
        group = tokens_help[tokens_help.index(f"{default} on "):].split(";")[0]
        assert gpu in group.split(" on ", 1)[1].split(", "), (gpu, group)


@pytest.mark.parametrize("argv, kv", [
    pytest.param(["--model", "deepseek-v3", "--gpu", "h200", "-tp", "8"], "(MLA latent, replicated: whole on each "
                 "of the 8 TP GPUs)", id="mla"),
    pytest.param(["--model", "Qwen/Qwen3-235B-A22B-FP8", "--gpu", "h100", "-tp", "8"],
                 "(4 KV heads over TP 8: each head copied onto 2 GPUs, 1 per GPU)", id="fewer-kv-heads-than-tp"),
    pytest.param(["--model", "qwen3-32b", "--gpu", "h100", "-tp", "2"], "(8 KV heads sharded over TP 2, 4 per GPU)",
                 id="sharded"),
])
def test_placement_says_whether_the_kv_cache_is_sharded_or_copied(capsys, argv, kv):
    assert main(["memory", *argv, "--max-model-len", "8192"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("KV cache:"))
    assert kv in line


def _qwen3_moe_config(tmp_path, file_name: str, **changes) -> str:
    cfg = json.loads((Path(__file__).parent.parent / "sim/data/models/Qwen--Qwen3-30B-A3B.json").read_text())
    cfg.pop("_name_or_path", None)
    cfg.update(changes)
    path = tmp_path / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("file_name, name", [
    # Several configs in one folder: the file names the model (it was the folder, which get_model
    # could not find again, so the placement lines failed after the plan had printed).
    pytest.param("cfgs/my-moe.json", "{tmp}/cfgs/my-moe.json", id="a-json-file"),
    # A folder named like a shipped model holds an edited config (64 experts instead of 128): the
    # placement must be this config's, not the shipped Qwen3-30B-A3B's.
    pytest.param("qwen3-30b-a3b/config.json", "{tmp}/qwen3-30b-a3b", id="a-folder-named-like-a-shipped-model"),
])
def test_a_config_by_path_prints_its_own_placement(tmp_path, capsys, file_name, name):
    path = _qwen3_moe_config(tmp_path, file_name, num_experts=64)
    assert main(["memory", "--model", path, "--gpu", "h100", "--max-model-len", "8192", "-tp", "2", "-ep"]) == 0
    out = capsys.readouterr().out
    assert f"{name.format(tmp=tmp_path)} on 2 x h100-80gb" in out
    assert "32 whole experts of 64 per layer (EP 2 = tp x dp)" in out
    assert "KV cache: " in out.splitlines()[-1]
