"""Engine configuration, spelled the way vLLM spells it.

``EngineConfig`` is frozen, so it hashes (``st.cache_data`` can key on it) and cannot change
under a running simulation. Values are checked in ``__post_init__``; a bad one raises
:class:`sim.errors.ConfigError` naming the vLLM flag.

Defaults that vLLM derives from the GPU (``max_num_batched_tokens``, ``max_num_seqs``) are left
as ``None`` here and filled by :func:`resolve_scheduler_limits`, following vLLM 0.33's
``engine/arg_utils.py``. What vLLM refuses only once they are filled in (``--max-num-batched-tokens``
below ``--max-num-seqs``, and so on) is checked by :func:`vllm_scheduler_limits`, which needs the
model and the GPU; the command line calls it where the flags come in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from sim.errors import ConfigError
from sim.precision import check_precision_flags

ENGINES = ("vllm", "hf-static", "orca-max", "orca-pow2", "orca-oracle")
PERFORMANCE_MODES = ("balanced", "interactivity", "throughput")  # vLLM 0.33's --performance-mode
EngineName = Literal["vllm", "hf-static", "orca-max", "orca-pow2", "orca-oracle"]
UsageContext = Literal["serve", "offline"]

GiB = 1024**3


# The vLLM release whose scheduler, defaults and messages the simulator follows.
VLLM_VERSION = "0.33.0"
# vLLM 0.33's --gpu-memory-utilization default (config/cache.py), for every ServeLab default.
GPU_MEMORY_UTILIZATION = 0.92


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str
    gpu: str
    engine: EngineName = "vllm"
    tensor_parallel_size: int = 1
    # --data-parallel-size/-dp: engine cores, each with tensor_parallel_size GPUs and its own KV
    # cache; --enable-expert-parallel/-ep: a MoE model's experts held whole, spread over tp x dp
    # GPUs (sim.parallel says what lives where).
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False
    # --all2all-backend: how a MoE model's DP ranks exchange tokens (sim.ops.moe prices three).
    all2all_backend: str = "allgather_reducescatter"
    block_size: int = 16
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    max_num_batched_tokens: int | None = None  # None: vLLM's default for the GPU and usage
    max_num_seqs: int | None = None  # None: likewise
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0  # 0 = off
    kv_cache_memory_bytes: int | None = None  # bypasses the memory profile, as in vLLM
    num_gpu_blocks_override: int | None = None
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    # vLLM 0.6's multi-step scheduling (removed in V1): new requests join only every N steps.
    # Off (1) by default; set it to reproduce measurements of vLLM 0.6 with --num-scheduler-steps.
    num_scheduler_steps: int = 1
    # How the n samples of a request (--n) share its prompt's KV. "prefix-cache" is vLLM V1:
    # n separate requests, sharing the prompt's full blocks through the prefix cache.
    # "copy-on-write" is the vLLM paper's (and vLLM V0's): one prefill, then n sequences share
    # every block, the partial last one included, until one writes into it and copies it.
    parallel_sampling: Literal["prefix-cache", "copy-on-write"] = "prefix-cache"
    # vLLM's --disable-hybrid-kv-cache-manager: a model with sliding-window layers gets one block
    # table a request, every layer allocated as full attention (sim.kv.hybrid explains the default).
    disable_hybrid_kv_cache_manager: bool = False
    calibration: str | None = None  # path of a calibration profile; None: the shipped one
    # Precision, as vLLM's flags (resolved against the model and GPU by sim.precision):
    dtype: str = "auto"  # --dtype: auto | half | float16 | bfloat16 | float | float32
    quantization: str | None = None  # --quantization/-q: None (the checkpoint's own) | fp8 | ...
    kv_cache_dtype: str = "auto"  # --kv-cache-dtype: auto | fp8 | fp8_e4m3 | fp8_e5m2 | bfloat16 | float16
    # --performance-mode (vLLM 0.33): "throughput" doubles the default --max-num-batched-tokens and
    # --max-num-seqs; "interactivity" captures a CUDA graph for every batch size up to 32
    # (sim.cudagraphs). vLLM's latency- or throughput-oriented kernel choices are not modelled.
    performance_mode: str = "balanced"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got {self.engine!r}")
        _positive("--tensor-parallel-size", self.tensor_parallel_size)
        _positive("--data-parallel-size", self.data_parallel_size)
        if not isinstance(self.enable_expert_parallel, bool):
            raise ConfigError(f"--enable-expert-parallel: expected true or false, got {self.enable_expert_parallel!r}")
        from sim.ops.moe import check_all2all_backend

        check_all2all_backend(self.all2all_backend)
        check_block_size(self.block_size)
        if self.performance_mode not in PERFORMANCE_MODES:
            raise ConfigError(f"--performance-mode: expected one of {', '.join(PERFORMANCE_MODES)}, "
                              f"got {self.performance_mode!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"--gpu-memory-utilization: expected a fraction in (0, 1], got {self.gpu_memory_utilization}"
            )
        for flag, value in (
            ("--max-model-len", self.max_model_len),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--max-num-seqs", self.max_num_seqs),
            ("--kv-cache-memory-bytes", self.kv_cache_memory_bytes),
            ("--num-gpu-blocks-override", self.num_gpu_blocks_override),
            ("--num-scheduler-steps", self.num_scheduler_steps),
        ):
            if value is not None:
                _positive(flag, value)
        if self.parallel_sampling not in ("prefix-cache", "copy-on-write"):
            raise ConfigError(
                f"--parallel-sampling: expected prefix-cache or copy-on-write, got {self.parallel_sampling!r}"
            )
        if self.parallel_sampling == "copy-on-write" and self.engine != "vllm":
            raise ConfigError("--parallel-sampling copy-on-write needs --engine vllm (paged blocks)")
        check_precision_flags(self.dtype, self.quantization, self.kv_cache_dtype)
        if self.long_prefill_token_threshold < 0:
            raise ConfigError(
                f"--long-prefill-token-threshold: expected 0 (off) or a positive number, got {self.long_prefill_token_threshold}"
            )

    @property
    def num_gpus(self) -> int:
        """GPUs one engine (all its DP ranks) takes: tp x dp."""
        return self.tensor_parallel_size * self.data_parallel_size

    def with_(self, **changes) -> "EngineConfig":
        """A copy with some fields changed (and checked again)."""
        return replace(self, **changes)


def _positive(flag: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")


# vLLM 0.33's CacheConfig takes any positive block_size (config/cache.py: ``Field(default=None, gt=0)``;
# 0.33 has no list of allowed sizes). The attention backend refuses the rest: platforms/cuda.py's
# get_attn_backend_cls raises "No valid attention backend found" unless some backend's
# supports_block_size (v1/attention/backend.py) passes, and every CUDA backend's kernel block sizes
# are multiples of 16: FlashAttention, Triton and FlexAttention MultipleOf(16) (flash_attn.py,
# triton_attn.py, flex_attention.py), FlashInfer 16, 32 or 64 (flashinfer.py), the MLA backends
# likewise (mla/triton_mla.py: MultipleOf(16)). Triton runs on every GPU and KV dtype, so any
# multiple of 16 finds a backend.
BLOCK_SIZE_MULTIPLE = 16


def check_block_size(block_size: int) -> None:
    """Refuse a --block-size no vLLM 0.33 attention backend on CUDA takes, in one line (ConfigError)."""
    _positive("--block-size", block_size)
    if block_size % BLOCK_SIZE_MULTIPLE:
        below = block_size // BLOCK_SIZE_MULTIPLE * BLOCK_SIZE_MULTIPLE
        nearest = " or ".join(str(b) for b in (below, below + BLOCK_SIZE_MULTIPLE) if b > 0)
        raise ConfigError(f"--block-size: expected a multiple of {BLOCK_SIZE_MULTIPLE} (vLLM's attention backends on "
                          f"CUDA take no other size), got {block_size}; try {nearest}")


def verify_scheduler_limits(
    max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int, enable_chunked_prefill: bool = True,
    long_prefill_token_threshold: int = 0, defaults: frozenset[str] = frozenset(),
) -> None:
    """What vLLM 0.33 refuses at start-up, as ``SchedulerConfig.verify_max_model_len`` checks it
    (config/scheduler.py), on the values after vLLM's defaults are filled in
    (:func:`vllm_scheduler_limits`). ``defaults`` names the values that are defaults (e.g.
    ``{"max_num_batched_tokens"}``), so that the message says so."""
    def show(name: str, value: int) -> str:
        if name not in defaults:
            return str(value)
        return f"{value}, the model's maximum" if name == "max_model_len" else f"{value}, vLLM's default for the GPU"

    tokens = show("max_num_batched_tokens", max_num_batched_tokens)
    if max_num_batched_tokens < max_model_len and not enable_chunked_prefill:
        # vLLM: "max_num_batched_tokens (...) is smaller than max_model_len (...)", only without chunked prefill.
        raise ConfigError(f"--max-num-batched-tokens ({tokens}) is smaller than --max-model-len "
                          f"({show('max_model_len', max_model_len)}) with --no-enable-chunked-prefill, which vLLM "
                          f"refuses (it would reject every longer sequence); raise --max-num-batched-tokens, lower "
                          f"--max-model-len or enable chunked prefill")
    if max_num_batched_tokens < max_num_seqs:
        # vLLM: "max_num_batched_tokens (...) must be greater than or equal to max_num_seqs (...)".
        raise ConfigError(f"--max-num-batched-tokens ({tokens}) must be greater than or equal to --max-num-seqs "
                          f"({show('max_num_seqs', max_num_seqs)}), as vLLM requires; raise the first or lower the "
                          f"second")
    if long_prefill_token_threshold > max_model_len:
        raise ConfigError(f"--long-prefill-token-threshold ({long_prefill_token_threshold}) cannot be greater than "
                          f"--max-model-len ({show('max_model_len', max_model_len)}), as vLLM requires")


def vllm_scheduler_limits(
    config: EngineConfig, model_max_len: int, gpu_memory_bytes: int, gpu_name: str, usage: UsageContext = "serve",
    verify: bool = True,
) -> tuple[int, int, int]:
    """(max_num_batched_tokens, max_num_seqs, max_model_len) as vLLM 0.33 fills them in for
    ``config`` on a GPU, or ConfigError where vLLM refuses them (:func:`verify_scheduler_limits`;
    ``verify=False`` fills them in only, as the engine does for the configurations tests build).

    ``model_max_len`` is the model's own maximum (``max_position_embeddings``). The defaults follow
    ``_set_default_max_num_seqs_and_batched_tokens_args`` (engine/arg_utils.py): a default
    max_num_batched_tokens is at least max_model_len without chunked prefill and at most
    max_num_seqs x max_model_len; a default max_num_seqs is at most max_num_batched_tokens. So
    defaults never trip a check: only values the user set do.
    """
    max_model_len = config.max_model_len or model_max_len
    default_tokens, default_seqs = resolve_scheduler_limits(gpu_memory_bytes, gpu_name, usage, config.performance_mode)
    max_num_seqs = config.max_num_seqs or default_seqs
    max_num_batched_tokens = config.max_num_batched_tokens
    if max_num_batched_tokens is None:
        max_num_batched_tokens = default_tokens if config.enable_chunked_prefill else max(default_tokens, max_model_len)
        max_num_batched_tokens = min(max_num_batched_tokens, max_num_seqs * max_model_len)
    if config.max_num_seqs is None:
        max_num_seqs = min(max_num_seqs, max_num_batched_tokens)
    defaults = frozenset(name for name, value in (("max_num_batched_tokens", config.max_num_batched_tokens),
                                                  ("max_num_seqs", config.max_num_seqs),
                                                  ("max_model_len", config.max_model_len)) if value is None)
    if verify:
        verify_scheduler_limits(max_num_batched_tokens, max_num_seqs, max_model_len, config.enable_chunked_prefill,
                                config.long_prefill_token_threshold, defaults)
    return max_num_batched_tokens, max_num_seqs, max_model_len


def config_scheduler_limits(config: EngineConfig, usage: UsageContext = "serve") -> tuple[int, int, int]:
    """:func:`vllm_scheduler_limits` for ``config``'s own model and GPU from the catalog (ConfigError
    where vLLM refuses them): the check the command line and the lab run where flags come in."""
    from sim.catalog import get_gpu, get_model

    gpu = get_gpu(config.gpu)
    return vllm_scheduler_limits(config, get_model(config.model).max_position_embeddings, gpu.memory_bytes, gpu.name,
                                 usage)


def resolve_scheduler_limits(
    gpu_memory_bytes: int, gpu_name: str, usage: UsageContext = "serve", performance_mode: str = "balanced"
) -> tuple[int, int]:
    """vLLM 0.33's default (max_num_batched_tokens, max_num_seqs) for a GPU.

    From ``engine/arg_utils.py``: GPUs of at least 70 GiB that are not A100s (H100, H200) get
    8192/1024 for ``vllm serve`` and 16384/1024 offline; at least 160 GiB gets 16384/1024 in
    both; every other GPU (A100, L40S, L4, A10G) gets 2048/256 online and 8192/256 offline.
    ``--performance-mode throughput`` doubles both defaults (a value the user sets is kept).
    """
    big = gpu_memory_bytes >= 70 * GiB and "a100" not in gpu_name.lower()
    if gpu_memory_bytes >= 160 * GiB:
        tokens, seqs = 16384, 1024
    elif big:
        tokens, seqs = (8192, 1024) if usage == "serve" else (16384, 1024)
    else:
        tokens, seqs = (2048, 256) if usage == "serve" else (8192, 256)
    if performance_mode == "throughput":
        return 2 * tokens, 2 * seqs
    return tokens, seqs


def cdiv(a: int, b: int) -> int:
    """Ceiling division, as vLLM's ``cdiv``."""
    return -(-a // b)


def next_power_of_two(x: int) -> int:
    return 1 if x <= 1 else 2 ** math.ceil(math.log2(x))
