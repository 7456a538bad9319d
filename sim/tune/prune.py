"""Pruning: a configuration vLLM would refuse to start, or that could not hold the workload's
longest request, is never simulated.

The checks are vLLM's own start-up checks, through the memory model
(:func:`sim.memory.plan_for_config`): the weights fit, the KV cache holds one
``max_model_len`` sequence, the tensor-parallel size divides the heads; and vLLM's rule that
``--max-num-batched-tokens`` is at least ``--max-num-seqs``. Then the longest request of the
workload (prompt + output) must fit in the KV cache, else the engine could never finish it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config import EngineConfig, cdiv
from sim.errors import ServeLabError
from sim.memory import MemoryPlan, plan_for_config


@dataclass(frozen=True)
class PruneResult:
    config: EngineConfig
    plan: MemoryPlan | None  # None when pruned
    reason: str = ""  # why it was pruned ("" when kept)

    @property
    def kept(self) -> bool:
        return self.plan is not None


def check(config: EngineConfig, longest_request_tokens: int) -> PruneResult:
    """Keep ``config`` (with its memory plan) or say why vLLM could not serve the workload with it."""
    if config.max_num_batched_tokens is not None and config.max_num_seqs is not None \
            and config.max_num_batched_tokens < config.max_num_seqs:
        return PruneResult(config, None, f"max_num_batched_tokens ({config.max_num_batched_tokens}) must be greater "
                                         f"than or equal to max_num_seqs ({config.max_num_seqs})")
    try:
        plan = plan_for_config(config, usage="serve")
    except ServeLabError as exc:
        return PruneResult(config, None, str(exc))
    needed = cdiv(longest_request_tokens, config.block_size)
    if needed > plan.num_gpu_blocks - 1:
        return PruneResult(config, None, f"the longest request ({longest_request_tokens} tokens) needs {needed} KV "
                                         f"blocks; the cache has {plan.num_gpu_blocks - 1}")
    return PruneResult(config, plan)
