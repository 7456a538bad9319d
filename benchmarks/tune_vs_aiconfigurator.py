"""ServeLab's capacity planner beside NVIDIA's aiconfigurator, asked the same question.

For each question (a model on 8 GPUs of one kind, fixed prompt and output lengths, a TTFT and a
TPOT limit), it prints:
* the wall time each tool took to answer;
* the configuration each chose: aiconfigurator's best aggregated deployment by tokens/s/GPU
  (`aiconfigurator cli default`: static estimates from per-operator timings, no queueing), and
  `servelab tune`'s best by cost per output token (the same ranking on one GPU kind), searched over
  TP 1, 2, 4, 8, --max-num-seqs and --max-num-batched-tokens, as a closed loop of clients;
* ServeLab's simulated goodput for both choices: output tokens/s per GPU of a closed loop at the
  chosen concurrency, and whether the simulated median TTFT and TPOT meet the limits.

aiconfigurator 0.12.0 runs from its own venv: benchmarks/_aiconfigurator.py when this checkout
has it, else this script installs it the same way (uv into .venv-aiconfigurator/, or the venv
SERVELAB_AICONFIGURATOR_VENV names). Where it cannot be installed, it is skipped with a message
and ServeLab's side is still printed.

Precision: aiconfigurator reads the dtype from the model's config.json (BF16 for these two); ServeLab
simulates BF16 weights and KV cache, so both answer for BF16.

Usage: python benchmarks/tune_vs_aiconfigurator.py [--no-install] [--question 8b|70b]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (name, ServeLab model, aiconfigurator model path, ServeLab GPU, aiconfigurator system, isl, osl, ttft_ms, tpot_ms)
QUESTIONS = {
    "8b": ("Llama-3.1-8B on 8 x H100", "meta-llama/Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B", "h100-80gb",
           "h100_sxm", 1024, 256, 500.0, 20.0),
    "70b": ("Llama-3.1-70B on 8 x H200", "meta-llama/Llama-3.1-70B", "meta-llama/Meta-Llama-3.1-70B", "h200",
            "h200_sxm", 1024, 256, 1000.0, 40.0),
}
TOTAL_GPUS = 8
VERSION = "0.12.0"


class Unavailable(Exception):
    pass


# -- aiconfigurator: the shared helper where it exists, else the same steps here -------------------
def aiconfigurator_default(model_path, system, isl, osl, ttft_ms, tpot_ms, install: bool) -> tuple[dict, float]:
    """aiconfigurator's best aggregated configuration (a row of best_config_topn.csv) and its wall time."""
    save_dir = tempfile.mkdtemp(prefix="servelab-aic-")
    try:
        try:
            from benchmarks import _aiconfigurator as aic
        except ImportError:
            aic = None
        if aic is not None:
            python = aic.ensure_venv(install=install)
            argv = aic.default_argv(model_path, system, total_gpus=TOTAL_GPUS, isl=isl, osl=osl, ttft_ms=ttft_ms,
                                    tpot_ms=tpot_ms, save_dir=save_dir)
            t0 = time.perf_counter()
            [out] = aic.run_many(python, [argv], one_process_each=True)
            wall = time.perf_counter() - t0
            if out.rc != 0:
                raise Unavailable(f"aiconfigurator cli default failed: {out.text.strip().splitlines()[-1:]}")
            best = aic.read_best_configs(save_dir).get("agg")
        else:
            exe = _ensure_venv(install) / "bin" / "aiconfigurator"
            argv = [str(exe), "cli", "default", "--model-path", model_path, "--system", system, "--backend", "vllm",
                    "--total-gpus", str(TOTAL_GPUS), "--isl", str(isl), "--osl", str(osl), "--ttft", f"{ttft_ms:g}",
                    "--tpot", f"{tpot_ms:g}", "--save-dir", save_dir]
            t0 = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise Unavailable(f"aiconfigurator cli default failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
            best = _read_agg(save_dir)
        if not best:
            raise Unavailable("aiconfigurator found no aggregated configuration within the SLA")
        return best[0], wall
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)


def _venv() -> Path:
    return Path(os.environ.get("SERVELAB_AICONFIGURATOR_VENV") or ROOT / ".venv-aiconfigurator")


