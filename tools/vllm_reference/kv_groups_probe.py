"""vLLM's own KV-cache arithmetic for hybrid and MLA models, for tests/test_architectures.py.

Runs in .venv-vllm (vLLM 0.33, CPU). Reads JSON on stdin, a list of cases::

    [{"name": "...", "block_size": 16, "dtype": "bfloat16", "max_model_len": 131072,
      "max_num_batched_tokens": 8192, "available_memory": 67500000000,
      "layers": [{"kind": "full" | "sliding" | "mla", "num_kv_heads": 8, "head_size": 64,
                  "sliding_window": 128}, ...]}]

builds one vLLM KV cache spec per layer (``FullAttentionSpec``, ``SlidingWindowSpec``,
``MLAAttentionSpec``, as the attention layers' ``get_kv_cache_spec`` do), groups them with vLLM's
``get_kv_cache_groups``, sizes the cache with ``get_kv_cache_config_from_groups`` and reads the
capacity with ``get_kv_cache_capacity`` (the "GPU KV cache size" and "Maximum concurrency" log
line). The VllmConfig is a stand-in holding only the fields those functions read, with vLLM's own
``max_concurrent_batches`` / ``max_in_flight_tokens`` properties and async scheduling on (vLLM's
default). Prints JSON, one entry per case.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace


def main() -> None:
    cases = json.load(sys.stdin)
    with contextlib.redirect_stdout(io.StringIO()):
        import torch

        from vllm.config import VllmConfig
        from vllm.v1.core.kv_cache_planning import get_kv_cache_config_from_groups, get_kv_cache_groups
        from vllm.v1.core.kv_cache_utils import get_kv_cache_capacity, get_max_concurrency_for_kv_cache_config
        from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec, SlidingWindowSpec
        from vllm.v1.kv_cache_layout import KVCacheLayout

    class Config:  # the fields of VllmConfig the planning functions read
        max_concurrent_batches = VllmConfig.max_concurrent_batches
        max_in_flight_tokens = VllmConfig.max_in_flight_tokens
        use_v2_model_runner = False

    out = []
    for case in cases:
        cfg = Config()
        cfg.scheduler_config = SimpleNamespace(disable_hybrid_kv_cache_manager=False, async_scheduling=True,
                                               max_num_batched_tokens=case["max_num_batched_tokens"])
        cfg.parallel_config = SimpleNamespace(pipeline_parallel_size=1, decode_context_parallel_size=1,
                                              tensor_parallel_size=1)
        cfg.model_config = SimpleNamespace(max_model_len=case["max_model_len"])
        cfg.attention_config = SimpleNamespace(hisparse_config=None)
        cfg.cache_config = SimpleNamespace(get_resolved_kv_cache_layout=lambda: KVCacheLayout.LBHNC,
                                           num_gpu_blocks_override=None, prefix_cache_retention_interval=None)
        cfg.device_config = SimpleNamespace(device_type="cuda")
        dtype = getattr(torch, case["dtype"])
        bs = case["block_size"]
        specs = {}
        for i, layer in enumerate(case["layers"]):
            name = f"model.layers.{i}.self_attn.attn"
            if layer["kind"] == "mla":
                specs[name] = MLAAttentionSpec(block_size=bs, num_kv_heads=1, head_size=layer["head_size"],
                                               dtype=dtype, cache_dtype_str="auto")
            elif layer["kind"] == "sliding":
                specs[name] = SlidingWindowSpec(block_size=bs, num_kv_heads=layer["num_kv_heads"],
                                                head_size=layer["head_size"], dtype=dtype,
                                                sliding_window=layer["sliding_window"])
            else:
                specs[name] = FullAttentionSpec(block_size=bs, num_kv_heads=layer["num_kv_heads"],
                                                head_size=layer["head_size"], dtype=dtype)
        with contextlib.redirect_stdout(io.StringIO()):
            groups = get_kv_cache_groups(cfg, dict(specs))
            config = get_kv_cache_config_from_groups(cfg, groups, case["available_memory"])
            tokens, concurrency = get_kv_cache_capacity(cfg, config)
        out.append({
            "name": case["name"],
            "page_size_bytes": [g.kv_cache_spec.page_size_bytes for g in groups],
            "group_kinds": [type(g.kv_cache_spec).__name__ for g in groups],
            "group_layers": [[int(n.split(".")[2]) for n in g.layer_names] for g in groups],
            "blocks_per_request": [-(-g.kv_cache_spec.max_memory_usage_bytes(cfg) // g.kv_cache_spec.page_size_bytes)
                                   for g in groups],
            "num_blocks": config.num_blocks,
            "max_concurrency": get_max_concurrency_for_kv_cache_config(cfg, config),
            "kv_cache_tokens": tokens,
            "capacity_concurrency": concurrency,
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
