"""Step time of today's architectures: MoE layers from the measured fused-MoE tables, expert and
data parallelism, weight formats, sliding-window attention (sim/ops/moe.py, sim/ops/model.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.catalog import get_gpu, get_model
from sim.config import EngineConfig
from sim.errors import ConfigError
from sim.ops.moe import moe_parallel, moe_table_dtype, routed_experts_ms
from sim.ops.tables import load_tables, monotone
from sim.precision import resolve_precision
from sim.steptime import BatchShape, StepCoefficients, make_step_model

C = StepCoefficients(overhead_s=0.0, per_seq_s=0.0)


@pytest.fixture(scope="module")
def h200():
    return load_tables("h200")


def step_model(name: str, tp: int = 1, gpu: str = "h200", **kw):
    model, g = get_model(name), get_gpu(gpu)
    precision = resolve_precision(model, g, EngineConfig(model=name, gpu=gpu, tensor_parallel_size=tp))
    return make_step_model(model, g, tp, C, precision=precision, **kw)


def decode(n: int, ctx_per_seq: int) -> BatchShape:
    return BatchShape(num_tokens=n, num_seqs=n, num_sampled=n, context_tokens=n * ctx_per_seq, attn_pairs=0,
                      num_decodes=n, decode_context_tokens=n * ctx_per_seq)


def prefill(tokens: int) -> BatchShape:
    return BatchShape(num_tokens=tokens, num_seqs=1, num_sampled=1, context_tokens=0,
                      attn_pairs=tokens * (tokens + 1) // 2, num_prefills=1)


# -- every new architecture gets a step time ----------------------------------------------------------
ARCHITECTURES = [("qwen2.5-7b", 1, "qwen2"), ("qwen3-8b", 1, "qwen3"), ("gemma-3-27b", 2, "gemma3"),
                 ("mixtral-8x7b", 2, "mixtral"), ("qwen3-30b-a3b", 1, "qwen3_moe"),
                 ("qwen3-235b-a22b-fp8", 4, "qwen3_moe"), ("gpt-oss-120b", 1, "gpt_oss"),
                 ("gpt-oss-20b", 1, "gpt_oss")]


@pytest.mark.parametrize("name, tp, arch", ARCHITECTURES)
def test_each_architecture_is_priced_from_the_tables_and_grows_with_tokens(name, tp, arch):
    sm = step_model(name, tp)
    assert sm.model.architecture == arch
    assert sm.source.startswith("operator tables: h200")
    prefills = [sm.step_time(prefill(n)) for n in (16, 256, 1024, 4096, 8192, 16384)]
    decodes = [sm.step_time(decode(n, 2000)) for n in (1, 8, 32, 128, 256)]
    assert all(np.isfinite(prefills)) and prefills[0] > 0
    assert prefills == sorted(prefills) and decodes == sorted(decodes)


@pytest.mark.parametrize("name, tp, arch", ARCHITECTURES)
def test_a_run_of_decode_steps_prices_as_the_steps_one_by_one(name, tp, arch):
    """decode_run (vectorised, used by the fast-forward) agrees with step_time, sliding layers included."""
    sm = step_model(name, tp)
    run = sm.decode_run(16, 16 * 100, 200)
    one_by_one = [sm.step_time(decode(16, 100 + k)) for k in range(0, 200, 40)]
    assert run[::40] == pytest.approx(one_by_one, rel=1e-9)


# -- the MoE layer ----------------------------------------------------------------------------------
def test_routed_experts_are_exact_on_the_measured_points(h200):
    key = "moe/bfloat16/h2048_i768_k8_e128"  # Qwen3-30B-A3B
    pairs = [tuple(p) for p in h200[key + "_par"].tolist()]
    row = h200[key][pairs.index((1, 1))].astype(np.float64)
    tokens = h200["moe/num_tokens"].astype(np.float64)
    curve, notes = routed_experts_ms(h200, "bfloat16", 2048, 768, 8, 128, 1, 1, tokens)
    assert notes == []
    assert curve.tolist() == monotone(row).tolist()
    assert np.sum(curve == row) >= len(row) - 2  # the measured points themselves, but for noise


def test_the_step_sums_router_experts_and_attention_layers(h200):
    """At a token count on both the GEMM and the MoE axes, the MoE term is layers x (router + experts)."""
    sm = step_model("qwen3-30b-a3b")
    m = h200["gemm/m"].tolist()
    i = m.index(16)
    key = "moe/bfloat16/h2048_i768_k8_e128"
    pairs = [tuple(p) for p in h200[key + "_par"].tolist()]
    j = h200["moe/num_tokens"].tolist().index(16)
    experts = float(monotone(h200[key][pairs.index((1, 1))].astype(np.float64))[j])
    from sim.ops.gemm import gemm_over_m

    router = float(gemm_over_m(h200, "bfloat16", 128, 2048)[i])
    assert sm.terms_ms["moe_ms"][i] == pytest.approx(48 * (router + experts), rel=1e-12)
    assert "MoE bfloat16, moe_tp 1 / moe_ep 1" in sm.source


def test_moe_costs_less_than_its_total_size_dense_and_more_than_its_active_size_dense():
    """Qwen3-30B-A3B against two dense Qwen3s with its attention: one whose MLP is its top-8
    experts' width (the active size), one whose MLP is all 128 experts' (the total size)."""
    moe = get_model("qwen3-30b-a3b")
    dense = dict(architecture="qwen3", num_experts=0, experts_per_token=0, moe_layers=(), moe_intermediate_size=0)
    active = replace(moe, name="dense-active", intermediate_size=8 * 768, **dense)
    total = replace(moe, name="dense-total", intermediate_size=128 * 768, **dense)
    gpu = get_gpu("h200")
    times = {m.name: make_step_model(m, gpu, 1, C) for m in (moe, active, total)}
    for batch in (decode(32, 1000), decode(128, 1000), prefill(4096)):
        t = {k: sm.step_time(batch) for k, sm in times.items()}
        assert t["dense-active"] < t[moe.name] < t["dense-total"], t


def test_expert_parallel_shards_whole_experts(h200):
    tp = step_model("qwen3-235b-a22b-fp8", 4)
    ep = step_model("qwen3-235b-a22b-fp8", 4, enable_expert_parallel=True)
    assert "moe_tp 4 / moe_ep 1 (TP-sharded experts)" in tp.source
    assert "moe_tp 1 / moe_ep 4 (expert parallel)" in ep.source
    assert not np.allclose(tp.terms_ms["moe_ms"], ep.terms_ms["moe_ms"])
    # Without DP both end the MoE layer with the TP all-reduce: the same communication.
    assert tp.terms_ms["allreduce_ms"].tolist() == ep.terms_ms["allreduce_ms"].tolist()


def test_data_parallel_experts_see_every_rank_s_tokens(h200):
    """DP 2 x TP 1: the experts are sharded over 2 GPUs and run over both ranks' tokens, and the
    tokens are gathered and scattered (two collectives over 2 GPUs)."""
    dp = step_model("qwen3-30b-a3b", 1, data_parallel_size=2)
    tp2 = step_model("qwen3-30b-a3b", 2)
    assert "moe_tp 2 / moe_ep 1" in dp.source
    m = h200["gemm/m"].astype(np.float64)
    i = m.tolist().index(64)
    from sim.ops.allreduce import allreduce_call_ms

    experts_at_128, _ = routed_experts_ms(h200, "bfloat16", 2048, 768, 8, 128, 2, 1, np.array([128.0]))
    from sim.ops.gemm import gemm_over_m

    router = gemm_over_m(h200, "bfloat16", 128, 2048)[i]
    gather = 2 * allreduce_call_ms(h200, 2, np.array([128 * 2048 / 2]), np.array([64.0]), 512)[0]
    assert dp.terms_ms["moe_ms"][i] == pytest.approx(48 * (router + experts_at_128[0] + gather), rel=1e-12)
    assert gather > 0 and tp2.terms_ms["moe_ms"][i] < dp.terms_ms["moe_ms"][i]


@pytest.mark.parametrize("tp, dp, ep, want", [(4, 1, False, (4, 1)), (4, 1, True, (1, 4)), (1, 2, False, (2, 1)),
                                              (2, 2, True, (1, 4)), (1, 1, True, (1, 1))])
def test_moe_parallel_follows_vllm(tp, dp, ep, want):
    assert moe_parallel(128, tp, dp, ep) == want


def test_expert_parallel_larger_than_the_experts_is_one_line():
    with pytest.raises(ConfigError, match=r"^--enable-expert-parallel: expert-parallel size 16 .* larger than the "
                                          r"model's 8 experts; use at most 8 GPUs or leave EP off$"):
        step_model("mixtral-8x7b", 8, data_parallel_size=2, enable_expert_parallel=True)


def test_an_unmeasured_parallel_layout_is_scaled_from_the_nearest(h200):
    """fp8_block Qwen3-235B is measured at moe_tp 1, 2, 4 on H200: moe_tp 8 is half of moe_tp 4."""
    tokens = np.array([16.0, 1024.0])
    at4, _ = routed_experts_ms(h200, "fp8_block", 4096, 1536, 8, 128, 4, 1, tokens)
    at8, notes = routed_experts_ms(h200, "fp8_block", 4096, 1536, 8, 128, 8, 1, tokens)
    assert at8 == pytest.approx(at4 / 2) and "scaled from the measured 4 / 1" in notes[0]


def test_an_unmeasured_shape_is_scaled_from_the_nearest_and_says_so(h200):
    tokens = np.array([64.0])
    base, _ = routed_experts_ms(h200, "bfloat16", 2048, 768, 8, 128, 1, 1, tokens)
    wider, notes = routed_experts_ms(h200, "bfloat16", 2048, 1024, 8, 128, 1, 1, tokens)
    assert wider == pytest.approx(base * 1024 / 768)
    assert "scaled from the measured bfloat16 shape hidden 2048, intermediate 768, top-8 of 128" in notes[0]


# -- weight formats -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, quantization, want", [
    ("qwen3-30b-a3b", None, "bfloat16"),
    ("qwen3-235b-a22b-fp8", None, "fp8_block"),  # the checkpoint's 128x128 block scales
    ("qwen3-30b-a3b", "fp8_per_tensor", "fp8"),  # online per-tensor FP8
    ("gpt-oss-120b", None, "w4a16_mxfp4"),  # MXFP4 experts, 16-bit activations
])
def test_the_experts_read_the_table_of_their_weight_format(name, quantization, want):
    model, gpu = get_model(name), get_gpu("h200")
    p = resolve_precision(model, gpu, EngineConfig(model=name, gpu="h200", tensor_parallel_size=4,
                                                   quantization=quantization))
    assert moe_table_dtype(p) == want
    sm = make_step_model(model, gpu, 4, C, precision=p)
    assert f"MoE {want}, " in sm.source and "MoE (" not in sm.source  # measured, not scaled


def test_a_dtype_the_shape_lacks_falls_back_and_says_so():
    """gpt-oss is measured with its MXFP4 experts only; a 16-bit copy is priced from them."""
    model = replace(get_model("gpt-oss-20b"), quantization=None)
    sm = make_step_model(model, get_gpu("h200"), 1, C)
    assert "no bfloat16 MoE table for this shape: priced as w4a16_mxfp4" in sm.source


def test_fp8_experts_on_a_gpu_without_fp8_tables_price_as_bfloat16():
    sm = step_model("qwen3-235b-a22b-fp8", 8, gpu="a100-80gb")
    assert "MoE bfloat16" in sm.source


# -- sliding-window layers ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt-oss-120b", "gemma-3-27b"])
def test_sliding_window_layers_read_at_most_the_window(name):
    model = get_model(name)
    full = replace(model, layer_types=("full_attention",) * model.num_hidden_layers)
    gpu = get_gpu("h200")
    sliding, everything = make_step_model(model, gpu, 2, C), make_step_model(full, gpu, 2, C)
    w = model.sliding_window
    assert sliding.sliding == sum(t == "sliding_attention" for t in model.layer_types) > 0
    # Within the window the layers cost the same; past it the sliding layers stop growing.
    assert sliding.step_time(decode(32, w // 2)) == pytest.approx(everything.step_time(decode(32, w // 2)))
    assert sliding.step_time(decode(32, 30_000)) < everything.step_time(decode(32, 30_000))
    assert sliding.step_time(prefill(16_384)) < everything.step_time(prefill(16_384))
    grow_sliding = sliding.step_time(decode(32, 60_000)) - sliding.step_time(decode(32, 30_000))
    grow_full = everything.step_time(decode(32, 60_000)) - everything.step_time(decode(32, 30_000))
    full_layers = model.num_hidden_layers - sliding.sliding
    assert grow_sliding == pytest.approx(grow_full * full_layers / model.num_hidden_layers, rel=1e-9)


def test_the_sliding_pair_share():
    from sim.ops.model import sliding_pair_share

    assert sliding_pair_share(100, 128) == 1.0
    s, w = 1024, 128
    assert sliding_pair_share(s, w) == pytest.approx((s * w - w * (w - 1) / 2) / (s * (s + 1) / 2))


# -- what stays refused ---------------------------------------------------------------------------
def test_deepseek_v3_is_priced_and_moe_without_tables_names_the_gpus_with():
    m = step_model("deepseek-v3", 8)
    assert m.mla is not None and m.terms_ms["moe_ms"][-1] > 0
    assert m.step_time(decode(32, 2048)) < m.step_time(decode(32, 8192)) < m.step_time(decode(64, 8192))
    with pytest.raises(ConfigError, match="GPUs with tables: a100-80gb, h100-80gb, h200, l40s, b200$"):
        step_model("qwen3-30b-a3b", 1, gpu="l4")


def test_shared_experts_add_a_dense_mlp_of_their_width(h200):
    """DeepSeek-style shared experts (priced for the MLA branch's use): n_shared x moe_intermediate
    as one gate/up and one down GEMM beside the routed experts, on every MoE layer."""
    from sim.ops.gemm import gemm_over_m

    base = get_model("qwen3-30b-a3b")
    shared = replace(base, num_shared_experts=2)
    gpu = get_gpu("h200")
    a, b = make_step_model(base, gpu, 1, C), make_step_model(shared, gpu, 1, C)
    width = 2 * 768
    extra = gemm_over_m(h200, "bfloat16", 2 * width, 2048) + gemm_over_m(h200, "bfloat16", 2048, width)
    assert b.terms_ms["moe_ms"] - a.terms_ms["moe_ms"] == pytest.approx(48 * extra, rel=1e-12)


def test_layers_the_config_keeps_dense_are_priced_as_dense_mlps(h200):
    """Qwen3-MoE's mlp_only_layers (DeepSeek's first_k_dense_replace likewise): those layers run a
    dense gate/up/down of intermediate_size, the others the MoE layer."""
    from sim.ops.gemm import gemm_over_m

    base = get_model("qwen3-30b-a3b")
    two_dense = replace(base, moe_layers=tuple(range(2, 48)))
    gpu = get_gpu("h200")
    a, b = make_step_model(base, gpu, 1, C), make_step_model(two_dense, gpu, 1, C)
    mlp = gemm_over_m(h200, "bfloat16", 2 * 6144, 2048) + gemm_over_m(h200, "bfloat16", 2048, 6144)
    assert b.terms_ms["linear_ms"] - a.terms_ms["linear_ms"] == pytest.approx(2 * mlp, rel=1e-9)
    assert b.terms_ms["moe_ms"] == pytest.approx(a.terms_ms["moe_ms"] * 46 / 48, rel=1e-12)


# -- DeepEP (--all2all-backend) -----------------------------------------------------------------------
def test_deepep_dispatch_and_combine_come_from_the_measured_kernels(h200):
    """DP 8 x EP with DeepEP low-latency, on a shape the a2a table measures (hidden 4096, top-6 of
    256 at EP 8): dispatch + combine at the tokens each rank sends, exactly."""
    from sim.ops.moe import MoELayer

    model = replace(get_model("qwen3-30b-a3b"), hidden_size=4096, experts_per_token=6, num_experts=256)
    m = h200["gemm/m"].astype(np.float64)
    layer = MoELayer(h200, model, 1, 8, True, None, "bfloat16", m, 512, "deepep_low_latency")
    axis = h200["a2a/deepep_ll/num_tokens"].tolist()
    j, i = axis.index(16), m.tolist().index(16)
    want = sum(float(monotone(h200[f"a2a/deepep_ll/{p}/h4096_k6_e256_ep8"].astype(np.float64))[j])
               for p in ("dispatch", "combine"))
    assert layer.dispatch_ms[i] == pytest.approx(want, rel=1e-12)
    assert layer.describe().endswith("all2all deepep_low_latency") and not any("DeepEP" in n for n in layer.notes)


def test_deepep_where_not_measured_falls_back_and_says_so():
    sm = step_model("qwen3-30b-a3b", 1, data_parallel_size=4, enable_expert_parallel=True,
                    all2all_backend="deepep_high_throughput")
    assert "all2all allgather_reducescatter" in sm.source
    assert "DeepEP deepep_ht not measured at EP 4 on this GPU (measured: EP 8)" in sm.source


def test_an_unmodelled_all2all_backend_is_one_line():
    with pytest.raises(ConfigError, match=r"^--all2all-backend: 'pplx' is one of vLLM's backends, and ServeLab prices "
                                          r"only allgather_reducescatter, deepep_high_throughput, deepep_low_latency$"):
        step_model("qwen3-30b-a3b", 1, data_parallel_size=2, enable_expert_parallel=True, all2all_backend="pplx")


def test_all2all_backend_flag_reaches_the_step_time_and_bad_values_are_one_line(tmp_path, capsys):
    """--all2all-backend, vLLM's flag, on bench serve and in a pod's vllm serve args: a priced
    backend shows in the step-time line; vLLM's others and unknown values are one line, exit 2."""
    from lab.cli.main import main
    from sim.rollout.podargs import engine_config_from_args

    common = ["bench", "serve", "--model", "qwen3-30b-a3b", "--gpu", "h200", "-dp", "2", "-ep", "--num-prompts", "8",
              "--random-input-len", "64", "--random-output-len", "4"]
    assert main([*common, "--all2all-backend", "deepep_low_latency"]) == 0
    assert "all2all allgather_reducescatter" in capsys.readouterr().out  # DeepEP is measured at EP 8 only
    for value, said in (("pplx", "is one of vLLM's backends"), ("carrier-pigeon", "is not one of vLLM's")):
        assert main([*common, "--all2all-backend", value]) == 2
        err = capsys.readouterr().err
        assert "--all2all-backend" in err and said in err and "allgather_reducescatter" in err
    config = engine_config_from_args(("vllm", "serve", "qwen3-30b-a3b", "--all2all-backend", "deepep_high_throughput",
                                      "-dp", "2", "-ep", "--gpu", "h200"), "rollout.yaml")
    assert config.all2all_backend == "deepep_high_throughput"


@pytest.mark.parametrize("method, bits, want", [("awq", 4, "int4_wo"), ("gptq", 4, "int4_wo"), ("gptq", 8, "bfloat16")])
def test_awq_and_gptq_experts_read_the_weight_only_int4_table(method, bits, want):
    from types import SimpleNamespace

    p = SimpleNamespace(quantization=method, weight_bits=bits, gemm_dtype=f"int{bits}_wo", weight_scheme="group")
    assert moe_table_dtype(p) == want


def test_int4_experts_of_an_unmeasured_shape_fall_back_and_say_so(h200):
    tokens = np.array([64.0])
    int4, notes = routed_experts_ms(h200, "int4_wo", 2048, 768, 8, 128, 1, 1, tokens)
    bf16, _ = routed_experts_ms(h200, "bfloat16", 2048, 768, 8, 128, 1, 1, tokens)
    assert int4 == pytest.approx(bf16) and notes == ["no int4_wo MoE table for this shape: priced as bfloat16"]
