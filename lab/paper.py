"""``servelab validate --paper DIR``: the vLLM paper's OPT-13B figures, simulated, as CSV + PNG.

Runs :mod:`sim.paper` over a grid of request rates for vllm and the three Orca variants on the
ShareGPT- and Alpaca-like workloads, plus offline throughput against hf-static, and writes:

* ``memory.csv`` / ``memory.png``: KV memory shares (paper Fig. 2), ShareGPT at 2 req/s;
* ``batched.csv`` / ``batched.png``: mean batched requests (Fig. 13), ShareGPT 2 req/s and
  Alpaca 30 req/s;
* ``latency_sharegpt.csv``, ``latency_alpaca.csv`` and ``latency.png``: normalized latency
  against request rate (Fig. 12 a and d);
* ``knees.csv``: each curve's sustainable rate and the ratios the paper states;
* ``throughput.csv``: offline requests/s of every engine, and vllm over hf-static.

Each rate point sends ``rate x DURATION_S`` prompts (at least MIN_PROMPTS, at most the cap),
far fewer than the paper's one-hour traces: queues past the knee grow less, so the curves rise
less steeply than the paper's, but the knees sit where capacity runs out.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from sim.errors import ConfigError
from sim.paper import MEMORY_PARTS, PAPER_ENGINES, PAPER_PROFILE, run_point, sustainable_rate
from sim.reference import load_paper

DURATION_S = {"sharegpt": 240.0, "alpaca": 40.0}
MAX_PROMPTS = {"sharegpt": 400, "alpaca": 1200}
MIN_PROMPTS = 60
RATE_RANGE = {"sharegpt": (0.25, 3.0), "alpaca": (5.0, 60.0)}
FIXED_RATE = {"sharegpt": 2.0, "alpaca": 30.0}  # Fig. 13
THROUGHPUT_PROMPTS = {"sharegpt": 500, "alpaca": 2000}  # enough that the longest request is not the whole run


def _prompts(dataset: str, rate: float, fixed: int | None) -> int:
    if fixed:
        return fixed
    return int(min(MAX_PROMPTS[dataset], max(MIN_PROMPTS, round(rate * DURATION_S[dataset]))))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


PROFILES = {"2023": str(PAPER_PROFILE), "shipped": None}


def write_paper(out_dir: str, num_prompts: int | None = None, num_rates: int | None = None,
                datasets: tuple[str, ...] = ("sharegpt", "alpaca"), log=print, profile: str = "2023") -> int:
    if num_prompts is not None and num_prompts <= 0:
        raise ConfigError(f"--paper-prompts: expected a positive integer, got {num_prompts}")
    if num_rates is not None and num_rates < 2:
        raise ConfigError(f"--paper-rates: expected at least 2, got {num_rates}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--paper {out_dir}: cannot create the folder ({exc.strerror})") from None
    if profile not in PROFILES:
        raise ConfigError(f"--paper-profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    calibration = PROFILES[profile]
    paper = load_paper()
    t0 = time.perf_counter()
    summary: dict = {"command": _command(out_dir, num_prompts, num_rates, profile), "profile": profile,
                     "calibration": "sim/data/" + (Path(calibration).name if calibration else "calibration.yaml"), "datasets": {}}

    curves: dict = {}
    for ds in datasets:
        lo, hi = RATE_RANGE[ds]
        rates = [float(f"{r:.3g}") for r in np.linspace(lo, hi, num_rates or 12)]
        if FIXED_RATE[ds] not in rates:
            rates = sorted(rates + [FIXED_RATE[ds]])
        rows = []
        for engine in PAPER_ENGINES:
            for rate in rates:
                run = run_point(engine, ds, rate, _prompts(ds, rate, num_prompts), calibration=calibration)
                rows.append(run)
            log(f"  {ds} {engine}: {len(rates)} rates done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        curves[ds] = (rates, rows)
        _write_csv(out / f"latency_{ds}.csv", [
            {"engine": r.engine, "request_rate": r.request_rate, "num_prompts": r.num_prompts,
             "normalized_latency_s_per_token": r.normalized_latency_s_per_token,
             "mean_batched_requests": r.mean_batched_requests, "num_preemptions": r.num_preemptions}
            for r in rows])

    # Fig. 12: knees, and the ratios the paper states (ShareGPT).
    knee_rows = []
    for ds, (rates, rows) in curves.items():
        knees = {}
        for engine in PAPER_ENGINES:
            lat = [r.normalized_latency_s_per_token for r in rows if r.engine == engine]
            knees[engine] = sustainable_rate(rates, lat)
        paper_knees = paper["fig12_knees_approx"][ds]
        for engine in PAPER_ENGINES:
            knee_rows.append({"dataset": ds, "engine": engine, "sustainable_rate_servelab": knees[engine],
                              "knee_paper_approx": paper_knees[engine],
                              "vllm_over_this_servelab": knees["vllm"] / knees[engine],
                              "vllm_over_this_paper_approx": paper_knees["vllm"] / paper_knees[engine]})
        summary["datasets"].setdefault(ds, {})["knees"] = knees
    _write_csv(out / "knees.csv", knee_rows)

    # Fig. 13 (batched requests) and Fig. 2 (memory) at the fixed rates.
    batched_rows, memory_rows = [], []
    for ds, (rates, rows) in curves.items():
        fig13 = paper["fig13_batched_requests"][ds]
        for r in rows:
            if r.request_rate == FIXED_RATE[ds]:
                batched_rows.append({"dataset": ds, "request_rate": r.request_rate, "engine": r.engine,
                                     "servelab": r.mean_batched_requests, "paper": fig13[r.engine]})
                if ds == "sharegpt":
                    fig2 = paper["fig2_memory_shares_percent"][r.engine]
                    row = {"engine": r.engine}
                    for part in MEMORY_PARTS:
                        row[f"{part}_servelab_pct"] = 100 * r.memory_shares[part]
                        row[f"{part}_paper_pct"] = fig2.get(part)
                    memory_rows.append(row)
    _write_csv(out / "batched.csv", batched_rows)
    if memory_rows:
        _write_csv(out / "memory.csv", memory_rows)

    # Throughput, offline, every engine against hf-static.
    tp_rows = []
    for ds in datasets:
        n = num_prompts or THROUGHPUT_PROMPTS[ds]
        runs = {e: run_point(e, ds, float("inf"), n, calibration=calibration) for e in PAPER_ENGINES + ("hf-static",)}
        for e, r in runs.items():
            tp_rows.append({"dataset": ds, "engine": e, "num_prompts": n,
                            "requests_per_second": r.requests_per_second,
                            "over_hf_static": r.requests_per_second / runs["hf-static"].requests_per_second})
    _write_csv(out / "throughput.csv", tp_rows)

    _plots(out, curves, batched_rows, memory_rows)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print(knee_rows, batched_rows, memory_rows, tp_rows)
    print(f"Wrote {out}/ (CSV tables, PNG plots) in {summary['wall_s']} s")
    return 0


def _command(out_dir, n, k, profile) -> str:
    return "servelab validate --paper " + out_dir + (f" --paper-prompts {n}" if n else "") + (
        f" --paper-rates {k}" if k else "") + (f" --paper-profile {profile}" if profile != "2023" else "")


COLORS = {"vllm": "tab:blue", "orca-oracle": "tab:green", "orca-pow2": "tab:orange", "orca-max": "tab:red"}


def _plots(out: Path, curves, batched_rows, memory_rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (ds, (rates, rows)) in zip(axes[0], curves.items()):
        for engine in PAPER_ENGINES:
            lat = [r.normalized_latency_s_per_token for r in rows if r.engine == engine]
            ax.plot(rates, lat, marker="o", color=COLORS[engine], label=engine)
        ax.set_title(f"OPT-13B, 1x A100-40GB, {ds}-like (simulated)")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("normalized latency (s/token)")
        ax.set_ylim(0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    if batched_rows:
        fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.6), squeeze=False)
        for ax, ds in zip(axes[0], curves):
            rows = [r for r in batched_rows if r["dataset"] == ds]
            x = np.arange(len(rows))
            ax.bar(x - 0.2, [r["paper"] for r in rows], 0.4, label="paper", color="lightgray")
            ax.bar(x + 0.2, [r["servelab"] for r in rows], 0.4, label="ServeLab",
                   color=[COLORS[r["engine"]] for r in rows])
            ax.set_xticks(x, [r["engine"] for r in rows])
            ax.set_title(f"mean batched requests, {ds} at {rows[0]['request_rate']:g} req/s" if rows else ds)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "batched.png", dpi=110)
        plt.close(fig)

    if memory_rows:
        fig, ax = plt.subplots(figsize=(8.5, 3.8))
        labels = []
        for i, row in enumerate(memory_rows):
            for j, (who, suffix) in enumerate((("paper", "_paper_pct"), ("ServeLab", "_servelab_pct"))):
                bottom = 0.0
                for part, color in zip(MEMORY_PARTS, ("tab:green", "gold", "tab:red", "gray")):
                    v = row[part + suffix] or 0.0
                    ax.bar(2.5 * i + j, v, 0.9, bottom=bottom, color=color, label=part if i == 0 and j == 0 else None)
                    bottom += v
                labels.append((2.5 * i + j, f"{row['engine']}\n{who}"))
        ax.set_xticks([p for p, _ in labels], [t for _, t in labels], fontsize=7)
        ax.set_ylabel("% of KV memory in use")
        ax.set_title("KV memory: token states vs waste (ShareGPT-like, 2 req/s)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)


def _print(knee_rows, batched_rows, memory_rows, tp_rows) -> None:
    print("Sustainable request rate (normalized latency within 2x of the lowest rate's):")
    for r in knee_rows:
        print(f"  {r['dataset']:<9} {r['engine']:<12} ServeLab {r['sustainable_rate_servelab']:6.2f} req/s   "
              f"paper ~{r['knee_paper_approx']:<5}  vLLM/this: ServeLab {r['vllm_over_this_servelab']:.2f}x, "
              f"paper ~{r['vllm_over_this_paper_approx']:.2f}x")
    print("Mean batched requests:")
    for r in batched_rows:
        print(f"  {r['dataset']:<9} {r['request_rate']:>5g} req/s {r['engine']:<12} ServeLab {r['servelab']:7.2f}   paper {r['paper']}")
    print("KV memory holding token states (% of memory in use), ShareGPT 2 req/s:")
    for r in memory_rows:
        print(f"  {r['engine']:<12} ServeLab {r['token_states_servelab_pct']:5.1f}%   paper {r['token_states_paper_pct']}%")
    print("Offline throughput:")
    for r in tp_rows:
        print(f"  {r['dataset']:<9} {r['engine']:<12} {r['requests_per_second']:7.2f} req/s  ({r['over_hf_static']:.1f}x hf-static)")
