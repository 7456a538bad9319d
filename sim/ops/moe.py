"""One Mixture-of-Experts layer of a step, from vLLM's measured fused-MoE kernels.

A MoE layer (Mixtral, Qwen3-MoE, gpt-oss, DeepSeek-V3's routed layers) replaces the dense MLP
with four terms, each from one table:

=================  ===================================================  ========================
term               what it prices                                       from
=================  ===================================================  ========================
router             ``hidden -> num_experts`` GEMM on every token, in    gemm_perf, bfloat16
                   the model dtype (vLLM never quantizes the gate)
routed experts     each token's top-k experts: vLLM's fused MoE kernel  moe_perf (by dtype,
                   (routing, gate/up, activation, down, weighted sum)   ``moe_tp``, ``moe_ep``)
shared experts     DeepSeek: a dense SwiGLU of ``n_shared x             gemm_perf (layer dtype)
                   moe_intermediate`` beside the routed ones
dispatch/combine   data parallelism: the DP ranks' tokens gathered      custom_allreduce_perf
                   before the experts and reduce-scattered after them   (see below)
=================  ===================================================  ========================

**Which GPUs hold which experts** (vLLM 0.33, ``FusedMoEParallelConfig.make``): the MoE layer
is sharded over all ``dp x tp`` GPUs. Without ``--enable-expert-parallel`` every GPU holds every
expert, ``1/(dp x tp)`` of each one's intermediate size (``moe_tp = dp x tp``, ``moe_ep = 1``);
with it, each GPU holds whole experts, ``num_experts / (dp x tp)`` of them (``moe_tp = 1``,
``moe_ep = dp x tp``). The table is measured at exactly these (``moe_tp``, ``moe_ep``) pairs.

**Tokens.** Under tensor parallelism every GPU of a DP rank sees all the step's tokens. Under
data parallelism the MoE layer runs over every DP rank's tokens at once (vLLM's DP ranks step
together); this model assumes the ranks carry steps of the same size, so the experts see
``dp x tokens``.

**Communication.** With ``dp = 1`` the MoE output is summed over the TP group by the same
all-reduce a dense MLP ends with (:mod:`sim.ops.allreduce`, counted there), with or without
expert parallelism. With ``dp > 1`` vLLM dispatches tokens with its default all2all backend,
``allgather_reducescatter`` (``ParallelConfig.all2all_backend``; ``--all2all-backend`` picks
DeepEP instead): an all-gather of every rank's hidden states before the experts and a
reduce-scatter after. Together they move the bytes of one all-reduce of the
gathered tokens over the ``dp x tp`` GPUs (an all-reduce is a reduce-scatter followed by an
all-gather), but as two calls: each is priced as an all-reduce of half those bytes, from the
all-reduce table (NCCL's own all-gather is not measured under vLLM; the custom all-reduce's
latency stands in for each call's). With ``all2all_backend`` ``deepep_high_throughput`` or
``deepep_low_latency`` (vLLM uses them only with expert parallelism and ``dp > 1``), dispatch and
combine come from DeepEP's measured kernels (``moe_a2a_perf.parquet``: H100, H200 and B200, EP 8
on one node, hidden 3072 to 7168), at the tokens each rank sends; a shape not measured is scaled
from the nearest by ``hidden x top-k`` (the bytes sent); another EP size, or a GPU without the
table, falls back to the all-gather pricing and says so.

**Shapes the table lacks.** The derived tables keep the catalog's MoE shapes
(:data:`lab.calibrate.aiconfigurator.MOE_SLABS`). A (``moe_tp``, ``moe_ep``) pair not measured is
taken from the nearest measured pair of the same kind (TP-sharded or expert-parallel) and scaled
by the ratio of GPUs (each GPU's share of the expert work). A shape not measured is taken from the
nearest measured shape (in log of hidden, intermediate, top-k and experts) and scaled by the ratio
of ``hidden x intermediate x top-k`` (the expert FLOPs a token needs). A dtype not measured for
the shape falls back to one that is, and says so. The source line names every such step.
"""

from __future__ import annotations

import math

import numpy as np

from sim.errors import ConfigError
from sim.ops.allreduce import allreduce_call_ms
from sim.ops.gemm import gemm_over_m
from sim.ops.tables import TableError, interp_array, monotone
from sim.parallel import moe_sharding

# The MoE table's dtype for each way vLLM stores the experts' weights.
FALLBACK_ORDER = ("bfloat16", "fp8_block", "fp8", "w4a16_mxfp4", "int4_wo")
# vLLM's --all2all-backend values ServeLab prices, and the DeepEP table each reads.
ALL2ALL_BACKENDS = {"allgather_reducescatter": None, "deepep_high_throughput": "deepep_ht",
                    "deepep_low_latency": "deepep_ll"}
# Every value vLLM 0.33's --all2all-backend takes (vllm/config/parallel.py, All2AllBackend).
VLLM_ALL2ALL_BACKENDS = ("naive", "pplx", "deepep_high_throughput", "deepep_low_latency", "deepep_v2",
                         "mori_high_throughput", "mori_low_latency", "moonep", "nixl_ep", "allgather_reducescatter",
                         "flashinfer_all2allv", "flashinfer_nvlink_two_sided", "flashinfer_nvlink_one_sided",
                         "passthrough")


