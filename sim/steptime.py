"""How long one engine step takes: which model prices it, and the roofline fallback.

:func:`make_step_model` picks the model. Where the GPU has measured operator tables
(``sim/data/operators/``: H100, H200, A100-80GB, L40S, B200), each step is priced operator by
operator from timings measured under vLLM (:mod:`sim.ops.model`). Elsewhere, the roofline below
stands in, and its ``source`` says so (the start-up lines and ``--json`` print it). MoE models
need the tables (the roofline has no MoE layer); MLA models are refused by both.

The roofline. A step runs the batch's tokens through the model once. Its time is

    overhead + per_seq * num_seqs
    + max(memory time, compute time)          (the GPU overlaps the two)
    + tensor-parallel all-reduce time

- memory time: the weights are read once per step, whatever the batch; every token attends
  to its whole context, so the KV cache of each context token is read once per step;
- compute time: 2 FLOPs per weight per token in the linear layers (the lm_head only for the
  tokens that are sampled), plus QK^T and PV of prefill tokens against their context;
- all-reduce: two per layer under tensor parallelism (after attention and after the MLP),
  each a ring all-reduce of the step's hidden states over NVLink.

Each term is divided by an efficiency (a fraction of the datasheet bandwidth or FLOP/s) that a
calibration profile sets (``sim/data/calibration.yaml``, fitted to real vLLM measurements;
see :mod:`sim.calibration`). Everything is linear in the batch's totals, so the constants are
worked out once and a step costs a handful of float operations. :meth:`RooflineStepModel.decode_run`
prices a run of identical decode steps at once, with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.catalog import GPUSpec, ModelSpec
from sim.errors import ConfigError


@dataclass(frozen=True, slots=True)
class StepCoefficients:
    """Efficiencies of the roofline terms. Fractions in (0, 1], times in seconds."""

    overhead_s: float = 0.004  # per step: scheduling, kernel launches, sampling, detokenizing
    per_seq_s: float = 2.0e-5  # per request in the batch: input preparation and sampling
    weight_bw_eff: float = 0.85  # of HBM bandwidth, streaming the weights
    kv_bw_eff: float = 0.6  # of HBM bandwidth, reading the KV cache in attention
    matmul_eff: float = 0.6  # of dense fp16 FLOP/s, linear layers
    attn_eff: float = 0.4  # of dense fp16 FLOP/s, prefill attention
    comm_bw_eff: float = 0.7  # of NVLink bandwidth (one direction), all-reduce
    comm_latency_s: float = 1.0e-5  # per all-reduce call
    # Which model prices a step: "operators" (measured tables, where the GPU has them) or
    # "roofline" (the efficiencies above). Profiles fitted to the roofline say "roofline".
    step_model: str = "operators"
    # vLLM schedules step N+1 while step N runs (on by default since vLLM 0.14; older versions,
    # which the published points and most real runs here measured, did not): the CPU time then
    # hides behind the GPU's, and a new request joins a step later (sim.engine: Engine._take_in).
    async_scheduling: bool = True

    def __post_init__(self) -> None:
        if self.step_model not in ("operators", "roofline"):
            raise ValueError(f"step_model(={self.step_model!r}) must be 'operators' or 'roofline'")
        if not isinstance(self.async_scheduling, bool):
            raise ValueError(f"async_scheduling(={self.async_scheduling!r}) must be true or false")
        for name in ("weight_bw_eff", "kv_bw_eff", "matmul_eff", "attn_eff", "comm_bw_eff"):
            v = getattr(self, name)
            if not 0 < v <= 1.5:
                raise ValueError(f"{name}(={v}) must be a fraction in (0, 1.5]")
        for name in ("overhead_s", "per_seq_s", "comm_latency_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}(={getattr(self, name)}) must be >= 0")


def host_and_gpu_s(c: StepCoefficients, gpu_s, num_seqs: int):
    """A step's time from its GPU time and the engine core's CPU time.

    ``per_seq_s * num_seqs`` is the engine core's work to schedule the step and prepare its
    inputs. Under asynchronous scheduling (vLLM's default) it runs while the previous step is on
    the GPU, so only the longer of the two counts; without it, the two add up. ``overhead_s`` is
    the per-step time that nothing hides (sampling, handing the outputs back, launch gaps).
    """
    cpu_s = c.per_seq_s * num_seqs
    if not c.async_scheduling:
        return c.overhead_s + gpu_s + cpu_s
    if isinstance(gpu_s, float):
        return c.overhead_s + (gpu_s if gpu_s > cpu_s else cpu_s)
    return c.overhead_s + np.maximum(gpu_s, cpu_s)


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What one step computes, in totals over its requests."""

    num_tokens: int  # tokens computed (prefill chunks + decodes)
    num_seqs: int  # requests in the batch
    num_sampled: int  # requests that sample a token this step
    context_tokens: int  # sum over computed tokens' requests of the KV read: decodes read their context
    attn_pairs: int  # (query, key) pairs of prefill attention
    num_prefills: int = 0  # prefill chunks (requests computing more than one token)
    num_decodes: int = 0  # requests computing one token
    decode_context_tokens: int = 0  # KV the decodes read, their new tokens included


class RooflineStepModel:
    """The fallback: a roofline with calibrated efficiencies (see the module docstring)."""

    def __init__(
        self, model: ModelSpec, gpu: GPUSpec, tensor_parallel_size: int = 1,
        coefficients: StepCoefficients | None = None, multiplier: float = 1.0, precision=None,
    ) -> None:
        c = coefficients or StepCoefficients()
        tp = tensor_parallel_size
        self.model, self.gpu, self.tp, self.coefficients = model, gpu, tp, c
        self.multiplier = multiplier
        self.source = f"roofline fallback: no measured operator tables for {gpu.name}"
        bw = gpu.hbm_bandwidth_bytes_per_s
        flops = gpu.dense_fp16_flops_per_s
        lm_head_params = model.vocab_size * model.hidden_size
        body_params = model.matmul_params() - lm_head_params

        # Memory: weights once per step, plus KV bytes per context token read.
        self.weights_s = model.weight_bytes_per_gpu(tp, precision) / (bw * c.weight_bw_eff)
        self.kv_s_per_token = model.kv_bytes_per_token(tp, precision) / (bw * c.kv_bw_eff)
        # Compute: linear layers per token, lm_head per sampled token, attention per pair.
        self.matmul_s_per_token = 2 * body_params / tp / (flops * c.matmul_eff)
        self.lm_head_s_per_sample = 2 * lm_head_params / tp / (flops * c.matmul_eff)
        per_pair = 4 * model.num_attention_heads * model.head_dim * model.num_hidden_layers / tp
        self.attn_s_per_pair = per_pair / (flops * c.attn_eff)
        # All-reduce: 2 per layer, a ring moves 2(tp-1)/tp of the data; NVLink figures are
        # both directions, a ring uses one.
        if tp > 1:
            link = gpu.nvlink_bandwidth_bytes_per_s / 2 * c.comm_bw_eff
            calls = 2 * model.num_hidden_layers
            self.comm_fixed_s = calls * c.comm_latency_s
            self.comm_s_per_token = (
                calls * 2 * (tp - 1) / tp * model.hidden_size * model.dtype_bytes / link
            )
        else:
            self.comm_fixed_s = self.comm_s_per_token = 0.0


    def step_time(self, b: BatchShape) -> float:
        c = self.coefficients
        memory = self.weights_s + self.kv_s_per_token * b.context_tokens
        compute = (
            self.matmul_s_per_token * b.num_tokens
            + self.lm_head_s_per_sample * b.num_sampled
            + self.attn_s_per_pair * b.attn_pairs
        )
        comm = self.comm_fixed_s + self.comm_s_per_token * b.num_tokens if self.tp > 1 else 0.0
        gpu = max(memory, compute) + comm
        return host_and_gpu_s(c, gpu, b.num_seqs) * self.multiplier

    def decode_run(self, num_seqs: int, context_tokens: int, num_steps: int) -> np.ndarray:
        """Durations of ``num_steps`` decode steps of ``num_seqs`` requests, the first reading
        ``context_tokens`` of KV; each later step reads ``num_seqs`` more."""
        c = self.coefficients
        ctx = context_tokens + num_seqs * np.arange(num_steps, dtype=np.float64)
        memory = self.weights_s + self.kv_s_per_token * ctx
        compute = (self.matmul_s_per_token + self.lm_head_s_per_sample) * num_seqs
        comm = self.comm_fixed_s + self.comm_s_per_token * num_seqs if self.tp > 1 else 0.0
        gpu = np.maximum(memory, compute) + comm
        return host_and_gpu_s(c, gpu, num_seqs) * self.multiplier


def check_step_time_modelled(model: ModelSpec, gpu: GPUSpec | None = None) -> None:
    """Refuse, where the roofline would run, what it would price wrongly. Raises ConfigError
    with one line.

    MoE layers and MLA (DeepSeek's latent attention) are priced from measured tables only
    (:mod:`sim.ops.moe`, :mod:`sim.ops.mla`): the roofline prices every layer as a dense MLP
    behind grouped-query attention, so it refuses them."""
    from sim.ops.tables import AIC_SYSTEMS

    if model.is_mla:
        where = f"--gpu {gpu.name}" if gpu is not None else "this GPU"
        raise ConfigError(f"--model {model.name} (MLA): step time for MLA models needs the measured MLA tables, "
                          f"which {where} lacks; GPUs with them: h100-80gb, h200, l40s, b200")
    if model.is_moe:
        where = f"--gpu {gpu.name}" if gpu is not None else "this GPU"
        raise ConfigError(f"--model {model.name} (MoE): step time for MoE models needs measured operator tables, "
                          f"which {where} lacks; GPUs with tables: {', '.join(AIC_SYSTEMS)}")


def make_step_model(model: ModelSpec, gpu: GPUSpec, tensor_parallel_size: int = 1,
                    coefficients: StepCoefficients | None = None, multiplier: float = 1.0, *,
                    precision=None, operator_tables: bool = True, data_parallel_size: int = 1,
                    enable_expert_parallel: bool = False, all2all_backend: str = "allgather_reducescatter",
                    cudagraph_max_tokens: int | None = None):
    """The operator model where ``gpu`` has tables (and the coefficients ask for it, and
    ``operator_tables``), else the roofline. ``precision`` (:class:`sim.precision.Precision`)
    picks the GEMM, MoE and attention tables and the bytes per weight and KV element.
    ``data_parallel_size`` and ``enable_expert_parallel`` (vLLM's ``--data-parallel-size`` and
    ``--enable-expert-parallel``) select the MoE layer's sharding (:mod:`sim.parallel`: every
    expert sharded over ``tp x dp`` GPUs, or whole experts spread over them; priced by
    :mod:`sim.ops.moe`); the model prices one DP rank's steps. They change nothing for a dense
    model, whose DP ranks are separate engines. ``all2all_backend`` (``--all2all-backend``: vLLM's
    default ``allgather_reducescatter``, or DeepEP's ``deepep_high_throughput`` /
    ``deepep_low_latency``) prices the tokens' dispatch under DP with EP. ``cudagraph_max_tokens``
    is the largest step vLLM replays as a CUDA graph (:mod:`sim.cudagraphs`; None: vLLM's
    default for the model and GPU).

    A table file that is missing or damaged does not stop the run: the roofline stands in, and
    its ``source`` names the file and the reason (never a silent fallback); for a MoE model,
    which the roofline cannot price, the reason ends the run in one line instead."""
    from sim.ops.model import OperatorStepModel
    from sim.ops.tables import TableError, load_tables

    c = coefficients or StepCoefficients()
    reason = None
    if operator_tables and c.step_model == "operators":
        try:
            tables = load_tables(gpu.name)
            if tables is not None:
                return OperatorStepModel(tables, model, gpu, tensor_parallel_size, c, precision=precision,
                                         multiplier=multiplier, data_parallel_size=data_parallel_size,
                                         enable_expert_parallel=enable_expert_parallel,
                                         all2all_backend=all2all_backend,
                                         cudagraph_max_tokens=cudagraph_max_tokens)
        except TableError as exc:
            reason = str(exc)
    if (model.is_moe or model.is_mla) and reason:
        kind = "MLA" if model.is_mla else "MoE"
        raise ConfigError(f"--model {model.name} ({kind}): the operator tables cannot price it ({reason})")
    check_step_time_modelled(model, gpu)
    roofline = RooflineStepModel(model, gpu, tensor_parallel_size, c, multiplier, precision=precision)
    if reason:
        roofline.source = f"roofline fallback: {reason}"
    return roofline
