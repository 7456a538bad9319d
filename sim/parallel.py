"""Where a model's pieces live across GPUs: tensor, data and expert parallelism, as vLLM 0.33 lays them out.

Three flags decide it (``vllm serve``: ``--tensor-parallel-size``/``-tp``, ``--data-parallel-size``/``-dp``,
``--enable-expert-parallel``/``-ep``); ``tp x dp`` GPUs in all.

* **Attention, dense MLPs, shared experts, embeddings** are sharded over the ``tp`` GPUs of one
  data-parallel rank and replicated across the ``dp`` ranks. Each DP rank is an engine core of its
  own, with its own KV cache, scheduler and batches (``v1/engine/core.py``: ``DPEngineCoreProc``).
* **The MoE layer's routed experts** (``model_executor/layers/fused_moe/config.py``,
  ``FusedMoEParallelConfig.make``) are spread over all ``tp x dp`` GPUs:

  - without expert parallelism, every GPU holds every expert, each expert's projections sharded
    like a dense MLP over ``tp x dp`` ranks (``flatten_tp_across_dp_and_pcp``): the intermediate
    size per GPU is ``moe_intermediate_size / (tp x dp)``;
  - with ``--enable-expert-parallel`` (and more than one GPU), ``ep_size = tp x dp`` and the MoE
    layer's own TP is 1: each GPU holds whole experts, ``num_experts / ep_size`` of them
    (``expert_map_manager.py``, ``determine_expert_map``, linear placement: when ``ep_size`` does
    not divide the experts, the first ``num_experts % ep_size`` ranks hold one more).

What vLLM refuses, and ServeLab with it (one line each, :class:`sim.errors.ConfigError`):

* ``--enable-expert-parallel`` on a model without experts (``config/model.py``,
  ``_verify_with_expert_parallelism``: "Number of experts in the model must be greater than 0
  when expert parallelism is enabled"). vLLM refuses it even on one GPU; so does ServeLab.
* a tensor-parallel size that does not divide the attention heads (``verify_with_parallel_config``),
  or the KV heads (:meth:`sim.catalog.ModelSpec.check_tensor_parallel`);
* Qwen3-MoE with a tensor-parallel size above its number of experts (``qwen3_moe.py``).

Where ServeLab is stricter than vLLM, and says so in the message:

* an expert-parallel size above the number of experts: vLLM builds it, and the extra GPUs hold
  no expert at all. ServeLab refuses it as a layout that wastes GPUs in every MoE layer.
* gpt-oss with an expert-parallel size that does not divide its experts: vLLM's ``gpt_oss.py``
  loads ``num_experts // ep_size`` experts per rank, so the remainder would never be loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MoESharding:
    """How one GPU holds a MoE layer's routed experts."""

    tensor_parallel_size: int  # ranks each expert's projections are sharded over (1 under EP)
    expert_parallel_size: int  # ranks the experts are spread over (1 without EP)
    local_experts: int  # experts the fullest GPU holds (all of them without EP)
    num_experts: int

    @property
    def use_ep(self) -> bool:
        return self.expert_parallel_size > 1

    def intermediate_per_gpu(self, moe_intermediate_size: int) -> int:
        return -(-moe_intermediate_size // self.tensor_parallel_size)

    def experts_on_rank(self, rank: int) -> int:
        """Experts rank ``rank`` holds (``determine_expert_map``, linear placement)."""
        if not self.use_ep:
            return self.num_experts
        base, extra = divmod(self.num_experts, self.expert_parallel_size)
        return base + (1 if rank < extra else 0)


def moe_sharding(num_experts: int, world_size: int, enable_expert_parallel: bool) -> MoESharding:
    """``FusedMoEParallelConfig.make``: whole experts over all ``world_size`` GPUs with expert
    parallelism (on more than one GPU), else every expert sharded over them."""
    if enable_expert_parallel and world_size > 1:
        return MoESharding(1, world_size, -(-num_experts // world_size), num_experts)
    return MoESharding(world_size, 1, num_experts, num_experts)


@dataclass(frozen=True, slots=True)
class ParallelLayout:
    """vLLM's three parallel flags; :meth:`check` holds them against a model."""

    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_expert_parallel: bool = False

    def __post_init__(self) -> None:
        for flag, value in (("--tensor-parallel-size", self.tensor_parallel_size),
                            ("--data-parallel-size", self.data_parallel_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")
        if not isinstance(self.enable_expert_parallel, bool):
            raise ConfigError(f"--enable-expert-parallel: expected true or false, got {self.enable_expert_parallel!r}")

    @property
    def world_size(self) -> int:
        """GPUs in all: ``tp x dp``."""
        return self.tensor_parallel_size * self.data_parallel_size

    @classmethod
    def of(cls, config) -> "ParallelLayout":
        """The layout of anything with vLLM's flag names (an :class:`sim.config.EngineConfig`)."""
        return cls(getattr(config, "tensor_parallel_size", 1), getattr(config, "data_parallel_size", 1),
                   getattr(config, "enable_expert_parallel", False))

    def moe(self, model) -> MoESharding | None:
        """The MoE layer's sharding for ``model`` (``FusedMoEParallelConfig.make``); None for a dense model."""
        if not model.is_moe:
            return None
        return moe_sharding(model.num_experts, self.world_size, self.enable_expert_parallel)

    def check(self, model, num_gpus: int | None = None) -> None:
        """Raise ConfigError, in one line, for a layout vLLM (or ServeLab, where it says so) refuses."""
        if self.enable_expert_parallel and not model.is_moe:
            raise ConfigError(
                f"--enable-expert-parallel: {model.name} has no experts (a dense model), and vLLM refuses "
                f"it: 'Number of experts in the model must be greater than 0 when expert parallelism is "
                f"enabled'; leave the flag out (tensor or data parallelism serve a dense model)"
            )
        model.check_tensor_parallel(self.tensor_parallel_size)
        tp = self.tensor_parallel_size
        if model.is_moe and model.architecture == "qwen3_moe" and tp > model.num_experts:
            raise ConfigError(
                f"--tensor-parallel-size {tp}: Tensor parallel size {tp} is greater than the number of experts "
                f"{model.num_experts} of {model.name} (vLLM's qwen3_moe.py refuses it); use at most {model.num_experts}"
            )
        moe = self.moe(model)
        if moe is not None and moe.use_ep:
            ep, experts = moe.expert_parallel_size, model.num_experts
            if ep > experts:
                raise ConfigError(
                    f"--enable-expert-parallel with tp {tp} x dp {self.data_parallel_size}: expert-parallel size "
                    f"{ep} is more than the {experts} experts of {model.name}, so {ep - experts} GPUs would hold "
                    f"no expert (vLLM does not check; ServeLab refuses); use at most {experts} GPUs "
                    f"(tp x dp), ideally a divisor of {experts}"
                )
            if experts % ep and model.architecture == "gpt_oss":
                raise ConfigError(
                    f"--enable-expert-parallel with tp {tp} x dp {self.data_parallel_size}: expert-parallel size "
                    f"{ep} does not divide the {experts} experts of {model.name}, and vLLM's gpt_oss.py loads "
                    f"{experts} // {ep} = {experts // ep} per rank, leaving {experts % ep} unloaded; use an "
                    f"expert-parallel size that divides {experts} (e.g. {', '.join(map(str, _divisors(experts)[1:5]))})"
                )
        if num_gpus is not None and self.world_size > num_gpus:
            raise ConfigError(
                f"--data-parallel-size {self.data_parallel_size} x --tensor-parallel-size {tp} = "
                f"{self.world_size} GPUs, more than the {num_gpus} available; lower one of them"
            )

    def log_lines(self, model) -> tuple[str, ...]:
        """What ServeLab's start-up report says about the layout (vLLM logs the expert map per rank)."""
        moe = self.moe(model)
        if moe is None:
            return ()
        if moe.use_ep:
            counts = sorted({moe.experts_on_rank(r) for r in range(moe.expert_parallel_size)}, reverse=True)
            spread = " or ".join(str(c) for c in counts)
            line = (f"Expert parallelism: {model.num_experts} experts over EP size {moe.expert_parallel_size} "
                    f"(tp {self.tensor_parallel_size} x dp {self.data_parallel_size}), {spread} whole "
                    f"expert{'' if counts == [1] else 's'} per GPU")
            if len(counts) > 1:
                line += (f"; {model.num_experts % moe.expert_parallel_size} ranks hold one more "
                         f"(linear placement), so the GPUs' memory differs")
            return (line,)
        if self.world_size > 1:
            return (f"MoE layers: all {model.num_experts} experts on every GPU, each sharded over "
                    f"{moe.tensor_parallel_size} ranks (tp x dp, no expert parallelism)",)
        return ()


def kv_cache_placement(model, tensor_parallel_size: int) -> str:
    """How one DP rank's TP GPUs split the KV cache, in words (the lab's and ``servelab memory``'s placement).

    vLLM's ``QKVParallelLinear`` gives each TP rank ``kv_heads / tp`` KV heads; with fewer KV heads
    than ranks each rank keeps one, so each head is copied onto ``tp / kv_heads`` GPUs. MLA's cache
    is one latent per token (``MLAAttentionSpec``: ``num_kv_heads=1``), kept whole on every rank.
    """
    tp = tensor_parallel_size
    if model.is_mla:
        return f"MLA latent, replicated: whole on each of the {tp} TP GPUs" if tp > 1 else "MLA latent"
    kv = model.num_key_value_heads
    heads = f"{kv} KV head{'' if kv == 1 else 's'}"
    if tp == 1:
        return f"all {heads}"
    if kv < tp:
        return f"{heads} over TP {tp}: each head copied onto {tp // kv} GPUs, 1 per GPU"
    return f"{heads} sharded over TP {tp}, {kv // tp} per GPU"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