def _ensure_venv(install: bool) -> Path:
    venv = _venv()
    check = [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('aiconfigurator'))"]
    ok = lambda: (venv / "bin" / "python").exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == VERSION
    if ok():
        return venv
    if not install:
        raise Unavailable(f"{venv} does not hold aiconfigurator=={VERSION} (run without --no-install)")
    uv = shutil.which("uv")
    if uv is None:
        raise Unavailable("uv is not on PATH to install aiconfigurator")
    print(f"installing aiconfigurator=={VERSION} into {venv} ...", file=sys.stderr)
    for cmd in ([uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv)],
                [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), f"aiconfigurator=={VERSION}"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise Unavailable(f"{' '.join(cmd[:3])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    if not ok():
        raise Unavailable(f"aiconfigurator=={VERSION} does not import in {venv}")
    return venv


def _read_agg(save_dir: str) -> list[dict]:
    paths = [p for p in Path(save_dir).glob("**/agg/best_config_topn.csv")]
    if not paths:
        return []
    with open(paths[0], newline="") as f:
        return list(csv.DictReader(f))


# -- ServeLab -------------------------------------------------------------------------------------
def servelab_tune(model, gpu, isl, osl, ttft_ms, tpot_ms, num_prompts):
    from sim.tune import SearchSpace, TuneRequest, parse_sla, tune
    from sim.tune.executors import LocalExecutor
    from sim.tune.prices import shipped_prices
    from sim.workload import WorkloadSpec

    space = SearchSpace(model=model, gpus=(gpu,), tensor_parallel_sizes=(1, 2, 4, 8), max_num_seqs=(64, 128, 256, 512),
                        max_num_batched_tokens=(2048, 8192, 16384), max_model_len=2048, max_replicas=TOTAL_GPUS,
                        gpu_memory_utilization=0.9)  # as simulate_closed_loop below, and as docs/tune.md's figures
    request = TuneRequest(space, WorkloadSpec(num_prompts=num_prompts, random_input_len=isl, random_output_len=osl),
                          parse_sla(f"median_ttft_ms<={ttft_ms:g},median_tpot_ms<={tpot_ms:g}"), shipped_prices(),
                          mode="concurrency")
    t0 = time.perf_counter()
    executor = LocalExecutor()
    try:
        result = tune(request, executor)
    finally:
        executor.close()
    return result, time.perf_counter() - t0


def simulate_closed_loop(model, gpu, tp, concurrency, isl, osl, max_num_seqs=None, max_num_batched_tokens=None,
                         prompts_per_client=3):
    """ServeLab's goodput of one configuration: a closed loop of `concurrency` clients."""
    from sim.config import EngineConfig
    from sim.engine import run_engine
    from sim.workload import WorkloadSpec, build_workload

    config = EngineConfig(model=model, gpu=gpu, tensor_parallel_size=tp, max_model_len=2048, gpu_memory_utilization=0.9,
                          max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    spec = WorkloadSpec(num_prompts=max(prompts_per_client * concurrency, 60), random_input_len=isl, random_output_len=osl)
    r = run_engine(config, build_workload(spec, np.random.default_rng(0)), usage="serve", max_concurrency=concurrency)
    duration = float(r.finish_s.max() - r.arrival_s.min())
    return {"tokens_per_gpu": float(r.output_len.sum()) / duration / tp,
            "median_ttft_ms": float(np.median(r.ttft_s)) * 1e3, "median_tpot_ms": float(np.median(r.tpot_s)) * 1e3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-install", action="store_true", help="do not install aiconfigurator; skip it if absent")
    p.add_argument("--question", choices=sorted(QUESTIONS), action="append", default=None)
    p.add_argument("--num-prompts", type=int, default=200, help="requests per ServeLab simulation")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.2f}")
    for key in args.question or sorted(QUESTIONS):
        name, model, aic_model, gpu, system, isl, osl, ttft, tpot = QUESTIONS[key]
        print(f"\n== {name}, isl {isl}, osl {osl}, TTFT <= {ttft:g} ms, TPOT <= {tpot:g} ms")
        result, wall = servelab_tune(model, gpu, isl, osl, ttft, tpot, args.num_prompts)
        c = result.counts
        w = result.winner
        print(f"servelab tune: {wall:.1f} s ({c.candidates:,} candidates, {c.pruned_configs} configurations pruned, "
              f"{c.simulated_configs} simulated in {c.simulations:,} runs, {c.stopped_early:,} stopped early)")
        if w is None:
            print("  chose nothing: no configuration meets the SLA in simulation")
        else:
            clients = int(w.load_per_replica)
            sim = simulate_closed_loop(model, gpu, w.config.tensor_parallel_size, clients, isl, osl,
                                       w.config.max_num_seqs, w.config.max_num_batched_tokens)
            print(f"  chose TP{w.config.tensor_parallel_size}, {clients} clients a replica, --max-num-seqs "
                  f"{w.config.max_num_seqs}, --max-num-batched-tokens {w.config.max_num_batched_tokens}, "
                  f"{TOTAL_GPUS // w.config.tensor_parallel_size} replicas on {TOTAL_GPUS} GPUs")
            print(f"  ServeLab simulates: {sim['tokens_per_gpu']:,.0f} output tok/s/GPU, median TTFT "
                  f"{sim['median_ttft_ms']:.0f} ms, median TPOT {sim['median_tpot_ms']:.1f} ms")
        try:
            best, aic_wall = aiconfigurator_default(aic_model, system, isl, osl, ttft, tpot, install=not args.no_install)
        except Exception as exc:  # noqa: BLE001 (any failure of the peer tool means: skipped, say why)
            print(f"aiconfigurator {VERSION}: skipped ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            continue
        tp, bs = int(best["tp"]), int(float(best["bs"]))
        print(f"aiconfigurator {VERSION} cli default: {aic_wall:.1f} s (process start included)")
        print(f"  chose TP{tp}, batch {bs} a replica (its concurrency), {TOTAL_GPUS // tp} replicas; it estimates "
              f"{float(best['tokens/s/gpu']):,.0f} tok/s/GPU, TTFT {float(best['ttft']):.0f} ms, TPOT "
              f"{float(best['tpot']):.1f} ms")
        sim = simulate_closed_loop(model, gpu, tp, bs, isl, osl)
        meets = sim["median_ttft_ms"] <= ttft and sim["median_tpot_ms"] <= tpot
        print(f"  ServeLab simulates: {sim['tokens_per_gpu']:,.0f} output tok/s/GPU, median TTFT "
              f"{sim['median_ttft_ms']:.0f} ms, median TPOT {sim['median_tpot_ms']:.1f} ms "
              f"({'meets' if meets else 'MISSES'} the SLA in simulation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
