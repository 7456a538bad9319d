"""Today's architectures (sim.architectures): parameter counts, weights, KV cache as vLLM allocates it.

Sources of the published figures (billions of parameters; tolerance in the table):

* Qwen model cards (huggingface.co/Qwen/...): Qwen2.5-7B-Instruct 7.61, Qwen3-8B 8.2, Qwen3-32B 32.8,
  Qwen3-30B-A3B 30.5 total / 3.3 activated, Qwen3-235B-A22B 235 / 22.
* Mistral AI, "Mixtral of experts" (2024): 46.7 total, 12.9 active (embeddings counted).
* DeepSeek-V3 technical report (2024): 671 total, 37 activated per token (the MTP module apart).
* OpenAI, gpt-oss model card (2025), table 1: gpt-oss-120b 116.83 total / 5.13 active,
  gpt-oss-20b 20.91 / 3.61, "active" counting the unembedding but not the embedding table;
  checkpoint sizes 60.8 GiB and 12.8 GiB (MXFP4 experts).
* google/gemma-3-27b-it on Hugging Face: 27.4B parameters (text model, SigLIP tower and projector).
* Qwen/QwQ-32B-Preview model card: 32.5B parameters (its AWQ quantization has the same shapes).

The KV-cache figures are computed twice: from first principles in the test, and by vLLM 0.33's own
spec classes and planning functions (tools/vllm_reference/kv_groups_probe.py, run in .venv-vllm).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.cli.main import main
from sim import architectures
from sim.catalog import get_gpu, get_model, model_from_config
from sim.errors import CatalogError, ConfigError
from sim.memory import plan_memory
from sim.precision import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3

# (model, published total, published active or None, relative tolerance)
PUBLISHED = [
    pytest.param("Qwen/Qwen2.5-7B-Instruct", 7.61, None, 0.01, id="qwen2.5-7b"),
    pytest.param("Qwen/Qwen3-8B", 8.2, None, 0.01, id="qwen3-8b"),
    pytest.param("Qwen/Qwen3-32B", 32.8, None, 0.01, id="qwen3-32b"),
    pytest.param("Qwen/Qwen3-30B-A3B", 30.5, 3.3, 0.02, id="qwen3-30b-a3b"),
    pytest.param("Qwen/Qwen3-235B-A22B", 235.0, 22.0, 0.01, id="qwen3-235b-a22b"),
    pytest.param("Qwen/Qwen3-235B-A22B-FP8", 235.0, 22.0, 0.01, id="qwen3-235b-a22b-fp8"),
    pytest.param("mistralai/Mixtral-8x7B-v0.1", 46.7, 12.9, 0.01, id="mixtral-8x7b"),
    pytest.param("deepseek-ai/DeepSeek-V3", 671.0, 37.0, 0.02, id="deepseek-v3"),
    pytest.param("openai/gpt-oss-120b", 116.83, 5.13, 0.005, id="gpt-oss-120b"),
    pytest.param("openai/gpt-oss-20b", 20.91, 3.61, 0.005, id="gpt-oss-20b"),
    pytest.param("google/gemma-3-27b-it", 27.4, None, 0.01, id="gemma-3-27b"),
    pytest.param("Orion-zhen/QwQ-32B-Preview-AWQ", 32.5, None, 0.01, id="qwq-32b-awq"),
]
NEW_MODELS = [p.values[0] for p in PUBLISHED]


@pytest.mark.parametrize("name, total, active, tol", PUBLISHED)
def test_parameter_counts_match_published(name, total, active, tol):
    model = get_model(name)
    assert model.num_params / 1e9 == pytest.approx(total, rel=tol)
    if active is not None:
        # OpenAI counts gpt-oss's active parameters without the embedding table; the others with it.
        counted = architectures.active_params(model, include_embedding=model.architecture != "gpt_oss")
        assert counted / 1e9 == pytest.approx(active, rel=tol)
        assert model.is_moe and model.active_params < model.num_params
    else:
        assert model.active_params == model.num_params - model.vision_params


def test_shapes_read_the_way_vllm_builds_each_model():
    qwen3 = get_model("qwen3-32b")
    assert qwen3.qk_norm and qwen3.head_dim == 128 and qwen3.num_attention_heads * qwen3.head_dim != qwen3.hidden_size
    assert get_model("qwen2.5-7b").qkv_bias and not qwen3.qkv_bias
    gemma = get_model("gemma-3-27b")
    # Gemma3TextConfig's defaults under the nested text_config; every 6th layer global.
    assert (gemma.vocab_size, gemma.max_position_embeddings, gemma.tie_word_embeddings) == (262_208, 131_072, True)
    assert [i for i, t in enumerate(gemma.layer_types) if t == "full_attention"] == list(range(5, 62, 6))
    assert gemma.sliding_window == 1024 and gemma.norms_per_layer == 4 and gemma.vision_params > 0
    ds = get_model("deepseek-v3")
    assert ds.moe_layers == tuple(range(3, 61)) and ds.num_shared_experts == 1 and ds.is_mla
    oss = get_model("gpt-oss-120b")
    assert oss.layer_types[:2] == ("sliding_attention", "full_attention") and oss.sliding_window == 128
    assert oss.attention_sinks and oss.quantization.method == "mxfp4" and oss.dtype == "bfloat16"


def test_qwen3_moe_dense_layers_follow_mlp_only_layers_and_sparse_step():
    cfg = json.loads((ROOT / "sim/data/models/Qwen--Qwen3-30B-A3B.json").read_text())
    base = get_model("qwen3-30b-a3b")
    mixed = model_from_config({**cfg, "mlp_only_layers": [0, 1], "decoder_sparse_step": 2}, source="t.json")
    assert mixed.moe_layers == tuple(i for i in range(48) if i >= 2 and (i + 1) % 2 == 0)
    dense_layer = 3 * cfg["hidden_size"] * cfg["intermediate_size"]
    moe_layer = 3 * cfg["hidden_size"] * cfg["moe_intermediate_size"] * cfg["num_experts"] \
        + cfg["num_experts"] * cfg["hidden_size"]
    assert mixed.num_params - base.num_params == (48 - len(mixed.moe_layers)) * (dense_layer - moe_layer)


def test_gemma3_text_config_and_the_multimodal_text_part_agree():
    cfg = json.loads((ROOT / "sim/data/models/google--gemma-3-27b-it.json").read_text())
    text = {**cfg["text_config"], "torch_dtype": "bfloat16"}
    alone = model_from_config(text, source="gemma3_text.json")
    full = get_model("gemma-3-27b")
    assert alone.architecture == full.architecture == "gemma3"
    assert alone.num_params == full.num_params - full.vision_params
    assert alone.kv_bytes_per_token() == full.kv_bytes_per_token()


def test_weight_bytes_fp8_experts_and_mxfp4():
    h200 = get_gpu("h200")
    oss = get_model("gpt-oss-120b")
    p = resolve_precision(oss, h200)
    assert p.quantization == "mxfp4" and p.gemm_dtype == "bfloat16"
    # OpenAI's model card: a 60.8 GiB checkpoint (MXFP4 experts, the rest BF16).
    assert oss.weight_bytes_per_gpu(1, p) / GiB == pytest.approx(60.8, rel=0.01)
    assert get_model("gpt-oss-20b").weight_bytes_per_gpu(1, resolve_precision(get_model("gpt-oss-20b"), h200)) \
        / GiB == pytest.approx(12.8, rel=0.02)
    # MXFP4 by hand: 4 bits a weight and one byte of scale per 32, experts only.
    experts = sum(x.params for i in range(oss.num_hidden_layers)
                  for x in architectures.mlp_linears(oss, i, 1) if x.kind == "expert")
    bf16_all = oss.weight_bytes_per_gpu(1, None)
    assert bf16_all - oss.weight_bytes_per_gpu(1, p) == experts * 2 - experts * 17 // 32
    # vLLM's MXFP4 kernels pad the experts: B200's FlashInfer TRT-LLM kernel rounds hidden to 256
    # and the per-rank intermediate to 128; H200's Triton kernels the intermediate to 64 (1440 -> 1472 at TP2).
    b200 = resolve_precision(oss, get_gpu("b200"))
    e, layers = oss.num_experts, oss.num_hidden_layers

    def mxfp4(out, inp):
        return e * layers * (out * inp // 2 + out * -(-inp // 32))

    pad = mxfp4(2 * 2944, 3072) + mxfp4(3072, 2944) - mxfp4(2 * 2880, 2880) - mxfp4(2880, 2880)
    assert oss.weight_bytes_per_gpu(1, b200) - oss.weight_bytes_per_gpu(1, p) == pad
    h200_tp2 = resolve_precision(oss, h200, type("F", (), {"tensor_parallel_size": 2})())
    pad2 = mxfp4(2 * 1472, 2880) + mxfp4(2880, 1472) - mxfp4(2 * 1440, 2880) - mxfp4(2880, 1440)
    unpadded = oss.weight_bytes_per_gpu(2, dataclasses.replace(h200_tp2, moe_size_alignment=None))
    assert oss.weight_bytes_per_gpu(2, h200_tp2) - unpadded == pad2
    # FP8 block weights: about one byte a parameter; experts sharded by TP (no EP).
    fp8 = get_model("qwen3-235b-a22b-fp8")
    pf = resolve_precision(fp8, h200)
    one, eight = fp8.weight_bytes_per_gpu(1, pf), fp8.weight_bytes_per_gpu(8, pf)
    assert one / fp8.num_params == pytest.approx(1.0, abs=0.02)
    assert eight == pytest.approx(one / 8, rel=0.02)


def test_fp8_expert_blocks_refined_under_tp(monkeypatch):
    """Qwen3-235B-A22B-FP8 at TP8: 1536/8 = 192 does not tile into 128x128 blocks, so vLLM refines
    the experts' scales to 64x64 (fused_moe/oracle/fp8.py) and logs it."""
    model, h200 = get_model("qwen3-235b-a22b-fp8"), get_gpu("h200")
    p8 = resolve_precision(model, h200, type("F", (), {"tensor_parallel_size": 8})())
    assert p8.log_lines[0] == ("FP8 MoE block scales refined from [128, 128] to [64, 64] to fit the TP-sharded "
                               "intermediate size 192.")
    assert architectures.moe_fp8_block(model, 4, (128, 128)) == (128, 128)  # 384 tiles
    refined = model.weight_bytes_per_gpu(8, p8)
    monkeypatch.setattr(architectures, "moe_fp8_block", lambda m, tp, block: block)
    # per expert and layer: w13 (384 x 4096) and w2 (4096 x 192), fp32 scales of 64x64 vs 128x128 blocks
    per_expert = 4 * ((6 * 64 + 64 * 3) - (3 * 32 + 32 * 2))
    assert refined - model.weight_bytes_per_gpu(8, p8) == 128 * 94 * per_expert


