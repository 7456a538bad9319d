"""Decision quality on real runs: does the configuration ServeLab picks really deliver?

Data: sim/data/reference/vllm-silicon.csv (or ../shared/reference/silicon/vllm-silicon.csv): real
vLLM runs on H200 SXM, from NVIDIA's aiconfigurator-core 0.12.0, Apache-2.0 (see the NOTICE there). Each row is a closed loop of
``concurrency`` clients sending ``isl``-token prompts for ``osl`` output tokens, at a
tensor-parallel size ``tp``, with the benchmark's mean TTFT and TPOT.

The check, for each (model, isl, osl) with at least two configurations and each SLA below:
* candidates: the rows' configurations (tp, concurrency);
* real: a row meets the SLA when its real mean TTFT and mean TPOT are within it; its real
  throughput per GPU is output tokens per second per GPU,
      concurrency x osl / (ttft + (osl - 1) x tpot) / tp      (ttft, tpot in seconds),
  each client finishing one request of osl tokens every ttft + (osl - 1) x tpot;
* ServeLab's pick: each candidate's benchmark simulated as the project simulates these rows
  (:func:`sim.silicon.simulate_row`: the serving front end before the engine, the first round
  in lock step and the steady state out of phase, weighted as the benchmark's 20 rounds; where
  this checkout has no ``sim.silicon``, a plain closed loop, `servelab bench serve --dataset-name
  random --random-input-len ISL --random-output-len OSL --random-range-ratio 0 --max-concurrency
  C`), then the planner's rule: among those predicted to meet the SLA, the highest predicted
  output tokens/s per GPU (the same formula on the simulated means);
* score: the pick's real throughput per GPU / the best real throughput per GPU among the rows
  that really met the SLA (0 when the pick did not really meet it). Target: at least 0.95.

The rows are FP8 (Llama) or MoE (Qwen3, gpt-oss). The MoE models are not in the catalog and are
skipped. FP8 needs the precision model (``EngineConfig.quantization``); without it the check is
not run, and ``--bf16-proxy`` runs it with BF16 weights instead, printed as a proxy, not as the check.

Usage: python benchmarks/tune_decision_quality.py [--csv FILE] [--bf16-proxy] [--model SUBSTRING]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from dataclasses import fields
from pathlib import Path

import numpy as np

from sim.config import EngineConfig
from sim.engine import run_engine
from sim.errors import ServeLabError
from sim.workload import WorkloadSpec, build_workload

ROOT = Path(__file__).resolve().parents[1]
# Shipped with the simulator where this checkout has it, else the shared reference folder.
DEFAULT_CSV = next((p for p in (ROOT / "sim" / "data" / "reference" / "vllm-silicon.csv",
                                ROOT.parent / "shared" / "reference" / "silicon" / "vllm-silicon.csv") if p.is_file()),
                   ROOT / "sim" / "data" / "reference" / "vllm-silicon.csv")
MODELS = {"Llama-3.1-70B": "meta-llama/Llama-3.1-70B", "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Llama-3.1-8B"}
GPUS = {"h200_sxm": "h200"}
# (mean TTFT ms, mean TPOT ms): an interactive, a balanced and a batch-like target.
SLAS = ((300.0, 12.0), (1000.0, 20.0), (3000.0, 40.0))


def real_tokens_per_gpu(row: dict) -> float:
    ttft_s, tpot_s = float(row["ttft_ms"]) / 1e3, float(row["tpot_ms"]) / 1e3
    isl, osl, c, tp = (int(row[k]) for k in ("isl", "osl", "concurrency", "tp"))
    return c * osl / (ttft_s + (osl - 1) * tpot_s) / tp


def simulate(model: str, gpu: str, row: dict, fp8: bool, num_prompts_per_client: int) -> dict:
    isl, osl, c, tp = (int(row[k]) for k in ("isl", "osl", "concurrency", "tp"))
    try:
        from sim import silicon
    except ImportError:
        silicon = None
    if silicon is not None and fp8:
        r = silicon.SiliconRow(row["model"], row["gpu"], row["vllm_version"], isl, osl, c, tp, int(row["ep"]),
                               float(row["ttft_ms"]), float(row["tpot_ms"]))
        out = silicon.simulate_row(r)
        sim_row = {"ttft_ms": out["sim_ttft_ms"], "tpot_ms": out["sim_tpot_ms"], "concurrency": c, "osl": osl,
                   "isl": isl, "tp": tp}
        return {"ttft_ms": out["sim_ttft_ms"], "tpot_ms": out["sim_tpot_ms"], "tokens_per_gpu": real_tokens_per_gpu(sim_row)}
    extra = {"quantization": "fp8"} if fp8 else {}
    config = EngineConfig(model=model, gpu=gpu, tensor_parallel_size=tp, max_model_len=isl + osl + 16,
                          gpu_memory_utilization=0.9, **extra)
    n = max(num_prompts_per_client * c, 32)
    spec = WorkloadSpec(num_prompts=n, random_input_len=isl, random_output_len=osl, random_range_ratio=0.0)
    result = run_engine(config, build_workload(spec, np.random.default_rng(0)), usage="serve", max_concurrency=c)
    duration = float(result.finish_s.max() - result.arrival_s.min())
    return {"ttft_ms": float(np.mean(result.ttft_s)) * 1e3, "tpot_ms": float(np.nanmean(result.tpot_s)) * 1e3,
            "tokens_per_gpu": float(result.output_len.sum()) / duration / tp}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--bf16-proxy", action="store_true", help="without the precision model, simulate BF16 weights")
    p.add_argument("--model", default="", help="only rows whose model contains this")
    p.add_argument("--prompts-per-client", type=int, default=4)
    args = p.parse_args()
    if not args.csv.is_file():
        print(f"skipped: {args.csv} not found (the real runs live in ../shared/reference/silicon/)")
        return
    fp8_modelled = "quantization" in {f.name for f in fields(EngineConfig)}
    with open(args.csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if args.model in r["model"]]
    skipped = sorted({r["model"] for r in rows if r["model"] not in MODELS})
    if skipped:
        print(f"skipped (not in the catalog: MoE models are not modelled): {', '.join(skipped)}")
    groups = defaultdict(list)
    for r in rows:
        if r["model"] in MODELS and r["gpu"] in GPUS:
            groups[(r["model"], int(r["isl"]), int(r["osl"]))].append(r)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not fp8_modelled and not args.bf16_proxy:
        print("precision is not modelled yet (EngineConfig has no 'quantization'): every row is FP8, so the check "
              "cannot be run honestly on this version; --bf16-proxy runs it with BF16 weights as a proxy")
        print(f"would check {sum(len(v) for v in groups.values())} rows in {len(groups)} (model, isl, osl) groups "
              f"x {len(SLAS)} SLAs")
        return
    label = "check" if fp8_modelled else "PROXY (BF16 weights simulated for FP8 rows; not the check)"
    print(f"decision quality, {label}: real output tok/s per GPU of ServeLab's pick / best real among rows that met the SLA")
    scores = []
    for (model, isl, osl), group in sorted(groups.items()):
        sims, refused = {}, {}
        for r in group:
            try:
                sims[id(r)] = simulate(MODELS[model], GPUS[r["gpu"]], r, fp8_modelled, args.prompts_per_client)
            except ServeLabError as exc:
                sims[id(r)] = None
                refused.setdefault(str(exc).split(";")[0].split(". ")[0], []).append(f"tp{r['tp']} c{r['concurrency']}")
        for why, which in refused.items():
            print(f"  {model} isl {isl} osl {osl}: {len(which)} rows not simulated ({', '.join(which)}): {why}")
        for ttft_max, tpot_max in SLAS:
            real_ok = [r for r in group if float(r["ttft_ms"]) <= ttft_max and float(r["tpot_ms"]) <= tpot_max]
            if not real_ok:
                continue
            best_real = max(real_tokens_per_gpu(r) for r in real_ok)
            predicted_ok = [r for r in group if sims[id(r)] and sims[id(r)]["ttft_ms"] <= ttft_max
                            and sims[id(r)]["tpot_ms"] <= tpot_max]
            where = f"{model} isl {isl} osl {osl}, TTFT <= {ttft_max:g} ms, TPOT <= {tpot_max:g} ms"
            if not predicted_ok:
                scores.append(0.0)
                print(f"{where}: ServeLab predicts none meets; {len(real_ok)} really do -> score 0.00")
                continue
            pick = max(predicted_ok, key=lambda r: sims[id(r)]["tokens_per_gpu"])
            really_met = pick in real_ok
            score = real_tokens_per_gpu(pick) / best_real if really_met else 0.0
            scores.append(score)
            best = max(real_ok, key=real_tokens_per_gpu)
            print(f"{where}: pick tp{pick['tp']} c{pick['concurrency']} (real {real_tokens_per_gpu(pick):,.0f} tok/s/GPU"
                  f"{'' if really_met else ', really MISSES the SLA'}), best real tp{best['tp']} c{best['concurrency']} "
                  f"({best_real:,.0f}) -> score {score:.2f}")
    if scores:
        met = sum(s >= 0.95 for s in scores)
        print(f"{label}: {met} of {len(scores)} decisions reach 95% (mean score {np.mean(scores):.2f}, "
              f"worst {min(scores):.2f})")


if __name__ == "__main__":
    main()
