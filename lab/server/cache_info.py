"""The labels of ``vllm:cache_config_info``: vLLM 0.33's CacheConfig, as its API server holds it.

vLLM exports its ``CacheConfig`` as an info gauge (``v1/metrics/loggers.py``,
``PrometheusStatLogger.log_metrics_info``): one series of value 1 whose labels are every field
of the config, ``str()`` of each (``config/cache.py``, ``CacheConfig.metrics_info``: the
instance's ``__dict__``, 37 fields in 0.33, ``_block_size_resolved`` among them), then
``engine``. It is set once the engine is up (``log_engine_initialized``), in the API server's
process, whose copy of the config gets from the engine core only what
``v1/engine/core_client.py``'s ``_apply_ready_response`` copies back: ``num_gpu_blocks``,
``block_size``, ``mamba_block_size``, ``effective_attention_block_size``,
``kv_cache_size_tokens`` and ``kv_cache_max_concurrency``. The fields the engine core or its
workers set for themselves (``kv_cache_layout``, ``hash_block_size``,
``cache_hit_alignment_tokens``) stay ``None`` there.

Where each value comes from here (docs/emulator.md lists them):

- the flags, as vLLM holds them: ``block_size``, ``gpu_memory_utilization``, ``cache_dtype``
  (the ``--kv-cache-dtype`` given; vLLM turns "auto" into a checkpoint's KV-cache quantization
  when it has one), ``num_gpu_blocks_override``, ``enable_prefix_caching``,
  ``kv_cache_memory_bytes``;
- the simulated engine: ``num_gpu_blocks``, ``kv_cache_size_tokens``,
  ``kv_cache_max_concurrency`` (the memory plan's own numbers, not a GPU's profile);
- the emulator's reading of the model and flags, where vLLM works the value out in ways not
  simulated: ``user_specified_block_size`` (true when ``--block-size`` is not 16: the emulator
  cannot tell ``--block-size 16`` from no flag), ``effective_attention_block_size`` (the block
  size, or None for a model without full-attention layers), ``sliding_window`` (the model's
  window when every layer is sliding, as vLLM's EngineArgs sets it), ``is_attention_free``
  (False: every model in the catalog has attention);
- vLLM's defaults, because the emulator takes no flag that changes them: all the others.
"""

from __future__ import annotations

from typing import Any

DEFAULT_BLOCK_SIZE = 16  # vLLM's CacheConfig.DEFAULT_BLOCK_SIZE


def cache_config_labels(engine: Any) -> dict[str, str]:
    """The label values for ``engine`` (a ``sim.engine.Engine``), in CacheConfig's field order."""
    config, memory, model = engine.config, engine.memory, engine.model
    layer_types = model.layer_types
    all_sliding = bool(layer_types) and all(t == "sliding_attention" for t in layer_types)
    full_attention = not all_sliding or config.disable_hybrid_kv_cache_manager
    values: dict[str, Any] = {
        "block_size": config.block_size,
        "user_specified_block_size": config.block_size != DEFAULT_BLOCK_SIZE,
        "kv_cache_layout": None,
        "prefix_match_unit": None,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "cache_dtype": config.kv_cache_dtype,
        "is_attention_free": False,
        "num_gpu_blocks_override": config.num_gpu_blocks_override,
        "sliding_window": model.sliding_window if all_sliding else None,
        "enable_prefix_caching": config.enable_prefix_caching,
        "prefix_caching_hash_algo": "sha256",
        "prefix_cache_retention_interval": 0,
        "kv_cache_dtype_skip_layers": [],
        "mamba_page_size_padded": None,
        "skip_page_size_padded": None,
        "mamba_block_size": None,
        "mamba_cache_dtype": "auto",
        "mamba_ssm_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "enable_mamba_shared_prefix_checkpoint": False,
        "replayssm_buffer_len": 16,
        "use_replayssm": False,
        "use_kda_recoverssm": False,
        "num_gpu_blocks": engine.num_gpu_blocks,
        "num_cpu_blocks": None,
        "simple_cpu_offload_num_blocks": None,
        "effective_attention_block_size": config.block_size if full_attention else None,
        "kv_cache_size_tokens": memory.kv_cache_tokens,
        "kv_cache_max_concurrency": memory.max_concurrency,
        "hash_block_size": None,
        "cache_hit_alignment_tokens": None,
        "kv_sharing_fast_prefill": False,
        "swa_bounded_replay": True,
        "kv_cache_memory_bytes": config.kv_cache_memory_bytes,
        "kv_offloading_size": None,
        "kv_offloading_backend": "native",
        "_block_size_resolved": True,
    }
    return {name: str(value) for name, value in values.items()}
