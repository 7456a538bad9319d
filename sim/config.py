"""Engine configuration, spelled the way vLLM spells it.

``EngineConfig`` is frozen, so it hashes (``st.cache_data`` can key on it) and cannot change
under a running simulation. Values are checked in ``__post_init__``; a bad one raises
:class:`sim.errors.ConfigError` naming the vLLM flag.

Defaults that vLLM derives from the GPU (``max_num_batched_tokens``, ``max_num_seqs``) are left
as ``None`` here and filled by :func:`resolve_scheduler_limits`, following vLLM 0.33's
``engine/arg_utils.py``.
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
    gpu_memory_utilization: float = 0.92
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
        _positive("--block-size", self.block_size)
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
