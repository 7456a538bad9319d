"""The linear layers of one step, from ``gemm_perf.parquet`` (vLLM's GEMM kernels, measured).

Table: ``gemm/<dtype>[m, n, k]``, the latency of one ``(m x k) @ (k x n)`` GEMM, where ``m`` is
the number of tokens in the step. Per decoder layer, on one of ``tp`` GPUs, vLLM runs four:

==============  =========================  ===================  ==========================
layer           n (output columns)         k (input columns)    vLLM class
==============  =========================  ===================  ==========================
qkv_proj        (q_heads + 2 kv_heads)/tp  hidden               QKVParallelLinear
                x head_dim
o_proj          hidden                     q_heads/tp x hd      RowParallelLinear
gate_up_proj    2 x intermediate/tp        hidden               MergedColumnParallelLinear
down_proj       hidden                     intermediate/tp      RowParallelLinear
==============  =========================  ===================  ==========================

OPT has one up projection (``fc1``) instead of gate and up. MLA models (DeepSeek-V3) have
only the MLP rows here: their attention projections are priced with the attention, from the
measured MLA module (:mod:`sim.ops.mla`). Per step the ``lm_head`` runs once
on the sampled tokens only (``m`` = requests that sample): ``n`` = vocabulary/tp, ``k`` = hidden.

Shapes between measured ``n`` and ``k`` are interpolated bilinearly; the rule at the ends is
:mod:`sim.ops.tables`'. The result is a curve over the table's ``m`` axis, resolved once per
configuration.

**Block-scaled FP8 and CUDA graphs.** aiconfigurator's collector times every GEMM dtype inside a
CUDA graph except block-scaled FP8 (``collector/vllm/collect_gemm.py``:
``use_cuda_graph=gemm_type != "fp8_block"``). Timed eagerly, a small GEMM takes as long as the
host needs to launch it: the ``fp8_block`` table is flat at about 60 us (85 us from 32 tokens) on
H100 and H200 and 180-280 us on B200 below a few thousand tokens, for every shape, where the
per-tensor FP8 GEMM of the same shape takes 8-25 us. vLLM runs these GEMMs inside its CUDA
graphs, where no launch is paid per kernel, so that floor is not GPU time. The block-scaled GEMM
is therefore priced as the per-tensor FP8 curve (measured in CUDA graphs) times the ratio of
the two at the table's largest ``m`` (32,768 tokens in the shipped tables, where launching is a
negligible share: 1.02 for a 4608 x 4096 GEMM on H200), and never above the eager measurement itself
(:func:`block_fp8_over_m`). Where a GPU has no per-tensor table the eager one is used as it is.
Steps larger than vLLM's largest captured graph (by default 512 tokens, 1,024 on B200 and for
gpt-oss: :mod:`sim.cudagraphs`) run eagerly; there the host issues kernels ahead of a GPU that is
busy for longer, and ServeLab prices no launch time for any operator.
"""

from __future__ import annotations

import numpy as np

from sim.catalog import ModelSpec
from sim.ops.tables import TableError, bracket


def gemm_over_m(tables: dict, dtype: str, n: int, k: int) -> np.ndarray:
    """Latency (ms) of an ``n x k`` GEMM at every ``m`` of the table, as vLLM runs it (block-scaled
    FP8: :func:`block_fp8_over_m`)."""
    if dtype == "fp8_block" and block_fp8_in_graphs(tables):
        return block_fp8_over_m(tables, n, k)
    return measured_over_m(tables, dtype, n, k)


def block_fp8_in_graphs(tables: dict) -> bool:
    """Whether block-scaled FP8 GEMMs are priced as in CUDA graphs: the GPU has the per-tensor
    FP8 table that :func:`block_fp8_over_m` follows."""
    return "gemm/fp8" in tables


