"""Fit the step-time model's linear-layer and all-reduce terms to measured operator timings.

End-to-end points (:mod:`sim.calibration_fit`) tell how long whole runs take; operator timings
tell how long each GEMM and each all-reduce takes, which pins the roofline's linear terms
directly:

* a GEMM of ``m`` tokens by an ``n x k`` weight does ``2 m n k`` FLOPs and moves
  ``(m k + n k + m n) x dtype`` bytes; the roofline prices it at
  ``max(bytes / (bandwidth x weight_bw_eff), flops / (peak x matmul_eff))`` (the same two
  efficiencies :class:`sim.steptime.StepCoefficients` uses for the weights and the linear layers);
* a ring all-reduce of ``size`` bytes over ``p`` GPUs costs
  ``comm_latency_s + 2 (p - 1) / p x size / (one-direction NVLink x comm_bw_eff)``.

Two CSV layouts are read: Vidur's (``mlp.csv``: one row per (num_tokens, tensor-parallel size)
with ``time_stats.<op>.median`` in ms and the model's shape; ``all_reduce.csv``: ``size`` in
bytes, ``num_workers``, ``time_stats.all_reduce.median`` in ms) and the one ServeLab's profiler
writes (``lab/calibrate/profiler.py``: ``op,m,n,k,dtype_bytes,time_ms`` per GEMM, and
attention rows, which this module ignores).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError

# Vidur's names of the four GEMMs of a layer.
VIDUR_GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
VIDUR_SHAPE = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens", "num_tensor_parallel_workers")
PROFILER_COLUMNS = ("op", "m", "n", "k", "dtype_bytes", "time_ms")
ALL_REDUCE_COLUMNS = ("num_workers", "size", "time_stats.all_reduce.median")


@dataclass(frozen=True, slots=True)
class GemmRecord:
    op: str
    m: int
    n: int
    k: int
    dtype_bytes: int
    time_s: float

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    @property
    def bytes(self) -> float:
        return float(self.m * self.k + self.n * self.k + self.m * self.n) * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class AllReduceRecord:
    num_workers: int
    size_bytes: int
    time_s: float


def _rows(text: str, source: str, required: tuple[str, ...]) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # newlines inside quoted cells stay cells
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise ConfigError(f"{source}: missing column(s) {missing}; found {header[:12]}"
                          + ("..." if len(header) > 12 else ""))
    return list(reader)


def _num(row: dict, col: str, source: str, line: int, kind=float):
    cell = (row.get(col) or "").strip()
    try:
        value = kind(float(cell)) if kind is int else float(cell)
    except ValueError:
        raise ConfigError(f"{source}: line {line}, column {col}: expected a number, found {cell!r}") from None
    except OverflowError:  # int(float("inf")): a count must be finite
        raise ConfigError(f"{source}: line {line}, column {col}: expected a finite number >= 0, found {cell!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{source}: line {line}, column {col}: expected a finite number >= 0, found {cell!r}")
    return value


def detect_layout(text: str) -> str:
    """``vidur-mlp``, ``vidur-all-reduce`` or ``servelab-profiler``, from the header line."""
    header = text.split("\n", 1)[0]
    if "time_stats.all_reduce" in header:
        return "vidur-all-reduce"
    if "time_stats.attn_pre_proj" in header:
        return "vidur-mlp"
    cols = [c.strip() for c in header.split(",")]
    if all(c in cols for c in PROFILER_COLUMNS):
        return "servelab-profiler"
    return "unknown"


def gemms_from_vidur(text: str, source: str, dtype_bytes: int = 2) -> list[GemmRecord]:
    """The four GEMMs of each row of a Vidur ``mlp.csv`` (times are per layer, in ms)."""
    required = tuple(f"time_stats.{op}.median" for op in VIDUR_GEMMS) + VIDUR_SHAPE
    out = []
    for i, row in enumerate(_rows(text, source, required), start=2):
        heads, kv, hidden, inter, m, tp = (_num(row, c, source, i, int) for c in VIDUR_SHAPE)
        if not heads or not tp or hidden % heads:
            raise ConfigError(f"{source}: line {i}: n_head and num_tensor_parallel_workers must be "
                              f"positive and divide n_embd")
        gated = (row.get("use_gated_mlp") or "True").strip().lower() in ("true", "1")
        hd = hidden // heads
        shapes = {  # (n, k) of each weight on one tensor-parallel rank
            "attn_pre_proj": ((heads + 2 * kv) * hd // tp, hidden),
            "attn_post_proj": (hidden, heads * hd // tp),
            "mlp_up_proj": ((2 if gated else 1) * inter // tp, hidden),
            "mlp_down_proj": (hidden, inter // tp),
        }
        for op in VIDUR_GEMMS:
            t_ms = _num(row, f"time_stats.{op}.median", source, i)
            n, k = shapes[op]
            if m and t_ms > 0:
                out.append(GemmRecord(op, m, n, k, dtype_bytes, t_ms / 1000))
    if not out:
        raise ConfigError(f"{source}: no GEMM timings in the file")
    return out


def gemms_from_profiler(text: str, source: str) -> list[GemmRecord]:
    out = []
    for i, row in enumerate(_rows(text, source, PROFILER_COLUMNS), start=2):
        op = (row.get("op") or "").strip()
        if op.startswith("attn"):
            continue  # attention rows: the step model's attention terms are not fitted here
        m, n, k, b = (_num(row, c, source, i, int) for c in ("m", "n", "k", "dtype_bytes"))
        t = _num(row, "time_ms", source, i)
        if m and n and k and t > 0:
            out.append(GemmRecord(op, m, n, k, b or 2, t / 1000))
    if not out:
        raise ConfigError(f"{source}: no GEMM rows (op,m,n,k,dtype_bytes,time_ms) in the file")
    return out


def all_reduces_from_vidur(text: str, source: str, max_size_bytes: int | None = None) -> list[AllReduceRecord]:
    """All-reduce timings within one node (``devices_per_node == num_workers`` when the column
    is there), rank 0's row."""
    out = []
    for i, row in enumerate(_rows(text, source, ALL_REDUCE_COLUMNS), start=2):
        p = _num(row, "num_workers", source, i, int)
        if "devices_per_node" in row and row["devices_per_node"] not in (None, ""):
            if _num(row, "devices_per_node", source, i, int) != p:
                continue
        if "rank" in row and row["rank"] not in (None, "") and _num(row, "rank", source, i, int) != 0:
            continue
        size = _num(row, "size", source, i, int)
        t = _num(row, "time_stats.all_reduce.median", source, i)
        if p >= 2 and size and t > 0 and (max_size_bytes is None or size <= max_size_bytes):
            out.append(AllReduceRecord(p, size, t / 1000))
    if not out:
        raise ConfigError(f"{source}: no usable all-reduce rows (num_workers >= 2 within one node)")
    return out


