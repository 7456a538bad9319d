"""Attention of one step, prefill chunks and decodes apart, from vLLM's measured FlashAttention.

Tables (one slab per query heads, KV heads, head dim and KV-cache dtype, over batch size and
sequence length, latency of one layer in ms):

- prefill: ``context_attention_perf.parquet``: ``batch`` prompts of ``seq`` tokens each, causal
  attention of every prompt token over the prompt;
- decode: ``generation_attention_perf.parquet``: ``batch`` requests each generating one token
  that reads ``seq`` tokens of KV (its own included).

How a step's real context lengths map onto the tables:

- decodes: ``B`` decodes reading ``C`` KV tokens in all are priced as ``B`` requests of
  ``C / B`` tokens (decode attention reads each request's KV once, so it is the total that
  counts; the tables show it: 8 x 131,072 and 32 x 32,768 measure the same);
- prefill chunks: ``b`` chunks whose (query, key) pairs add up to ``P`` (a chunk of ``n`` new
  tokens after ``c`` computed ones has ``n*c + n(n+1)/2``) are priced as ``b`` prompts of the
  length ``s`` with ``b * s(s+1)/2 = P``. It is exact for whole prompts of one length, and a
  chunk that continues a long prompt costs what its pairs cost.

A (heads, KV heads) pair the table lacks is taken from the measured pair with the same
grouping (heads per KV head) and the nearest KV heads, scaled by the ratio of KV heads (the
work is per head); failing that, from the nearest KV heads, scaled by the ratio of query heads.
Unmeasured cells of a slab (runs too large to fit on the GPU) are filled by
:func:`sim.ops.tables.fill_by_batch`, and the slab made monotone.
"""

from __future__ import annotations

import math

import numpy as np

from sim.ops.tables import TableError, bracket, fill_by_batch, fill_by_sequence, interp_array, monotone


def _slab_key(phase: str, heads: int, kv_heads: int, head_dim: int, kv_dtype: str) -> str:
    return f"{phase}/h{heads}_kv{kv_heads}_d{head_dim}_{kv_dtype}"


def find_slab(tables: dict, phase: str, heads: int, kv_heads: int, head_dim: int, kv_dtype: str
              ) -> tuple[np.ndarray, str]:
    """The slab for these shapes (scaled from a neighbour if not measured), and how it was found."""
    key = _slab_key(phase, heads, kv_heads, head_dim, kv_dtype)
    if key in tables:
        return tables[key].astype(np.float64), "measured"
    prefix = f"{phase}/h"
    suffix = f"_d{head_dim}_{kv_dtype}"
    measured = []
    for k in tables:
        if k.startswith(prefix) and k.endswith(suffix):
            h, kv = k[len(prefix):-len(suffix)].split("_kv")
            measured.append((int(h), int(kv)))
    if not measured:
        raise TableError(f"no {phase} attention table for head_dim {head_dim} with a {kv_dtype} KV cache")
    group = heads / kv_heads
    same_group = [(h, kv) for h, kv in measured if h / kv == group]
    if same_group:
        h, kv = min(same_group, key=lambda p: (abs(math.log(p[1] / kv_heads)), -p[1]))
        scale, how = kv_heads / kv, f"scaled from {h} heads / {kv} KV heads"
    else:
        h, kv = min(measured, key=lambda p: (abs(math.log(p[1] / kv_heads)), abs(math.log(p[0] / heads))))
        scale, how = heads / h, f"scaled from {h} heads / {kv} KV heads"
    return tables[_slab_key(phase, h, kv, head_dim, kv_dtype)].astype(np.float64) * scale, how


class Attention:
    """One phase's attention for one configuration: per-layer latency over (batch, seq)."""

    def __init__(self, tables: dict, phase: str, heads: int, kv_heads: int, head_dim: int, kv_dtype: str):
        slab, self.how = find_slab(tables, phase, heads, kv_heads, head_dim, kv_dtype)
        batch = tables[f"{phase}/batch"].astype(np.float64)
        seq = tables[f"{phase}/seq"].astype(np.float64)
        self.power = 2 if phase == "context" else 1  # work in the sequence length beyond the table
        slab = fill_by_sequence(fill_by_batch(slab, batch), seq, self.power)
        self.grid = monotone(slab)
        self.batch, self.seq = batch.tolist(), seq.tolist()
        self._seq_array = seq
        self._grid_rows = self.grid.tolist()

    def ms(self, batch: float, seq: float) -> float:
        """One layer, ``batch`` sequences of ``seq`` tokens (bilinear; the ends as the tables rule)."""
        b0, b1, wb = bracket(batch, self.batch)
        s0, s1, ws = bracket(seq, self.seq)
        rows = self._grid_rows
        r0, r1 = rows[b0], rows[b1]
        v = ((1 - wb) * ((1 - ws) * r0[s0] + ws * r0[s1]) + wb * ((1 - ws) * r1[s0] + ws * r1[s1]))
        if batch > self.batch[-1]:
            v *= batch / self.batch[-1]
        if seq > self.seq[-1]:
            v *= (seq / self.seq[-1]) ** self.power
        return v

    def ms_over_seq(self, batch: float, seq: np.ndarray) -> np.ndarray:
        """:meth:`ms` for one batch size and many sequence lengths (a run of decode steps)."""
        b0, b1, wb = bracket(batch, self.batch)
        row = (1 - wb) * self.grid[b0] + wb * self.grid[b1]
        out = interp_array(seq, self._seq_array, row, self.power)
        if batch > self.batch[-1]:
            out = out * (batch / self.batch[-1])
        return out


def prefill_equivalent_length(num_chunks: int, pairs: int) -> float:
    """The prompt length ``s`` whose ``num_chunks`` full prompts have ``pairs`` (query, key) pairs."""
    return (math.sqrt(1 + 8 * pairs / num_chunks) - 1) / 2
