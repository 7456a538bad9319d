"""How fast the engine simulator runs: simulated requests per wall-clock second, and the ratio
of simulated to wall time.

Runs (each printed with its wall time; nothing is asserted):
1. Vidur's comparison point: Llama-2-70B, TP2, A100-80GB, 10,000 requests of 512 prompt and
   128 output tokens, at most 64 sequences and 4096 tokens a batch, all at once. Vidur 0.0.26
   takes 10.2 s warm on this kind of machine (after a 22-minute cold start); the target is 10x.
2. 10,000 ShareGPT-like requests offline, and the same requests online at 80% of the offline
   capacity (Poisson arrivals), on Llama-2-7B (A100-80GB) and on Vidur's Llama-2-70B (TP2,
   A100-80GB). The ratio of simulated to wall time depends on the configuration: the wall
   time per request is about the same, the simulated time per request is 1 / (0.8 capacity).
3. The 7B online run without fast-forward, to show what skipping identical steps buys.

Usage: python benchmarks/engine_speed.py [--num-prompts N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from sim.config import EngineConfig
from sim.engine import run_engine
from sim.workload import WorkloadSpec, build_workload


def timed(config, workload, repeat, **kwargs):
    """Best wall time and best CPU time (this process) of ``repeat`` runs. On a shared machine
    the CPU time is the steadier figure; both are printed."""
    best_wall = best_cpu = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_engine(config, workload, **kwargs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best_wall = wall if best_wall is None else min(best_wall, wall)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    return result, (best_wall, best_cpu)


def report(name, result, times, n):
    wall, cpu = times
    sim_s = result.elapsed_s
    print(f"{name:56s} wall {wall:5.2f} s, cpu {cpu:5.2f} s | {n / cpu:6.0f} simulated req/s (cpu) | "
          f"simulated {sim_s:7.1f} s = {sim_s / cpu:6.0f}x real time | steps {result.stats.num_steps}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3, help="report the best of R runs")
    args = ap.parse_args()
    n = args.num_prompts

    vidur = EngineConfig(model="meta-llama/Llama-2-70b-hf", gpu="a100-80gb", tensor_parallel_size=2,
                         max_num_seqs=64, max_num_batched_tokens=4096)
    w = build_workload(WorkloadSpec(num_prompts=n, random_input_len=512, random_output_len=128),
                       np.random.default_rng(0))
    result, wall = timed(vidur, w, args.repeat)
    report(f"vidur point: llama-2-70b tp2 a100, {n} x 512/128, offline", result, wall, n)
    print(f"{'':56s} Vidur 0.0.26: 10.2 s warm -> {10.2 / wall[0]:.1f}x faster (wall), {10.2 / wall[1]:.1f}x (cpu)")

    for name, config, with_reference in [
        ("llama-2-7b a100-80gb", EngineConfig(model="meta-llama/Llama-2-7b-hf", gpu="a100-80gb", max_model_len=4096),
         True),
        ("llama-2-70b tp2 a100-80gb", EngineConfig(model="meta-llama/Llama-2-70b-hf", gpu="a100-80gb",
                                                   tensor_parallel_size=2, max_model_len=4096), False),
    ]:
        spec = WorkloadSpec(dataset_name="sharegpt", num_prompts=n, max_model_len=4096)
        w = build_workload(spec, np.random.default_rng(0))
        result, wall = timed(config, w, args.repeat)
        report(f"sharegpt-like, {name}, {n} offline", result, wall, n)
        capacity = n / result.elapsed_s

        rate = 0.8 * capacity
        online = build_workload(replace(spec, request_rate=rate), np.random.default_rng(0))
        result, wall = timed(config, online, args.repeat, usage="serve")
        report(f"  online at 80% of capacity ({rate:.1f} req/s)", result, wall, n)
        if with_reference:
            result, wall = timed(config, online, 1, usage="serve", fast_forward=False)
            report("  the same, without fast-forward", result, wall, n)

if __name__ == "__main__":
    main()
