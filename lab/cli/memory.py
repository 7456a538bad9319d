"""``servelab memory``: vLLM's KV-cache sizing for a model on a GPU, without a GPU.

Prints the lines vLLM logs at start-up ("GPU KV cache size: N tokens, Maximum concurrency
for L tokens per request: X.XXx") and where each GiB of the GPU went; ``--json`` prints the
whole plan as one JSON object.
"""

from __future__ import annotations

import argparse
import json

GiB = 1024**3


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    from lab.cli.engine_args import (HUMAN_INT_HELP, add_parallel_args, add_performance_mode_arg, add_precision_args,
                                     human_int_arg, max_model_len_arg, scheduler_defaults_help)

    parser.add_argument("--model",
                        help="HF name (meta-llama/Llama-2-7b-hf), short name (llama-2-7b) or path to a config.json")
    parser.add_argument("--gpu", help="a10g, l4, l40s, a100-40gb, a100-80gb, h100-80gb, h200, b200 or t4")
    add_parallel_args(parser)
    tokens_help, seqs_help = scheduler_defaults_help("serve")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    parser.add_argument("--max-model-len", type=max_model_len_arg, default=None, metavar="TOKENS",
                        help=f"default: the model's max_position_embeddings; {HUMAN_INT_HELP}")
    parser.add_argument("--max-num-batched-tokens", type=human_int_arg, default=None, metavar="TOKENS",
                        help=f"{tokens_help}; {HUMAN_INT_HELP}")
    parser.add_argument("--max-num-seqs", type=int, default=None, help=seqs_help)
    parser.add_argument("--block-size", type=int, default=16, help="tokens a KV block holds: a multiple of 16")
    parser.add_argument("--kv-cache-memory-bytes", type=human_int_arg, default=None, metavar="BYTES",
                        help=f"KV cache size per GPU; skips the memory profile, as in vLLM; {HUMAN_INT_HELP}")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs, so no CUDA-graph reserve")
    add_performance_mode_arg(parser)
    add_precision_args(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--paper-table-1", action="store_true",
                        help="compare with the vLLM paper's Table 1 (OPT-13B/66B/175B) instead")