# -- KV cache ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, tp, expected", [
    pytest.param("qwen3-32b", 1, 2 * 64 * 8 * 128 * 2, id="qwen3-32b"),
    pytest.param("qwen3-32b", 8, 2 * 64 * 1 * 128 * 2, id="qwen3-32b-tp8"),
    pytest.param("qwen3-235b-a22b", 4, 2 * 94 * 1 * 128 * 2, id="qwen3-235b-tp4"),
    pytest.param("mixtral-8x7b", 2, 2 * 32 * 4 * 128 * 2, id="mixtral-tp2"),
    # MLA: one latent "head" of kv_lora_rank + qk_rope_head_dim a layer, on every TP rank.
    pytest.param("deepseek-v3", 1, 61 * (512 + 64) * 2, id="deepseek-v3"),
    pytest.param("deepseek-v3", 8, 61 * (512 + 64) * 2, id="deepseek-v3-tp8-not-split"),
    # All layers' K and V (the sliding-window groups hold fewer tokens; see the plan test).
    pytest.param("gemma-3-27b", 2, 2 * 62 * 8 * 128 * 2, id="gemma-3-27b-tp2"),
    pytest.param("gpt-oss-120b", 1, 2 * 36 * 8 * 64 * 2, id="gpt-oss-120b-sinks-add-nothing"),
])
def test_kv_bytes_per_token_first_principles(name, tp, expected):
    assert get_model(name).kv_bytes_per_token(tp) == expected


