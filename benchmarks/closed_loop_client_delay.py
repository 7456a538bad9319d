"""How much a load generator's own delay moves a fixed-length closed loop's TTFT and TPOT.

`servelab bench serve` sends a closed loop's next request the instant its client has the last
token, unless told the client's turnaround (`--client-turnaround-ms`). A real client takes a
little longer: vLLM's `vllm bench serve` with 256 streams on the project's 2-core machine got
each re-sent request to the emulator's HTTP parser 16-18 ms after stamping its start
(docs/emulator.md). This script simulates the emulator benchmark's workload
(Llama-3.1-8B on an H100, 1,000 requests of 512/128 tokens, 256 clients, the first wave sent
at once, the API server simulated, prompts over the benchmark tokenizer's 1,998 ids) with each
re-sent request reaching the API server an exponentially distributed time after its client
stamped it (`run_engine(client_turnaround_s=...)`, what `--client-turnaround-ms` sets), for a
few mean delays, and prints what the client would measure: how sensitive that benchmark is.

    python3 benchmarks/closed_loop_client_delay.py [--delays-ms 0 2 5 10 17] [--vocab-size 1998]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.calibration import frontend_for  # noqa: E402
from sim.catalog import get_gpu, get_model  # noqa: E402
from sim.config import EngineConfig  # noqa: E402
from sim.engine import run_engine  # noqa: E402
from sim.workload import WorkloadSpec, build_workload  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delays-ms", type=float, nargs="+", default=[0, 2, 5, 10, 17])
    ap.add_argument("--vocab-size", type=int, default=1998)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()
    config = EngineConfig(model="meta-llama/Llama-3.1-8B", gpu="h100-80gb")
    fe = frontend_for(config, get_model(config.model), get_gpu(config.gpu))
    spec = WorkloadSpec(num_prompts=1000, random_input_len=512, random_output_len=128, vocab_size=args.vocab_size)
    print(f"{'client delay':>13} {'mean TTFT':>10} {'med. TTFT':>10} {'mean TPOT':>10} {'med. TPOT':>10}")
    for d in args.delays_ms:
        workload = build_workload(spec, np.random.default_rng(0))
        r = run_engine(config, workload, usage="serve", max_concurrency=args.concurrency, frontend=fe,
                       closed_loop_start="together", client_turnaround_s=d / 1000)
        ttft, tpot = 1000 * np.asarray(r.ttft_s), 1000 * np.asarray(r.tpot_s)
        print(f"{d:>10.1f} ms {ttft.mean():>7.1f} ms {np.median(ttft):>7.1f} ms {tpot.mean():>7.2f} ms "
              f"{np.median(tpot):>7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
