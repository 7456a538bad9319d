"""The operator profiler on the CPU with tiny shapes (needs torch; skipped without it)."""

from __future__ import annotations

import json

import pytest

from lab.calibrate.profiler import COLUMNS, gemm_shapes, main
from sim.calibration_ops import gemms_from_profiler
from sim.catalog import get_model, model_from_config

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256,
        "max_position_embeddings": 512, "torch_dtype": "float32", "tie_word_embeddings": False}


def test_gemm_shapes_per_rank():
    m = get_model("meta-llama/Llama-3.1-8B")
    s1, s2 = gemm_shapes(m, 1), gemm_shapes(m, 2)
    assert s1["qkv"] == ((32 + 2 * 8) * 128, 4096) and s2["qkv"] == ((16 + 2 * 4) * 128, 4096)
    assert s1["gate_up"] == (2 * 14336, 4096) and s2["down"] == (4096, 7168)
    assert s1["lm_head"] == (128256, 4096) and s2["o"] == (4096, 2048)
    opt = gemm_shapes(get_model("facebook/opt-13b"), 1)
    assert opt["gate_up"] == (20480, 5120)  # OPT's fc1 is not gated


def test_profiler_on_cpu_writes_a_csv_that_fit_reads(tmp_path, capsys):
    pytest.importorskip("torch")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    model_from_config(TINY, source=str(config))  # the tiny config is a valid model
    out = tmp_path / "ops.csv"
    assert main(["--model", str(config), "--device", "cpu", "--dtype", "float32", "--tokens", "1,8",
                 "--contexts", "16", "--warmup", "1", "--iters", "3", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    gemms = gemms_from_profiler(text, str(out))
    assert {g.op for g in gemms} == {"qkv", "o", "gate_up", "down", "lm_head"} and len(gemms) == 10
    assert all(g.time_s > 0 and g.dtype_bytes == 4 for g in gemms)
    assert "attn_prefill" in text and "attn_decode" in text
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["device"] == "cpu" and info["torch"] and info["tensor_parallel_size"] == 1
