"""ServeLab and aiconfigurator side by side on real vLLM runs (the dense rows of the silicon CSV,
or with --moe its MoE rows).

The rows are closed-loop benchmarks of vLLM on H200 SXM (Llama-3.1-70B and
nvidia/Llama-3.1-8B-Instruct-FP8, FP8 GEMMs, TP 1 to 8; ../shared/reference/silicon/README.md,
taken from aiconfigurator-core 0.12.0's silicon_sample.csv, Apache-2.0). For each row:

- aiconfigurator 0.12.0 (installed by benchmarks/_aiconfigurator.py into .venv-aiconfigurator/)
  answers `aiconfigurator cli estimate --model-path M --system h200_sxm --backend vllm --isl ISL
  --osl OSL --batch-size C --tp-size TP --gemm-quant-mode fp8 --kvcache-quant-mode bfloat16`, the
  batch size being the closed loop's concurrency (what it holds in flight);
- ServeLab answers through `python -m lab validate --silicon --json FILE` (its "silicon" rows).

It prints one table a model, real TTFT/TPOT against both tools with each error, then the mean
absolute percentage error (MAPE) per model and overall for both.

    python3 benchmarks/validate_vs_aiconfigurator.py                  # all 81 dense rows
    python3 benchmarks/validate_vs_aiconfigurator.py --moe            # the 117 MoE rows
    python3 benchmarks/validate_vs_aiconfigurator.py --rows 4 --model 8B
    python3 benchmarks/validate_vs_aiconfigurator.py --json out/peer.json --refresh

Model configs: aiconfigurator runs offline from the configs it ships (aiconfigurator_core/
model_configs/). It ships meta-llama/Llama-3.1-70B's config under the checkpoint's former Hub name
meta-llama/Meta-Llama-3.1-70B, and no config for nvidia/Llama-3.1-8B-Instruct-FP8: those rows use
meta-llama/Meta-Llama-3.1-8B (the same architecture; FP8 is set by flag), and say so.

Precision: the rows' gemm_quant_mode (fp8) becomes --gemm-quant-mode. The KV cache is BF16
(--kvcache-quant-mode bfloat16): vLLM's --kv-cache-dtype auto keeps the model dtype, and the
change that makes auto follow a ModelOpt checkpoint's kv_cache_quant_algo (vllm PR #30785,
2025-12-16) came after the vLLM 0.12.0 of the 8B runs. --kv-cache-dtype fp8 tries the other.

Measured 2026-12-02 (`python3 benchmarks/validate_vs_aiconfigurator.py --refresh`: 81 rows in
332 s on 2 shared CPU cores, one aiconfigurator process; about 9 s a row with --one-process-each):
aiconfigurator's MAPE is TTFT 37.6% / TPOT 4.7% on Llama-3.1-70B (56 of 60 rows: it calls the TP1
rows at concurrency 32 and 64 out of memory), TTFT 30.2% / TPOT 118.3% on the 8B (its TPOT is 2 to
3 times the real one at OSL 100, falling to +17..29% at OSL 2000), 35.6% / 35.7% overall.
With --kv-cache-dtype fp8 the 8B's figures are 29.4% / 108.0%.

The MoE rows (--moe): Qwen/Qwen3-235B-A22B-FP8 (51, vLLM 0.12.0) and gpt-oss-120b (66, vLLM
0.18.0), each asked with the layout it ran (`--tp-size TP --attention-dp-size DP --moe-tp-size
MOE_TP --moe-ep-size EP`, DP = MOE_TP x EP / TP as in sim.silicon) and the quant modes
aiconfigurator reads from the config it ships. Measured 2026-12-07 (117 rows in 292 s, one
process): aiconfigurator TTFT 28.6% / TPOT 22.8% on Qwen3, 33.3% / 6.0% on gpt-oss, 31.2% / 13.3%
overall; ServeLab 35.4% / 46.7%, 20.6% / 8.9%, 27.0% / 25.4% (re-measured the same day with the
benchmark's first round weighted 1 in 10, sim.silicon.ROUNDS; docs/calibration.md says why).

Each answer is cached in .venv-aiconfigurator/estimates/<version>/ keyed by the row and the exact
command; --refresh recomputes. Where aiconfigurator cannot be installed (no network, another
Python) its columns stay empty and one line says why; where ServeLab's silicon validation fails,
one line says so and the table holds aiconfigurator's side alone.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _aiconfigurator as aic  # noqa: E402
from sim.silicon import implied_data_parallel, layout_label  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parent.parent / "sim" / "data" / "reference" / "vllm-silicon.csv"

# Dense models of the CSV -> (the config aiconfigurator ships for it, what the row should say).
DENSE_MODELS = {
    "Llama-3.1-70B": ("meta-llama/Meta-Llama-3.1-70B",
                      "config of meta-llama/Llama-3.1-70B under its former Hub name"),
    "nvidia/Llama-3.1-8B-Instruct-FP8": ("meta-llama/Meta-Llama-3.1-8B",
                                         "nvidia/Llama-3.1-8B-Instruct-FP8 not shipped; same architecture"),
}
# MoE models of the CSV (--moe) -> (the config aiconfigurator ships, the note). Their quant modes
# are left to aiconfigurator, which reads them from the config (Qwen3: block FP8 GEMMs and
# experts; gpt-oss: MXFP4 experts, 16-bit attention; the CSV's "nvfp4" is not what Hopper runs).
MOE_MODELS = {
    "Qwen/Qwen3-235B-A22B-FP8": ("Qwen/Qwen3-235B-A22B-FP8", "quant modes from the shipped config (fp8_block)"),
    "GPT-OSS-120B": ("openai/gpt-oss-120b", "quant modes from the shipped config (w4a16_mxfp4 experts)"),
}


class InputError(Exception):
    """Bad input: one line naming the flag or file, exit code 2."""


# ---------------------------------------------------------------- rows

def read_rows(path: Path, moe: bool = False) -> tuple[list[dict], list[str]]:
    """The dense rows of the silicon CSV (the MoE rows with ``moe``), typed, and the other models'
    names (their rows left out)."""
    try:
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"--csv {path}: cannot read ({exc.strerror}); pass --csv PATH to vllm-silicon.csv") from None
    need = {"model", "gpu", "gemm_quant_mode", "isl", "osl", "concurrency", "tp", "ttft_ms", "tpot_ms"}
    if not raw or not need <= set(raw[0]):
        missing = sorted(need - set(raw[0])) if raw else sorted(need)
        raise InputError(f"--csv {path}: expected the silicon CSV's columns, missing {', '.join(missing)}")
    rows, others = [], []
    for n, r in enumerate(raw, start=2):
        if r["model"] not in (MOE_MODELS if moe else DENSE_MODELS):
            others.append(r["model"])
            continue
        try:
            tp, ep, moe_tp = int(r["tp"]), int(r.get("ep") or 1), int(r.get("moe_tp") or 1)
            dp = implied_data_parallel(tp, moe_tp, ep) if moe else 1
            rows.append({"model": r["model"], "gpu": r["gpu"], "gemm_quant_mode": r["gemm_quant_mode"],
                         "isl": int(r["isl"]), "osl": int(r["osl"]), "concurrency": int(r["concurrency"]),
                         "tp": tp, "ep": ep, "dp": dp, "moe_tp": moe_tp if moe else 1,
                         "real_ttft_ms": float(r["ttft_ms"]), "real_tpot_ms": float(r["tpot_ms"])})
        except ValueError as exc:
            raise InputError(f"--csv {path}: line {n}: {exc}") from None
    return rows, others


def model_key(name: str) -> str:
    """Join key for a model name: its last path part, lower case ('meta-llama/Llama-3.1-70B' -> 'llama-3.1-70b')."""
    return name.rsplit("/", 1)[-1].lower()


def row_key(r: dict) -> tuple:
    return (model_key(r["model"]), int(r["isl"]), int(r["osl"]), int(r["concurrency"]), int(r["tp"]),
            int(r.get("dp") or 1), int(r.get("ep") or 1))


# ---------------------------------------------------------------- aiconfigurator

def aic_argv(row: dict, kv_cache_dtype: str) -> list[str]:
    # The CSV's gpu column already uses aiconfigurator's system names (h200_sxm).
    if row["model"] in MOE_MODELS:
        # The MoE layout as the row ran it: attention over tp x dp, experts as moe_tp x ep.
        layout = ("--attention-dp-size", str(row["dp"]), "--moe-tp-size", str(row["moe_tp"]),
                  "--moe-ep-size", str(row["ep"]))
        return aic.estimate_argv(MOE_MODELS[row["model"]][0], row["gpu"], isl=row["isl"], osl=row["osl"],
                                 batch_size=row["concurrency"], tp=row["tp"], kvcache_quant_mode=kv_cache_dtype,
                                 extra=layout)
    model_path = DENSE_MODELS.get(row["model"], (row["model"], ""))[0]
    return aic.estimate_argv(model_path, row["gpu"], isl=row["isl"], osl=row["osl"],
                             batch_size=row["concurrency"], tp=row["tp"],
                             gemm_quant_mode=row["gemm_quant_mode"] or None, kvcache_quant_mode=kv_cache_dtype)


def cache_path(cache_dir: Path, row: dict, argv: list[str]) -> Path:
    digest = hashlib.sha1(json.dumps([aic.VERSION, argv]).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", row["model"]).strip("-")
    layout = layout_label(row["tp"], row.get("dp", 1), row.get("ep", 1)).replace(" ", "")
    return cache_dir / f"{slug}_isl{row['isl']}_osl{row['osl']}_c{row['concurrency']}_{layout}_{digest}.json"


def aic_estimates(rows: list[dict], python: Path, cache_dir: Path, *, kv_cache_dtype: str, refresh: bool,
                  one_process_each: bool) -> tuple[list[dict], int]:
    """aiconfigurator's answer for every row (ttft_ms/tpot_ms, or error), and how many came from the cache."""
    argvs = [aic_argv(r, kv_cache_dtype) for r in rows]
    paths = [cache_path(cache_dir, r, a) for r, a in zip(rows, argvs)]
    texts: list[tuple[int, str] | None] = [None] * len(rows)
    if not refresh:
        for i, p in enumerate(paths):
            try:
                rec = json.loads(p.read_text())
                texts[i] = (rec["rc"], rec["text"])
            except (OSError, ValueError, KeyError):  # not there, or unreadable: ask again
                pass
    cached = sum(t is not None for t in texts)
    todo = [i for i, t in enumerate(texts) if t is None]
    if todo:
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"aiconfigurator: estimating {len(todo)} rows ({cached} cached) ...", file=sys.stderr, flush=True)

        def done(j: int, out: aic.Output) -> None:
            i = todo[j]
            texts[i] = (out.rc, out.text)
            if out.rc != 124:  # a timeout is no answer; anything else is what this command prints
                paths[i].write_text(json.dumps({"row": rows[i], "argv": out.argv, "rc": out.rc, "text": out.text}))
            print(f"  [{j + 1}/{len(todo)}] {' '.join(out.argv[2:3] + out.argv[5:])}", file=sys.stderr, flush=True)

        aic.run_many(python, [argvs[i] for i in todo], one_process_each=one_process_each, progress=done)
    answers = []
    for (rc, text), argv in zip(texts, argvs):
        try:
            ans = aic.parse_estimate(text)
        except ValueError as exc:
            ans = {"error": str(exc)}
        ans["command"] = "aiconfigurator cli " + " ".join(argv)
        answers.append(ans)
    return answers, cached


