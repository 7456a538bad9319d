"""What vLLM's hybrid KV cache groups buy a sliding-window model: long requests running at once.

Gemma-3-27B on one H200, max_model_len 32,768, offline requests of INPUT prompt + 256 output
tokens, run twice: every layer as full attention (--disable-hybrid-kv-cache-manager, one block
table a request) and with vLLM's KV cache groups (sim/kv/hybrid.py: blocks that leave the
1,024-token window go back to the pool). Prints the peak and mean of running requests and the
simulated time; nothing is asserted (tests/test_hybrid_kv.py checks the gain).

Usage: python benchmarks/hybrid_kv_concurrency.py [--input-len 16000] [--num-prompts 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.config import EngineConfig
from sim.engine import run_engine
from sim.workload import WorkloadSpec, build_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-len", type=int, default=16_000)
    ap.add_argument("--num-prompts", type=int, default=128)
    args = ap.parse_args()
    workload = build_workload(WorkloadSpec(num_prompts=args.num_prompts, random_input_len=args.input_len,
                                           random_output_len=256), np.random.default_rng(0))
    config = EngineConfig(model="gemma-3-27b", gpu="h200", max_model_len=32768)
    for name, disable in (("every layer full attention", True), ("KV cache groups (vLLM default)", False)):
        t0 = time.perf_counter()
        r = run_engine(config.with_(disable_hybrid_kv_cache_manager=disable), workload, usage="offline")
        running = r.steps["num_running"]
        print(f"{name:32s} running at once: peak {int(running.max()):3d}, mean {running.mean():6.1f} | "
              f"simulated {r.elapsed_s:7.1f} s | preemptions {int(r.num_preemptions.sum())} | "
              f"wall {time.perf_counter() - t0:5.1f} s")


if __name__ == "__main__":
    main()
