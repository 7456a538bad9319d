"""How long one engine step takes, operator by operator, from timings measured under vLLM.

A step runs the batch's tokens through the model once. Its time is a sum of named terms, each
from one table (:mod:`sim.ops.tables` says where the tables come from and how they are
interpolated):

=====================  ==============================================  ========================
term                   what it prices                                  from
=====================  ==============================================  ========================
``linear_ms``          qkv, o, gate/up and down GEMMs of every layer,  gemm_perf (by dtype)
                       for the step's tokens (:mod:`sim.ops.gemm`);
                       a MoE layer has no dense gate/up/down
``moe_ms``             MoE layers: router, routed experts, shared      moe_perf, gemm_perf,
                       experts, DP dispatch (:mod:`sim.ops.moe`)       custom_allreduce_perf
``allreduce_ms``       two all-reduces a layer under TP                custom_allreduce_perf
                       (:mod:`sim.ops.allreduce`)
``elementwise_ms``     norms, rotary embedding, SiLU, residual adds,   first principles: bytes
                       the KV-cache write: memory-bound, per token     moved / HBM bandwidth
``lm_head_ms``         the lm_head on the tokens that are sampled      gemm_perf
``decode_attn_ms``     decode attention over the decodes' real         generation_attention_perf
                       context lengths (:mod:`sim.ops.attention`)
``prefill_attn_ms``    prefill-chunk attention, from their (query,     context_attention_perf
                       key) pairs
MLA attention          MLA models (DeepSeek-V3): the whole attention   mla_{context,generation}
                       block, projections included, for decodes and    _module_perf
                       prefill chunks (:mod:`sim.ops.mla`), in place
                       of the two terms above and of qkv/o in
                       ``linear_ms``
``cpu_s``              the engine core's per-step CPU time:            the calibration profile
                       ``overhead_s + per_seq_s * num_seqs``           (fitted end to end)
=====================  ==============================================  ========================

The GPU terms add up (the kernels run one after another on one stream). The engine core's CPU
work runs beside them: vLLM schedules step N+1 while step N runs (asynchronous scheduling, on by
default), so a step lasts ``max(gpu, cpu)``; without it (``async_scheduling: false`` in the
profile, for measurements of older vLLM versions) the CPU
time adds to every step.

Layer kinds. Attention is priced per layer kind: a full-attention layer reads the whole context;
a sliding-window layer (Gemma 3, gpt-oss: ``layer_types``) reads at most ``sliding_window``
tokens of it per request. For decodes that is ``min(C / B, window)`` per request (the mean
context of the ``B`` decodes, capped: exact when they are alike, an upper bound otherwise). For a
prefill priced as ``b`` prompts of ``s`` tokens, a sliding layer costs the full layer's time
scaled by its share of (query, key) pairs, ``(s w - w(w - 1)/2) / (s(s + 1)/2)`` for ``s > w``.
gpt-oss's attention sinks (one learned logit per head added to the softmax) cost nothing
measurable next to the attention itself and are not priced. Qwen3's ``head_dim`` (and QK-norm's
per-head RMSNorm, memory-bound, folded into ``elementwise_ms``) come from the config. MLA
(DeepSeek) is not priced here.

Everything that depends only on the configuration is resolved once, in ``__init__``, into
curves over the number of tokens; a step then costs a few interpolations, and a run of
identical decode steps is priced with numpy in one call (:meth:`decode_run`).
"""

from __future__ import annotations

import numpy as np

from sim.catalog import GPUSpec, ModelSpec
from sim.config import resolve_scheduler_limits
from sim.cudagraphs import largest_capture_size
from sim.ops.allreduce import allreduce_call_ms, allreduce_ms
from sim.ops.attention import Attention, prefill_equivalent_length
from sim.ops.gemm import block_fp8_in_graphs, linear_layers_ms, lm_head_ms
from sim.ops.mla import MLAAttention
from sim.ops.moe import MoELayer
from sim.ops.tables import AIC_SYSTEMS, interp, interp_array, monotone
from sim.steptime import host_and_gpu_s