def run(args: argparse.Namespace) -> int:
    from sim.catalog import get_gpu, get_model
    from sim.memory import plan_memory

    if args.paper_table_1:
        return _paper_table_1(args.json)
    if not args.model or not args.gpu:
        from sim.errors import ConfigError

        raise ConfigError("servelab memory: --model and --gpu are required (or --paper-table-1)")
    from sim.config import EngineConfig, vllm_scheduler_limits
    from sim.precision import resolve_precision

    model = get_model(args.model)
    gpu = get_gpu(args.gpu)
    # EngineConfig checks the flags as every command does (the same checks as `bench`);
    # resolve_precision applies vLLM's rules for this GPU.
    flags = EngineConfig(model=args.model, gpu=args.gpu, tensor_parallel_size=args.tensor_parallel_size,
                         data_parallel_size=args.data_parallel_size,
                         enable_expert_parallel=args.enable_expert_parallel, all2all_backend=args.all2all_backend,
                         block_size=args.block_size, gpu_memory_utilization=args.gpu_memory_utilization,
                         max_model_len=args.max_model_len, max_num_batched_tokens=args.max_num_batched_tokens,
                         max_num_seqs=args.max_num_seqs, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
                         dtype=args.dtype, quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
                         performance_mode=args.performance_mode)
    from sim.parallel import ParallelLayout

    ParallelLayout.of(flags).check(model)  # the layout's errors before the precision's
    # vLLM's values: a default max_num_seqs is at most --max-num-batched-tokens, and so on (sim.config).
    max_num_batched_tokens, max_num_seqs, _ = vllm_scheduler_limits(flags, model.max_position_embeddings,
                                                                    gpu.memory_bytes, gpu.name, "serve")
    plan = plan_memory(
        model,
        gpu,
        precision=resolve_precision(model, gpu, flags),
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        enable_expert_parallel=args.enable_expert_parallel,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        block_size=args.block_size,
        kv_cache_memory_bytes=args.kv_cache_memory_bytes,
        enforce_eager=args.enforce_eager,
        performance_mode=args.performance_mode,
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    for line in plan.loading_log_lines() + plan.startup_log_lines():
        print(line)
    print()
    tp = plan.tensor_parallel_size
    p = plan.precision
    dp = plan.data_parallel_size
    layout = f"{tp} x {plan.gpu}" if dp == 1 else f"{dp} DP ranks x {tp} x {plan.gpu} ({plan.num_gpus} GPUs)"
    print(f"{plan.model} on {layout} (per GPU{', the fullest' if plan.expert_parallel_size > 1 else ''}):")
    print(f"  precision: weights {_weights_word(p)}, activations {p.activation_dtype}, KV cache {p.kv_cache_dtype}; "
          f"GEMMs {p.gemm_dtype}, attention {p.attention_backend} ({p.source})")
    rows = [
        ("total GPU memory", plan.total_bytes),
        (f"x gpu_memory_utilization {plan.gpu_memory_utilization:.2f}", plan.requested_bytes),
        ("- model weights (Model loading took)", plan.weights_bytes_per_gpu),
        ("- non-torch memory (cuBLAS, NCCL)", plan.non_torch_bytes),
        (f"- activation peak ({plan.max_num_batched_tokens:,} tokens, {plan.max_num_seqs} seqs)",
         plan.activation_peak_bytes),
        (_graphs_label(plan.cudagraph_capture_sizes), plan.cudagraph_bytes),
        ("= KV cache", plan.available_kv_bytes),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value / GiB:9.2f} GiB")
    layers = max((g.num_layers for g in plan.kv_cache_groups), default=0)
    of_layers = f" x {layers} layers" if len(plan.kv_cache_groups) > 1 else ""
    print(f"  KV per token: {plan.kv_bytes_per_token:,} bytes; {plan.num_gpu_blocks:,} blocks of "
          f"{plan.block_size} tokens{of_layers}; max_model_len {plan.max_model_len:,}")
    _print_groups(plan)
    _print_placement(plan, model)
    return 0


def _print_placement(plan, model) -> None:
    """Where the weights and the KV cache live: per GPU by part, and across the DP ranks.

    ``model`` is the ModelSpec the plan was made for; it is not looked up again by ``plan.model``,
    which names a config.json's ``_name_or_path`` and may find another model, or none."""
    parts = plan.weight_bytes_by_part
    if not parts:
        return
    tp, dp = plan.tensor_parallel_size, plan.data_parallel_size
    print("  placement (per GPU):")
    shard = "whole" if tp == 1 else f"sharded over TP {tp}"
    shard += f", replicated on each of {dp} DP ranks" if dp > 1 else ""
    rows = [("attention", parts["attention"], shard), ("other (embeddings, lm_head, norms)", parts["other"], shard)]
    if parts["dense_mlp"]:
        rows.append(("dense MLPs and shared experts" if model.is_moe else "MLPs", parts["dense_mlp"], shard))
    if plan.experts_per_gpu is not None:
        rows.append(("router", parts["router"], "replicated on every GPU"))
        if plan.expert_parallel_size > 1:
            noun = "expert" if plan.experts_per_gpu == 1 else "experts"
            where = (f"{plan.experts_per_gpu} whole {noun} of {model.num_experts} per layer "
                     f"(EP {plan.expert_parallel_size} = tp x dp)")
        elif plan.moe_tensor_parallel_size == 1:
            where = f"all {model.num_experts} experts, whole"
        else:
            where = (f"all {model.num_experts} experts, each sharded over {plan.moe_tensor_parallel_size} GPUs"
                     + (" (tp x dp)" if dp > 1 else ""))
        rows.append(("routed experts", parts["routed_experts"], where))
    width = max(len(r[0]) for r in rows)
    for label, value, where in rows:
        print(f"    {label:<{width}}  {value / GiB:9.2f} GiB  {where}")
    from sim.parallel import kv_cache_placement

    # MLA's latent and KV heads fewer than TP ranks are copied, not sharded (sim.parallel)
    kv = (f"    KV cache: {plan.available_kv_bytes / GiB:.2f} GiB per GPU "
          f"({kv_cache_placement(model, tp)})")
    if dp > 1:
        kv += (f"; each DP rank its own: {plan.kv_cache_tokens:,} tokens, {plan.max_concurrency:.2f}x; "
               f"all {dp} ranks {plan.total_kv_cache_tokens:,} tokens, {plan.total_max_concurrency:.2f}x")
    print(kv)


def _graphs_label(sizes: tuple[int, ...]) -> str:
    """The CUDA-graph line's label: how many step sizes vLLM captures, up to which (sim.cudagraphs)."""
    if not sizes:
        return "- CUDA graphs (none: eager)"
    return f"- CUDA graphs ({len(sizes)} sizes, up to {sizes[-1]:,} tokens)"


def _print_groups(plan) -> None:
    """vLLM's KV cache groups: one for most models; a hybrid model's full and sliding-window groups."""
    groups = plan.kv_cache_groups
    if not groups:
        return
    print(f"  KV cache groups: {len(groups)}, each block {max(g.num_layers for g in groups)} layers x "
          f"{groups[0].page_size_bytes:,} bytes; a {plan.max_model_len:,}-token request takes "
          f"{sum(g.blocks_per_request for g in groups):,} blocks")
    for i, g in enumerate(groups):
        window = f", window {g.sliding_window:,}" if g.sliding_window else ""
        pad = f" + {g.padding_layers} padding" if g.padding_layers else ""
        print(f"    group {i}: {g.kind}{window}, {len(g.layers)} layers{pad}, "
              f"at most {g.blocks_per_request:,} blocks per request")
    if len(groups) > 1:
        full = plan.full_attention_blocks
        per_request = -(-plan.max_model_len // plan.block_size)
        print(f"  Each group has its own block table per request; blocks that leave a sliding window go back "
              f"to the shared pool.\n  With --disable-hybrid-kv-cache-manager (every layer full attention): "
              f"{full:,} blocks of all layers, maximum concurrency {full / per_request:.2f}x")


def _weights_word(p) -> str:
    if not p.is_quantized:
        return p.activation_dtype
    if p.quantization == "mxfp4":
        return f"MXFP4 experts (4-bit, one 8-bit scale per 32), the rest {p.activation_dtype}"
    if p.weight_scheme == "group":
        group = f"groups of {p.group_size}" if p.group_size and p.group_size > 0 else "one group per row"
        zeros = " and zero points" if p.zero_points else ""
        return (f"{p.quantization.upper()} INT{p.weight_bits} ({group}, {p.activation_dtype} scales{zeros}; "
                f"embeddings{'' if p.lm_head_quantized else ' and lm_head'} {p.activation_dtype})")
    scales = {"per-tensor": "per-tensor scales", "per-channel": "per-channel scales",
              "block": f"{p.weight_block_size[0]}x{p.weight_block_size[1]} block scales" if p.weight_block_size else ""}
    return f"FP8 ({scales[p.weight_scheme]}; embeddings{'' if p.lm_head_quantized else ' and lm_head'} {p.activation_dtype})"


def _paper_table_1(as_json: bool) -> int:
    """Our numbers next to the paper's, under the paper's setting (see sim.memory)."""
    from sim.catalog import get_gpu, get_model
    from sim.memory import PAPER_TABLE_1, paper_table_1_plan

    rows = []
    for name, gpus, gpu_name, total_gb, params_gb, kv_gb, slots in PAPER_TABLE_1:
        model = get_model(name)
        plan = paper_table_1_plan(model, get_gpu(gpu_name), gpus, total_gb)
        rows.append({
            "model": name, "gpus": f"{gpus}x {gpu_name}",
            "params_gb": {"paper": params_gb, "servelab": round(model.weight_bytes / 1e9, 1)},
            "kv_cache_gib": {"paper": kv_gb, "servelab": round(plan.available_kv_bytes * gpus / GiB, 2)},
            "max_kv_slots": {"paper": slots, "servelab": plan.num_gpu_blocks * plan.block_size},
        })
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print("vLLM paper (SOSP 2023) Table 1 vs ServeLab; fp16, block 16, gpu_memory_utilization 0.90,")
    print("the table's GPU memory, vLLM 0.1's profile (2560 tokens, 256 seqs, no CUDA graphs)")
    print(f"{'model':<18} {'GPUs':<14} {'params GB':>21} {'KV cache GiB':>22} {'max KV slots':>26}")
    for r in rows:
        cells = []
        for key in ("params_gb", "kv_cache_gib", "max_kv_slots"):
            paper, ours = r[key]["paper"], r[key]["servelab"]
            cells.append(f"{paper:,} / {ours:,} ({ours / paper - 1:+.1%})")
        print(f"{r['model']:<18} {r['gpus']:<14} {cells[0]:>21} {cells[1]:>22} {cells[2]:>26}")
    print("(paper / ServeLab (difference))")
    return 0