# ---------------------------------------------------------------- ServeLab

SERVELAB_COMMAND = [sys.executable, "-m", "lab", "validate", "--silicon"]


def servelab_rows(json_file: Path | None, command: list[str] = SERVELAB_COMMAND) -> tuple[list[dict] | None, str]:
    """ServeLab's silicon rows and "", or None and why not.

    From `python -m lab validate --silicon --json FILE` run here (`command` + --json FILE), or from
    a FILE it wrote before.
    """
    if json_file is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "validate.json"
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([*command, "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0 or not out.exists():
                shown = " ".join(["python", *command[1:]] if command[0] == sys.executable else command)
                lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
                why = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "(no output)")
                return None, f"`{shown}` exited {done.returncode}: {why}"
            text = out.read_text()
    else:
        try:
            text = json_file.read_text()
        except OSError as exc:
            raise InputError(f"--servelab-json {json_file}: cannot read ({exc.strerror})") from None
    try:
        rows = json.loads(text)["silicon"]["rows"]
        return [{**r, "sim_ttft_ms": float(r["sim_ttft_ms"]), "sim_tpot_ms": float(r["sim_tpot_ms"])}
                for r in rows], ""
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"its JSON has no usable silicon.rows ({type(exc).__name__}: {exc})"


def join(rows: list[dict], servelab: list[dict] | None) -> list[dict | None]:
    """ServeLab's row for each silicon row, by (model, isl, osl, concurrency, tp); None where it has none."""
    if servelab is None:
        return [None] * len(rows)
    by_key = {row_key(s): s for s in servelab}
    return [by_key.get(row_key(r)) for r in rows]


# ---------------------------------------------------------------- errors

def pct_error(predicted: float | None, real: float) -> float | None:
    """Signed error in percent of the real value: +10 means 10% too high."""
    return None if predicted is None else (predicted - real) / real * 100.0


def mape(errors: list[float | None]) -> float | None:
    """Mean absolute percentage error over the rows that have a prediction (None if none has)."""
    vals = [abs(e) for e in errors if e is not None]
    return sum(vals) / len(vals) if vals else None


def build_table(rows: list[dict], aic_answers: list[dict | None], sl_rows: list[dict | None]) -> list[dict]:
    table = []
    for r, a, s in zip(rows, aic_answers, sl_rows):
        t = {k: r[k] for k in ("model", "gpu", "isl", "osl", "concurrency", "tp", "ep", "dp", "real_ttft_ms",
                               "real_tpot_ms")}
        t["aic_ttft_ms"] = a.get("ttft_ms") if a else None
        t["aic_tpot_ms"] = a.get("tpot_ms") if a else None
        t["aic_error"] = a.get("error") if a else None
        t["aic_kv_capacity_warning"] = bool(a and a.get("kv_capacity_warning"))
        t["sim_ttft_ms"] = s["sim_ttft_ms"] if s else None
        t["sim_tpot_ms"] = s["sim_tpot_ms"] if s else None
        for tool, col in (("aic", "aic"), ("sim", "sim")):
            t[f"{tool}_ttft_err_pct"] = pct_error(t[f"{col}_ttft_ms"], r["real_ttft_ms"])
            t[f"{tool}_tpot_err_pct"] = pct_error(t[f"{col}_tpot_ms"], r["real_tpot_ms"])
        table.append(t)
    return table


def summarize(table: list[dict]) -> dict:
    """MAPE per model and overall for each tool, with the number of rows each covers.

    "aic" and "sim" are over the rows that tool answered; "both" gives each tool's MAPE over the
    rows both answered (aiconfigurator refuses a few as out of memory), for a like-for-like look.
    """
    groups = {m: [t for t in table if t["model"] == m] for m in dict.fromkeys(t["model"] for t in table)}
    groups["overall"] = table

    def stats(tool: str, ts: list[dict], of: int) -> dict:
        return {"ttft_mape_pct": mape([t[f"{tool}_ttft_err_pct"] for t in ts]),
                "tpot_mape_pct": mape([t[f"{tool}_tpot_err_pct"] for t in ts]),
                "rows": sum(t[f"{tool}_ttft_ms"] is not None for t in ts), "of": of}

    out = {tool: {name: stats(tool, ts, len(ts)) for name, ts in groups.items()} for tool in ("aic", "sim")}
    out["both"] = {}
    for name, ts in groups.items():
        common = [t for t in ts if t["aic_ttft_ms"] is not None and t["sim_ttft_ms"] is not None]
        out["both"][name] = {tool: stats(tool, common, len(ts)) for tool in ("aic", "sim")}
    return out


# ---------------------------------------------------------------- printing

def _v(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}")


def _e(x: float | None) -> str:
    return "" if x is None else f"{x:+.0f}%"


def print_table(table: list[dict], summary: dict) -> None:
    for model in dict.fromkeys(t["model"] for t in table):
        print(f"\n{model}  (errors: predicted against real, in % of real)")
        print(f"{'isl':>5} {'osl':>5} {'conc':>4} {'layout':>9} | {'TTFT ms: real':>13} {'aiconfig':>15} "
              f"{'ServeLab':>15} | {'TPOT ms: real':>13} {'aiconfig':>13} {'ServeLab':>13} | note")
        for t in (t for t in table if t["model"] == model):
            if t["aic_error"]:  # "no TTFT from aiconfigurator: OOM: the model ... (tp=1, pp=1, dp=1). Try ..."
                note = "aiconfigurator: " + t["aic_error"].split(": ", 1)[-1].split(". ")[0]
            else:
                note = "aiconfigurator: batch over its KV estimate" if t["aic_kv_capacity_warning"] else ""
            layout = layout_label(t["tp"], t["dp"], t["ep"])
            print(f"{t['isl']:>5} {t['osl']:>5} {t['concurrency']:>4} {layout:>9} | "
                  f"{_v(t['real_ttft_ms']):>13} {_v(t['aic_ttft_ms']):>8} {_e(t['aic_ttft_err_pct']):>6} "
                  f"{_v(t['sim_ttft_ms']):>8} {_e(t['sim_ttft_err_pct']):>6} | "
                  f"{_v(t['real_tpot_ms']):>13} {_v(t['aic_tpot_ms']):>6} {_e(t['aic_tpot_err_pct']):>6} "
                  f"{_v(t['sim_tpot_ms']):>6} {_e(t['sim_tpot_err_pct']):>6} | {note[:120]}")
    def cell(s: dict) -> str:
        return "-" if not s["rows"] else \
            f"TTFT {s['ttft_mape_pct']:5.1f}%  TPOT {s['tpot_mape_pct']:5.1f}%  ({s['rows']}/{s['of']})"

    print(f"\nMAPE (mean |error|, rows answered/rows)  {'aiconfigurator ' + aic.VERSION:<34} ServeLab")
    for name in summary["aic"]:
        print(f"  {name:<38} {cell(summary['aic'][name]):<34} {cell(summary['sim'][name])}")
    if any(summary["both"]["overall"][tool]["rows"] != summary[tool]["overall"]["rows"] for tool in ("aic", "sim")) \
            and summary["both"]["overall"]["sim"]["rows"]:
        print("MAPE on the rows both answered")
        for name, both in summary["both"].items():
            print(f"  {name:<38} {cell(both['aic']):<34} {cell(both['sim'])}")


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help=f"silicon CSV (default {DEFAULT_CSV})")
    p.add_argument("--moe", action="store_true",
                   help="the 117 MoE rows (Qwen3-235B-A22B-FP8, gpt-oss-120b) instead of the dense ones")
    p.add_argument("--rows", type=int, default=0, help="only the first N rows (after --model)")
    p.add_argument("--model", metavar="TEXT", default=None, help="only rows whose model contains TEXT")
    p.add_argument("--json", metavar="FILE", type=Path, default=None, help="also write everything here as JSON")
    p.add_argument("--refresh", action="store_true", help="ask aiconfigurator again instead of using the cache")
    p.add_argument("--cache-dir", type=Path, default=aic.VENV / "estimates" / aic.VERSION,
                   help="where each row's answer is kept (default .venv-aiconfigurator/estimates/VERSION)")
    p.add_argument("--kv-cache-dtype", choices=("bfloat16", "fp8"), default="bfloat16",
                   help="aiconfigurator's --kvcache-quant-mode (default bfloat16, as vLLM's auto; see the docstring)")
    p.add_argument("--no-install", action="store_true", help="use .venv-aiconfigurator if it is there; never install")
    p.add_argument("--one-process-each", action="store_true",
                   help="run the aiconfigurator console script once per row (slower; same answers)")
    p.add_argument("--servelab-json", type=Path, default=None,
                   help="read ServeLab's rows from this file (`servelab validate --silicon --json FILE`) "
                        "instead of running it")
    p.add_argument("--no-servelab", action="store_true", help="leave ServeLab's columns out")
    args = p.parse_args(argv)
    try:
        if args.rows < 0:
            raise InputError(f"--rows: expected 0 (all) or a positive count, got {args.rows}")
        return _run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    t0 = time.monotonic()
    rows, others = read_rows(args.csv, moe=args.moe)
    kind, models = ("MoE", MOE_MODELS) if args.moe else ("dense", DENSE_MODELS)
    if args.model:
        rows = [r for r in rows if args.model.lower() in r["model"].lower()]
        if not rows:
            raise InputError(f"--model {args.model!r}: no {kind} row's model contains that "
                             f"(models: {', '.join(models)})")
    if args.rows:
        rows = rows[:args.rows]
    left_out = f" ({len(others)} rows of other models left out: {', '.join(dict.fromkeys(others))})" if others else ""
    print(f"{len(rows)} {kind} rows of {args.csv}{left_out}")

    aic_answers: list[dict | None] = [None] * len(rows)
    aic_status = {"version": aic.VERSION, "available": False}
    try:
        python = aic.ensure_venv(install=not args.no_install)
        t1 = time.monotonic()
        aic_answers, cached = aic_estimates(rows, python, args.cache_dir, kv_cache_dtype=args.kv_cache_dtype,
                                            refresh=args.refresh, one_process_each=args.one_process_each)
        aic_status.update(available=True, seconds=round(time.monotonic() - t1, 1), cached_rows=cached,
                          cache_dir=str(args.cache_dir), kv_cache_dtype=args.kv_cache_dtype,
                          models={m: {"model_path": mp, "note": note} for m, (mp, note) in models.items()})
        dbs = sorted({a["perf_db_version"] for a in aic_answers if a.get("perf_db_version")})
        print(f"aiconfigurator {aic.VERSION} (perf database vllm {', '.join(dbs) or '?'}): {len(rows) - cached} rows "
              f"estimated, {cached} from {args.cache_dir}, {aic_status['seconds']} s; KV cache {args.kv_cache_dtype}")
        for m, (mp, note) in models.items():
            if any(r["model"] == m for r in rows):
                print(f"  {m}: --model-path {mp} ({note})")
    except aic.Unavailable as why:
        aic_status["reason"] = str(why)
        print(f"aiconfigurator is skipped: {why}")

    sl_status = {"available": False}
    if args.no_servelab:
        sl, sl_status["reason"] = None, "--no-servelab"
    else:
        sl, reason = servelab_rows(args.servelab_json)
        if sl is None:
            sl_status["reason"] = reason
            print(f"ServeLab's silicon validation is not available: {reason}")
        else:
            sl_status["available"] = True
    sl_joined = join(rows, sl)
    if sl is not None:
        missing = sum(s is None for s in sl_joined)
        sl_status["unmatched_rows"] = missing
        if missing:
            print(f"ServeLab has no row for {missing} of {len(rows)} silicon rows (joined by model, isl, osl, "
                  f"concurrency, tp, dp, ep)")

    table = build_table(rows, aic_answers, sl_joined)
    summary = summarize(table)
    print_table(table, summary)
    wall = time.monotonic() - t0
    print(f"\nwall time {wall:.1f} s")
    if args.json:
        doc = {"csv": str(args.csv), "aiconfigurator": aic_status, "servelab": sl_status, "rows": table,
               "commands": [a.get("command") if a else None for a in aic_answers],
               "mape": {"aiconfigurator": summary["aic"], "servelab": summary["sim"],
                        "rows_both_answered": summary["both"]}, "wall_s": round(wall, 1)}
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            raise InputError(f"--json {args.json}: cannot write ({exc.strerror})") from None
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
