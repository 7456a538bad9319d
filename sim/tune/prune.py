"""Pruning: a configuration vLLM would refuse to start, or that could not hold the workload's
longest request, is never simulated.

The checks are vLLM's own start-up checks, through the memory model
(:func:`sim.memory.plan_for_config`): the weights fit, the KV cache holds one
``max_model_len`` sequence, the tensor-parallel size divides the heads; and vLLM's rule that
``--max-num-batched-tokens`` is at least ``--max-num-seqs`` (:func:`sim.config.config_scheduler_limits`,
the check ``bench`` and ``memory`` run on their flags). Then the longest request of the
workload (prompt + output) must fit in the KV cache, else the engine could never finish it.

Each pruned configuration keeps vLLM's full message (``reason``) and a short ``kind`` that is
the same for every configuration struck by the same problem, whatever its scheduler flags
(``--max-num-seqs`` and ``--max-num-batched-tokens`` change the activation bytes in the
message, not the problem); :func:`group_pruned` counts them by kind, so that a search where
everything was pruned can say why in a few lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import EngineConfig, cdiv, config_scheduler_limits
from sim.errors import ConfigError, OutOfMemoryError, ServeLabError
from sim.memory import MemoryPlan, plan_for_config
from sim.tune.space import layout_of

# The kinds that name a memory shortfall (sim.memory's OutOfMemoryError.kind).
WEIGHTS_DO_NOT_FIT = "the weights do not fit in GPU memory"
NO_ROOM_FOR_KV = "no memory left for the KV cache"
# tune's space keeps chunked prefill on and sets no --long-prefill-token-threshold, so of vLLM's
# scheduler checks (sim.config.verify_scheduler_limits) this is the only one it can break.
BATCHED_TOKENS_BELOW_SEQS = "--max-num-batched-tokens below --max-num-seqs (vLLM refuses it)"


@dataclass(frozen=True)
class PruneResult:
    config: EngineConfig
    plan: MemoryPlan | None  # None when pruned
    reason: str = ""  # why it was pruned, in vLLM's words ("" when kept)
    kind: str = ""  # the problem in a few words, shared by every configuration it strikes ("" when kept)

    @property
    def kept(self) -> bool:
        return self.plan is not None


@dataclass(frozen=True)
class PruneGroup:
    """The configurations pruned for one kind of problem."""

    kind: str
    count: int
    where: tuple[str, ...]  # the GPUs and layouts it struck, "h100-80gb tp8" (see where())
    example: str  # the first one's full reason


def check(config: EngineConfig, longest_request_tokens: int) -> PruneResult:
    """Keep ``config`` (with its memory plan) or say why vLLM could not serve the workload with it."""
    try:
        config_scheduler_limits(config, usage="serve")
    except ConfigError as exc:
        return PruneResult(config, None, str(exc), BATCHED_TOKENS_BELOW_SEQS)
    try:
        plan = plan_for_config(config, usage="serve")
    except ServeLabError as exc:
        return PruneResult(config, None, str(exc), _kind(config, exc))
    needed = cdiv(longest_request_tokens, config.block_size)
    if needed > plan.num_gpu_blocks - 1:
        return PruneResult(config, None, f"the longest request ({longest_request_tokens} tokens) needs {needed} KV "
                                         f"blocks; the cache has {plan.num_gpu_blocks - 1}",
                           f"the KV cache cannot hold the longest request ({longest_request_tokens} tokens)")
    return PruneResult(config, plan)


def _kind(config: EngineConfig, exc: ServeLabError) -> str:
    """A few words for the problem behind ``exc``, without the numbers that differ between
    configurations struck alike."""
    from sim.catalog import get_model

    if isinstance(exc, OutOfMemoryError):
        return {OutOfMemoryError.WEIGHTS: WEIGHTS_DO_NOT_FIT, OutOfMemoryError.KV_CACHE: NO_ROOM_FOR_KV,
                OutOfMemoryError.MAX_MODEL_LEN: f"the KV cache cannot hold one --max-model-len "
                                                f"{config.max_model_len} sequence"}[exc.kind]
    message = str(exc)
    model = get_model(config.model)
    tp = config.tensor_parallel_size
    if model.num_attention_heads % tp and message.startswith(f"--tensor-parallel-size {tp}:"):
        return f"TP {tp} does not divide the {model.num_attention_heads} attention heads"
    return message  # the other refusals (KV heads, experts, dtypes) do not depend on the scheduler flags


def where(config: EngineConfig, kind: str = "") -> str:
    """What a pruning struck: ``h100-80gb tp2 ep2``, with the weight dtype flag (if one is set)
    for a memory shortfall, where it matters."""
    quant = getattr(config, "quantization", None) if kind in (WEIGHTS_DO_NOT_FIT, NO_ROOM_FOR_KV) else None
    return f"{config.gpu} {layout_of(config)}" + (f" {quant}" if quant else "")


def group_pruned(pruned: list[PruneResult]) -> list[PruneGroup]:
    """The pruned configurations by kind of problem, the most common first (ties: the first met)."""
    groups: dict[str, list[PruneResult]] = {}
    for p in pruned:
        groups.setdefault(p.kind or p.reason, []).append(p)
    out = [PruneGroup(kind, len(ps), tuple(dict.fromkeys(where(p.config, kind) for p in ps)), ps[0].reason)
           for kind, ps in groups.items()]
    return sorted(out, key=lambda g: -g.count)  # stable: ties keep the order they were met in
