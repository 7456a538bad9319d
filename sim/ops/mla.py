"""Multi-head Latent Attention (DeepSeek-V3) of one step, from vLLM's measured MLA module.

Tables (``sim/data/operators/<gpu>.npz``, derived from aiconfigurator-core 0.12.0's
``mla/vllm/0.24.0/mla_{context,generation}_module_perf.parquet``; H100, H200, B200 and L40S
have them, the A100 does not): ``mla/<phase>/h<heads>_<kv dtype>_<gemm dtype>[batch, seq]``, the
latency in ms of one layer's whole attention block on one GPU.

What one module row is. NVIDIA's collector (``collector/vllm/collect_mla_module.py``) builds one
vLLM ``DeepseekV2MLAAttention`` from DeepSeek-V3's config.json with ``num_attention_heads`` set
to ``heads`` (the heads one GPU holds under TP: 128/tp), on one GPU, and times its forward from
the hidden states to the output of ``o_proj`` under a CUDA graph. That forward is, in order:

- ``fused_qkv_a_proj`` (hidden 7168 -> q_lora_rank 1536 + kv_lora_rank 512 + rope 64, the same
  on every TP rank), ``q_a_layernorm``, ``kv_a_layernorm``, ``q_b_proj`` (1536 -> heads x 192);
- the rotary embedding of the rope part and the KV-cache write (one "head" of 512 + 64);
- attention. Prefill: ``kv_b_proj`` (512 -> heads x 256) up-projects the latent into K and V,
  and FlashAttention runs over them. Decode (and prefill chunks of at most vLLM's
  ``reorder_batch_threshold`` tokens: 512 for FLASH_ATTN_MLA, the bf16-KV backend on Hopper,
  128 for FlashMLA, the FP8-KV one): the absorbed form, ``q_nope x W_UK`` (a batched GEMM), the
  MLA decode kernel over the latent cache, ``x W_UV``;
- ``o_proj`` (heads x 128 -> hidden).

So a row holds every projection of the attention block (the ``mla_bmm`` table, the absorbed
batched GEMMs alone, is not needed and not kept). It does not hold the residual add and
RMSNorm before the block, nor the TP all-reduce after ``o_proj``: those stay in
``elementwise_ms`` and ``allreduce_ms`` as for every model, and :mod:`sim.ops.gemm` leaves the
attention projections out of ``linear_ms`` for MLA models.

Axes: a context row is ``batch`` prompts of ``seq`` tokens, no cached prefix; a generation row
is ``batch`` requests each computing one token that reads ``seq`` tokens of KV, its own
included (the collector caches ``seq - 1``). Rows are per KV-cache dtype (bfloat16, fp8: the
latent cache in FP8, as ``--kv-cache-dtype fp8``) and per GEMM dtype of the projections
(bfloat16, fp8_block), with 16-bit prefill queries (vLLM's default).

How a step maps onto them (the rules of :mod:`sim.ops.attention`):

- decodes: ``B`` decodes reading ``C`` KV tokens in all are ``B`` requests of ``C / B``: the
  generation module at ``(B, C/B)``, projections of the ``B`` tokens included;
- prefill chunks: ``b`` chunks of ``T`` new tokens with ``P`` (query, key) pairs are ``b``
  chunks of ``n = T/b`` tokens after ``c`` computed ones, with ``n c + n(n+1)/2 = P/b``. Whole
  prompts (``c = 0``) are the context module at ``(b, n)``, exact on measured points. A chunk
  that continues a prompt costs what growing the prompts from ``c`` to ``c + n`` tokens adds to
  the module, ``module(b, c+n) - module(b, c)``: exactly the chunk's new tokens and its pairs
  (those of the prompt of ``c + n`` less those of ``c``), plus the module's cost at one token,
  ``module(b, 1)`` (the weights read once and the launches, which the difference cancels), and
  never less than the module at ``(b, n)``. The difference is taken on the module's greatest
  convex minorant along the length (per batch row), so that more context never costs less: the
  measured rows are convex but for a few % of noise, which would otherwise show as a chunk
  priced cheaper after more context. (Dense attention maps a chunk to the prompt length
  with its pairs, :mod:`sim.ops.attention`; the module also holds per-token work, the
  projections, which that length would count for tokens the chunk does not have.) A chunked
  prompt thus costs the whole prompt plus the one-token cost once per extra chunk. vLLM also
  up-projects the cached prefix's latent with ``kv_b_proj`` for every chunk, which whole
  prompts do not need; it is not priced.

The prefill and decode parts of a mixed step each carry their own projections (vLLM runs them
once over all the step's tokens; pricing them apart costs a little more for small parts).

The rows measured DeepSeek-V3's shapes; a model whose MLA shapes differ (hidden size, LoRA
ranks, head dims) is refused with :class:`sim.ops.tables.TableError`, which sends the step time
to the roofline, saying so. Heads per GPU that were not measured (1 to 128, powers of two,
were) are scaled from the nearest measured count by the ratio of heads. A KV dtype or GEMM
dtype the GPU's rows lack falls back (FP8 KV on the L40S: bfloat16 rows; per-tensor FP8 GEMMs:
the block-FP8 rows), and :attr:`MLAAttention.notes` says so. Unmeasured cells and the ends
follow :mod:`sim.ops.tables`.
"""

from __future__ import annotations

import numpy as np

from sim.catalog import ModelSpec
from sim.ops.attention import Attention
from sim.ops.tables import TableError