def block_fp8_over_m(tables: dict, n: int, k: int) -> np.ndarray:
    """A block-scaled FP8 GEMM inside vLLM's CUDA graphs: the per-tensor FP8 curve scaled by the
    block-scaled/per-tensor ratio at the largest ``m``, capped by the eager measurement (see the
    module docstring)."""
    eager = measured_over_m(tables, "fp8_block", n, k)
    per_tensor = measured_over_m(tables, "fp8", n, k)
    ratio = max(1.0, float(eager[-1] / per_tensor[-1]))
    return np.minimum(eager, per_tensor * ratio)


def measured_over_m(tables: dict, dtype: str, n: int, k: int) -> np.ndarray:
    """The table's own latency (ms) of an ``n x k`` GEMM at every ``m``, interpolated in n and k."""
    key = f"gemm/{dtype}"
    if key not in tables:
        raise TableError(f"no GEMM table for dtype {dtype!r} (have: "
                         f"{', '.join(sorted(k[5:] for k in tables if k.startswith('gemm/') and k[5:] not in 'mnk'))})")
    grid = tables[key].astype(np.float64)
    ns, ks = tables["gemm/n"].tolist(), tables["gemm/k"].tolist()
    n0, n1, wn = bracket(n, ns)
    k0, k1, wk = bracket(k, ks)

    def at(ni: int, ki: int) -> np.ndarray:
        return grid[:, ni, ki]

    out = ((1 - wn) * (1 - wk) * at(n0, k0) + wn * (1 - wk) * at(n1, k0)
           + (1 - wn) * wk * at(n0, k1) + wn * wk * at(n1, k1))
    # Beyond the measured n or k: the work grows linearly.
    if n > ns[-1]:
        out = out * n / ns[-1]
    if k > ks[-1]:
        out = out * k / ks[-1]
    return out


def layer_shapes(model: ModelSpec, tp: int) -> list[tuple[str, int, int]]:
    """(name, n, k) of the GEMMs of one decoder layer on one GPU."""
    h, hd = model.hidden_size, model.head_dim
    q = model.num_attention_heads // tp
    kv = model.kv_heads_per_rank(tp)
    inter = -(-model.intermediate_size // tp)
    up = inter if model.architecture == "opt" else 2 * inter
    mlp = [("gate_up_proj", up, h), ("down_proj", h, inter)]
    if model.is_mla:  # MLA's projections are inside its measured module (sim.ops.mla)
        return mlp
    return [("qkv_proj", (q + 2 * kv) * hd, h), ("o_proj", h, q * hd)] + mlp


def linear_layers_ms(tables: dict, model: ModelSpec, tp: int, dtype: str) -> np.ndarray:
    """All decoder layers' GEMMs of one step, in ms, at every ``m`` of the table. A MoE model's
    MoE layers have no dense MLP: only their attention projections are counted here (their
    experts are :mod:`sim.ops.moe`'s)."""
    shapes = layer_shapes(model, tp)
    if not model.moe_layers:
        per_layer = sum(gemm_over_m(tables, dtype, n, k) for _, n, k in shapes)
        return per_layer * model.num_hidden_layers
    attention = sum(gemm_over_m(tables, dtype, n, k) for name, n, k in shapes if name in ("qkv_proj", "o_proj"))
    mlp = sum(gemm_over_m(tables, dtype, n, k) for name, n, k in shapes if name not in ("qkv_proj", "o_proj"))
    dense_layers = model.num_hidden_layers - len(model.moe_layers)
    return attention * model.num_hidden_layers + mlp * dense_layers


def lm_head_ms(tables: dict, model: ModelSpec, tp: int, dtype: str) -> np.ndarray:
    """The ``lm_head`` GEMM at every ``m`` (sampled tokens) of the table, in ms. vLLM keeps it in
    the model's dtype, also when the layers are quantized."""
    vocab = -(-model.vocab_size // 64) * 64 // tp if tp > 1 else model.vocab_size
    return gemm_over_m(tables, dtype, vocab, model.hidden_size)
