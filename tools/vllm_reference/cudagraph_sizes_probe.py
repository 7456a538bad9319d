"""vLLM's own CUDA-graph capture sizes, for tests/test_memory.py.

Runs in .venv-vllm (vLLM 0.33, CPU). Reads JSON on stdin, a list of cases::

    [{"blackwell": false, "gpt_oss": false, "max_num_seqs": 1024,
      "max_num_batched_tokens": 8192, "enforce_eager": false}]

and runs vLLM's ``VllmConfig._set_cudagraph_sizes`` (vllm/config/vllm.py) on a stand-in holding
only the fields it reads, after ``GptOssForCausalLMConfig.verify_and_update_config``
(vllm/model_executor/models/config.py) for a gpt-oss case, as vLLM does at start-up. The platform
is a stand-in that answers ``is_device_capability_family(100)`` (data-center Blackwell) as the
case says. Prints JSON: the captured sizes of each case, ascending.
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
        import vllm.platforms
        from vllm.config import CompilationConfig, VllmConfig
        from vllm.config.compilation import CUDAGraphMode
        from vllm.model_executor.models.config import GptOssForCausalLMConfig

    out = []
    for case in cases:
        vllm.platforms.current_platform = SimpleNamespace(
            is_device_capability_family=lambda family, blackwell=case["blackwell"]: blackwell and family == 100)
        cfg = SimpleNamespace(
            model_config=SimpleNamespace(enforce_eager=case["enforce_eager"]),
            compilation_config=CompilationConfig(
                cudagraph_mode=CUDAGraphMode.NONE if case["enforce_eager"] else CUDAGraphMode.FULL_AND_PIECEWISE),
            scheduler_config=SimpleNamespace(max_num_seqs=case["max_num_seqs"],
                                             max_num_batched_tokens=case["max_num_batched_tokens"]),
            speculative_config=None, uniform_decode_query_len=1, performance_mode="balanced",
            structured_outputs_config=SimpleNamespace(reasoning_parser=""))
        if case["gpt_oss"]:
            GptOssForCausalLMConfig.verify_and_update_config(cfg)
        VllmConfig._set_cudagraph_sizes(cfg)
        out.append(list(cfg.compilation_config.cudagraph_capture_sizes))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
