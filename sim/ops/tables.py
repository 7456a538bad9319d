"""Measured operator tables: loading, and the interpolation rule every operator term uses.

The tables are ``sim/data/operators/<gpu>.npz``, derived from NVIDIA's vLLM operator timings in
``aiconfigurator-core`` 0.12.0 (Apache-2.0; see the NOTICE beside them, and
:mod:`lab.calibrate.aiconfigurator` for the command that derives them again). Latencies are in
milliseconds, as measured.

The interpolation rule (one rule for every table, along every axis):

- between two measured points: linear in the axis value (exact on the measured points, and
  monotone wherever the measurements are);
- below the first point: the first point's latency (a kernel does not get faster with less work
  than the smallest measured; it is bound by its launch);
- above the last point: the last point's latency scaled by the work, ``work(x) / work(x_last)``,
  where the work grows linearly in the axis (tokens, batch, heads, n, k), or quadratically in the
  sequence length of prefill attention (causal attention pairs).

Measured latencies are a little noisy; where a larger shape measured faster than a smaller
one, the slab is made monotone with a running maximum before use (:func:`monotone`).
"""

from __future__ import annotations

import bisect
from functools import lru_cache
from pathlib import Path

import numpy as np

OPERATORS_DIR = Path(__file__).parent.parent / "data" / "operators"

# ServeLab GPU name -> aiconfigurator system whose tables it reads. GPUs not listed (A10G, L4,
# A100-40GB, whose HBM differs from the measured A100 SXM 80GB) use the roofline.
AIC_SYSTEMS = {
    "a100-80gb": "a100_sxm",
    "h100-80gb": "h100_sxm",
    "h200": "h200_sxm",
    "l40s": "l40s",
    "b200": "b200_sxm",
}


class TableError(Exception):
    """A table file that exists but cannot be read, or lacks what is asked of it."""


@lru_cache(maxsize=8)
def load_tables(gpu: str) -> dict[str, np.ndarray] | None:
    """The derived tables of ``gpu``, or None if it has none. A damaged file raises TableError."""
    if gpu not in AIC_SYSTEMS:
        return None
    path = OPERATORS_DIR / f"{gpu}.npz"
    if not path.is_file():
        raise TableError(f"{path}: operator table missing (run `servelab calibrate fit --from-aiconfigurator`)")
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # zip or pickle damage: name the file
        raise TableError(f"{path}: cannot read operator table ({exc})") from None


def interp(x: float, xs: list[float], ys: list[float], power: int = 1) -> float:
    """The interpolation rule above, for one value (``power`` 2: quadratic work beyond the end)."""
    if x <= xs[0]:
        return ys[0]
    last = len(xs) - 1
    if x >= xs[last]:
        return ys[last] * (x / xs[last]) ** power
    i = bisect.bisect_right(xs, x)
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


def interp_array(x: np.ndarray, xs: np.ndarray, ys: np.ndarray, power: int = 1) -> np.ndarray:
    """:func:`interp` over an array of values."""
    x = np.asarray(x, dtype=np.float64)
    out = np.interp(x, xs, ys)
    above = x > xs[-1]
    if above.any():
        out[above] = ys[-1] * (x[above] / xs[-1]) ** power
    return out


def bracket(x: float, xs: list[float]) -> tuple[int, int, float]:
    """(i0, i1, w): ``x`` lies at ``(1-w) * xs[i0] + w * xs[i1]``; clamped at the ends (i0 == i1)."""
    if x <= xs[0]:
        return 0, 0, 0.0
    last = len(xs) - 1
    if x >= xs[last]:
        return last, last, 0.0
    i = bisect.bisect_right(xs, x)
    return i - 1, i, (x - xs[i - 1]) / (xs[i] - xs[i - 1])


def monotone(grid: np.ndarray) -> np.ndarray:
    """More work never takes less time: along every axis, each cell becomes the least time
    measured for it or for any larger cell (a running minimum from the far end).

    Why the lower envelope and not a running maximum. Timing noise only adds time: a run that
    met a warm-up, a clock change or a neighbour measures slow, never impossibly fast. A running
    maximum would carry one such outlier to every larger cell (the H200's decode-attention slab
    for 16 heads / 2 KV heads has a 2.5x outlier at batch 1, 2 tokens, and B200's FP8 GEMMs have
    2x outliers at a few tiny ``m``: each lifted every step priced from them). The lower
    envelope drops the outlier and keeps the rest as measured."""
    out = np.array(grid, dtype=np.float64)
    for axis in range(out.ndim):
        out = np.flip(np.minimum.accumulate(np.flip(out, axis=axis), axis=axis), axis=axis)
    return out


def fill_by_batch(grid: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Fill unmeasured (NaN) cells of a (batch, sequence) slab: the largest measured batch at that
    sequence length, scaled linearly by batch (the runs too large to fit on the GPU were not
    measured; attention over more sequences is more of the same work)."""
    out = np.array(grid, dtype=np.float64)
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = np.flatnonzero(~np.isnan(col))
        if len(ok) == 0:
            continue
        last = ok[-1]
        for i in range(last + 1, len(col)):
            col[i] = col[last] * batch[i] / batch[last]
    # A sequence length with no measurement at all: the longest measured one, scaled by length.
    return out


def fill_by_sequence(grid: np.ndarray, seq: np.ndarray, power: int) -> np.ndarray:
    """Fill NaN cells left after :func:`fill_by_batch` from the longest measured sequence length
    of that batch row, scaled by ``(s / s_last) ** power``."""
    out = np.array(grid, dtype=np.float64)
    for i in range(out.shape[0]):
        row = out[i]
        ok = np.flatnonzero(~np.isnan(row))
        if len(ok) == 0:
            continue
        last = ok[-1]
        for j in range(last + 1, len(row)):
            row[j] = row[last] * (seq[j] / seq[last]) ** power
    return out
