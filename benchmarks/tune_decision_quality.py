"""Decision quality on real runs: does the configuration ServeLab picks really deliver?

Data: sim/data/reference/vllm-silicon.csv: real vLLM runs on H200 SXM, from NVIDIA's
aiconfigurator-core 0.12.0, Apache-2.0 (see the NOTICE there). Each row is a closed loop of
``concurrency`` clients sending ``isl``-token prompts for ``osl`` output tokens, on a server
laid out as the row says (TP, and for MoE rows the data- and expert-parallel sizes it implies:
:class:`sim.silicon.SiliconRow`), with the benchmark's mean TTFT and TPOT.

The check, for each (model, isl, osl) with at least two configurations and each SLA below:
* candidates: the rows' configurations (layout, concurrency), a row the source repeats counted once;
* real: a row meets the SLA when its real mean TTFT and mean TPOT are within it; its real
  throughput per GPU is output tokens per second per GPU,
      concurrency x osl / (ttft + (osl - 1) x tpot) / GPUs      (ttft, tpot in seconds),
  each client finishing one request of osl tokens every ttft + (osl - 1) x tpot, on
  GPUs = tp x dp;
* ServeLab's pick: each candidate's benchmark simulated as `servelab validate` simulates these
  rows (:func:`sim.silicon.simulate_row`), then the planner's rule: among those predicted to
  meet the SLA, the highest predicted output tokens/s per GPU (the same formula on the
  simulated means); with ``--headroom H`` (`servelab tune --headroom`), a candidate is
  predicted to meet the SLA only with H of each limit to spare;
* score: the pick's real throughput per GPU / the best real throughput per GPU among the rows
  that really met the SLA (0 when the pick did not really meet it). Target: at least 0.95.

Every model of the file is checked: the dense Llama rows (whose host and front-end values the
project fits) and the MoE rows (Qwen3-235B-A22B, gpt-oss-120b), which are never fitted to.

Usage: python benchmarks/tune_decision_quality.py [--csv FILE] [--model SUBSTRING] [--headroom H]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from sim import silicon
from sim.errors import ServeLabError

ROOT = Path(__file__).resolve().parents[1]
# (mean TTFT ms, mean TPOT ms): an interactive, a balanced and a batch-like target.
SLAS = ((300.0, 12.0), (1000.0, 20.0), (3000.0, 40.0))


def gpus(row: silicon.SiliconRow) -> int:
    """GPUs the row's server used: TP within a data-parallel rank, times the ranks."""
    return row.tp * row.data_parallel


def tokens_per_gpu(row: silicon.SiliconRow, ttft_ms: float, tpot_ms: float) -> float:
    """Output tokens/s per GPU of a closed loop: each client finishes one request of ``osl``
    tokens every ``ttft + (osl - 1) x tpot``."""
    ttft_s, tpot_s = ttft_ms / 1e3, tpot_ms / 1e3
    return row.concurrency * row.osl / (ttft_s + (row.osl - 1) * tpot_s) / gpus(row)


def real_tokens_per_gpu(row: silicon.SiliconRow) -> float:
    return tokens_per_gpu(row, row.ttft_ms, row.tpot_ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=silicon.SILICON_CSV)
    p.add_argument("--model", default="", help="only rows whose model contains this")
    p.add_argument("--headroom", type=float, default=0.0,
                   help="plan with this share of each limit to spare, as `servelab tune --headroom` (default 0)")
    args = p.parse_args()
    keep = 1 - args.headroom
    if not args.csv.is_file():
        print(f"skipped: {args.csv} not found")
        return
    rows = [r for r in silicon.load_rows(args.csv, dense_only=False) if args.model in r.model]
    groups = defaultdict(list)
    for r in rows:
        # A row repeated in the source (same layout and load) is one candidate.
        key = (r.model, r.isl, r.osl)
        if all(silicon.bench_key(o) != silicon.bench_key(r) for o in groups[key]):
            groups[key].append(r)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    print("decision quality: real output tok/s per GPU of ServeLab's pick / best real among rows that met the SLA"
          + (f" (picked with {100 * args.headroom:g}% headroom)" if args.headroom else ""))
    scores: dict[str, list[float]] = defaultdict(list)
    for (model, isl, osl), group in sorted(groups.items()):
        sims, refused = {}, {}
        for r in group:
            try:
                out = silicon.simulate_row(r)
                sims[id(r)] = (out["sim_ttft_ms"], out["sim_tpot_ms"])
            except ServeLabError as exc:
                sims[id(r)] = None
                refused.setdefault(str(exc).split(";")[0], []).append(r.label)
        for why, which in refused.items():
            print(f"  {model} isl {isl} osl {osl}: {len(which)} rows not simulated ({', '.join(which)}): {why}")
        for ttft_max, tpot_max in SLAS:
            real_ok = [r for r in group if r.ttft_ms <= ttft_max and r.tpot_ms <= tpot_max]
            if not real_ok:
                continue
            best_real = max(real_tokens_per_gpu(r) for r in real_ok)
            predicted_ok = [r for r in group
                            if sims[id(r)] and sims[id(r)][0] <= keep * ttft_max and sims[id(r)][1] <= keep * tpot_max]
            where = f"{model} isl {isl} osl {osl}, TTFT <= {ttft_max:g} ms, TPOT <= {tpot_max:g} ms"
            if not predicted_ok:
                scores[model].append(0.0)
                print(f"{where}: ServeLab predicts none meets; {len(real_ok)} really do -> score 0.00")
                continue
            pick = max(predicted_ok, key=lambda r: tokens_per_gpu(r, *sims[id(r)]))
            really_met = pick in real_ok
            score = real_tokens_per_gpu(pick) / best_real if really_met else 0.0
            scores[model].append(score)
            best = max(real_ok, key=real_tokens_per_gpu)
            print(f"{where}: pick {pick.layout} c{pick.concurrency} (real {real_tokens_per_gpu(pick):,.0f} tok/s/GPU"
                  f"{'' if really_met else ', really MISSES the SLA'}), best real {best.layout} c{best.concurrency} "
                  f"({best_real:,.0f}) -> score {score:.2f}")
    everything = [s for v in scores.values() for s in v]
    for name, values in [*sorted(scores.items()), ("all models", everything)]:
        if values:
            met = sum(s >= 0.95 for s in values)
            print(f"{name}: {met} of {len(values)} decisions reach 95% (mean score {np.mean(values):.2f}, "
                  f"worst {min(values):.2f})")


if __name__ == "__main__":
    main()
