"""How many KV-cache blocks a vLLM engine gets: vLLM 0.33's start-up memory profile, modelled.

vLLM (``v1/worker/gpu_worker.py``, ``utils/mem_utils.py``, ``v1/core/kv_cache_utils.py``)
measures; we compute the same quantities from the model's shapes::

    requested      = ceil(total_gpu_memory x gpu_memory_utilization)
    available_kv   = requested - weights_per_gpu - non_torch - activation_peak - cudagraph
    num_gpu_blocks = available_kv // (block_size x kv_bytes_per_token)

``--kv-cache-memory-bytes`` replaces ``available_kv`` and ``--num-gpu-blocks-override`` the
block count, as in vLLM.

The pieces vLLM measures and we estimate (each rough; the constants below say where from):

* **Activation peak** (vLLM: torch's peak minus what is allocated, during a dummy forward of
  ``max_num_batched_tokens`` tokens followed by a dummy sampler run over ``max_num_seqs``
  requests). We take the larger of the two phases:

  - forward, per token, everything a decoder layer holds at once, per GPU: the residual and the
    normalised hidden state (2h), q/k/v (``(heads + 2 kv_heads)/tp x head_dim``), the attention
    output (``heads/tp x head_dim``), the MLP's widest point (Llama/Mistral: gate+up ``2I/tp``
    and the SiLU-and-mul output ``I/tp``; OPT: fc1 ``I/tp`` and its ReLU ``I/tp``) and the
    layer's output (h), times the dtype's bytes;
  - sampler: the final hidden states of all tokens, plus ``max_num_seqs x vocab x 22`` bytes:
    the logits in the model dtype (2), their float32 copy (4), the top-k/top-p sort's values (4)
    and int64 indices (8), and the probabilities (4). vLLM gathers the full vocabulary on every
    rank, so this part does not shrink with TP.

  Check: Llama-3.1-8B, 8192 tokens, 256 sequences gives 1.00 GiB; vLLM logs "PyTorch
  activation peak memory takes 1.19-1.24GiB" for that model on an A100-80GB (public logs), so
  we leave about 0.2 GiB more for the KV cache than vLLM would there.
* **Non-torch memory** (cuBLAS workspaces, the CUDA graph pool's book-keeping; with TP, NCCL
  and custom all-reduce buffers): 0.2 GiB, plus 0.75 GiB when TP > 1. Public vLLM logs show
  0.01-0.35 GiB on one GPU and 0.9-1.4 GiB with TP.
* **CUDA graphs** (subtracted by default since vLLM v0.21): the activations of the largest
  captured batch plus 0.25 MiB per captured size per layer, over vLLM's capture sizes
  (:mod:`sim.cudagraphs`: 1, 2, 4, 8..248 by 8, 256.. by 16 up to ``min(2 x max_num_seqs, 512)``;
  1,024 on Blackwell and for gpt-oss). That gives about
  0.46 GiB for an 8B model, the order vLLM logs ("Graph capturing finished ... took 0.4-0.6
  GiB"). ``enforce_eager`` (vLLM's ``--enforce-eager``) makes it 0.

The vLLM paper's Table 1 (2023) is reproduced within 10% by ``PAPER_2023`` (see
``tests/test_memory.py`` and ``docs/memory.md``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from sim.catalog import GPUSpec, ModelSpec
from sim.config import GPU_MEMORY_UTILIZATION, cdiv, resolve_scheduler_limits
from sim.cudagraphs import capture_sizes
from sim.errors import ConfigError, OutOfMemoryError
from sim.parallel import ParallelLayout
from sim.precision import Precision, resolve_precision

GiB = 1024**3
MiB = 1024**2
SAMPLER_BYTES_PER_LOGIT = 22  # 2 (model dtype) + 4 (fp32) + 4 + 8 (sort values, int64 indices) + 4 (probs)
SAMPLER_FIXED_BYTES_PER_LOGIT = SAMPLER_BYTES_PER_LOGIT - 2  # all but the logits in the model dtype


@dataclass(frozen=True, slots=True)
class MemoryOverheads:
    """What the memory profile counts besides weights and KV cache; see the module docstring."""

    non_torch_bytes: int = round(0.2 * GiB)
    non_torch_tp_bytes: int = round(0.75 * GiB)  # added when tensor_parallel_size > 1
    cudagraph_bytes_per_size_layer: int = MiB // 4
    count_cudagraphs: bool = True  # vLLM >= v0.21 subtracts its CUDA-graph estimate


VLLM_0_33 = MemoryOverheads()
# vLLM as of the paper (mid-2023, v0.1): the profile counted torch's peak only (weights and
# activations), no CUDA graphs existed yet, and nothing was set aside for non-torch memory.
PAPER_2023 = MemoryOverheads(non_torch_bytes=0, non_torch_tp_bytes=0, count_cudagraphs=False)


@dataclass(frozen=True, slots=True)
class KVCacheGroup:
    """One of vLLM's KV cache groups: layers that share a block table (see :func:`kv_cache_groups`)."""

    kind: str  # "full_attention" | "sliding_attention" | "mla"
    layers: tuple[int, ...]  # decoder layer indices in this group
    num_layers: int  # layers the group's blocks hold, padding included
    page_size_bytes: int  # one layer's block: block_size tokens of KV on one GPU
    blocks_per_request: int  # blocks one max_model_len request takes at most (max_memory_usage_bytes / page)
    sliding_window: int | None = None

    @property
    def padding_layers(self) -> int:
        return self.num_layers - len(self.layers)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """One GPU's memory budget at engine start-up (all figures per GPU)."""

    model: str
    gpu: str
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    total_bytes: int
    requested_bytes: int
    weights_bytes_per_gpu: int
    activation_peak_bytes: int
    cudagraph_bytes: int
    non_torch_bytes: int
    available_kv_bytes: int
    kv_bytes_per_token: int
    block_size: int
    num_gpu_blocks: int
    kv_cache_tokens: int
    max_model_len: int
    max_concurrency: float
    precision: Precision | None = None  # the dtypes it was planned with (sim.precision)
    # the step sizes (tokens) vLLM captures as CUDA graphs (sim.cudagraphs); empty when eager
    cudagraph_capture_sizes: tuple[int, ...] = ()
    performance_mode: str = "balanced"  # vLLM's --performance-mode (sim.config.EngineConfig)
    # vLLM's KV cache groups (one for a model whose layers all attend alike; see kv_cache_groups)
    kv_cache_groups: tuple[KVCacheGroup, ...] = ()
    # -- data and expert parallelism (sim.parallel); the figures above are one GPU's ----------
    data_parallel_size: int = 1  # engine cores, each with tp GPUs, its own KV cache and batches
    enable_expert_parallel: bool = False
    expert_parallel_size: int = 1  # GPUs the routed experts are spread over (tp x dp under EP, else 1)
    experts_per_gpu: int | None = None  # routed experts the fullest GPU holds; None for a dense model
    moe_tensor_parallel_size: int | None = None  # ranks each expert is sharded over; None for a dense model
    # weights_bytes_per_gpu by part (sim.architectures.weight_bytes_by_part), {} for the older models
    weight_bytes_by_part: dict = field(default_factory=dict)
    parallel_log_lines: tuple[str, ...] = ()

    @property
    def num_gpus(self) -> int:
        return self.tensor_parallel_size * self.data_parallel_size

    @property
    def total_max_concurrency(self) -> float:
        """Requests of max_model_len that all DP ranks hold at once: each rank has its own KV cache."""
        return self.max_concurrency * self.data_parallel_size

    @property
    def total_kv_cache_tokens(self) -> int:
        return self.kv_cache_tokens * self.data_parallel_size

    @property
    def full_attention_blocks(self) -> int:
        """Blocks of ``block_size`` tokens in every layer that the KV memory holds: what vLLM
        allocates with ``--disable-hybrid-kv-cache-manager`` (every layer as full attention), and
        what the engine's baselines (one block table a request) run a hybrid model with. vLLM's
        engine runs it with ``num_gpu_blocks`` blocks shared by its groups (``sim.kv.hybrid``)."""
        if len(self.kv_cache_groups) <= 1:
            return self.num_gpu_blocks
        return self.available_kv_bytes // (self.block_size * self.kv_bytes_per_token)

    def loading_log_lines(self) -> list[str]:
        """vLLM's earlier start-up lines: the performance mode when it is not the default, its
        warnings and choices about the dtype, the quantization, the KV-cache dtype and the
        attention backend, then "Model loading took X GiB memory" (vLLM adds "and N seconds";
        there is no loading time here)."""
        lines = [f"Performance mode set to '{self.performance_mode}'."] if self.performance_mode != "balanced" else []
        lines += list(self.precision.log_lines) if self.precision is not None else []
        lines += list(self.parallel_log_lines)
        return lines + [f"Model loading took {round(self.weights_bytes_per_gpu / GiB, 2)} GiB memory"]

    def startup_log_lines(self) -> list[str]:
        """The lines vLLM logs once the KV cache is sized, with the same formats."""
        padding = []
        for kind in dict.fromkeys(g.kind for g in self.kv_cache_groups):
            groups = [g for g in self.kv_cache_groups if g.kind == kind]
            pad, real = sum(g.padding_layers for g in groups), sum(len(g.layers) for g in groups)
            if pad:
                padding.append(f"Add {pad} padding layers, may waste at most {pad / real * 100:.2f}% KV cache memory")
        # vLLM 0.33 prints GiB with format_gib (round to 2 places: "54.8", not "54.80"), and the size
        # and the concurrency in one line (kv_cache_utils.update_kv_cache_capacity).
        lines = padding + [
            f"Available KV cache memory: {round(self.available_kv_bytes / GiB, 2)} GiB",
            f"GPU KV cache size: {self.kv_cache_tokens:,} tokens, Maximum concurrency for "
            f"{self.max_model_len:,} tokens per request: {self.max_concurrency:.2f}x",
        ]
        if len(self.kv_cache_groups) > 1:
            # EngineCore then resolves the groups' block sizes (resolve_kv_cache_block_sizes); all
            # groups here have the same block size, so the scheduler's is that one.
            sizes = ", ".join(str(self.block_size) for _ in self.kv_cache_groups)
            lines += [f"kv cache group sizes ({sizes})", f"kv lcm block sizes {self.block_size}"]
        if self.data_parallel_size > 1:
            lines.append(f"Data parallelism: {self.data_parallel_size} engine cores (DP ranks), each logs the lines "
                         f"above for its own KV cache; in all {self.total_kv_cache_tokens:,} tokens, maximum "
                         f"concurrency {self.total_max_concurrency:.2f}x")
        return lines

    def to_dict(self) -> dict:
        out = asdict(self)
        out["full_attention_blocks"] = self.full_attention_blocks  # --disable-hybrid-kv-cache-manager's pool
        out["precision"] = self.precision.to_dict() if self.precision is not None else None
        out["parallel_log_lines"] = list(self.parallel_log_lines)
        out["cudagraph_capture_sizes"] = list(self.cudagraph_capture_sizes)
        out["num_gpus"] = self.num_gpus
        out["total_max_concurrency"] = self.total_max_concurrency
        out["total_kv_cache_tokens"] = self.total_kv_cache_tokens
        return out