def _hybrid_first_principles(model, plan, max_num_batched_tokens):
    """Gemma 3 27B / gpt-oss by hand: vLLM's grouping and its per-request block counts."""
    bs, L = plan.block_size, plan.max_model_len
    full = [i for i, t in enumerate(model.layer_types) if t == "full_attention"]
    sliding = [i for i in range(model.num_hidden_layers) if i not in full]
    size = min(len(full), len(sliding)) if max(len(full), len(sliding)) >= 1.5 * min(len(full), len(sliding)) \
        else max(len(full), len(sliding))
    n_groups = -(-len(full) // size) + -(-len(sliding) // size)
    page = bs * model.kv_bytes_per_token(plan.tensor_parallel_size) // model.num_hidden_layers
    num_blocks = plan.available_kv_bytes // (size * page)
    window_blocks = -(-min(model.sliding_window - 1 + 2 * max_num_batched_tokens, L) // bs) + 1
    per_request = -(-len(full) // size) * -(-L // bs) + -(-len(sliding) // size) * window_blocks
    return n_groups, num_blocks, num_blocks / per_request


# One model of each new type, on a GPU and TP where it fits.
PLAN_CASES = [
    pytest.param("qwen3-32b", "h100", 2, id="qwen3"),
    pytest.param("qwen2.5-7b", "a100-80gb", 1, id="qwen2"),
    pytest.param("gemma-3-27b", "h200", 1, id="gemma3-hybrid"),
    pytest.param("mixtral-8x7b", "h100", 2, id="mixtral"),
    pytest.param("qwen3-30b-a3b", "h100", 1, id="qwen3-moe"),
    pytest.param("deepseek-v3", "h200", 8, id="deepseek-v3-mla"),
    pytest.param("gpt-oss-120b", "h200", 1, id="gpt-oss-hybrid"),
]


def _plan(name, gpu, tp):
    model, g = get_model(name), get_gpu(gpu)
    return model, plan_memory(model, g, tensor_parallel_size=tp, precision=resolve_precision(model, g))


@pytest.mark.parametrize("name, gpu, tp", PLAN_CASES)
def test_plan_first_principles(name, gpu, tp):
    model, plan = _plan(name, gpu, tp)
    if model.is_hybrid:
        n_groups, num_blocks, concurrency = _hybrid_first_principles(model, plan, plan.max_num_batched_tokens)
        assert len(plan.kv_cache_groups) == n_groups
        assert plan.full_attention_blocks == plan.available_kv_bytes // (16 * plan.kv_bytes_per_token)
        assert plan.full_attention_blocks < plan.num_gpu_blocks
    else:
        num_blocks = plan.available_kv_bytes // (plan.block_size * plan.kv_bytes_per_token)
        concurrency = num_blocks / -(-plan.max_model_len // plan.block_size)
        assert len(plan.kv_cache_groups) == 1 and plan.full_attention_blocks == plan.num_gpu_blocks
    assert plan.num_gpu_blocks == num_blocks
    assert plan.max_concurrency == pytest.approx(concurrency, rel=1e-12)
    assert plan.kv_cache_tokens == int(concurrency * plan.max_model_len)


@pytest.fixture(scope="module")
def vllm_kv_answers() -> list[dict]:
    from tests.test_precision import _vllm_python

    cases = []
    for p in PLAN_CASES:
        name, gpu, tp = p.values
        model, plan = _plan(name, gpu, tp)
        types = model.layer_types or ("full_attention",) * model.num_hidden_layers
        layers = []
        for t in types:
            if model.is_mla:
                layers.append({"kind": "mla", "head_size": model.kv_lora_rank + model.qk_rope_head_dim})
            else:
                layers.append({"kind": "sliding" if t == "sliding_attention" else "full",
                               "num_kv_heads": model.kv_heads_per_rank(tp), "head_size": model.head_dim,
                               "sliding_window": model.sliding_window})
        cases.append({"name": name, "block_size": plan.block_size, "dtype": plan.precision.kv_cache_dtype,
                      "max_model_len": plan.max_model_len, "max_num_batched_tokens": plan.max_num_batched_tokens,
                      "available_memory": plan.available_kv_bytes, "layers": layers})
    result = subprocess.run([str(_vllm_python()), str(ROOT / "tools/vllm_reference/kv_groups_probe.py")],
                            input=json.dumps(cases), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("i", range(len(PLAN_CASES)), ids=[p.id for p in PLAN_CASES])
def test_plan_matches_vllms_own_kv_cache_planning(vllm_kv_answers, i):
    """Source: vLLM 0.33's get_kv_cache_groups, get_kv_cache_config_from_groups and
    get_kv_cache_capacity, on the spec classes its attention layers build."""
    name, gpu, tp = PLAN_CASES[i].values
    _, plan = _plan(name, gpu, tp)
    answer = vllm_kv_answers[i]
    assert [list(g.layers) for g in plan.kv_cache_groups] == answer["group_layers"]
    assert [g.page_size_bytes for g in plan.kv_cache_groups] == answer["page_size_bytes"]
    assert [g.blocks_per_request for g in plan.kv_cache_groups] == answer["blocks_per_request"]
    assert plan.num_gpu_blocks == answer["num_blocks"]
    assert plan.max_concurrency == pytest.approx(answer["max_concurrency"], rel=1e-12)
    assert plan.kv_cache_tokens == answer["kv_cache_tokens"]


# -- the command line --------------------------------------------------------------------------
MEMORY_CASES = [
    ("qwen2.5-7b", "l40s", 1), ("qwen3-8b", "a100-80gb", 1), ("qwen3-32b", "h100", 2), ("gemma-3-27b", "h200", 1),
    ("mixtral-8x7b", "a100-80gb", 2), ("qwen3-30b-a3b", "h100", 1), ("qwen3-235b-a22b", "h200", 4),
    ("qwen3-235b-a22b-fp8", "h200", 4), ("deepseek-v3", "h200", 8), ("gpt-oss-20b", "l40s", 1),
    ("gpt-oss-120b", "h100", 1), ("qwq-32b-awq", "l40s", 1),
]


@pytest.mark.parametrize("name, gpu, tp", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_servelab_memory_works_for_every_new_model(capsys, name, gpu, tp):
    assert main(["memory", "--model", name, "--gpu", gpu, "-tp", str(tp), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_gpu_blocks"] > 0 and data["kv_cache_groups"]
    assert sum(len(g["layers"]) for g in data["kv_cache_groups"]) == get_model(name).num_hidden_layers
    assert main(["memory", "--model", name, "--gpu", gpu, "-tp", str(tp)]) == 0
    out = capsys.readouterr().out
    assert "Maximum concurrency for" in out and "KV cache groups:" in out


def test_every_new_model_is_covered():
    assert set(NEW_MODELS) == {get_model(a).name for a, _, _ in MEMORY_CASES}


def test_too_big_gets_vllms_error():
    with pytest.raises(ConfigError, match="No available memory for the cache blocks.*tensor-parallel-size"):
        _plan("deepseek-v3", "h200", 4)


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_model_type_lists_the_supported_and_points_to_the_doc(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    assert main(["memory", "--model", str(path), "--gpu", "h100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'mamba' is not supported" in err and "gpt_oss" in err and "deepseek_v3" in err
    assert 'docs/memory.md, "Adding an architecture"' in err
    assert "## Adding an architecture" in (ROOT / "docs/memory.md").read_text()


@pytest.mark.parametrize("stem, field", [
    ("deepseek-ai--DeepSeek-V3", "kv_lora_rank"),
    ("Qwen--Qwen3-30B-A3B", "moe_intermediate_size"),
    ("mistralai--Mixtral-8x7B-v0.1", "num_local_experts"),
    ("openai--gpt-oss-120b", "layer_types"),
])
def test_a_missing_field_is_named(tmp_path, capsys, stem, field):
    cfg = json.loads((ROOT / "sim/data/models" / f"{stem}.json").read_text())
    del cfg[field]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CatalogError, match=f"'{field}' is missing"):
        model_from_config(cfg, source="config.json")
    assert main(["memory", "--model", str(tmp_path), "--gpu", "h200"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{field}'" in err


def test_gemma3_without_text_config(tmp_path):
    with pytest.raises(CatalogError, match="'text_config' is missing"):
        model_from_config({"model_type": "gemma3", "torch_dtype": "bfloat16"}, source="c.json")


def test_tensor_parallel_not_dividing_the_heads(capsys):
    assert main(["memory", "--model", "gemma-3-27b", "--gpu", "h100", "-tp", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "32 attention heads" in err and "--tensor-parallel-size 3" in err


# -- the engine --------------------------------------------------------------------------------
def test_step_time_refuses_mla():
    from sim.steptime import make_step_model

    with pytest.raises(ConfigError, match="step time for MLA models is not modelled yet; `servelab memory` works"):
        make_step_model(get_model("deepseek-v3"), get_gpu("h200"), 8)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "gpt-oss-120b"])
def test_moe_step_time_needs_the_tables(name):
    """The roofline has no MoE layer: a GPU without tables refuses in one line naming those with."""
    from sim.steptime import make_step_model

    with pytest.raises(ConfigError, match=r"\(MoE\): step time for MoE models needs measured operator tables, "
                                          r"which --gpu a10g lacks; GPUs with tables: a100-80gb, h100-80gb, h200"):
        make_step_model(get_model(name), get_gpu("a10g"), 1)


@pytest.mark.parametrize("name, gpu", [("qwen3-8b", "h100"), ("gemma-3-27b", "h200")])
def test_engine_runs_the_dense_new_models(name, gpu):
    import simpy

    from sim.config import EngineConfig
    from sim.engine import Engine

    env = simpy.Environment()
    engine = Engine(env, EngineConfig(model=name, gpu=gpu, max_model_len=4096))
    # Gemma 3's sliding-window and full groups share vLLM's pool (sim.kv.hybrid); a dense model
    # has one group, so both figures agree.
    assert engine.num_gpu_blocks == engine.memory.num_gpu_blocks
    assert (len(engine.kv.tables) if hasattr(engine.kv, "tables") else 1) == len(engine.memory.kv_cache_groups)
    reqs = [r for i in range(4) for r in engine.add_request(list(range(i, 512 + i)), 32)]
    env.run()
    assert all(r.is_finished and r.num_output_tokens == 32 for r in reqs)
    assert len(engine.token_times(reqs[0])) == 32


# -- fuzzing the config reader -----------------------------------------------------------------
_STEMS = ["Qwen--Qwen2.5-7B-Instruct", "Qwen--Qwen3-32B", "Qwen--Qwen3-30B-A3B", "Qwen--Qwen3-235B-A22B-FP8",
          "google--gemma-3-27b-it", "mistralai--Mixtral-8x7B-v0.1", "deepseek-ai--DeepSeek-V3",
          "openai--gpt-oss-120b"]
_CONFIGS = {s: json.loads((ROOT / "sim/data/models" / f"{s}.json").read_text()) for s in _STEMS}
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=False), st.text(max_size=5),
                    st.lists(st.integers(-2, 70), max_size=4), st.dictionaries(st.text(max_size=3), st.integers()))


@settings(max_examples=300, deadline=None)
@given(stem=st.sampled_from(_STEMS), data=st.data())
def test_a_damaged_config_is_read_or_refused_in_one_line(stem, data):
    cfg = json.loads(json.dumps(_CONFIGS[stem]))
    target = cfg["text_config"] if "text_config" in cfg and data.draw(st.booleans()) else cfg
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(_VALUES)
    try:
        model = model_from_config(cfg, source="config.json")
    except CatalogError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("config.json")
        return
    assert model.num_params > 0 and model.kv_bytes_per_token() > 0
    try:
        plan_memory(model, get_gpu("h200"), tensor_parallel_size=8, max_model_len=4096)
    except ConfigError as exc:
        assert "\n" not in str(exc)
