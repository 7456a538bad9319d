"""How fast `servelab tune` answers a full-size question with the local executor.

The question (defaults): Llama-3.1-8B, `vllm bench serve`'s random dataset with 512 prompt and
256 output tokens, 20 requests/s in all, SLA p90 TTFT <= 500 ms and p90 TPOT <= 30 ms, over the
default search space: every GPU in the catalog x TP 1, 2, 4, 8 x --max-num-seqs 64, 128, 256,
512 x --max-num-batched-tokens 2048, 8192, 16384 x 1 to 8 replicas, in the model's own dtype
(``--with-fp8`` adds FP8 weights and KV cache where the simulator models precision, four times
the configurations). Each simulation sends 200 requests.

Prints the wall time and the counts: candidates (engine configurations x replica counts; a
replica count is answered from its engine configuration's bisection, see sim/tune/space.py),
pruned, simulated, runs and runs stopped early; then the winner. The target (issue 13) is at
least 1,000 candidates in at most 60 s on the project's 2-core machine.

Usage: python benchmarks/tune_speed.py [--model M] [--gpu G ...] [--num-prompts N] [--workers W]
"""

from __future__ import annotations

import argparse
import os
import time

from sim.tune import SearchSpace, TuneRequest, parse_sla, tune
from sim.tune.executors import LocalExecutor
from sim.tune.prices import shipped_prices
from sim.tune.space import default_precisions, resolve_gpus
from sim.workload import WorkloadSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="meta-llama/Llama-3.1-8B")
    p.add_argument("--gpu", action="append", default=None, help="default: every GPU in the catalog")
    p.add_argument("--tensor-parallel-size", default="1,2,4,8")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--request-rate", type=float, default=20.0)
    p.add_argument("--sla", default="p90_ttft_ms<=500,p90_tpot_ms<=30")
    p.add_argument("--workers", type=int, default=None, help="default: every core")
    p.add_argument("--with-fp8", action="store_true", help="search FP8 weights and KV cache too, where modelled")
    args = p.parse_args()

    quantization, kv_dtypes = default_precisions() if args.with_fp8 else ((None,), ("auto",))
    prices = shipped_prices()
    gpus = tuple(g for g in resolve_gpus(args.gpu) if g in prices)  # the catalog's GPUs that have a price
    space = SearchSpace(model=args.model, gpus=gpus,
                        tensor_parallel_sizes=tuple(int(t) for t in args.tensor_parallel_size.split(",")),
                        quantization=quantization, kv_cache_dtype=kv_dtypes, max_model_len=2048)
    request = TuneRequest(space, WorkloadSpec(num_prompts=args.num_prompts, random_input_len=512, random_output_len=256),
                          parse_sla(args.sla), prices, target_load=args.request_rate)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    executor = LocalExecutor(args.workers)
    try:
        result = tune(request, executor)
    finally:
        executor.close()
    wall_s = time.perf_counter() - t0
    c = result.counts
    print(f"question: {args.model}, random 512/256, {args.request_rate:g} req/s, {request.sla.describe()}, "
          f"{args.num_prompts} requests a run")
    print(f"machine: {os.cpu_count()} cores, {executor.workers} local workers; 1-minute load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other processes share the cores)")
    print(f"GPUs: {', '.join(space.gpus)}")
    print(f"candidates: {c.candidates:,} ({c.engine_configs} engine configurations x {c.replica_counts} replica counts)")
    print(f"pruned: {c.pruned_configs} engine configurations ({c.pruned:,} candidates)")
    print(f"simulated: {c.simulated_configs} engine configurations, {c.simulations:,} runs, "
          f"{c.stopped_early:,} stopped early")
    print(f"wall time: {wall_s:.1f} s ({c.candidates / wall_s:.0f} candidates/s, "
          f"{c.simulated_configs / wall_s:.1f} engine configurations/s)")
    print(f"CPU time of the simulations: {c.cpu_s:.1f} s in all, {c.cpu_s / executor.workers:.1f} s per worker "
          f"(what the wall time would be on {executor.workers} idle cores, plus start-up and pruning)")
    w = result.winner
    if w is not None:
        print(f"winner: {w.replicas} x TP{w.config.tensor_parallel_size} {w.config.gpu}, max-num-seqs "
              f"{w.config.max_num_seqs}, max-num-batched-tokens {w.config.max_num_batched_tokens}, "
              f"${w.cost_per_hour:.2f}/hour, ${w.cost_per_million_tokens:.3f}/M output tokens")
    else:
        print("winner: none meets the SLA")


if __name__ == "__main__":
    main()