# The shapes the module rows were measured with (DeepSeek-V3's config.json; R1, V3.1 and
# Kimi-K2 share them).
MEASURED_SHAPES = {"hidden_size": 7168, "q_lora_rank": 1536, "kv_lora_rank": 512,
                   "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
# The latent cache's one "head": kv_lora_rank + qk_rope_head_dim. It only names the slabs
# handed to sim.ops.attention's machinery, which reads no dimension from it.
LATENT_DIM = 576
# GEMM dtype of the step -> GEMM dtype of the module rows.
MODULE_GEMM = {"bfloat16": "bfloat16", "fp8_block": "fp8_block", "fp8": "fp8_block"}


def check_shapes(model: ModelSpec) -> None:
    """TableError naming the first MLA field whose value the module rows did not measure."""
    for field, measured in MEASURED_SHAPES.items():
        value = getattr(model, field)
        if value != measured:
            raise TableError(f"MLA module tables measured DeepSeek-V3's shapes; {model.name} has "
                             f"{field} {value} (measured: {measured})")


def _module_phase(tables: dict, phase: str, heads: int, kv_dtype: str, gemm: str) -> Attention:
    """The module's slabs of one (KV dtype, GEMM dtype) as an :class:`Attention` over (batch,
    seq): the same filling, monotone rule, interpolation and heads scaling as dense attention."""
    prefix, suffix = f"mla/{phase}/h", f"_{kv_dtype}_{gemm}"
    view = {f"{phase}/batch": tables[f"mla/{phase}/batch"], f"{phase}/seq": tables[f"mla/{phase}/seq"]}
    for key, slab in tables.items():
        if key.startswith(prefix) and key.endswith(suffix):
            h = int(key[len(prefix):-len(suffix)])
            view[f"{phase}/h{h}_kv1_d{LATENT_DIM}_{kv_dtype}"] = slab
    return Attention(view, phase, heads, 1, LATENT_DIM, kv_dtype)


def convex_in_seq(grid: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Each row's greatest convex minorant over ``seq`` (the lower hull of its points)."""
    out = np.empty_like(grid, dtype=np.float64)
    for i, row in enumerate(grid):
        hull: list[int] = []
        for j in range(len(seq)):
            # Drop the last hull point while it lies on or above the chord from its neighbour to j.
            while len(hull) >= 2:
                a, b = hull[-2], hull[-1]
                if (row[b] - row[a]) * (seq[j] - seq[a]) >= (row[j] - row[a]) * (seq[b] - seq[a]):
                    hull.pop()
                else:
                    break
            hull.append(j)
        out[i] = np.interp(seq, seq[hull], row[hull])
    return out


def _prefill_like(like: Attention, grid: np.ndarray) -> Attention:
    """``grid``, over the axes of the prefill slab ``like``, interpolated as a prefill slab."""
    view = {"context/batch": np.array(like.batch), "context/seq": np.array(like.seq),
            "context/h1_kv1_d0_grid": grid}
    return Attention(view, "context", 1, 1, 0, "grid")


class MLAAttention:
    """One configuration's MLA attention block, per layer: decodes and prefill chunks."""

    def __init__(self, tables: dict, model: ModelSpec, tp: int, gemm_dtype: str, kv_dtype: str) -> None:
        if "mla/generation/batch" not in tables or "mla/context/batch" not in tables:
            raise TableError("no MLA module table for this GPU (measured: H100, H200, B200, L40S)")
        check_shapes(model)
        self.notes: list[str] = []
        gemm = MODULE_GEMM.get(gemm_dtype)
        if gemm is None:
            gemm = "bfloat16"
            self.notes.append(f"MLA module with {gemm_dtype} projections not measured: bfloat16 rows")
        elif gemm != gemm_dtype:
            self.notes.append(f"MLA module with {gemm_dtype} projections priced from its {gemm} rows")
        if not any(k.startswith("mla/generation/h") and k.endswith(f"_{kv_dtype}_{gemm}") for k in tables):
            self.notes.append(f"MLA module with KV cache dtype {kv_dtype} not measured on this GPU: bfloat16 rows")
            kv_dtype = "bfloat16"
        heads = model.num_attention_heads // tp
        self.decode = _module_phase(tables, "generation", heads, kv_dtype, gemm)
        self.prefill = _module_phase(tables, "context", heads, kv_dtype, gemm)
        if self.decode.how != "measured":
            self.notes.append(f"MLA module {self.decode.how.replace(' / 1 KV heads', '')}")
        self._convex = _prefill_like(self.prefill, convex_in_seq(self.prefill.grid, np.array(self.prefill.seq)))
        self.kv_dtype, self.gemm_dtype = kv_dtype, gemm

    def decode_ms(self, num_decodes: int, context_tokens: float) -> float:
        """One layer: ``num_decodes`` decodes reading ``context_tokens`` KV tokens in all."""
        return self.decode.ms(num_decodes, context_tokens / num_decodes)

    def prefill_ms(self, num_chunks: int, new_tokens: int, pairs: int) -> float:
        """One layer: ``num_chunks`` prefill chunks of ``new_tokens`` in all with ``pairs``
        (query, key) pairs (the module docstring's rule)."""
        n = new_tokens / num_chunks
        own = self.prefill.ms(num_chunks, n)
        c = pairs / num_chunks / n - (n + 1) / 2  # computed tokens before each chunk
        if c < 1:  # whole prompts (up to rounding)
            return own
        grown = self._convex.ms(num_chunks, c + n) - self._convex.ms(num_chunks, c)
        return max(own, grown + self.prefill.ms(num_chunks, 1))
