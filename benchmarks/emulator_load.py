"""The emulator under heavy load, measured by vLLM's own client: lag, TTFT/TPOT against the
simulator, lost requests.

For each concurrency: a fresh `servelab serve meta-llama/Llama-3.1-8B --gpu h100-80gb
--tokenizer DIR`, `vllm bench serve` from the reference venv (random dataset, --ignore-eos,
request rate inf, the given --max-concurrency), then `servelab bench serve` on the same
workload, which says what the client should have measured. Prints, per run:

- requests sent, completed and lost (sent - completed);
- the client's own turnaround as the emulator saw it: from the end of an answer to the next
  request on the same connection (servelab:emulator_client_turnaround_seconds);
- mean and median TTFT and TPOT as the client measured them, as `servelab bench serve`
  predicts them, and the difference (target: within 15% at 256 streams), twice: for an instant
  client (`servelab bench serve`'s default) and for a client with that measured mean
  turnaround (`--client-turnaround-ms`);
- every token's lag behind its simulated time, from the emulator's
  servelab:emulator_lag_seconds histogram (target: p99 at most 10 ms at 256 streams);
- CPU seconds used by the emulator and by the client, and the wall time: on a 2-core machine
  the two share the cores, and a machine also running other work shows it here.

The prediction comes from whatever `servelab bench serve` prints on this checkout (never a
number written here), so the comparison follows the simulator as it changes.

    python3 benchmarks/emulator_load.py [--concurrency 256 1000] [--num-prompts 1000]
           [--input-len 512] [--output-len 128] [--client vllm|raw]

``--client raw`` loads the emulator with tools/vllm_bench_client/raw_client.py instead, a client
that only counts finished streams (prompts as token ids, no JSON parsing): nearly all the CPU
then goes to the emulator, which separates its own lag from the real client's CPU. It prints
lost requests, lag and CPU, and no latencies.

Needs .venv-vllm with vLLM's client modules (bash scripts/setup-vllm-reference).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _harness():
    spec = importlib.util.spec_from_file_location("servelab_vllm_bench_harness",
                                                  ROOT / "tools" / "vllm_bench_client" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_raw(h, tokenizer: Path, work, tmp: Path) -> None:
    run_dir = tmp / f"raw{work.max_concurrency}"
    run_dir.mkdir()
    with h.emulator(tokenizer, run_dir / "serve.log", pid_out := []) as base:
        before = h.lag_histogram(base)
        cpu0, child0, t0 = _proc_cpu_s(pid_out[0]), _children_cpu_s(), time.perf_counter()
        out = h.raw_client(base, work)
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = _proc_cpu_s(pid_out[0]) - cpu0, _children_cpu_s() - child0
        lag = h.lag_delta(before, h.lag_histogram(base))
    print(f"\n{work.max_concurrency} concurrent streams (raw client), {work.num_prompts} requests of "
          f"{work.input_len}/{work.output_len} tokens")
    print(f"  requests: sent {work.num_prompts}, completed {out['completed']}, lost {out['lost']}")
    _print_lag_and_cpu(h, lag, server_cpu, client_cpu, wall)


def _print_lag_and_cpu(h, lag, server_cpu: float, client_cpu: float, wall: float) -> None:
    q = lambda x: 1000 * h.quantile(x, lag)
    count = lag[-1][1] if lag else 0
    late = count - next((cum for le, cum in lag if le >= 0.01), 0)
    print(f"  lag behind the simulated timeline, {count:.0f} tokens: p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, "
          f"p99 {q(0.99):.1f} ms; {late:.0f} tokens ({100 * late / max(count, 1):.1f}%) later than 10 ms")
    print(f"  CPU: emulator {server_cpu:.2f} s ({1e6 * server_cpu / max(count, 1):.1f} us per streamed token, "
          f"requests included), client {client_cpu:.1f} s, over {wall:.1f} s of wall time "
          f"({(server_cpu + client_cpu) / wall:.2f} cores of {os.cpu_count()}); load average now "
          f"{os.getloadavg()[0]:.1f}")


def run_one(h, tokenizer: Path, work, tmp: Path) -> None:
    run_dir = tmp / f"c{work.max_concurrency}"
    run_dir.mkdir()
    with h.emulator(tokenizer, run_dir / "serve.log", pid_out := []) as base:
        server_pid = pid_out[0]
        before = h.lag_histogram(base)
        cpu0, child0, t0 = _proc_cpu_s(server_pid), _children_cpu_s(), time.perf_counter()
        client = h.vllm_bench_serve(base, tokenizer, work, run_dir, timeout_s=1800)
        wall = time.perf_counter() - t0
        server_cpu = _proc_cpu_s(server_pid) - cpu0
        client_cpu = _children_cpu_s() - child0
        lag = h.lag_delta(before, h.lag_histogram(base))
        inside = h.engine_means(base)
        turnaround = h.client_turnaround(base)
    predicted = h.servelab_bench_serve(work, run_dir, tokenizer)
    with_client = h.servelab_bench_serve(work, run_dir, tokenizer, client_turnaround_ms=turnaround["mean_ms"])
    lost = work.num_prompts - client["completed"]
    print(f"\n{work.max_concurrency} concurrent streams, {work.num_prompts} requests of "
          f"{work.input_len}/{work.output_len} tokens, request rate inf")
    print(f"  requests: sent {work.num_prompts}, completed {client['completed']}, lost {lost}"
          + (f" (errors: {sorted(set(e.splitlines()[-1] for e in client.get('errors', []) if e))[:3]})" if lost else ""))
    print(f"  vLLM's client took {turnaround['mean_ms']:.1f} ms (mean; median {turnaround['median_ms']:.1f} ms, "
          f"{turnaround['count']:.0f} requests) from an answer's end to its next request on the connection "
          f"(servelab:emulator_client_turnaround_seconds)")
    print(f"  {'':10} {'vllm bench serve':>17} {'servelab bench':>15} {'difference':>11}"
          f" {'with that client':>17} {'difference':>11}")
    for key, label in (("mean_ttft_ms", "mean TTFT"), ("median_ttft_ms", "med. TTFT"), ("mean_tpot_ms", "mean TPOT"),
                       ("median_tpot_ms", "med. TPOT"), ("median_itl_ms", "med. ITL"), ("p99_itl_ms", "p99 ITL")):
        c, p, q = client[key], predicted[key], with_client[key]
        print(f"  {label:10} {c:>14.1f} ms {p:>12.1f} ms {100 * (c / p - 1):>+10.1f}%"
              f" {q:>14.1f} ms {100 * (c / q - 1):>+10.1f}%")
    print("  the emulator's own engine (vLLM's histograms on its /metrics, before delivery): "
          + ", ".join(f"mean {k.split('_')[1].upper()} {v:.1f} ms" for k, v in inside.items()))
    _print_lag_and_cpu(h, lag, server_cpu, client_cpu, wall)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[256, 1000])
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--client", choices=("vllm", "raw"), default="vllm",
                    help="vllm: vLLM's `vllm bench serve` (default); raw: a light client that only counts streams")
    args = ap.parse_args()
    h = _harness()
    if args.client == "vllm" and not h.client_ready():
        print("needs .venv-vllm with vLLM's benchmark client: bash scripts/setup-vllm-reference", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="servelab-load-") as tmp:
        tmp = Path(tmp)
        tokenizer = h.make_tokenizer(tmp / "tokenizer")
        print(f"servelab serve {h.MODEL} --gpu {h.GPU}; vllm bench serve from {h.VENV}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
        for c in args.concurrency:
            work = h.Workload(args.num_prompts, args.input_len, args.output_len, c, math.inf)
            (run_one if args.client == "vllm" else run_raw)(h, tokenizer, work, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
