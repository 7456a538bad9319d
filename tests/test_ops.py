"""The operator step time: the shipped tables, the interpolation rule, each term, the fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import get_gpu, get_model
from sim.ops.attention import Attention, find_slab, prefill_equivalent_length
from sim.ops.gemm import gemm_over_m, layer_shapes
from sim.ops.model import OperatorStepModel
from sim.ops.tables import AIC_SYSTEMS, interp, interp_array, load_tables, monotone
from sim.steptime import BatchShape, RooflineStepModel, StepCoefficients, make_step_model

GPUS = sorted(AIC_SYSTEMS)


@pytest.fixture(scope="module")
def h200():
    return load_tables("h200")


@pytest.mark.parametrize("gpu", GPUS)
def test_every_gpu_ships_its_tables(gpu):
    t = load_tables(gpu)
    assert "gemm/bfloat16" in t and "gemm/m" in t
    assert any(k.startswith("context/h") for k in t) and any(k.startswith("generation/h") for k in t)
    assert "allreduce/graph/tp2" in t and "allreduce/eager/tp8" in t
    # Latencies are milliseconds and positive where measured.
    g = t["gemm/bfloat16"]
    assert np.all(g > 0) and np.isfinite(g).all()


def test_interp_is_exact_on_points_and_follows_the_end_rules():
    xs, ys = [1.0, 2.0, 4.0], [10.0, 20.0, 30.0]
    assert [interp(x, xs, ys) for x in xs] == ys
    assert interp(3.0, xs, ys) == 25.0  # linear between points
    assert interp(0.5, xs, ys) == 10.0  # below the first point: the first latency
    assert interp(8.0, xs, ys) == 60.0  # beyond the last: scaled by the work (linear)
    assert interp(8.0, xs, ys, power=2) == 120.0  # quadratic work (prefill attention)
    arr = interp_array(np.array([0.5, 1.0, 3.0, 8.0]), np.array(xs), np.array(ys))
    assert arr.tolist() == [10.0, 10.0, 25.0, 60.0]


def test_gemm_is_exact_on_a_measured_shape(h200):
    m, n, k = h200["gemm/m"], h200["gemm/n"], h200["gemm/k"]
    i, j, l = 10, 7, 9
    curve = gemm_over_m(h200, "bfloat16", int(n[j]), int(k[l]))
    assert curve[i] == pytest.approx(float(h200["gemm/bfloat16"][i, j, l]))


@pytest.mark.parametrize("gpu", ["h100-80gb", "h200", "b200"])
def test_block_fp8_gemm_drops_the_eager_launch_floor(gpu):
    """aiconfigurator times block-scaled FP8 GEMMs without CUDA graphs: below a few thousand tokens
    the table is the host's launch time, flat across shapes. Inside vLLM's graphs that is not paid:
    the curve follows the per-tensor FP8 one (timed in graphs), scaled by the two tables' ratio at
    the largest m, and never exceeds the eager measurement."""
    t = load_tables(gpu)
    from sim.ops.gemm import measured_over_m

    n, k = 4608, 4096  # Qwen3-235B's qkv_proj at TP 2
    eager = measured_over_m(t, "fp8_block", n, k)
    per_tensor = measured_over_m(t, "fp8", n, k)
    graphed = gemm_over_m(t, "fp8_block", n, k)
    assert eager[0] > 3 * per_tensor[0]  # the floor this rule removes is in the table
    assert np.all(graphed <= eager + 1e-12)
    ratio = max(1.0, eager[-1] / per_tensor[-1])
    assert graphed[0] == pytest.approx(per_tensor[0] * ratio)
    assert graphed[-1] == pytest.approx(min(eager[-1], per_tensor[-1] * ratio))
    assert np.all(np.diff(monotone(graphed)) >= 0)
    # A GPU without a per-tensor table keeps the eager one as it is.
    no_fp8 = {key: v for key, v in t.items() if key != "gemm/fp8"}
    assert np.array_equal(gemm_over_m(no_fp8, "fp8_block", n, k), eager)


@pytest.mark.parametrize("dtype", ["bfloat16", "fp8"])
def test_linear_layers_grow_with_tokens(dtype, h200):
    model = get_model("meta-llama/Llama-3.1-8B")
    from sim.config import EngineConfig
    from sim.precision import resolve_precision

    precision = resolve_precision(model, get_gpu("h200"), EngineConfig(
        model=model.name, gpu="h200", quantization="fp8" if dtype == "fp8" else None))
    sm = OperatorStepModel(h200, model, get_gpu("h200"), 1, StepCoefficients(overhead_s=0, per_seq_s=0),
                           precision=precision)
    assert f"GEMM {dtype}" in sm.source
    tokens = np.array(sm._tokens_ms)
    assert np.all(np.diff(tokens) >= 0)  # monotone in the step's tokens
    assert tokens[-1] > 50 * tokens[0]
    b = lambda n: BatchShape(n, 1, 1, n, 0, 0, 1, n)
    times = [sm.step_time(b(n)) for n in (1, 5, 17, 100, 513, 2000, 4353, 9000, 40000)]
    assert times == sorted(times)


@settings(max_examples=60, deadline=None)
@given(b1=st.integers(1, 3000), b2=st.integers(1, 3000), s1=st.integers(1, 200_000), s2=st.integers(1, 200_000))
def test_decode_attention_is_monotone_in_batch_and_context(b1, b2, s1, s2):
    att = _decode_attention()
    lo_b, hi_b = sorted((b1, b2))
    lo_s, hi_s = sorted((s1, s2))
    assert att.ms(lo_b, lo_s) <= att.ms(hi_b, hi_s) + 1e-12


@settings(max_examples=60, deadline=None)
@given(s1=st.integers(1, 40_000), s2=st.integers(1, 40_000), b=st.integers(1, 300))
def test_prefill_attention_is_monotone_in_length(s1, s2, b):
    att = _prefill_attention()
    lo, hi = sorted((s1, s2))
    assert att.ms(b, lo) <= att.ms(b, hi) + 1e-12


def _decode_attention():
    return Attention(load_tables("h200"), "generation", 8, 1, 128, "bfloat16")


def _prefill_attention():
    return Attention(load_tables("h200"), "context", 8, 1, 128, "bfloat16")


def test_attention_is_exact_on_a_measured_cell(h200):
    raw = h200["generation/h8_kv1_d128_bfloat16"]
    att = _decode_attention()
    b, s = h200["generation/batch"], h200["generation/seq"]
    i, j = 3, 5
    # The slab is made monotone: a cell keeps its measurement unless a larger cell measured less.
    expected = np.nanmin(raw[i:, j:])
    assert att.ms(float(b[i]), float(s[j])) == pytest.approx(expected)
    assert expected == pytest.approx(raw[i, j], rel=0.05)


def test_monotone_drops_an_isolated_slow_outlier():
    grid = np.add.outer(np.arange(4.0), np.arange(5.0)) + 1.0  # increasing along both axes
    noisy = grid.copy()
    noisy[0, 0] = 10.0  # one slow run (warm-up) at the smallest cell
    noisy[2, 1] = 30.0  # and one in the middle
    out = monotone(noisy)
    keep = np.ones(grid.shape, dtype=bool)
    keep[0, 0] = keep[2, 1] = False
    assert np.array_equal(out[keep], grid[keep])  # nothing else moves
    assert out[0, 0] == 2.0 and out[2, 1] == 5.0  # each outlier takes its nearest larger cell's time


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 100.0), min_size=5, max_size=5), min_size=1, max_size=6))
def test_monotone_is_the_lower_envelope(rows):
    grid = np.array(rows)
    out = monotone(grid)
    assert np.all(np.diff(out, axis=0) >= 0) and np.all(np.diff(out, axis=1) >= 0)
    assert np.all(out <= grid)  # never slower than a measurement
    for i, j in np.ndindex(grid.shape):  # the least time of this cell or any larger one
        assert out[i, j] == grid[i:, j:].min()
    assert np.array_equal(monotone(out), out)


def test_h200_decode_attention_is_its_measurement_not_an_outlier(h200):
    # aiconfigurator-core 0.12.0, h200_sxm/attention/vllm/0.24.0/generation_attention_perf.parquet,
    # 16 heads / 2 KV heads, head_dim 128, FP8 KV (Llama-3.1-70B at TP 4): batch 4, step 1023
    # measures 0.0152 ms, while batch 1, step 1 measured 0.0315 ms (a slow run). A running
    # maximum priced every cell of the slab at 0.0315 ms or more.
    raw = h200["generation/h16_kv2_d128_fp8"]
    assert raw[0, 0] > 2 * raw[0, 1]
    att = Attention(h200, "generation", 16, 2, 128, "fp8")
    assert att.ms(4, 1024) == pytest.approx(0.0152, rel=0.01)


def test_b200_gemm_outliers_do_not_lift_the_decode_steps():
    # B200's FP8 GEMM table has a few 2x slow runs at tiny m (e.g. n 10240, k 8192 at m 7).
    t = load_tables("b200")
    model = get_model("nvidia/Llama-3.1-70B-Instruct-FP8")
    from sim.config import EngineConfig
    from sim.precision import resolve_precision

    precision = resolve_precision(model, get_gpu("b200"), EngineConfig(model=model.name, gpu="b200"))
    sm = OperatorStepModel(t, model, get_gpu("b200"), 4, StepCoefficients(overhead_s=0, per_seq_s=0),
                           precision=precision)
    m = list(t["gemm/m"])
    raw = sum(sm.terms_ms.values())
    i = m.index(4)
    assert sm._tokens_ms[i] == pytest.approx(raw[i:].min())
    assert sm._tokens_ms[i] <= raw[i]


def test_unmeasured_head_counts_scale_from_the_same_grouping(h200):
    slab, how = find_slab(h200, "generation", 32, 32, 128, "bfloat16")  # MHA: not in the decode table
    ref, _ = find_slab(h200, "generation", 8, 8, 128, "bfloat16")
    assert "scaled from 8 heads / 8 KV heads" in how
    assert np.nanmax(np.abs(slab - 4 * ref)) == 0


def test_prefill_equivalent_length_inverts_the_pairs():
    for s in (1, 7, 1024, 8192):
        for b in (1, 3):
            pairs = b * s * (s + 1) // 2
            assert prefill_equivalent_length(b, pairs) == pytest.approx(s)


def test_fp8_weights_make_large_steps_faster_on_h200():
    from sim.precision import resolve_precision
    from sim.config import EngineConfig

    model, gpu = get_model("meta-llama/Llama-3.1-8B"), get_gpu("h200")
    c = StepCoefficients(overhead_s=0, per_seq_s=0)
    bf16 = make_step_model(model, gpu, 1, c)
    fp8 = make_step_model(model, gpu, 1, c, precision=resolve_precision(
        model, gpu, EngineConfig(model=model.name, gpu="h200", quantization="fp8")))
    prefill = BatchShape(4096, 1, 1, 4096, 4096 * 4097 // 2, 1, 0, 0)
    assert fp8.step_time(prefill) < 0.75 * bf16.step_time(prefill)
    assert "GEMM fp8" in fp8.source and "GEMM bfloat16" in bf16.source


def test_decode_run_matches_step_by_step():
    model, gpu = get_model("meta-llama/Llama-3.1-70B"), get_gpu("h100-80gb")
    sm = make_step_model(model, gpu, 4, StepCoefficients())
    run = sm.decode_run(32, 32 * 1500, 50)
    one = [sm.step_time(BatchShape(32, 32, 32, 32 * 1500 + 32 * i, 0, 0, 32, 32 * 1500 + 32 * i)) for i in range(50)]
    assert run == pytest.approx(one)


def test_async_scheduling_hides_the_scheduling_work():
    model, gpu = get_model("meta-llama/Llama-3.1-8B"), get_gpu("h200")
    b = BatchShape(64, 64, 64, 64 * 1000, 0, 0, 64, 64 * 1000)
    a = make_step_model(model, gpu, 1, StepCoefficients(overhead_s=0.001, per_seq_s=1e-5)).step_time(b)
    s = make_step_model(model, gpu, 1, StepCoefficients(overhead_s=0.001, per_seq_s=1e-5,
                                                        async_scheduling=False)).step_time(b)
    assert s == pytest.approx(a + 64 * 1e-5)


@pytest.mark.parametrize("gpu", ["a10g", "l4", "a100-40gb"])
def test_gpus_without_tables_use_the_roofline_and_say_so(gpu):
    sm = make_step_model(get_model("meta-llama/Llama-2-7b-hf"), get_gpu(gpu), 1, StepCoefficients())
    assert isinstance(sm, RooflineStepModel) and sm.source.startswith("roofline fallback")


def test_a_damaged_table_falls_back_visibly(tmp_path, monkeypatch):
    import sim.ops.tables as tables

    (tmp_path / "h200.npz").write_bytes(b"not a zip file")
    monkeypatch.setattr(tables, "OPERATORS_DIR", tmp_path)
    tables.load_tables.cache_clear()
    try:
        sm = make_step_model(get_model("meta-llama/Llama-3.1-8B"), get_gpu("h200"), 1, StepCoefficients())
        assert isinstance(sm, RooflineStepModel)
        assert "h200.npz" in sm.source and "cannot read" in sm.source
        (tmp_path / "h200.npz").unlink()
        tables.load_tables.cache_clear()
        sm = make_step_model(get_model("meta-llama/Llama-3.1-8B"), get_gpu("h200"), 1, StepCoefficients())
        assert "operator table missing" in sm.source
    finally:
        tables.load_tables.cache_clear()


def test_layer_shapes_follow_vllms_sharding():
    model = get_model("meta-llama/Llama-3.1-70B")
    shapes = dict((name, (n, k)) for name, n, k in layer_shapes(model, 4))
    assert shapes["qkv_proj"] == ((64 // 4 + 2 * 8 // 4) * 128, 8192)
    assert shapes["down_proj"] == (8192, 28672 // 4)
