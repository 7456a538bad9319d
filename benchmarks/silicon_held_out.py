"""ServeLab on real vLLM runs it was never fitted to: other GPUs, other models, other harnesses.

`servelab validate` checks the 198 H200 rows that sim/data/reference/vllm-silicon.csv took from
aiconfigurator-core 0.12.0's `systems/silicon_sample.csv` (NVIDIA, Apache-2.0), and the host and
API-server times are fitted to its 81 dense rows. The same file holds more vLLM runs, which no
ServeLab value was fitted to. This script simulates those of them that ServeLab can run, with the
shipped profile, and prints how far off it is: a check of how the step-time model generalizes to
GPUs and models outside the fit. Nothing here feeds back into the profile.

Rows taken: backend vllm, aggregated serving (`mode agg`), models
- meta-llama/Llama-3.1-70B with FP8 GEMMs (run as nvidia/Llama-3.1-70B-Instruct-FP8, as in
  `validate`; its FP4 rows need Blackwell FP4 tables ServeLab does not price),
- openai/gpt-oss-120b (MXFP4 experts; the file says nvfp4),
- Qwen/Qwen3-32B with no precision recorded (BF16),
- nvidia/Llama-3.1-8B-Instruct-FP8 and Qwen/Qwen3-235B-A22B-FP8,
on GPUs with operator tables (H100 SXM, H200 SXM, B200), minus the rows already in
vllm-silicon.csv (matched on GPU, lengths, concurrency, TP and the measured TTFT). Each row is
simulated exactly as `validate` simulates its rows (sim.silicon.simulate_row: the closed loop's
first round and its steady state, with the API server): `concurrency` is the file's batch_size.
A row ServeLab refuses (for example a KV cache too small for the model's full context on one
GPU, where the real run must have lowered --max-model-len) is counted and its reason printed.

    python3 benchmarks/silicon_held_out.py                    # finds the package, or installs it
    python3 benchmarks/silicon_held_out.py --csv path/to/silicon_sample.csv --verbose
    python3 benchmarks/silicon_held_out.py --gpu b200_sxm --model 70B --json out.json

Where the CSV is found: --csv; else an installed aiconfigurator-core; else the venv that
benchmarks/_aiconfigurator.py keeps (installed on first use, unless --no-install). Where none
can be had, one line says why and the script exits 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim import silicon  # noqa: E402

# silicon_sample.csv's model_path -> the name sim.silicon knows it by.
MODELS = {
    "meta-llama/Llama-3.1-70B": "Llama-3.1-70B",
    "openai/gpt-oss-120b": "GPT-OSS-120B",
    "Qwen/Qwen3-32B": "Qwen/Qwen3-32B",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "nvidia/Llama-3.1-8B-Instruct-FP8",
    "Qwen/Qwen3-235B-A22B-FP8": "Qwen/Qwen3-235B-A22B-FP8",
}
GPUS = ("h100_sxm", "h200_sxm", "b200_sxm")
SAMPLE = Path("systems") / "silicon_sample.csv"


def find_csv(explicit: str | None, install: bool) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            print(f"silicon_held_out: --csv {explicit}: no such file (give aiconfigurator-core's "
                  f"{SAMPLE}, or leave --csv out to find it)", file=sys.stderr)
            raise SystemExit(2)
        return path
    try:
        import aiconfigurator_core

        return Path(aiconfigurator_core.__file__).parent / SAMPLE
    except ImportError:
        pass
    from benchmarks._aiconfigurator import Unavailable, ensure_venv

    try:
        python = ensure_venv(install=install)
    except Unavailable as why:
        raise LookupError(str(why)) from None
    hits = sorted(Path(python).parents[1].glob(f"lib/python*/site-packages/aiconfigurator_core/{SAMPLE}"))
    if not hits:
        raise LookupError(f"{python}: aiconfigurator_core has no {SAMPLE}")
    return hits[0]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value else value  # NaN: not recorded


def held_out_rows(path: Path) -> list[silicon.SiliconRow]:
    """The file's vLLM rows that ServeLab can run and `validate` does not already check."""
    known = {(r.gpu, r.isl, r.osl, r.concurrency, r.tp, round(r.ttft_ms, 2))
             for r in silicon.load_rows(dense_only=False)}
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            name = MODELS.get(r["model_path"])
            if r["backend"] != "vllm" or r["mode"] != "agg" or r["system"] not in GPUS or name is None:
                continue
            if name == "Llama-3.1-70B" and r["gemm_quant_mode"] != "fp8":
                continue
            if name == "Qwen/Qwen3-32B" and r["precision"]:  # its FP8 rows name no checkpoint
                continue
            numbers = {k: _number(r[k]) for k in ("isl", "osl", "batch_size", "tp_size", "moe_tp_size",
                                                  "moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms")}
            if None in (numbers["isl"], numbers["osl"], numbers["batch_size"], numbers["tp_size"],
                        numbers["silicon_ttft_ms"], numbers["silicon_tpot_ms"]):
                continue
            moe = name in silicon.MOE_MODELS  # a dense row's moe_tp and ep mean nothing (1 or 0 there)
            row = silicon.SiliconRow(
                name, r["system"], r["backend_version"], int(numbers["isl"]), int(numbers["osl"]),
                int(numbers["batch_size"]), int(numbers["tp_size"]),
                max(1, int(numbers["moe_ep_size"] or 1)) if moe else 1,
                numbers["silicon_ttft_ms"], numbers["silicon_tpot_ms"],
                max(1, int(numbers["moe_tp_size"] or 1)) if moe else 1)
            if (row.gpu, row.isl, row.osl, row.concurrency, row.tp, round(row.ttft_ms, 2)) not in known:
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", help="aiconfigurator-core's systems/silicon_sample.csv (default: find or install it)")
    p.add_argument("--no-install", action="store_true", help="do not install aiconfigurator into its venv")
    p.add_argument("--gpu", help="only this system (h100_sxm, h200_sxm, b200_sxm)")
    p.add_argument("--model", help="only models whose name contains this")
    p.add_argument("--max-concurrency", type=int, default=256,
                   help="leave out rows with more clients (default 256: the 512-client rows take minutes each)")
    p.add_argument("--verbose", action="store_true", help="print every row")
    p.add_argument("--json", help="write the rows and the errors here")
    args = p.parse_args(argv)
    try:
        path = find_csv(args.csv, install=not args.no_install)
    except LookupError as why:
        print(f"silicon_held_out: skipped, aiconfigurator-core's {SAMPLE} is not available ({why})")
        return 0
    rows = [r for r in held_out_rows(path) if r.concurrency <= args.max_concurrency
            and (not args.gpu or r.gpu == args.gpu) and (not args.model or args.model in r.model)]
    print(f"{len(rows)} held-out vLLM rows from {path}")
    from lab.calibrate.silicon import pool_map

    t0 = time.perf_counter()
    # Rows that repeat a benchmark are simulated once (silicon.simulate_rows; the vLLM version
    # counts only through whether it scheduled asynchronously: silicon.bench_key).
    with pool_map() as m:
        results = silicon.simulate_rows(rows, map_fn=m, keep_going=True)
    groups: dict[tuple, list[dict]] = {}
    refused = []
    for r, res in zip(rows, results):
        if "error" in res:
            refused.append((r, res["error"]))
            continue
        res["vllm"] = r.vllm_version or "not recorded"
        groups.setdefault((r.gpu, r.model, res["vllm"]), []).append(res)
    print(f"{'GPU':9} {'model':34} {'vLLM':>12} {'rows':>5} {'TTFT MAPE':>10} {'TPOT MAPE':>10} "
          f"{'median TTFT err':>16} {'median TPOT err':>16}")
    summary = []
    for (gpu, model, vllm), res in sorted(groups.items()):
        t = np.array([x["ttft_error"] for x in res])
        o = np.array([x["tpot_error"] for x in res])
        summary.append({"gpu": gpu, "model": model, "vllm": vllm, "rows": len(res),
                        "ttft_mape": float(np.abs(t).mean()), "tpot_mape": float(np.abs(o).mean()),
                        "median_ttft_error": float(np.median(t)), "median_tpot_error": float(np.median(o))})
        print(f"{gpu:9} {model:34} {vllm:>12} {len(res):5d} {np.abs(t).mean():10.1%} {np.abs(o).mean():10.1%} "
              f"{np.median(t):+16.0%} {np.median(o):+16.0%}")
        if args.verbose:
            for x in sorted(res, key=lambda x: (x["tp"], x["isl"], x["osl"], x["concurrency"])):
                print(f"    {x['label']:42} TTFT {x['real_ttft_ms']:9.1f} real {x['sim_ttft_ms']:9.1f} sim "
                      f"{x['ttft_error']:+6.0%}   TPOT {x['real_tpot_ms']:7.2f} real {x['sim_tpot_ms']:7.2f} sim "
                      f"{x['tpot_error']:+6.0%}")
    everything = [x for v in groups.values() for x in v]
    if everything:
        t = np.array([x["ttft_error"] for x in everything])
        o = np.array([x["tpot_error"] for x in everything])
        print(f"{'all':9} {'':34} {'':>12} {len(everything):5d} {np.abs(t).mean():10.1%} {np.abs(o).mean():10.1%} "
              f"{np.median(t):+16.0%} {np.median(o):+16.0%}")
    for r, why in refused:
        print(f"refused: {r.label} on {r.gpu}: {why}")
    print(f"{sum(len(v) for v in groups.values())} rows simulated, {len(refused)} refused, "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"source": str(path), "summary": summary,
                                               "rows": [x for v in groups.values() for x in v],
                                               "refused": [{"label": r.label, "gpu": r.gpu, "why": w}
                                                           for r, w in refused]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