def check_all2all_backend(value: str) -> None:
    """Refuse an ``--all2all-backend`` ServeLab does not price, in one line (ConfigError)."""
    if value not in ALL2ALL_BACKENDS:
        known = "one of vLLM's" if value in VLLM_ALL2ALL_BACKENDS else "not one of vLLM's"
        raise ConfigError(f"--all2all-backend: {value!r} is {known} backends, and ServeLab prices "
                          f"only {', '.join(ALL2ALL_BACKENDS)}")


def moe_parallel(num_experts: int, tp: int, dp: int, enable_expert_parallel: bool) -> tuple[int, int]:
    """(moe_tp, moe_ep) as vLLM 0.33 shards the experts (:func:`sim.parallel.moe_sharding`)."""
    sharding = moe_sharding(num_experts, tp * dp, enable_expert_parallel)
    if sharding.expert_parallel_size > num_experts:
        raise ConfigError(f"--enable-expert-parallel: expert-parallel size {sharding.expert_parallel_size} (tensor x "
                          f"data parallel) is larger than the model's {num_experts} experts; use at most "
                          f"{num_experts} GPUs or leave EP off")
    return sharding.tensor_parallel_size, sharding.expert_parallel_size


def moe_table_dtype(precision) -> str:
    """The MoE table a precision's experts read: bfloat16 for 16-bit experts and for FP8 experts
    on GPUs without FP8 tensor cores (vLLM's Marlin kernel dequantizes them to 16 bits), fp8_block
    for block-scaled FP8 checkpoints, fp8 for per-tensor FP8 (online or ModelOpt), w4a16_mxfp4 for
    gpt-oss's MXFP4 experts, int4_wo for 4-bit AWQ/GPTQ experts (measured for one shape only,
    Kimi-K2's: hidden 7168, intermediate 2048, top-8 of 384, which no catalog model has; other
    shapes fall back to bfloat16 and say so)."""
    if precision is None or precision.quantization is None:
        return "bfloat16"
    if precision.quantization == "mxfp4":
        return "w4a16_mxfp4"
    if precision.quantization in ("awq", "gptq"):  # weight-only INT4 (INT8 has no MoE table)
        return "int4_wo" if getattr(precision, "weight_bits", 4) == 4 else "bfloat16"
    if precision.gemm_dtype == "fp8_marlin":  # weight-only FP8 on GPUs without FP8 tensor cores
        return "bfloat16"
    if precision.weight_scheme == "block":
        return "fp8_block"
    return "fp8"


def _slabs(tables: dict) -> dict[tuple[str, int, int, int, int], str]:
    """(dtype, hidden, inter, topk, experts) -> key of every MoE slab in the tables."""
    out = {}
    for k in tables:
        if k.startswith("moe/") and not k.endswith("_par") and k != "moe/num_tokens":
            _, dtype, shape = k.split("/")
            h, i, t, e = (int(p[1:]) for p in shape.split("_"))
            out[(dtype, h, i, t, e)] = k
    return out


def find_slab(tables: dict, dtype: str, hidden: int, inter: int, topk: int, experts: int
              ) -> tuple[str, float, list[str]]:
    """(key, scale, notes): the slab that prices this shape and dtype."""
    slabs = _slabs(tables)
    if not slabs:
        raise TableError("no MoE table for this GPU")
    notes: list[str] = []
    shape = (hidden, inter, topk, experts)
    if (dtype, *shape) in slabs:
        return slabs[(dtype, *shape)], 1.0, notes
    same_shape = [d for d in FALLBACK_ORDER if (d, *shape) in slabs]
    if same_shape:
        notes.append(f"no {dtype} MoE table for this shape: priced as {same_shape[0]}")
        return slabs[(same_shape[0], *shape)], 1.0, notes
    candidates = [k for k in slabs if k[0] == dtype] or list(slabs)

    def distance(k) -> float:
        return sum(abs(math.log(a / b)) for a, b in zip(k[1:], shape))

    best = min(candidates, key=lambda k: (distance(k), FALLBACK_ORDER.index(k[0]) if k[0] in FALLBACK_ORDER else 9))
    scale = hidden * inter * topk / (best[1] * best[2] * best[3])
    notes.append(f"MoE ({dtype}) scaled from the measured {best[0]} shape hidden {best[1]}, intermediate {best[2]}, "
                 f"top-{best[3]} of {best[4]}")
    return slabs[best], scale, notes


