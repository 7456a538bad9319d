"""The serving container's command line -> :class:`sim.config.EngineConfig`.

The Rollout's pods run ``servelab serve MODEL --gpu G <vllm serve flags>`` (or
``vllm serve MODEL ...`` with ``--gpu`` absent, which needs ``gpu`` given here). The simulated
fleet uses the same model, GPU and flags as its replicas: nothing is configured twice.
"""

from __future__ import annotations

from sim.config import EngineConfig
from sim.errors import ConfigError, ManifestError
from sim.human_readable import parse_int, parse_max_model_len

_INT_FLAGS = {
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--data-parallel-size": "data_parallel_size",
    "-dp": "data_parallel_size",
    "--max-model-len": "max_model_len",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--max-num-seqs": "max_num_seqs",
    "--block-size": "block_size",
    "--long-prefill-token-threshold": "long_prefill_token_threshold",
    "--num-gpu-blocks-override": "num_gpu_blocks_override",
}
# vLLM reads these two as 32k, 32K, ... too (sim.human_readable).
_HUMAN_READABLE = {"--max-model-len": parse_max_model_len, "--max-num-batched-tokens": parse_int}
_FLOAT_FLAGS = {"--gpu-memory-utilization": "gpu_memory_utilization"}
_STR_FLAGS = {  # precision flags, checked by EngineConfig (sim.precision)
    "--dtype": "dtype",
    "--quantization": "quantization",
    "-q": "quantization",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--all2all-backend": "all2all_backend",
    "--performance-mode": "performance_mode",
}
_BOOL_FLAGS = {
    "--enable-prefix-caching": ("enable_prefix_caching", True),
    "--no-enable-prefix-caching": ("enable_prefix_caching", False),
    "--enable-chunked-prefill": ("enable_chunked_prefill", True),
    "--no-enable-chunked-prefill": ("enable_chunked_prefill", False),
    "--enable-expert-parallel": ("enable_expert_parallel", True),
    "-ep": ("enable_expert_parallel", True),
}
# Flags that change nothing the simulator models.
_IGNORED_WITH_VALUE = {"--port", "--host", "--served-model-name", "--seed", "--api-key", "--fault", "--service"}
_IGNORED_SWITCHES = {"--disable-log-requests", "--enable-log-requests", "--disable-log-stats", "--trust-remote-code"}


def engine_config_from_args(args: tuple[str, ...], where: str) -> EngineConfig:
    """Read ``[servelab|vllm] serve MODEL --flag=value ...``; ``where`` prefixes errors."""
    items = list(args)
    path = f"{where}: spec.template.spec.containers[0]"
    if len(items) >= 2 and items[0] in ("servelab", "vllm") and items[1] == "serve":
        items = items[2:]
    elif items and items[0] == "serve":
        items = items[1:]
    else:
        raise ManifestError(
            f"{path}.command: expected 'servelab serve MODEL ...' or 'vllm serve MODEL ...', got {' '.join(args)!r}"
        )
    if not items or items[0].startswith("-"):
        raise ManifestError(f"{path}.args: expected the model name first (e.g. meta-llama/Llama-3.1-8B)")
    fields: dict = {"model": items[0]}
    i = 1
    while i < len(items):
        raw = items[i]
        flag, eq, value = raw.partition("=")
        if flag in _BOOL_FLAGS:
            name, v = _BOOL_FLAGS[flag]
            fields[name] = v
            i += 1
            continue
        if flag in _IGNORED_SWITCHES:
            i += 1
            continue
        needs_value = (flag in _INT_FLAGS or flag in _FLOAT_FLAGS or flag in _STR_FLAGS or flag in _IGNORED_WITH_VALUE
                       or flag == "--gpu")
        if not needs_value:
            raise ManifestError(
                f"{path}.args: unknown flag {flag!r} for the simulated engine; it models --gpu, "
                f"{', '.join(sorted(set(_INT_FLAGS) | set(_FLOAT_FLAGS) | set(_STR_FLAGS) | set(_BOOL_FLAGS)))}"
            )
        if not eq:
            if i + 1 >= len(items):
                raise ManifestError(f"{path}.args: {flag} expects a value")
            value = items[i + 1]
            i += 2
        else:
            i += 1
        if flag == "--gpu":
            fields["gpu"] = value
        elif flag in _INT_FLAGS:
            try:
                fields[_INT_FLAGS[flag]] = _HUMAN_READABLE.get(flag, int)(value)
            except ValueError as exc:
                reason = str(exc) if flag in _HUMAN_READABLE else f"expected an integer, got {value!r}"
                raise ManifestError(f"{path}.args: {flag}: {reason}") from None
        elif flag in _STR_FLAGS:
            fields[_STR_FLAGS[flag]] = value
        elif flag in _FLOAT_FLAGS:
            try:
                fields[_FLOAT_FLAGS[flag]] = float(value)
            except ValueError:
                raise ManifestError(f"{path}.args: {flag}: expected a number, got {value!r}") from None
    if "gpu" not in fields:
        raise ManifestError(f"{path}.args: --gpu is missing (the simulated GPU, e.g. --gpu=h100-80gb)")
    try:
        return EngineConfig(**fields)
    except ConfigError as exc:
        raise ManifestError(f"{path}.args: {exc}") from None
