"""The search space: every deployment `servelab tune` considers, before pruning.

A candidate is an :class:`EngineConfig` (GPU, tensor parallelism, ``--max-num-seqs``,
``--max-num-batched-tokens``, weight and KV-cache dtypes, prefix caching) run on ``replicas``
identical servers behind a load balancer. Replicas multiply candidates without multiplying
simulations: a Poisson stream of rate R split at random over N replicas is N Poisson streams of
rate R / N (a closed loop of C clients, C / N clients each), so one bisection of an engine
configuration's highest load per replica answers it for every replica count.

Weight and KV dtypes (``--quantization``, ``--kv-cache-dtype``) are offered only when
:class:`EngineConfig` has those fields (the precision model); otherwise the axis holds the
model's own dtype alone. ``fp8`` on a 16-bit checkpoint is searched as ``fp8_per_tensor``: vLLM
0.33 runs both as online per-tensor FP8, but warns that ``fp8`` is deprecated for it
(``model_loader/weight_utils.py``: "use --quantization fp8_per_tensor instead"), and the winner's
exported ``vllm serve`` line is the configuration as simulated. On a checkpoint quantized with
method M, ``--quantization M`` is the checkpoint's own precision, the same engine as none, and
is searched once. ``--enable-expert-parallel`` is an axis for MoE models (off, on, or
both: the experts sharded over the replica's TP GPUs, or held whole on them; sim.parallel); a
dense model takes it off only, since vLLM refuses it there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

from sim.catalog import get_gpu, get_model, known_gpus
from sim.config import GPU_MEMORY_UTILIZATION, EngineConfig
from sim.errors import CatalogError, ConfigError

DEFAULT_TP = (1, 2, 4, 8)
DEFAULT_MAX_NUM_SEQS = (64, 128, 256, 512)
DEFAULT_MAX_NUM_BATCHED_TOKENS = (2048, 8192, 16384)
DEFAULT_MAX_REPLICAS = 8


def precision_axes_supported() -> bool:
    """Whether EngineConfig models weight and KV-cache dtypes (``quantization``, ``kv_cache_dtype``)."""
    names = {f.name for f in fields(EngineConfig)}
    return {"quantization", "kv_cache_dtype"} <= names


@dataclass(frozen=True)
class SearchSpace:
    model: str
    gpus: tuple[str, ...]
    tensor_parallel_sizes: tuple[int, ...] = DEFAULT_TP
    max_num_seqs: tuple[int, ...] = DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: tuple[int, ...] = DEFAULT_MAX_NUM_BATCHED_TOKENS
    quantization: tuple[str | None, ...] = (None,)  # None: the checkpoint's dtype
    kv_cache_dtype: tuple[str, ...] = ("auto",)
    enable_prefix_caching: tuple[bool, ...] = (True,)
    enable_expert_parallel: tuple[bool, ...] = (False,)  # MoE models only; see the module docstring
    max_replicas: int = DEFAULT_MAX_REPLICAS
    max_model_len: int = 8192
    # vLLM 0.33's default, which `servelab memory` and `bench` use too, so that tune's plan and the
    # exported `vllm serve` line agree with both.
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ConfigError("--gpu: give at least one GPU")
        object.__setattr__(self, "gpus", resolve_gpus(self.gpus))  # catalog names, aliases resolved
        for flag, values in (("--tensor-parallel-size", self.tensor_parallel_sizes),
                             ("--max-num-seqs", self.max_num_seqs),
                             ("--max-num-batched-tokens", self.max_num_batched_tokens)):
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in values):
                raise ConfigError(f"{flag}: expected positive integers, got {list(values)}")
        if not self.enable_expert_parallel or any(not isinstance(v, bool) for v in self.enable_expert_parallel):
            raise ConfigError(f"--enable-expert-parallel: expected on, off or on,off, got "
                              f"{list(self.enable_expert_parallel)}")
        if True in self.enable_expert_parallel and not get_model(self.model).is_moe:
            if False not in self.enable_expert_parallel:
                raise ConfigError(f"--enable-expert-parallel on: {self.model} has no experts (a dense model), and "
                                  f"vLLM refuses expert parallelism there; leave it off")
            object.__setattr__(self, "enable_expert_parallel", (False,))
        if self.enable_expert_parallel == (True,) and set(self.tensor_parallel_sizes) == {1}:
            raise ConfigError("--enable-expert-parallel on with --tensor-parallel-size 1: one GPU has no experts to "
                              "spread, so there is nothing to search; add a TP above 1 or allow off")
        if not isinstance(self.max_replicas, int) or self.max_replicas < 1:
            raise ConfigError(f"--max-replicas: expected a positive integer, got {self.max_replicas!r}")
        if not precision_axes_supported() and (set(self.quantization) != {None} or set(self.kv_cache_dtype) != {"auto"}):
            raise ConfigError("--quantization/--kv-cache-dtype: this version of the simulator does not model "
                              "weight or KV-cache precision yet; leave them at their defaults")

    def engine_configs(self) -> list[EngineConfig]:
        """Every engine configuration, in a fixed order (GPU, TP, EP, dtypes, prefix caching, seqs, tokens)."""
        out = []
        quantization = tuple(dict.fromkeys(vllm_quantization(self.model, q) for q in self.quantization))
        for gpu, tp, ep, quant, kv, prefix, seqs, tokens in itertools.product(
            self.gpus, self.tensor_parallel_sizes, self.enable_expert_parallel, quantization,
            self.kv_cache_dtype, self.enable_prefix_caching, self.max_num_seqs, self.max_num_batched_tokens,
        ):
            if ep and tp == 1:
                continue  # one GPU: expert parallelism changes nothing (vLLM: use_ep needs tp x dp > 1)
            extra = {"quantization": quant, "kv_cache_dtype": kv} if precision_axes_supported() else {}
            out.append(EngineConfig(
                model=self.model, gpu=gpu, tensor_parallel_size=tp, enable_expert_parallel=ep, max_num_seqs=seqs,
                max_num_batched_tokens=tokens, enable_prefix_caching=prefix, max_model_len=self.max_model_len,
                gpu_memory_utilization=self.gpu_memory_utilization, **extra,
            ))
        return out

    @property
    def replica_counts(self) -> range:
        return range(1, self.max_replicas + 1)

    @property
    def num_candidates(self) -> int:
        return len(self.engine_configs()) * self.max_replicas


def vllm_quantization(model_name: str, flag: str | None) -> str | None:
    """The ``--quantization`` value to simulate and export for ``flag`` (see the module docstring)."""
    if flag is None:
        return None
    checkpoint = get_model(model_name).quantization
    if checkpoint is None:
        return "fp8_per_tensor" if flag == "fp8" else flag
    return None if flag == checkpoint.method else flag


def layout_of(config) -> str:
    """One replica's parallel layout as :func:`sim.silicon.layout_label` writes it: ``tp2``,
    ``tp2 ep2`` (the experts whole, spread over tp x dp GPUs), ``tp2 dp2 ep4``."""
    from sim.silicon import layout_label

    tp, dp = config.tensor_parallel_size, getattr(config, "data_parallel_size", 1)
    return layout_label(tp, dp, tp * dp if getattr(config, "enable_expert_parallel", False) else 1)


def resolve_gpus(names) -> tuple[str, ...]:
    """Catalog names for the GPUs asked for (all of the catalog's when none); CatalogError if unknown."""
    if not names:
        return tuple(known_gpus())
    out = []
    for name in names:
        for part in str(name).split(","):
            if part.strip():
                gpu = get_gpu(part.strip()).name
                if gpu not in out:
                    out.append(gpu)
    if not out:
        raise CatalogError("--gpu: no GPU given")
    return tuple(out)


def default_max_model_len(longest_request_tokens: int, model: str | None = None, *, lengths: str = "") -> int:
    """The smallest power of two (at least 2048) that holds the workload's longest request, but
    never above ``model``'s own maximum (``max_position_embeddings``), which vLLM refuses to
    exceed: Qwen3-32B's 34,000-token requests get 40,960, not 65,536.

    A request longer than the model's maximum is an input error (ConfigError) that names the
    lengths (``lengths``, e.g. "--random-input-len 30000 + --random-output-len 4000") and the limit."""
    wanted = max(2048, 2 ** math.ceil(math.log2(max(longest_request_tokens, 1))))
    if model is None:
        return wanted
    spec = get_model(model)
    limit = spec.max_position_embeddings
    if longest_request_tokens > limit:
        said = f" ({lengths})" if lengths else ""
        raise ConfigError(f"the longest request is {longest_request_tokens:,} tokens{said}, more than {spec.name} "
                          f"can take: {limit:,} tokens (max_position_embeddings in its config.json); shorten the "
                          f"input or the output")
    return min(wanted, limit)


def default_precisions(model: str | None = None) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """The dtype axes searched by default: FP8 weights and KV cache beside the model's own, where modelled.

    A quantized checkpoint (``model``'s config.json has a quantization_config) keeps its own
    weights: ``--quantization fp8`` is either the same engine (an FP8 or ModelOpt FP8 checkpoint)
    or one vLLM refuses (gpt-oss's mxfp4, AWQ), which would only fill the pruned list."""
    if not precision_axes_supported():
        return (None,), ("auto",)
    quantized = model is not None and get_model(model).quantization is not None
    return ((None,) if quantized else (None, "fp8")), ("auto", "fp8")