def routed_experts_ms(tables: dict, dtype: str, hidden: int, inter: int, topk: int, experts: int,
                      moe_tp: int, moe_ep: int, tokens: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The fused MoE kernel of one layer on one GPU, in ms, at every value of ``tokens``."""
    key, scale, notes = find_slab(tables, dtype, hidden, inter, topk, experts)
    grid = tables[key].astype(np.float64)
    pairs = [tuple(p) for p in tables[key + "_par"].tolist()]
    if (moe_tp, moe_ep) in pairs:
        row = grid[pairs.index((moe_tp, moe_ep))]
    else:
        want = moe_tp * moe_ep
        kind = [p for p in pairs if (p[1] == 1) == (moe_ep == 1)] or pairs
        near = min(kind, key=lambda p: abs(math.log(p[0] * p[1] / want)))
        row = grid[pairs.index(near)] * (near[0] * near[1] / want)
        notes.append(f"MoE at moe_tp {moe_tp} / moe_ep {moe_ep} scaled from the measured {near[0]} / {near[1]}")
    axis = tables["moe/num_tokens"].astype(np.float64)
    return scale * interp_array(tokens, axis, monotone(row)), notes


class MoELayer:
    """One MoE layer's token-dependent time for one configuration, as curves over ``m`` (the
    step's tokens on this DP rank: the GEMM table's ``m`` axis), resolved once."""

    def __init__(self, tables: dict, model, tp: int, dp: int, enable_expert_parallel: bool, precision,
                 gemm_dtype: str, m: np.ndarray, cudagraph_max_tokens: int,
                 all2all_backend: str = "allgather_reducescatter") -> None:
        check_all2all_backend(all2all_backend)
        self.moe_tp, self.moe_ep = moe_parallel(model.num_experts, tp, dp, enable_expert_parallel)
        self.dtype = moe_table_dtype(precision)
        h = model.hidden_size
        tokens = dp * m
        # The router (and the shared experts) run on this rank's tokens, before the gather.
        self.router_ms = gemm_over_m(tables, "bfloat16", model.num_experts, h)
        experts, self.notes = routed_experts_ms(tables, self.dtype, h, model.moe_intermediate_size,
                                                model.experts_per_token, model.num_experts,
                                                self.moe_tp, self.moe_ep, tokens)
        self.experts_ms = experts
        self.shared_ms = np.zeros(len(m))
        if model.num_shared_experts:
            shared = -(-model.num_shared_experts * model.moe_intermediate_size // tp)
            self.shared_ms = gemm_over_m(tables, gemm_dtype, 2 * shared, h) + gemm_over_m(tables, gemm_dtype, h, shared)
        self.dispatch_ms = np.zeros(len(m))
        self.all2all = None
        if dp > 1:
            deepep = ALL2ALL_BACKENDS[all2all_backend] if self.moe_ep > 1 else None
            if deepep is not None:
                self.dispatch_ms = self._deepep(tables, deepep, model, m)
            if self.dispatch_ms is None or deepep is None:
                # An all-gather and a reduce-scatter: two collectives, each moving half an all-reduce's bytes.
                self.dispatch_ms = 2 * allreduce_call_ms(tables, dp * tp, tokens * h / 2, m, cudagraph_max_tokens)
                self.all2all = "allgather_reducescatter"
            else:
                self.all2all = all2all_backend

    def _deepep(self, tables: dict, backend: str, model, m: np.ndarray) -> np.ndarray | None:
        """DeepEP dispatch + combine (ms) at ``m`` tokens a rank, or None (with a note) where the
        tables cannot price it."""
        prefix = f"a2a/{backend}/dispatch/"
        measured = []
        for k in tables:
            if k.startswith(prefix):
                h, t, e, ep = (int(part.lstrip("hkep")) for part in k[len(prefix):].split("_"))
                measured.append((h, t, e, ep))
        same_ep = [x for x in measured if x[3] == self.moe_ep]
        if not same_ep:
            eps = sorted({x[3] for x in measured})
            self.notes.append(f"DeepEP {backend} not measured at EP {self.moe_ep} on this GPU"
                              + (f" (measured: EP {', '.join(map(str, eps))})" if eps else "")
                              + ": priced as allgather_reducescatter")
            return None
        want = (model.hidden_size, model.experts_per_token, model.num_experts)
        near = min(same_ep, key=lambda x: sum(abs(math.log(a / b)) for a, b in zip(x[:3], want)))
        scale = want[0] * want[1] / (near[0] * near[1])
        if near[:3] != want:
            self.notes.append(f"DeepEP {backend} scaled from the measured hidden {near[0]}, top-{near[1]} of {near[2]}")
        axis = tables[f"a2a/{backend}/num_tokens"].astype(np.float64)
        shape = f"h{near[0]}_k{near[1]}_e{near[2]}_ep{near[3]}"
        both = sum(interp_array(m, axis, monotone(
                       tables[f"a2a/{backend}/{phase}/{shape}"].astype(np.float64))) for phase in ("dispatch", "combine"))
        return scale * both

    @property
    def total_ms(self) -> np.ndarray:
        return self.router_ms + self.experts_ms + self.shared_ms + self.dispatch_ms

    def describe(self) -> str:
        how = "expert parallel" if self.moe_ep > 1 else "TP-sharded experts"
        out = f"MoE {self.dtype}, moe_tp {self.moe_tp} / moe_ep {self.moe_ep} ({how})"
        return out + (f", all2all {self.all2all}" if self.all2all else "")
