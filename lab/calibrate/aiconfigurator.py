"""Derive ServeLab's operator tables from NVIDIA's measured vLLM timings in ``aiconfigurator-core``.

``servelab calibrate fit --from-aiconfigurator [DIR]`` runs this. The PyPI package
``aiconfigurator-core`` (0.12.0, Apache-2.0, about 89 MB) ships per-operator latencies measured
under vLLM on real GPUs, as parquet files under
``aiconfigurator_core/systems/data/<system>/<op>/vllm/<version>/``. ServeLab does not depend on
it: this command reads the tables it needs and writes small derived files,
``sim/data/operators/<gpu>.npz``, that the step-time model reads (:mod:`sim.ops.tables`).

What is kept, per GPU (latencies in milliseconds, as measured):

- ``gemm_perf.parquet``: ``gemm/<dtype>`` on the grid ``gemm/m`` x ``gemm/n`` x ``gemm/k``, for
  dtype bfloat16, fp8 (per-tensor W8A8) and fp8_block (block-scaled) where measured. Where a
  dtype was measured with several kernels, the fastest one is kept (vLLM picks the best kernel
  it has for the GPU). A grid point that was not measured is filled from its neighbours along
  k, then n, then m, linearly in the log of the axis.
- ``context_attention_perf.parquet`` (prefill) and ``generation_attention_perf.parquet``
  (decode), full attention (window 0), one slab per (query heads, KV heads, head dim, KV dtype)
  over (batch size, sequence length). For decode the sequence length is the table's ``step``
  column plus one (the KV the new token reads, its own included).
- ``custom_allreduce_perf.parquet``: vLLM's custom all-reduce (CUDA-graph and eager variants)
  by GPU count and message size (bfloat16 elements).
- ``moe_perf.parquet``: vLLM's fused MoE layer (routed experts only), ``moe/<dtype>/<slab>`` over
  (``moe_tp``, ``moe_ep``) pairs (``<slab>_par``) x ``moe/num_tokens``, for dtype bfloat16, fp8,
  fp8_block, w4a16_mxfp4 and int4_wo where measured. Only the slabs (hidden, intermediate, top-k,
  experts) of the catalog's MoE models are kept (:data:`MOE_SLABS`; :mod:`sim.ops.moe` scales
  others from the nearest). Of the table's three routing distributions, the one aiconfigurator's
  own vLLM model reads is kept: ``power_law_1.2`` for the generic MoE models (Qwen3-MoE, Mixtral,
  gpt-oss: ``sdk/models/moe.py``, ``_power_law_alpha = 1.2``) and ``power_law_1.01`` for
  DeepSeek (``sdk/models/deepseek.py``). Each point was measured with one kernel, the one vLLM
  selected for that shape and dtype (the file has no shape measured with two). Points not measured
  are filled along the token axis: between measured points linearly in log(tokens), past the last
  in proportion to the tokens.
- ``moe_a2a_perf.parquet`` (H100, H200, B200 only): DeepEP's dispatch and combine, high-throughput
  (``deepep_ht``) and low-latency (``deepep_ll``) kernels, ``a2a/<backend>/<phase>/h<hidden>_k<topk>_e<experts>_ep<ep>``
  over ``a2a/<backend>/num_tokens`` (tokens a rank sends), every measured shape (EP 8 on one node
  only). Its latency column is in microseconds; it is kept in milliseconds like the others.
- ``mla_context_module_perf.parquet`` and ``mla_generation_module_perf.parquet`` (where the
  system has them: H100, H200, B200, L40S): DeepSeek-V3's whole MLA attention block measured
  as one module (:mod:`sim.ops.mla` says what a row includes), one slab per (heads on the GPU,
  KV dtype, GEMM dtype) over (batch size, sequence length); only the rows vLLM runs by default
  (16-bit prefill queries, ``mla_dtype`` bfloat16) and the GEMM dtypes the step model prices
  (bfloat16 and block FP8). For decode the sequence length is the table's ``step`` column as it
  is (the module collector's ``seq_len``: the KV the new token reads, its own included).

Nothing is fitted here; the tables are copied down to the columns the model reads.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sim.errors import ConfigError
from sim.ops.tables import AIC_SYSTEMS, OPERATORS_DIR

PACKAGE = "aiconfigurator-core"
PACKAGE_VERSION = "0.12.0"
GEMM_DTYPES = ("bfloat16", "fp8", "fp8_block")
MOE_DTYPES = ("bfloat16", "fp8", "fp8_block", "w4a16_mxfp4", "int4_wo")
# (hidden, moe intermediate, top-k, experts) of the catalog's MoE models -> the routing
# distribution aiconfigurator's vLLM model prices them with (see the module docstring).
MOE_SLABS = {
    (2048, 768, 8, 128): "power_law_1.2",  # Qwen3-30B-A3B
    (4096, 1536, 8, 128): "power_law_1.2",  # Qwen3-235B-A22B
    (4096, 14336, 2, 8): "power_law_1.2",  # Mixtral-8x7B
    (2880, 2880, 4, 128): "power_law_1.2",  # gpt-oss-120b
    (2880, 2880, 4, 32): "power_law_1.2",  # gpt-oss-20b
    (7168, 2048, 8, 256): "power_law_1.01",  # DeepSeek-V3
}
ATTENTION_KV_DTYPES = ("bfloat16", "fp8")
MLA_GEMM_DTYPES = ("bfloat16", "fp8_block")


def package_data_dir(explicit: str | None) -> Path:
    """The package's ``systems/data`` folder: ``explicit`` or the installed package's."""
    if explicit:
        root = Path(explicit)
        candidates = [root, root / "systems" / "data", root / "aiconfigurator_core" / "systems" / "data"]
        for c in candidates:
            if (c / "h200_sxm").is_dir():
                return c
        raise ConfigError(f"--from-aiconfigurator {explicit}: no systems/data folder with h200_sxm under it; "
                          f"point it at aiconfigurator_core's install folder")
    try:
        import aiconfigurator_core  # noqa: F401  (only to find its files)
    except ImportError:
        raise ConfigError(
            f"--from-aiconfigurator: the package {PACKAGE} is not installed. Install it into this environment "
            f"(pip install {PACKAGE}=={PACKAGE_VERSION} pyarrow), or pass its folder: --from-aiconfigurator DIR"
        ) from None
    return Path(aiconfigurator_core.__file__).parent / "systems" / "data"


def _latest(folder: Path, filename: str) -> Path | None:
    """The newest vLLM version folder under ``folder`` holding ``filename``."""
    if not folder.is_dir():
        return None
    versions = [v for v in folder.iterdir() if (v / filename).is_file()]
    if not versions:
        return None

    def key(p: Path):
        return tuple(int(x) if x.isdigit() else 0 for x in p.name.replace("dev", ".").split("."))

    return max(versions, key=key) / filename


def _read(path: Path):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise ConfigError(f"{path}: reading parquet needs pyarrow ({exc}); pip install pyarrow") from None
    except Exception as exc:  # a damaged file: name it
        raise ConfigError(f"{path}: cannot read ({exc})") from None


def _fill_log_axis(grid: np.ndarray, axis_values: np.ndarray, axis: int) -> np.ndarray:
    """Fill NaNs along one axis by linear interpolation in log(axis), holding the end values."""
    x = np.log(axis_values.astype(float))
    moved = np.moveaxis(grid, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    for row in flat:
        ok = ~np.isnan(row)
        if ok.sum() == 0 or ok.all():
            continue
        row[~ok] = np.interp(x[~ok], x[ok], row[ok])
    return np.moveaxis(flat.reshape(moved.shape), -1, axis)


def derive_gemm(df) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    m = np.array(sorted(df.m.unique()), dtype=np.int64)
    n = np.array(sorted(df.n.unique()), dtype=np.int64)
    k = np.array(sorted(df.k.unique()), dtype=np.int64)
    out["gemm/m"], out["gemm/n"], out["gemm/k"] = m, n, k
    for dtype in GEMM_DTYPES:
        part = df[df.gemm_dtype == dtype]
        if part.empty:
            continue
        best = part.groupby(["m", "n", "k"]).latency.min()  # fastest kernel per shape
        grid = np.full((len(m), len(n), len(k)), np.nan)
        mi = np.searchsorted(m, best.index.get_level_values(0))
        ni = np.searchsorted(n, best.index.get_level_values(1))
        ki = np.searchsorted(k, best.index.get_level_values(2))
        grid[mi, ni, ki] = best.to_numpy()
        for axis, values in ((2, k), (1, n), (0, m)):
            grid = _fill_log_axis(grid, values, axis)
        out[f"gemm/{dtype}"] = grid.astype(np.float32)
    return out


def derive_attention(df, phase: str) -> dict[str, np.ndarray]:
    """One slab per (heads, kv_heads, head_dim, kv dtype) over (batch, sequence length)."""
    out: dict[str, np.ndarray] = {}
    if "window_size" in df.columns:  # older tables (A100, vLLM 0.14) have full attention only
        df = df[df.window_size == 0]
    seq_col = "isl" if phase == "context" else "step"
    b_axis = np.array(sorted(df.batch_size.unique()), dtype=np.int64)
    s_axis = np.array(sorted(df[seq_col].unique()), dtype=np.int64)
    if phase == "generation":
        s_axis_out = s_axis + 1  # step s: the new token reads s cached tokens plus its own
    else:
        s_axis_out = s_axis
    out[f"{phase}/batch"], out[f"{phase}/seq"] = b_axis, s_axis_out
    for (h, kv, hd, kvd), part in df.groupby(["num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype"]):
        if kvd not in ATTENTION_KV_DTYPES:
            continue
        out[f"{phase}/h{h}_kv{kv}_d{hd}_{kvd}"] = _latency_grid(part, seq_col, b_axis, s_axis)
    return out


def derive_allreduce(df) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    sizes = np.array(sorted(df.message_size.unique()), dtype=np.int64)
    out["allreduce/message_size"] = sizes
    for (gpus, backend), part in df.groupby(["num_gpus", "backend"]):
        mode = "graph" if "graph" in backend else "eager"
        series = part.groupby("message_size").latency.min().reindex(sizes)
        out[f"allreduce/{mode}/tp{gpus}"] = series.to_numpy(dtype=np.float32)
    return out


def moe_slab_key(dtype: str, hidden: int, inter: int, topk: int, experts: int) -> str:
    return f"moe/{dtype}/h{hidden}_i{inter}_k{topk}_e{experts}"


def derive_moe(df) -> dict[str, np.ndarray]:
    """One slab per (dtype, catalog shape) over (moe_tp, moe_ep) pairs x tokens."""
    out: dict[str, np.ndarray] = {}
    tokens = np.array(sorted(df.num_tokens.unique()), dtype=np.int64)
    out["moe/num_tokens"] = tokens
    for (h, i, k, e), dist in MOE_SLABS.items():
        shape = df[(df.hidden_size == h) & (df.inter_size == i) & (df.topk == k) & (df.num_experts == e)
                   & (df.distribution == dist)]
        for dtype in MOE_DTYPES:
            part = shape[shape.moe_dtype == dtype]
            if part.empty:
                continue
            best = part.groupby(["moe_tp_size", "moe_ep_size", "num_tokens"]).latency.min()
            pairs = sorted({(int(t), int(p)) for t, p, _ in best.index})
            grid = np.full((len(pairs), len(tokens)), np.nan)
            for (t, p, n), v in best.items():
                grid[pairs.index((int(t), int(p))), np.searchsorted(tokens, n)] = v
            for row in grid:
                ok = np.flatnonzero(~np.isnan(row))
                inner = np.arange(ok[0], ok[-1] + 1)
                row[inner] = np.interp(np.log(tokens[inner]), np.log(tokens[ok]), row[ok])
                row[ok[-1] + 1:] = row[ok[-1]] * tokens[ok[-1] + 1:] / tokens[ok[-1]]
                row[:ok[0]] = row[ok[0]]
            key = moe_slab_key(dtype, h, i, k, e)
            out[key] = grid.astype(np.float32)
            out[key + "_par"] = np.array(pairs, dtype=np.int64)
    return out


def derive_a2a(df) -> dict[str, np.ndarray]:
    """DeepEP dispatch and combine latency (ms) by backend, phase and shape, over tokens."""
    out: dict[str, np.ndarray] = {}
    df = df[df.comm_backend.isin(["deepep_ht", "deepep_ll"]) & (df.node_num == 1)]
    for backend, part in df.groupby("comm_backend"):
        tokens = np.array(sorted(part.num_tokens.unique()), dtype=np.int64)
        out[f"a2a/{backend}/num_tokens"] = tokens
        for (phase, h, k, e, ep), cell in part.groupby(["phase", "hidden_size", "topk", "num_experts", "ep_size"]):
            series = cell.groupby("num_tokens").latency.min().reindex(tokens).to_numpy(dtype=np.float64) / 1e3
            ok = ~np.isnan(series)
            series[~ok] = np.interp(np.log(tokens[~ok]), np.log(tokens[ok]), series[ok])
            out[f"a2a/{backend}/{phase}/h{h}_k{k}_e{e}_ep{ep}"] = series.astype(np.float32)
    return out


def _latency_grid(part, seq_col: str, b_axis: np.ndarray, s_axis: np.ndarray) -> np.ndarray:
    """The fastest measured latency at each (batch, length) of the axes; NaN where not measured
    (too large to fit)."""
    best = part.groupby(["batch_size", seq_col]).latency.min()
    grid = np.full((len(b_axis), len(s_axis)), np.nan, dtype=np.float32)
    grid[np.searchsorted(b_axis, best.index.get_level_values(0)),
         np.searchsorted(s_axis, best.index.get_level_values(1))] = best.to_numpy()
    return grid


def derive_mla(df, phase: str) -> dict[str, np.ndarray]:
    """DeepSeek-V3's MLA module, one slab per (heads, KV dtype, GEMM dtype) over (batch, length)."""
    out: dict[str, np.ndarray] = {}
    df = df[(df.mla_dtype == "bfloat16") & df.gemm_type.isin(MLA_GEMM_DTYPES)
            & df.kv_cache_dtype.isin(ATTENTION_KV_DTYPES)]
    seq_col = "isl" if phase == "context" else "step"
    b_axis = np.array(sorted(df.batch_size.unique()), dtype=np.int64)
    s_axis = np.array(sorted(df[seq_col].unique()), dtype=np.int64)
    out[f"mla/{phase}/batch"], out[f"mla/{phase}/seq"] = b_axis, s_axis
    for (h, kvd, gemm), part in df.groupby(["num_heads", "kv_cache_dtype", "gemm_type"]):
        out[f"mla/{phase}/h{h}_{kvd}_{gemm}"] = _latency_grid(part, seq_col, b_axis, s_axis)
    return out


