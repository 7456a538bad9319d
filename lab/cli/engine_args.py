"""Engine and dataset flags shared by `servelab bench` and `servelab serve`, spelled as vLLM's."""

from __future__ import annotations

import argparse
import math

from sim.config import ENGINES


def add_engine_args(p: argparse.ArgumentParser, *, model_positional: bool = False, usage: str = "serve") -> None:
    """``usage``: "serve" or "offline", whose vLLM defaults the help states."""
    g = p.add_argument_group("engine (vLLM's flags)")
    if not model_positional:
        g.add_argument("--model", required=True, help="HuggingFace id, short alias, or path to a config.json")
    g.add_argument("--gpu", required=True, help="a10g, l4, l40s, a100-40gb, a100-80gb, h100-80gb, h200, b200, t4")
    g.add_argument("--engine", default="vllm", choices=ENGINES, help="vllm (default) or a baseline it replaced")
    add_parallel_args(g)
    tokens_help, seqs_help = scheduler_defaults_help(usage)
    g.add_argument("--max-model-len", type=max_model_len_arg, default=None, metavar="TOKENS",
                   help=f"default: the model's max_position_embeddings; {HUMAN_INT_HELP}")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    g.add_argument("--block-size", type=int, default=16, help="tokens a KV block holds: a multiple of 16")
    g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--max-num-batched-tokens", type=human_int_arg, default=None, metavar="TOKENS",
                   help=f"{tokens_help}; at least --max-model-len with --no-enable-chunked-prefill; {HUMAN_INT_HELP}")
    g.add_argument("--max-num-seqs", type=int, default=None, help=seqs_help)
    g.add_argument("--long-prefill-token-threshold", type=int, default=0)
    g.add_argument("--kv-cache-memory-bytes", type=human_int_arg, default=None, metavar="BYTES",
                   help=f"KV cache size per GPU; skips the memory profile, as in vLLM; {HUMAN_INT_HELP}")
    g.add_argument("--num-gpu-blocks-override", type=int, default=None)
    g.add_argument("--scheduling-policy", choices=("fcfs", "priority"), default="fcfs")
    add_performance_mode_arg(g)
    g.add_argument("--disable-hybrid-kv-cache-manager", action="store_true",
                   help="sliding-window models: allocate every layer as full attention (one KV cache group)")
    add_precision_args(g)
    g.add_argument("--calibration", metavar="FILE", default=None, help="a calibration profile (YAML)")
    g.add_argument("--parallel-sampling", choices=("prefix-cache", "copy-on-write"), default="prefix-cache",
                   help="how --n samples share the prompt's KV: vLLM V1's prefix cache (default) "
                        "or the vLLM paper's copy-on-write")


HUMAN_INT_HELP = "vLLM's forms: 32768, 32k (x 1,000) or 32K (x 1,024), likewise m/M, g/G, t/T"


