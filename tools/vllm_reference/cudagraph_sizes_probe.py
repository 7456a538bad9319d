"""vLLM's own CUDA-graph capture sizes and default scheduler limits, for tests/test_cudagraphs.py.

Runs in .venv-vllm (vLLM 0.33, CPU). Reads JSON on stdin::

    {"graphs": [{"blackwell": false, "gpt_oss": false, "max_num_seqs": 1024,
                 "max_num_batched_tokens": 8192, "enforce_eager": false,
                 "performance_mode": "balanced"}],
     "limits": [{"memory_gib": 80, "device_name": "nvidia h100 80gb hbm3", "usage": "serve",
                 "performance_mode": "throughput"}]}

For each "graphs" case it runs vLLM's ``VllmConfig._set_cudagraph_sizes`` (vllm/config/vllm.py)
on a stand-in holding only the fields it reads, after
``GptOssForCausalLMConfig.verify_and_update_config`` (vllm/model_executor/models/config.py) for a
gpt-oss case, as vLLM does at start-up; the platform is a stand-in that answers
``is_device_capability_family(100)`` (data-center Blackwell) as the case says. For each "limits"
case it runs ``EngineArgs._set_default_max_num_seqs_and_batched_tokens_args``
(vllm/engine/arg_utils.py) with neither flag set, on a platform stand-in with that memory and
name. Prints JSON: {"graphs": [sizes, ...], "limits": [[max_num_batched_tokens, max_num_seqs], ...]}.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace


def main() -> None:
    request = json.load(sys.stdin)
    with contextlib.redirect_stdout(io.StringIO()):
        import vllm.platforms
        from vllm.config import CompilationConfig, VllmConfig
        from vllm.config.compilation import CUDAGraphMode
        from vllm.engine import arg_utils
        from vllm.engine.arg_utils import EngineArgs
        from vllm.model_executor.models.config import GptOssForCausalLMConfig
        from vllm.usage.usage_lib import UsageContext

    graphs = []
    for case in request.get("graphs", []):
        vllm.platforms.current_platform = SimpleNamespace(
            is_device_capability_family=lambda family, blackwell=case["blackwell"]: blackwell and family == 100)
        cfg = SimpleNamespace(
            model_config=SimpleNamespace(enforce_eager=case["enforce_eager"]),
            compilation_config=CompilationConfig(
                cudagraph_mode=CUDAGraphMode.NONE if case["enforce_eager"] else CUDAGraphMode.FULL_AND_PIECEWISE),
            scheduler_config=SimpleNamespace(max_num_seqs=case["max_num_seqs"],
                                             max_num_batched_tokens=case["max_num_batched_tokens"]),
            speculative_config=None, uniform_decode_query_len=1,
            performance_mode=case.get("performance_mode", "balanced"),
            structured_outputs_config=SimpleNamespace(reasoning_parser=""))
        if case["gpt_oss"]:
            GptOssForCausalLMConfig.verify_and_update_config(cfg)
        VllmConfig._set_cudagraph_sizes(cfg)
        graphs.append(list(cfg.compilation_config.cudagraph_capture_sizes))

    limits = []
    for case in request.get("limits", []):
        arg_utils.current_platform = SimpleNamespace(  # the module's own binding of it
            get_device_total_memory=lambda gib=case["memory_gib"]: int(gib * 1024**3),
            get_device_name=lambda name=case["device_name"]: name,
            is_device_capability=lambda capability: False, is_tpu=lambda: False, is_cpu=lambda: False)
        args = SimpleNamespace(pipeline_parallel_size=1, tensor_parallel_size=1, max_num_batched_tokens=None,
                               max_num_seqs=None, performance_mode=case["performance_mode"],
                               enable_chunked_prefill=True, get_batch_defaults=EngineArgs.get_batch_defaults)
        usage = UsageContext.OPENAI_API_SERVER if case["usage"] == "serve" else UsageContext.LLM_CLASS
        model_config = SimpleNamespace(max_model_len=1 << 20, is_multimodal_model=False)
        EngineArgs._set_default_max_num_seqs_and_batched_tokens_args(
            args, usage, model_config, SimpleNamespace(use_batched_dp_moe=False))
        limits.append([args.max_num_batched_tokens, args.max_num_seqs])
    print(json.dumps({"graphs": graphs, "limits": limits}))


if __name__ == "__main__":
    main()