def derive_gpu(data_dir: Path, system: str) -> tuple[dict[str, np.ndarray], dict]:
    """All tables of one aiconfigurator system, and where each came from."""
    base = data_dir / system
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for op, filename, derive in (
        ("gemm", "gemm_perf.parquet", derive_gemm),
        ("attention", "context_attention_perf.parquet", lambda d: derive_attention(d, "context")),
        ("attention", "generation_attention_perf.parquet", lambda d: derive_attention(d, "generation")),
        ("comm", "custom_allreduce_perf.parquet", derive_allreduce),
        ("moe", "moe_perf.parquet", derive_moe),
    ):
        path = _latest(base / op / "vllm", filename)
        if path is None:
            raise ConfigError(f"{base / op / 'vllm'}: no {filename} under any vLLM version folder")
        arrays.update(derive(_read(path)))
        sources[filename] = str(path.relative_to(data_dir.parent.parent))
    a2a = _latest(base / "comm" / "vllm", "moe_a2a_perf.parquet")  # measured on some GPUs only
    if a2a is not None:
        arrays.update(derive_a2a(_read(a2a)))
        sources["moe_a2a_perf.parquet"] = str(a2a.relative_to(data_dir.parent.parent))
    # MLA (DeepSeek-V3): only some systems measured it; the others have no mla/ arrays.
    for phase in ("context", "generation"):
        filename = f"mla_{phase}_module_perf.parquet"
        path = _latest(base / "mla" / "vllm", filename)
        if path is not None:
            arrays.update(derive_mla(_read(path), phase))
            sources[filename] = str(path.relative_to(data_dir.parent.parent))
    return arrays, sources


def write_tables(data_dir: Path, out_dir: Path = OPERATORS_DIR) -> list[str]:
    """Derive every GPU's tables into ``out_dir``; return one line per file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    manifest = {"package": f"{PACKAGE}=={PACKAGE_VERSION}", "licence": "Apache-2.0",
                "derived": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "command": "servelab calibrate fit --from-aiconfigurator", "gpus": {}}
    for gpu, system in AIC_SYSTEMS.items():
        arrays, sources = derive_gpu(data_dir, system)
        path = out_dir / f"{gpu}.npz"
        np.savez_compressed(path, **arrays)
        manifest["gpus"][gpu] = {"system": system, "sources": sources}
        lines.append(f"{path}: {len(arrays)} arrays from {system} ({path.stat().st_size / 1e6:.2f} MB)")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return lines
