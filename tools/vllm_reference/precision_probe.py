"""vLLM's own answers about precision, for tests/test_precision.py. Runs in .venv-vllm (vLLM 0.33, CPU).

Reads JSON on stdin:
    {"kv": [{"num_kv_heads": 8, "head_size": 128, "block_size": 16, "cache_dtype": "fp8", "model_dtype": "bfloat16"}],
     "quant_configs": [{"name": "...", "quantization_config": {...}}]}
and prints JSON with, for each "kv" case, vLLM's page size in bytes (``FullAttentionSpec``) and
the element size of the cache dtype; and for each quantization config, what vLLM's own classes
read from it (``ModelOptFp8Config`` / ``Fp8Config.from_config``, and the string
``--kv-cache-dtype auto`` resolves to, ``get_kv_cache_quant_algo_string``).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    with contextlib.redirect_stdout(io.StringIO()):  # vLLM's import-time chatter stays off stdout
        import torch

        from vllm.model_executor.layers.quantization.fp8 import Fp8Config
        from vllm.model_executor.layers.quantization.modelopt import ModelOptFp8Config
        from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE, get_kv_cache_quant_algo_string
        from vllm.v1.kv_cache_interface import FullAttentionSpec

    out: dict = {"kv": [], "quant_configs": []}
    for case in request["kv"]:
        name = case["model_dtype"] if case["cache_dtype"] == "auto" else case["cache_dtype"]
        dtype = STR_DTYPE_TO_TORCH_DTYPE[name] if name in STR_DTYPE_TO_TORCH_DTYPE else getattr(torch, name)
        spec = FullAttentionSpec(block_size=case["block_size"], num_kv_heads=case["num_kv_heads"],
                                 head_size=case["head_size"], dtype=dtype)
        out["kv"].append({"page_size_bytes": spec.page_size_bytes, "element_size": dtype.itemsize})
    for item in request["quant_configs"]:
        qc = dict(item["quantization_config"])
        producer = qc.get("producer", {})
        if isinstance(producer, dict) and producer.get("name") == "modelopt":
            qc.setdefault("quant_method", "modelopt")  # as model_arch_config_convertor.py does
        entry: dict = {"name": item["name"], "kv_cache_dtype_auto": get_kv_cache_quant_algo_string(qc)}
        if qc.get("quant_method") == "modelopt":
            cfg = ModelOptFp8Config.from_config(qc)
            entry.update(method="modelopt", quant_algo=cfg.quant_method,
                         kv_cache_quant_method=cfg.kv_cache_quant_method, exclude_modules=cfg.exclude_modules)
        else:
            cfg = Fp8Config.from_config(qc)
            entry.update(method="fp8", activation_scheme=cfg.activation_scheme,
                         weight_block_size=cfg.weight_block_size, ignored_layers=cfg.ignored_layers)
        out["quant_configs"].append(entry)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