def elementwise_bytes_per_token(model: ModelSpec, tp: int, act_bytes: int, kv_bytes: int,
                                dense_mlp: bool = True) -> int:
    """Bytes one token moves through one layer's memory-bound kernels on one GPU: two fused
    residual-add + RMSNorms (read input and residual, write both: 4h each), the rotary embedding
    (read and write q and k), the KV-cache write, and SiLU-and-mul (read 2i, write i) of a dense
    MLP (a MoE layer's activation runs inside the fused MoE kernel, which the table measures)."""
    h, hd = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads // tp, model.kv_heads_per_rank(tp)
    inter = -(-model.intermediate_size // tp) if dense_mlp else 0
    if model.is_mla:  # MLA: the rotary embedding and the KV-cache write are in its module (sim.ops.mla)
        return (8 * h + 3 * inter) * act_bytes
    return (8 * h + 2 * (q + kv) * hd + 3 * inter) * act_bytes + 2 * kv * hd * kv_bytes


def sliding_pair_share(s, window: int):
    """A sliding-window layer's share of a causal prompt's (query, key) pairs, for prompts of
    ``s`` tokens (a float or an array): 1 up to the window."""
    s = np.maximum(np.asarray(s, dtype=np.float64), 1.0)
    share = (s * window - window * (window - 1) / 2) / (s * (s + 1) / 2)
    return np.where(s > window, share, 1.0)


def gemm_table_dtype(tables: dict, precision) -> tuple[str, list[str]]:
    """The GEMM table a precision reads, and a note where it is not the one vLLM runs.

    float16 runs vLLM's bfloat16 kernels at the same speed. Marlin's weight-only FP8 (GPUs
    without FP8 tensor cores) runs 16-bit GEMMs over dequantized weights: priced from the
    bfloat16 table. A dtype the GPU's tables lack falls back to bfloat16, and says so."""
    want = precision.gemm_dtype if precision is not None else "bfloat16"
    notes: list[str] = []
    if want in ("float16", "float32"):
        if want == "float32":
            notes.append("float32 GEMMs are not measured: priced as bfloat16")
        want = "bfloat16"
    if want == "fp8_marlin":
        notes.append("Marlin weight-only FP8 priced as bfloat16 GEMMs")
        want = "bfloat16"
    if f"gemm/{want}" not in tables:
        notes.append(f"no {want} GEMM table for this GPU: priced as bfloat16")
        want = "bfloat16"
    if want == "fp8_block" and block_fp8_in_graphs(tables):
        notes.append("block FP8 GEMMs: the eagerly timed table's launch floor left out (vLLM runs them in "
                     "CUDA graphs; sim.ops.gemm)")
    return want, notes


class OperatorStepModel:
    """Step times for one (model, GPU, TP, DP, EP, precision) from the GPU's measured operator
    tables. Under data parallelism it prices one DP rank's steps (each rank runs its own)."""

    def __init__(self, tables: dict, model: ModelSpec, gpu: GPUSpec, tensor_parallel_size: int,
                 coefficients, *, precision=None, multiplier: float = 1.0, data_parallel_size: int = 1,
                 enable_expert_parallel: bool = False, all2all_backend: str = "allgather_reducescatter",
                 cudagraph_max_tokens: int | None = None) -> None:
        tp = tensor_parallel_size
        if cudagraph_max_tokens is None:  # vLLM's default capture sizes for this model and GPU
            tokens, seqs = resolve_scheduler_limits(gpu.memory_bytes, gpu.name, "serve")
            cudagraph_max_tokens = largest_capture_size(model, gpu, seqs, tokens)
        # Steps up to this many tokens replay a CUDA graph; larger ones run eagerly (sim.cudagraphs).
        self.cudagraph_max_tokens = cudagraph_max_tokens
        dp = data_parallel_size
        self.model, self.gpu, self.tp, self.coefficients = model, gpu, tp, coefficients
        self.dp = dp
        self.multiplier = multiplier
        gemm_dtype, notes = gemm_table_dtype(tables, precision)
        kv_dtype = precision.kv_table_dtype if precision is not None else "bfloat16"
        kv_bytes = precision.kv_bytes_per_element if precision is not None else model.dtype_bytes
        act_bytes = precision.activation_bytes if precision is not None else model.dtype_bytes
        lm_head_dtype = gemm_dtype if precision is not None and precision.lm_head_quantized else "bfloat16"
        m = tables["gemm/m"].astype(np.float64)
        self._m = m.tolist()
        L = model.num_hidden_layers
        linear = linear_layers_ms(tables, model, tp, gemm_dtype)
        n_moe = len(model.moe_layers)
        per_token = elementwise_bytes_per_token(model, tp, act_bytes, kv_bytes)
        if n_moe:
            moe = MoELayer(tables, model, tp, dp, enable_expert_parallel, precision, gemm_dtype, m,
                           cudagraph_max_tokens, all2all_backend)
            moe_ms = moe.total_ms * n_moe
            notes.extend(moe.notes)
            notes.insert(0, moe.describe())
            per_token = (per_token * (L - n_moe)
                         + elementwise_bytes_per_token(model, tp, act_bytes, kv_bytes, dense_mlp=False) * n_moe) / L
        else:
            moe_ms = np.zeros(len(m))
        if n_moe and dp > 1:  # a MoE layer's output is reduce-scattered by its combine, not all-reduced
            one = allreduce_call_ms(tables, tp, m * model.hidden_size, m, cudagraph_max_tokens)
            comm = one * (2 * L - n_moe)
        else:
            comm = allreduce_ms(tables, tp, model.hidden_size, L, m, cudagraph_max_tokens)
        elementwise = m * per_token * L / gpu.hbm_bandwidth_bytes_per_s * 1e3
        self.terms_ms = {"linear_ms": linear, "moe_ms": moe_ms, "allreduce_ms": comm, "elementwise_ms": elementwise}
        # More tokens never take less time (the tables carry tile effects and noise: see monotone).
        self._tokens_ms = monotone(linear + moe_ms + comm + elementwise).tolist()
        self._lm_head_ms = monotone(lm_head_ms(tables, model, tp, lm_head_dtype)).tolist()
        q, kv = model.num_attention_heads // tp, model.kv_heads_per_rank(tp)
        if model.is_mla:  # MLA hook: the attention block, projections included, from sim.ops.mla
            self.mla = MLAAttention(tables, model, tp, gemm_dtype, kv_dtype)
            self.decode = self.mla.decode
            notes.extend(self.mla.notes)
        else:
            self.mla = None
            self.decode = Attention(tables, "generation", q, kv, model.head_dim, kv_dtype)
            self.prefill = Attention(tables, "context", q, kv, model.head_dim, kv_dtype)
            if self.decode.how != "measured":
                notes.append(f"attention {self.decode.how}")
        # Attention by layer kind: full layers read the whole context, sliding ones a window.
        kinds = model.layer_types or ("full_attention",) * L
        self.sliding = sum(1 for k in kinds if k == "sliding_attention") if model.sliding_window else 0
        self.window = model.sliding_window or 0
        self.layers = L - self.sliding  # full-attention layers
        graphs = f"CUDA graphs up to {cudagraph_max_tokens} tokens" if cudagraph_max_tokens else "no CUDA graphs"
        self.source = (f"operator tables: {gpu.name} ({AIC_SYSTEMS[gpu.name]}, aiconfigurator-core 0.12.0), "
                       f"GEMM {gemm_dtype}, KV {kv_dtype}, {graphs}" + "".join(f"; {n}" for n in notes))

    # -- one step ---------------------------------------------------------------------------
    def gpu_ms(self, b) -> float:
        m = self._m
        t = interp(b.num_tokens, m, self._tokens_ms)
        if b.num_sampled:
            t += interp(b.num_sampled, m, self._lm_head_ms)
        if b.num_decodes:
            ctx = b.decode_context_tokens / b.num_decodes
            t += self.layers * self.decode.ms(b.num_decodes, ctx)
            if self.sliding:
                t += self.sliding * self.decode.ms(b.num_decodes, min(ctx, self.window))
        if b.num_prefills and self.mla is not None:
            t += self.layers * self.mla.prefill_ms(b.num_prefills, b.num_tokens - b.num_decodes, b.attn_pairs)
        elif b.num_prefills:
            s = prefill_equivalent_length(b.num_prefills, b.attn_pairs)
            full = self.prefill.ms(b.num_prefills, s)
            t += self.layers * full
            if self.sliding:
                t += self.sliding * full * float(sliding_pair_share(s, self.window))
        return t

    def step_time(self, b) -> float:
        c = self.coefficients
        return host_and_gpu_s(c, self.gpu_ms(b) * 1e-3, b.num_seqs) * self.multiplier

    def decode_run(self, num_seqs: int, context_tokens: int, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` decode steps of ``num_seqs`` requests, the first reading
        ``context_tokens`` of KV; each later step reads ``num_seqs`` more."""
        c = self.coefficients
        m = self._m
        fixed = interp(num_seqs, m, self._tokens_ms) + interp(num_seqs, m, self._lm_head_ms)
        ctx = context_tokens + num_seqs * np.arange(num_steps, dtype=np.float64)
        attn = self.layers * self.decode.ms_over_seq(num_seqs, ctx / num_seqs)
        if self.sliding:
            attn = attn + self.sliding * self.decode.ms_over_seq(num_seqs, np.minimum(ctx / num_seqs, self.window))
        return host_and_gpu_s(c, (fixed + attn) * 1e-3, num_seqs) * self.multiplier