def plan_memory(
    model: ModelSpec,
    gpu: GPUSpec,
    *,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    max_model_len: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    block_size: int = 16,
    kv_cache_memory_bytes: int | None = None,
    num_gpu_blocks_override: int | None = None,
    enforce_eager: bool = False,
    usage: str = "serve",
    overheads: MemoryOverheads = VLLM_0_33,
    precision: Precision | None = None,
    data_parallel_size: int = 1,
    enable_expert_parallel: bool = False,
    performance_mode: str = "balanced",
) -> MemoryPlan:
    """vLLM 0.33's KV-cache sizing for ``model`` on ``tensor_parallel_size`` x ``gpu``.

    With ``data_parallel_size`` > 1 the plan is one GPU of one DP rank: every rank holds the same
    (attention and dense parts sharded by TP, replicated across ranks) and sizes its own KV cache;
    a MoE model's routed experts are spread over all ``tp x dp`` GPUs (:mod:`sim.parallel`). With
    expert parallelism, the fullest GPU's experts are counted (they decide what fits).

    ``max_num_batched_tokens``/``max_num_seqs`` default to vLLM's for the GPU and ``usage``
    (``sim.config.resolve_scheduler_limits``); ``max_model_len`` to the model's
    ``max_position_embeddings``. ``precision`` (:func:`sim.precision.resolve_precision`) sets
    the bytes of weights, KV cache and activations; None resolves vLLM's defaults for the model
    and GPU (the checkpoint's dtype, and its own quantization if it has one). Raises
    ConfigError, worded like vLLM's, when the model does not fit or one ``max_model_len``
    sequence does not fit in the KV cache.
    """
    tp = tensor_parallel_size
    layout = ParallelLayout(tp, data_parallel_size, enable_expert_parallel)
    layout.check(model)
    moe = layout.moe(model)
    if precision is None:
        precision = resolve_precision(model, gpu, _Defaults(tp, data_parallel_size, enable_expert_parallel))
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"--gpu-memory-utilization: expected a fraction in (0, 1], got {gpu_memory_utilization}")
    for flag, value in (("--block-size", block_size), ("--max-model-len", max_model_len),
                        ("--max-num-batched-tokens", max_num_batched_tokens), ("--max-num-seqs", max_num_seqs),
                        ("--kv-cache-memory-bytes", kv_cache_memory_bytes),
                        ("--num-gpu-blocks-override", num_gpu_blocks_override)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")
    derived_len = model.max_position_embeddings
    if max_model_len is None:
        max_model_len = derived_len
    elif max_model_len > derived_len:
        # vLLM: "User-specified max_model_len (X) is greater than the derived max_model_len ..."
        raise ConfigError(
            f"--max-model-len: user-specified max_model_len ({max_model_len}) is greater than the derived "
            f"max_model_len (max_position_embeddings={derived_len} in {model.name}'s config.json); "
            f"use at most {derived_len}"
        )
    default_tokens, default_seqs = resolve_scheduler_limits(gpu.memory_bytes, gpu.name, usage,  # type: ignore[arg-type]
                                                            performance_mode)
    num_tokens = max_num_batched_tokens or default_tokens
    num_seqs = max_num_seqs or default_seqs

    total = gpu.memory_bytes
    requested = math.ceil(total * gpu_memory_utilization)
    act_bytes = precision.activation_bytes
    # What vLLM's "Model loading took" measures: the parameters and the rotary cache.
    weights = model.weight_bytes_per_gpu(tp, precision, moe) + model.rope_cache_bytes(act_bytes)
    # NCCL and custom all-reduce buffers: TP, or a MoE layer's collective over tp x dp GPUs.
    communicates = tp > 1 or (moe is not None and layout.world_size > 1)
    non_torch = overheads.non_torch_bytes + (overheads.non_torch_tp_bytes if communicates else 0)
    moe_tp = moe.tensor_parallel_size if moe is not None else None
    activation = activation_peak_bytes(model, tp, num_tokens, num_seqs, act_bytes, moe_tp=moe_tp)
    graph_sizes = capture_sizes(model, gpu, num_seqs, num_tokens, enforce_eager, performance_mode)
    graphs = cudagraph_bytes(model, tp, graph_sizes, overheads, act_bytes, moe_tp=moe_tp) \
        if overheads.count_cudagraphs else 0
    kv_per_token = model.kv_bytes_per_token(tp, precision)
    groups = kv_cache_groups(model, tp, precision, block_size, max_model_len, num_tokens)
    # vLLM's bytes per block: the widest group's layers x one layer's page (get_kv_cache_config_from_groups);
    # for a model with one group, all layers: block_size x kv_per_token.
    page_bytes = max(g.num_layers for g in groups) * groups[0].page_size_bytes

    if kv_cache_memory_bytes is not None:
        available = kv_cache_memory_bytes  # vLLM skips the profile entirely
    else:
        available = requested - weights - non_torch - activation - graphs
        if available <= 0:
            # Weights below 90% of what vLLM may use leave room a flag could win back; above, only
            # more GPUs or a bigger one help.
            weights_fill = model.weight_bytes_per_gpu(tp, precision, moe) >= 0.9 * requested
            kind = OutOfMemoryError.WEIGHTS if weights_fill else OutOfMemoryError.KV_CACHE
            raise OutOfMemoryError(
                f"No available memory for the cache blocks: {model.name} on {gpu.name} "
                f"(tensor parallelism {tp}) may use total_gpu_memory ({total / GiB:.2f}GiB) x "
                f"gpu_memory_utilization ({gpu_memory_utilization:.2f}) = {requested / GiB:.2f}GiB per GPU; "
                f"model weights take {weights / GiB:.2f}GiB; non_torch_memory takes {non_torch / GiB:.2f}GiB; "
                f"PyTorch activation peak memory takes {activation / GiB:.2f}GiB; CUDA graphs take "
                f"{graphs / GiB:.2f}GiB, leaving {available / GiB:.2f}GiB. {_advice(model, tp, requested, precision, kind)}",
                kind,
            )
    num_blocks = num_gpu_blocks_override or available // page_bytes
    blocks_per_request = sum(g.blocks_per_request for g in groups)
    needed = blocks_per_request * page_bytes
    if num_gpu_blocks_override is None and needed > available:
        estimated = _estimate_max_model_len(
            lambda length: sum(g.blocks_per_request for g in kv_cache_groups(
                model, tp, precision, block_size, length, num_tokens)) * page_bytes <= available, max_model_len)
        estimated_msg = (
            f"Based on the available memory, the estimated maximum model length is {estimated}. " if estimated > 0 else ""
        )
        # vLLM advises --gpu-memory-utilization either way; with --kv-cache-memory-bytes it changes nothing.
        grow = "--kv-cache-memory-bytes" if kv_cache_memory_bytes is not None else "--gpu-memory-utilization"
        raise OutOfMemoryError(
            f"To serve at least one request with the model's max seq len ({max_model_len}), "
            f"({needed / GiB:.2f} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({available / GiB:.2f} GiB). {estimated_msg}Try increasing {grow} "
            f"or decreasing --max-model-len.",
            OutOfMemoryError.MAX_MODEL_LEN,
        )
    concurrency = num_blocks / blocks_per_request  # get_max_concurrency_for_kv_cache_config
    return MemoryPlan(
        model=model.name,
        gpu=gpu.name,
        tensor_parallel_size=tp,
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=num_tokens,
        max_num_seqs=num_seqs,
        total_bytes=total,
        requested_bytes=requested,
        weights_bytes_per_gpu=weights,
        activation_peak_bytes=activation,
        cudagraph_bytes=graphs,
        cudagraph_capture_sizes=graph_sizes,
        performance_mode=performance_mode,
        non_torch_bytes=non_torch,
        available_kv_bytes=available,
        kv_bytes_per_token=kv_per_token,
        block_size=block_size,
        num_gpu_blocks=num_blocks,
        kv_cache_tokens=int(concurrency * max_model_len),
        max_model_len=max_model_len,
        max_concurrency=concurrency,
        precision=precision,
        kv_cache_groups=tuple(groups),
        data_parallel_size=data_parallel_size,
        enable_expert_parallel=enable_expert_parallel,
        expert_parallel_size=moe.expert_parallel_size if moe is not None else 1,
        experts_per_gpu=moe.local_experts if moe is not None else None,
        moe_tensor_parallel_size=moe_tp,
        weight_bytes_by_part=_parts(model, tp, precision, moe),
        parallel_log_lines=layout.log_lines(model),
    )


def _parts(model: ModelSpec, tp: int, precision: Precision | None, moe) -> dict:
    from sim.architectures import NEW_ARCHITECTURES, weight_bytes_by_part

    if model.architecture not in NEW_ARCHITECTURES.values():
        return {}
    return weight_bytes_by_part(model, tp, precision, moe)


ASYNC_SCHEDULING_BATCHES = 2  # VllmConfig.max_concurrent_batches with async scheduling (the default) and no PP


def kv_cache_groups(model: ModelSpec, tp: int, precision: Precision | None, block_size: int, max_model_len: int,
                    max_num_batched_tokens: int) -> list[KVCacheGroup]:
    """vLLM 0.33's KV cache groups for ``model`` (``v1/core/kv_cache_planning.py``).

    A model whose layers all attend alike (full attention, or MLA) has one group of all layers
    (``_get_kv_cache_groups_uniform_spec``). A hybrid model (Gemma 3, gpt-oss: sliding-window and
    full layers, the same page size) goes through ``_get_kv_cache_groups_uniform_page_size``:
    layers are bucketed by kind, the group size is the smallest bucket's layer count (or the
    largest's, if that is under 1.5 times the smallest), each bucket is split into
    ``cdiv(len, group_size)`` groups taking every n-th layer, and the last is padded. Every group
    draws blocks of ``group_size`` layers x one page from one pool.

    Per request, a group takes at most ``cdiv(max_memory_usage_bytes, page_size_bytes)`` blocks
    (``get_max_concurrency_for_kv_cache_config``): full attention ``cdiv(max_model_len,
    block_size)``; a sliding window ``cdiv(min(sliding_window - 1 + max_in_flight_tokens,
    max_model_len), block_size) + 1`` (``SlidingWindowSpec.max_admission_blocks_per_request``), where
    ``max_in_flight_tokens`` is 2 x ``max_num_batched_tokens`` under async scheduling, vLLM's default.
    """
    from sim.architectures import FULL, SLIDING

    page = block_size * model.kv_bytes_per_token(tp, precision) // model.num_hidden_layers  # one layer's page
    full_blocks = cdiv(max_model_len, block_size)
    types = model.layer_types or (FULL,) * model.num_hidden_layers
    kind_of = {FULL: "mla" if model.is_mla else FULL, SLIDING: SLIDING}
    buckets: dict[str, list[int]] = {}
    for i, t in enumerate(types):
        buckets.setdefault(kind_of[t], []).append(i)
    window = model.sliding_window or 0
    in_flight = ASYNC_SCHEDULING_BATCHES * max_num_batched_tokens
    sliding_blocks = cdiv(min(window - 1 + in_flight, max_model_len), block_size) + 1

    def group(kind: str, layers: list[int], size: int) -> KVCacheGroup:
        sliding = kind == SLIDING
        return KVCacheGroup(kind=kind, layers=tuple(layers), num_layers=size, page_size_bytes=page,
                            blocks_per_request=sliding_blocks if sliding else full_blocks,
                            sliding_window=window if sliding else None)

    if len(buckets) == 1:
        (kind, layers), = buckets.items()
        return [group(kind, layers, len(layers))]
    sizes = [len(v) for v in buckets.values()]
    size = max(sizes) if max(sizes) < min(sizes) * 1.5 else min(sizes)
    out = []
    for kind, layers in buckets.items():
        n = cdiv(len(layers), size)
        out += [group(kind, layers[i::n], size) for i in range(n)]
    return out


def _estimate_max_model_len(fits, upper: int) -> int:
    """vLLM's ``estimate_max_model_len``: the longest length in [1, upper] that fits, by binary search; 0 if none."""
    if not fits(1):
        return 0
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


class _Defaults:
    """vLLM's precision flags at their defaults, for a plan made without a precision."""

    dtype, quantization, kv_cache_dtype = "auto", None, "auto"

    def __init__(self, tensor_parallel_size: int, data_parallel_size: int = 1,
                 enable_expert_parallel: bool = False) -> None:
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        self.enable_expert_parallel = enable_expert_parallel


def _advice(model: ModelSpec, tp: int, requested: int, precision: Precision | None, kind: str) -> str:
    """What to change when nothing is left for the KV cache, by the shortfall's ``kind``
    (:class:`OutOfMemoryError`'s KV_CACHE: a flag can win memory back; WEIGHTS: the weights alone fill it)."""
    if kind == OutOfMemoryError.KV_CACHE:
        return "Try increasing --gpu-memory-utilization or --tensor-parallel-size, or lowering --max-num-seqs."
    for bigger in range(tp + 1, 65):
        try:
            model.check_tensor_parallel(bigger)
        except ConfigError:
            continue
        if model.weight_bytes_per_gpu(bigger, precision) + 2 * GiB < requested:  # room for a little KV cache
            return (f"The weights alone do not fit: try --tensor-parallel-size {bigger} or more, "
                    f"or a GPU with more memory.")
    return "The weights alone do not fit: use a GPU with more memory."


def forward_activation_bytes_per_token(model: ModelSpec, tp: int, dtype_bytes: int | None = None,
                                      moe_tp: int | None = None) -> int:
    """Bytes one token's activations take at a decoder layer's widest point, on one GPU.

    ``moe_tp``: the ranks each expert is sharded over (``tp x dp`` without expert parallelism,
    1 with it; default ``tp``).

    In the model dtype (``dtype_bytes``, default the checkpoint's): FP8 layers quantize their
    input on the fly into a short-lived 1-byte copy, which does not raise the peak.
    """
    h, hd = model.hidden_size, model.head_dim
    q_heads = model.num_attention_heads // tp
    kv_heads = model.kv_heads_per_rank(tp)
    inter = cdiv(model.intermediate_size, tp)
    if model.is_mla:  # q, the latent and its rope part, kv_b's output, the attention output
        attention = (q_heads * (model.qk_nope_head_dim + model.qk_rope_head_dim) + model.kv_lora_rank
                     + model.qk_rope_head_dim + q_heads * (model.qk_nope_head_dim + model.v_head_dim)
                     + q_heads * model.v_head_dim)
    else:
        attention = (q_heads + 2 * kv_heads) * hd + q_heads * hd
    mlp = 3 * inter if model.architecture != "opt" else 2 * inter  # gate+up and act; fc1 and relu
    if model.is_moe:
        # fused_moe's workspaces per token: top-k rows of gate+up (2I/tp), of the activation (I/tp)
        # and of the experts' outputs (h), plus the router's logits (experts); the dense layers'
        # MLP where the model has any.
        moe_inter = cdiv(model.moe_intermediate_size, moe_tp or tp)
        moe = model.experts_per_token * (3 * moe_inter + h) + model.num_experts
        mlp = max(moe, mlp) if len(model.moe_layers) < model.num_hidden_layers else moe
    return (2 * h + attention + mlp + h) * (dtype_bytes or model.dtype_bytes)


def activation_peak_bytes(model: ModelSpec, tp: int, num_tokens: int, num_seqs: int,
                          dtype_bytes: int | None = None, moe_tp: int | None = None) -> int:
    """Peak of vLLM's profiling run: a dummy forward of num_tokens, then the sampler."""
    dtype_bytes = dtype_bytes or model.dtype_bytes
    forward = num_tokens * forward_activation_bytes_per_token(model, tp, dtype_bytes, moe_tp)
    sampler = (num_tokens * model.hidden_size * dtype_bytes
               + min(num_seqs, num_tokens) * model.vocab_size * (SAMPLER_FIXED_BYTES_PER_LOGIT + dtype_bytes))
    return max(forward, sampler)


def cudagraph_bytes(model: ModelSpec, tp: int, sizes: tuple[int, ...], overheads: MemoryOverheads = VLLM_0_33,
                    dtype_bytes: int | None = None, moe_tp: int | None = None) -> int:
    """vLLM's estimate of its CUDA graphs' memory for the captured ``sizes``
    (:func:`sim.cudagraphs.capture_sizes`): the largest one's activations, plus a fixed share
    per graph and layer."""
    if not sizes:
        return 0
    per_graph = len(sizes) * model.num_hidden_layers * overheads.cudagraph_bytes_per_size_layer
    return max(sizes) * forward_activation_bytes_per_token(model, tp, dtype_bytes, moe_tp) + per_graph


# -- the vLLM paper's Table 1 -------------------------------------------------------------------
# Kwon et al., "Efficient Memory Management for Large Language Model Serving with
# PagedAttention", SOSP 2023, Table 1 (via ../shared/reference/published-vllm.yaml):
# (model, GPUs, GPU, total GPU memory GB, parameter GB, KV cache GB, max KV slots).
PAPER_TABLE_1 = (
    ("facebook/opt-13b", 1, "a100-40gb", 40, 26, 12, 15_700),
    ("facebook/opt-66b", 4, "a100-40gb", 160, 132, 21, 9_700),
    ("facebook/opt-175b", 8, "a100-80gb", 640, 346, 264, 60_100),
)


def paper_table_1_plan(model: ModelSpec, gpu: GPUSpec, num_gpus: int, total_gb: int) -> MemoryPlan:
    """Our plan under the paper's setting, the same assumptions for every row:

    * each GPU has ``total_gb / num_gpus`` GiB, as the table's "total GPU memory" column says
      (CUDA reports a little less: 39.5 GiB of an A100-40GB);
    * fp16 and block size 16 (the table's note), gpu_memory_utilization 0.90 (vLLM's default in
      2023);
    * vLLM 0.1's profile: a dummy batch of 2560 tokens and 256 sequences (its defaults then),
      no CUDA graphs, no non-torch allowance (``PAPER_2023``).
    """
    from dataclasses import replace

    paper_gpu = replace(gpu, memory_bytes=total_gb // num_gpus * GiB)
    return plan_memory(model, paper_gpu, tensor_parallel_size=num_gpus, gpu_memory_utilization=0.90,
                       max_num_batched_tokens=2560, max_num_seqs=256, overheads=PAPER_2023)


def plan_for_config(config, usage: str = "serve") -> MemoryPlan:
    """``plan_memory`` for a :class:`sim.config.EngineConfig` (its model, GPU and flags)."""
    from sim.catalog import get_gpu, get_model

    model, gpu = get_model(config.model), get_gpu(config.gpu)
    return plan_memory(
        model,
        gpu,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_num_seqs=config.max_num_seqs,
        block_size=config.block_size,
        kv_cache_memory_bytes=config.kv_cache_memory_bytes,
        num_gpu_blocks_override=config.num_gpu_blocks_override,
        usage=usage,
        precision=resolve_precision(model, gpu, config),
        data_parallel_size=getattr(config, "data_parallel_size", 1),
        enable_expert_parallel=getattr(config, "enable_expert_parallel", False),
        performance_mode=getattr(config, "performance_mode", "balanced"),
    )