@dataclass(frozen=True)
class OperatorFit:
    coefficients: dict[str, float]
    num_records: int
    median_abs_error: float
    max_abs_error: float
    mean_abs_error: float


def _summary(pred: np.ndarray, meas: np.ndarray, coefficients: dict, n: int) -> OperatorFit:
    err = np.abs(pred / meas - 1)
    return OperatorFit({k: float(f"{v:.4g}") for k, v in coefficients.items()}, n,
                       float(np.median(err)), float(err.max()), float(err.mean()))


def gemm_time_s(records: list[GemmRecord], hbm_bytes_per_s: float, flops_per_s: float,
                weight_bw_eff: float, matmul_eff: float) -> np.ndarray:
    flops = np.array([r.flops for r in records])
    nbytes = np.array([r.bytes for r in records])
    return np.maximum(nbytes / (hbm_bytes_per_s * weight_bw_eff), flops / (flops_per_s * matmul_eff))


def fit_gemms(records: list[GemmRecord], gpu) -> OperatorFit:
    """``weight_bw_eff`` and ``matmul_eff`` minimising the squared log error of the roofline."""
    from scipy.optimize import least_squares

    meas = np.array([r.time_s for r in records])
    bw, peak = gpu.hbm_bandwidth_bytes_per_s, gpu.dense_fp16_flops_per_s

    def residuals(x):
        return np.log(gemm_time_s(records, bw, peak, x[0], x[1]) / meas)

    sol = least_squares(residuals, np.array([0.7, 0.6]), bounds=([0.05, 0.05], [1.0, 1.0]))
    coeffs = {"weight_bw_eff": sol.x[0], "matmul_eff": sol.x[1]}
    return _summary(gemm_time_s(records, bw, peak, *sol.x), meas, coeffs, len(records))


def fit_all_reduce(records: list[AllReduceRecord], gpu) -> OperatorFit:
    """``comm_latency_s`` and ``comm_bw_eff`` by least squares on relative errors (linear in
    the latency and in 1 / efficiency)."""
    link = gpu.nvlink_bandwidth_bytes_per_s / 2  # one direction, as sim.steptime
    p = np.array([r.num_workers for r in records], dtype=float)
    x = 2 * (p - 1) / p * np.array([r.size_bytes for r in records], dtype=float) / link
    t = np.array([r.time_s for r in records])
    a = np.stack([np.ones_like(x), x], axis=1) / t[:, None]  # rows scaled: relative errors
    (lat, inv_eff), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    lat, eff = max(float(lat), 0.0), float(np.clip(1 / inv_eff, 0.1, 1.0)) if inv_eff > 0 else 1.0
    return _summary(lat + x / eff, t, {"comm_latency_s": lat, "comm_bw_eff": eff}, len(records))