def human_int_arg(text: str) -> int:
    """argparse type of --max-num-batched-tokens and --kv-cache-memory-bytes (sim.human_readable)."""
    from sim.human_readable import parse_int

    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def max_model_len_arg(text: str) -> int:
    """argparse type of --max-model-len: human_int_arg's forms; vLLM's auto (-1) is refused."""
    from sim.human_readable import parse_max_model_len

    try:
        return parse_max_model_len(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def scheduler_defaults_help(usage: str) -> tuple[str, str]:
    """Help for --max-num-batched-tokens and --max-num-seqs: each GPU's default, from
    sim.config.resolve_scheduler_limits (vLLM 0.33's rule), so that the text cannot drift from it."""
    from sim.catalog import get_gpu, known_gpus
    from sim.config import resolve_scheduler_limits

    tokens: dict[int, list[str]] = {}
    seqs: dict[int, list[str]] = {}
    for name in known_gpus():
        t, s = resolve_scheduler_limits(get_gpu(name).memory_bytes, name, usage)
        tokens.setdefault(t, []).append(name)
        seqs.setdefault(s, []).append(name)

    def per_gpu(values: dict[int, list[str]]) -> str:
        return "; ".join(f"{v} on {', '.join(names)}" for v, names in sorted(values.items()))

    word = "vllm serve" if usage == "serve" else "offline"
    return (f"default: vLLM's for the GPU ({word}): {per_gpu(tokens)}; doubled by --performance-mode throughput",
            f"default: vLLM's for the GPU: {per_gpu(seqs)}; doubled by --performance-mode throughput")


def add_performance_mode_arg(g) -> None:
    """vLLM 0.33's --performance-mode. No argparse ``choices``: EngineConfig checks the value."""
    g.add_argument("--performance-mode", default="balanced", metavar="MODE",
                   help="balanced (default), throughput (doubles the default --max-num-batched-tokens and "
                        "--max-num-seqs) or interactivity (a CUDA graph for every batch size up to 32)")


def add_parallel_args(g, *, tensor_parallel: bool = True) -> None:
    """--tensor-parallel-size/-tp, --data-parallel-size/-dp, --enable-expert-parallel/-ep, as vLLM spells them.

    The values are checked against the model by ``sim.parallel`` (one line, exit code 2)."""
    if tensor_parallel:
        g.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    g.add_argument("--data-parallel-size", "-dp", type=int, default=1,
                   help="engine cores (DP ranks), each with --tensor-parallel-size GPUs and its own KV cache")
    g.add_argument("--enable-expert-parallel", "-ep", action="store_true", default=False,
                   help="MoE models: whole experts spread over tp x dp GPUs instead of every expert sharded")
    g.add_argument("--all2all-backend", default="allgather_reducescatter", metavar="BACKEND",
                   help="MoE models under data parallelism: how the ranks exchange tokens; priced: "
                        "allgather_reducescatter (vLLM's default), deepep_high_throughput, deepep_low_latency")


def add_precision_args(g) -> None:
    """--dtype, --quantization/-q, --kv-cache-dtype, as vLLM spells them.

    No argparse ``choices``: the values are checked by ``sim.precision`` (through EngineConfig),
    which says in one line what is modelled and what vLLM has but ServeLab does not.
    """
    g.add_argument("--dtype", default="auto", metavar="DTYPE",
                   help="auto (the checkpoint's torch_dtype; float32 checkpoints run in bfloat16), half, "
                        "float16, bfloat16, float, float32")
    g.add_argument("--quantization", "-q", default=None, metavar="METHOD",
                   help="fp8 (FP8 weights quantized at load time), fp8_per_tensor, fp8_per_channel, "
                        "fp8_per_block, modelopt; default: the checkpoint's quantization_config")
    g.add_argument("--kv-cache-dtype", default="auto", metavar="DTYPE",
                   help="auto (the model dtype, or fp8_e4m3 if the checkpoint says so), fp8 (= fp8_e4m3), "
                        "fp8_e4m3, fp8_e5m2, bfloat16, float16")


def add_workload_args(p: argparse.ArgumentParser, *, offline: bool) -> None:
    g = p.add_argument_group("dataset (vLLM's flags)")
    g.add_argument("--dataset-name", default="random",
                   choices=("random", "sharegpt", "sharegpt-vllm", "alpaca", "trace"),
                   help="random (default); ShareGPT- or Alpaca-like lengths; or a trace CSV")
    g.add_argument("--dataset-path", default=None,
                   help="trace CSV (arrived_at,num_prefill_tokens,num_decode_tokens) or azure-conv / azure-code")
    g.add_argument("--num-prompts", type=int, default=1000)
    g.add_argument("--random-input-len", type=int, default=1024)
    g.add_argument("--random-output-len", type=int, default=128)
    g.add_argument("--random-range-ratio", type=float, default=0.0)
    g.add_argument("--random-prefix-len", "--prefix-len", dest="prefix_len", type=int, default=0,
                   help="tokens of a shared system prompt at the start of each prompt")
    g.add_argument("--prefix-fraction", type=float, default=1.0, help="fraction of requests that share it")
    g.add_argument("--n", type=int, default=1, help="parallel samples per prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="a Hugging Face tokenizer folder: the random dataset draws its prompts from its "
                        "vocabulary, as vLLM's does (default: the model's vocabulary)")
    if offline:
        g.add_argument("--input-len", type=int, default=None, help="fixed prompt length (random dataset)")
        g.add_argument("--output-len", type=int, default=None, help="fixed output length (random dataset)")
    else:
        g.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (inf: all at once)")
        g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
        g.add_argument("--trace-time-scale", type=float, default=1.0)
