"""MLA (DeepSeek-V3) step time from vLLM's measured MLA module (sim/ops/mla.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import _data_dir, get_gpu, get_model, model_from_config
from sim.ops.attention import Attention
from sim.ops.gemm import layer_shapes
from sim.ops.mla import MEASURED_SHAPES, MLAAttention, convex_in_seq
from sim.ops.model import OperatorStepModel
from sim.ops.tables import TableError, load_tables, monotone
from sim.steptime import BatchShape, StepCoefficients

MLA_GPUS = ["b200", "h100-80gb", "h200", "l40s"]


@pytest.fixture(scope="module")
def dsv3():
    return get_model("deepseek-ai/DeepSeek-V3")


@pytest.fixture(scope="module")
def h200():
    return load_tables("h200")


def dense_dsv3():
    """DeepSeek-V3 with every MLP dense (for the test only: the MoE layer is another module's)."""
    cfg = json.loads((_data_dir() / "models" / "deepseek-ai--DeepSeek-V3.json").read_text())
    cfg["first_k_dense_replace"] = cfg["num_hidden_layers"]
    m = model_from_config(cfg, name="dsv3-dense-mlp")
    return dataclasses.replace(m, num_experts=0, experts_per_token=0, moe_intermediate_size=0,
                               num_shared_experts=0, moe_layers=())


@pytest.mark.parametrize("gpu", MLA_GPUS)
def test_gpus_with_mla_rows_ship_them(gpu):
    t = load_tables(gpu)
    for phase in ("context", "generation"):
        assert f"mla/{phase}/batch" in t and f"mla/{phase}/seq" in t
        for h in (1, 2, 4, 8, 16, 32, 64, 128):
            slab = t[f"mla/{phase}/h{h}_bfloat16_bfloat16"]
            assert np.nanmin(slab) > 0 and np.isfinite(slab[0]).all()


def test_a100_has_no_mla_rows_and_says_so(dsv3):
    with pytest.raises(TableError, match="no MLA module table"):
        MLAAttention(load_tables("a100-80gb"), dsv3, 8, "bfloat16", "bfloat16")


# (gpu, tp, kv dtype, GEMM dtype, decode cell (batch, seq), prefill cell (batch, seq))
MEASURED = [
    ("h200", 8, "fp8", "fp8_block", (64, 4096), (1, 2048)),
    ("h200", 1, "bfloat16", "bfloat16", (8, 8192), (4, 4096)),
    ("h100-80gb", 4, "fp8", "bfloat16", (256, 1024), (2, 8192)),
    ("b200", 8, "bfloat16", "fp8_block", (32, 32768), (8, 1024)),
]


@pytest.mark.parametrize("gpu,tp,kv,gemm,dec,pre", MEASURED)
def test_exact_on_measured_cells(gpu, tp, kv, gemm, dec, pre, dsv3):
    t = load_tables(gpu)
    mla = MLAAttention(t, dsv3, tp, gemm, kv)
    assert mla.notes == []
    heads = 128 // tp
    for phase, (b, s), got in (("generation", dec, mla.decode_ms(dec[0], dec[0] * dec[1])),
                               ("context", pre, mla.prefill_ms(pre[0], pre[0] * pre[1], pre[0] * pre[1] * (pre[1] + 1) // 2))):
        slab = t[f"mla/{phase}/h{heads}_{kv}_{gemm}"]
        i = list(t[f"mla/{phase}/batch"]).index(b)
        j = list(t[f"mla/{phase}/seq"]).index(s)
        assert monotone(np.nan_to_num(slab, nan=np.inf))[i, j] == pytest.approx(slab[i, j])  # a cell the rule keeps
        assert got == pytest.approx(float(slab[i, j]), rel=1e-6)


def test_the_h200_row_is_the_parquet_value(h200, dsv3):
    # aiconfigurator-core 0.12.0, h200_sxm/mla/vllm/0.24.0/mla_generation_module_perf.parquet:
    # num_heads 16, batch 64, step 4096, fp8 KV, fp8_block GEMMs, FLASHMLA: 0.1756 ms.
    assert MLAAttention(h200, dsv3, 8, "fp8_block", "fp8").decode_ms(64, 64 * 4096) == pytest.approx(0.1756, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2048), st.integers(1, 2048), st.integers(2, 200_000), st.integers(2, 200_000))
def test_decode_is_monotone_in_batch_and_context(b1, b2, s1, s2):
    mla = MLAAttention(load_tables("h200"), get_model("deepseek-ai/DeepSeek-V3"), 8, "fp8_block", "fp8")
    (b1, b2), (s1, s2) = sorted((b1, b2)), sorted((s1, s2))
    assert mla.decode_ms(b1, b1 * s1) <= mla.decode_ms(b2, b2 * s2) + 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 16_384), st.integers(1, 16_384), st.integers(0, 60_000))
def test_prefill_is_monotone_in_tokens_and_context(b, n1, n2, computed):
    mla = MLAAttention(load_tables("h200"), get_model("deepseek-ai/DeepSeek-V3"), 8, "fp8_block", "fp8")
    n1, n2 = sorted((n1, n2))

    def chunk(n, c):  # b chunks of n new tokens after c computed ones
        return mla.prefill_ms(b, b * n, b * (n * c + n * (n + 1) // 2))

    assert chunk(n1, computed) <= chunk(n2, computed) + 1e-12  # more tokens
    assert chunk(n1, computed) <= chunk(n1, computed + 1000) + 1e-12  # more context


def test_a_continuing_chunk_costs_what_it_adds_to_the_prompt(h200, dsv3):
    mla = MLAAttention(h200, dsv3, 8, "fp8_block", "fp8")
    n, c = 2048, 6144
    chunk = mla.prefill_ms(1, n, n * c + n * (n + 1) // 2)
    alone = mla.prefill_ms(1, n, n * (n + 1) // 2)
    whole = mla.prefill_ms(1, n + c, (n + c) * (n + c + 1) // 2)
    # More than the same tokens alone (it reads 6,144 more keys each), less than the whole
    # 8,192-token prompt (which also projects and attends the first 6,144 tokens).
    assert alone < chunk < whole
    # The whole prompt in four chunks: the whole prompt, plus a little per extra chunk.
    parts = sum(mla.prefill_ms(1, n, n * k + n * (n + 1) // 2) for k in range(0, n + c, n))
    assert whole < parts < whole + 3 * 2 * mla.prefill.ms(1, 1)


def test_convex_minorant_is_below_convex_and_keeps_convex_rows():
    seq = np.array([1.0, 16, 32, 64, 128, 256])
    convex = (seq ** 2 / 100)[None, :]
    assert convex_in_seq(convex, seq) == pytest.approx(convex)
    bumpy = np.array([[1.0, 1.0, 3.0, 3.0, 4.0, 10.0]])
    hull = convex_in_seq(bumpy, seq)[0]
    assert np.all(hull <= bumpy[0] + 1e-12) and hull[0] == 1.0 and hull[-1] == 10.0
    slopes = np.diff(hull) / np.diff(seq)
    assert np.all(np.diff(slopes) >= -1e-12)


@pytest.mark.parametrize("tp", [8, 4, 1])
@pytest.mark.parametrize("kv", ["bfloat16", "fp8"])
def test_mla_decode_is_cheaper_per_context_token_than_mha(tp, kv, h200, dsv3):
    """MLA reads one latent of 576 per token a layer; the same heads as MHA (head dim 128, K and
    V for each head) read 2 x heads x 128: the measured cost of more context shows it."""
    mla = MLAAttention(h200, dsv3, tp, "bfloat16", kv)
    heads = 128 // tp
    mha = Attention(h200, "generation", heads, heads, 128, kv)
    b = 64
    per_token_mla = (mla.decode.ms(b, 8192) - mla.decode.ms(b, 1024)) / (b * 7168)
    per_token_mha = (mha.ms(b, 8192) - mha.ms(b, 1024)) / (b * 7168)
    assert per_token_mla < per_token_mha / 4


@pytest.mark.parametrize("gpu", ["h100-80gb", "h200", "b200"])
def test_fp8_kv_makes_long_decodes_cheaper(gpu, dsv3):
    t = load_tables(gpu)
    bf16 = MLAAttention(t, dsv3, 8, "fp8_block", "bfloat16")
    fp8 = MLAAttention(t, dsv3, 8, "fp8_block", "fp8")
    assert fp8.kv_dtype == "fp8" and bf16.kv_dtype == "bfloat16"
    assert fp8.decode_ms(256, 256 * 32768) < 0.8 * bf16.decode_ms(256, 256 * 32768)


def test_fallbacks_say_so(dsv3):
    l40s = MLAAttention(load_tables("l40s"), dsv3, 8, "bfloat16", "fp8")
    assert l40s.kv_dtype == "bfloat16"
    assert l40s.notes == ["MLA module with KV cache dtype fp8 not measured on this GPU: bfloat16 rows"]
    per_tensor = MLAAttention(load_tables("h200"), dsv3, 8, "fp8", "fp8")
    assert per_tensor.gemm_dtype == "fp8_block"
    assert per_tensor.notes == ["MLA module with fp8 projections priced from its fp8_block rows"]


def test_unmeasured_heads_scale_from_the_nearest(h200, dsv3):
    m96 = dataclasses.replace(dsv3, num_attention_heads=96, num_key_value_heads=96)
    mla = MLAAttention(h200, m96, 1, "bfloat16", "bfloat16")
    ref = MLAAttention(h200, dsv3, 1, "bfloat16", "bfloat16")
    assert mla.notes == ["MLA module scaled from 128 heads"]
    assert mla.decode_ms(64, 64 * 4096) == pytest.approx(ref.decode_ms(64, 64 * 4096) * 96 / 128)


@pytest.mark.parametrize("field", sorted(MEASURED_SHAPES))
def test_other_mla_shapes_are_refused_naming_the_field(field, h200, dsv3):
    other = dataclasses.replace(dsv3, **{field: MEASURED_SHAPES[field] * 2})
    with pytest.raises(TableError, match=f"{field} {MEASURED_SHAPES[field] * 2} \\(measured: {MEASURED_SHAPES[field]}\\)"):
        MLAAttention(h200, other, 8, "bfloat16", "bfloat16")


# -- the hook in OperatorStepModel --------------------------------------------------------------
def test_linear_layers_of_an_mla_model_leave_the_attention_projections_out():
    names = [name for name, _, _ in layer_shapes(dense_dsv3(), 8)]
    assert names == ["gate_up_proj", "down_proj"]


def test_step_model_prices_mla_attention_from_the_module(h200):
    model, gpu = dense_dsv3(), get_gpu("h200")
    sm = OperatorStepModel(h200, model, gpu, 8, StepCoefficients(overhead_s=0, per_seq_s=0))
    mla = MLAAttention(h200, model, 8, "bfloat16", "bfloat16")
    L = model.num_hidden_layers
    decode = BatchShape(64, 64, 64, 64 * 4096, 0, 0, 64, 64 * 4096)
    prefill = BatchShape(2048, 1, 1, 2048, 2048 * 2049 // 2, 1, 0, 0)
    mixed = BatchShape(2048 + 64, 65, 65, 64 * 4096 + 2048, 2048 * 2049 // 2, 1, 64, 64 * 4096)
    none = BatchShape(64, 64, 64, 0, 0, 0, 0, 0)  # the token-proportional terms alone
    base = sm.gpu_ms(none)
    assert sm.gpu_ms(decode) == pytest.approx(base + L * mla.decode_ms(64, 64 * 4096))
    assert sm.gpu_ms(prefill) - sm.gpu_ms(BatchShape(2048, 1, 1, 0, 0, 0, 0, 0)) == pytest.approx(
        L * mla.prefill_ms(1, 2048, 2048 * 2049 // 2))
    assert sm.gpu_ms(mixed) - sm.gpu_ms(BatchShape(2048 + 64, 65, 65, 0, 0, 0, 0, 0)) == pytest.approx(
        L * (mla.decode_ms(64, 64 * 4096) + mla.prefill_ms(1, 2048, 2048 * 2049 // 2)))


def test_step_model_decode_run_matches_step_by_step(h200):
    sm = OperatorStepModel(h200, dense_dsv3(), get_gpu("h200"), 8, StepCoefficients())
    run = sm.decode_run(32, 32 * 1500, 40)
    one = [sm.step_time(BatchShape(32, 32, 32, 32 * 1500 + 32 * i, 0, 0, 32, 32 * 1500 + 32 * i)) for i in range(40)]
    assert run == pytest.approx(one)


def test_step_model_source_names_the_fallbacks():
    from sim.config import EngineConfig
    from sim.precision import resolve_precision

    model, gpu = dense_dsv3(), get_gpu("l40s")
    precision = resolve_precision(model, gpu, EngineConfig(model=model.name, gpu="l40s", kv_cache_dtype="fp8"))
    sm = OperatorStepModel(load_tables("l40s"), model, gpu, 8, StepCoefficients(), precision=precision)
    assert "MLA module with KV cache dtype fp8 not measured on this GPU" in sm.source


# -- the derivation (lab/calibrate/aiconfigurator.py) -------------------------------------------
def test_derive_mla_keeps_the_default_rows_and_the_fastest_kernel():
    pd = pytest.importorskip("pandas")
    from lab.calibrate.aiconfigurator import derive_mla

    rows = [  # num_heads, batch, step, kv, gemm, mla_dtype, latency
        (16, 1, 2, "fp8", "fp8_block", "bfloat16", 0.10),
        (16, 1, 2, "fp8", "fp8_block", "bfloat16", 0.09),  # a second kernel, faster: kept
        (16, 2, 4, "fp8", "fp8_block", "bfloat16", 0.20),
        (16, 1, 4, "fp8", "fp8_block", "fp8", 0.01),  # FP8 prefill queries: not vLLM's default
        (16, 1, 4, "fp8", "nvfp4", "bfloat16", 0.01),  # a GEMM dtype the step model does not price
    ]
    df = pd.DataFrame(rows, columns=["num_heads", "batch_size", "step", "kv_cache_dtype", "gemm_type",
                                     "mla_dtype", "latency"]).assign(isl=1)
    out = derive_mla(df, "generation")
    assert sorted(out) == ["mla/generation/batch", "mla/generation/h16_fp8_fp8_block", "mla/generation/seq"]
    assert out["mla/generation/batch"].tolist() == [1, 2] and out["mla/generation/seq"].tolist() == [2, 4]
    grid = out["mla/generation/h16_fp8_fp8_block"]
    assert grid[0, 0] == pytest.approx(0.09) and grid[1, 1] == pytest.approx(0.20)
    assert np.isnan(grid[0, 1]) and np.isnan(grid[1, 0])  # not measured
