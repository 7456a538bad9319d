"""vLLM's own MoE parallel layout and AWQ weight shapes, for tests/test_parallel.py.

Runs in .venv-vllm (vLLM 0.33, CPU). Reads JSON on stdin::

    {"layouts": [{"tp": 2, "dp": 1, "ep": true, "num_experts": 128}, ...],
     "awq": [{"out": 8192, "in": 5120, "bits": 4, "group_size": 128, "zero_point": true}, ...]}

For each layout it calls ``FusedMoEParallelConfig.make`` (vLLM's decision of the MoE layer's TP
and EP sizes; the process-group look-ups it makes are answered with rank 0, since only the sizes
are read) and ``determine_expert_map`` for every EP rank (how many experts each rank holds). For
each AWQ layer it runs ``AutoAWQLinearMethod.create_weights`` (``BaseAWQLinearMethod``'s) on a bare module and counts the
bytes of the parameters it registers (qweight, qzeros, scales), in float16.
Prints one JSON object.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace


def main() -> None:
    request = json.load(sys.stdin)
    _stub_missing("compressed_tensors", "compressed_tensors.quantization")
    with contextlib.redirect_stdout(io.StringIO()):
        import torch

        from vllm.model_executor.layers.fused_moe import config as moe_config
        from vllm.model_executor.layers.fused_moe.expert_map_manager import determine_expert_map
        from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig, AutoAWQLinearMethod

    # Only sizes are read: answer every group look-up with rank 0.
    moe_config.get_dp_group = lambda: SimpleNamespace(rank_in_group=0)
    moe_config.get_pcp_group = lambda: SimpleNamespace(rank_in_group=0)
    moe_config.get_tensor_model_parallel_rank = lambda: 0
    from vllm.model_executor import parameter

    parameter.get_tensor_model_parallel_rank = lambda: 0  # the parameters record the rank; one rank here
    parameter.get_tensor_model_parallel_world_size = lambda: 1
    layouts = []
    for case in request.get("layouts", []):
        parallel = SimpleNamespace(enable_expert_parallel=case["ep"], all2all_backend="allgather_reducescatter",
                                   enable_eplb=False)
        made = moe_config.FusedMoEParallelConfig.make(tp_size_=case["tp"], pcp_size_=1, dp_size_=case["dp"],
                                                      sp_size_=1, vllm_parallel_config=parallel)
        per_rank = [determine_expert_map(made.ep_size, rank, case["num_experts"])[0] for rank in range(made.ep_size)]
        layouts.append({"tp_size": made.tp_size, "ep_size": made.ep_size, "use_ep": made.use_ep,
                        "experts_per_rank": per_rank})
    awq = []
    for case in request.get("awq", []):
        qc = AutoAWQConfig(case["bits"], case["group_size"], case["zero_point"], False, None, {})
        layer = torch.nn.Module()
        AutoAWQLinearMethod(qc).create_weights(layer, case["in"], [case["out"]], case["in"], case["out"],
                                               torch.float16, weight_loader=lambda *a: None)
        awq.append({name: p.numel() * p.element_size() for name, p in layer.named_parameters()})
    print(json.dumps({"layouts": layouts, "awq": awq}))


def _placeholder(attr: str):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return type(attr, (), {})


def _stub_missing(*names: str) -> None:
    """auto_awq.py imports the MoE oracle, which imports ``compressed_tensors`` (not in the pinned
    closure). Nothing of it runs here: stand-in modules whose every name is a placeholder class."""
    import importlib.util
    import types

    if importlib.util.find_spec(names[0]) is not None:
        return
    for name in names:
        module = types.ModuleType(name)
        module.__file__ = f"<stub {name}>"
        module.__getattr__ = lambda attr: _placeholder(attr)  # type: ignore[method-assign]
        module.__path__ = []  # a package, so submodules import
        sys.modules[name] = module


if __name__ == "__main__":
    main()
