"""``servelab calibrate fit``: result files in, residuals printed, a calibration profile out.

Order of work: operator CSVs first (they pin ``weight_bw_eff``/``matmul_eff`` from GEMM times
and ``comm_latency_s``/``comm_bw_eff`` from all-reduce times, see :mod:`sim.calibration_ops`);
those coefficients then stay fixed while the end-to-end least squares
(:func:`sim.calibration_fit.fit`) moves the ``--free`` ones against the JSON result files.
The profile written is the starting profile (``--calibration`` or the shipped one) with one
entry for (gpu, model, tensor-parallel size) added or replaced; it records the files, the
command, the fitted points and each residual.
"""

from __future__ import annotations

import csv
import shlex
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from lab.calibrate.args import check_profile, check_writable
from lab.calibrate.results import EngineFlags, points_from_file
from sim.calibration import SHIPPED, load_profile, select, select_entry
from sim.calibration_fit import BOUNDS, coefficients_dict, evaluate, fit
from sim.calibration_ops import (all_reduces_from_vidur, detect_layout, fit_all_reduce, fit_gemms,
                                 gemms_from_profiler, gemms_from_vidur)
from sim.catalog import get_gpu, get_model
from sim.errors import ConfigError
from sim.frontend import FrontendCoefficients


def command_line(args) -> str:
    parts = ["servelab", "calibrate", "fit", *args.files, "--gpu", args.gpu]
    for flag, value, default in (
        ("--model", args.model, None), ("--tensor-parallel-size", args.tensor_parallel_size, 1),
        ("--max-num-seqs", args.max_num_seqs, None), ("--max-num-batched-tokens", args.max_num_batched_tokens, None),
        ("--max-model-len", args.max_model_len, None), ("--gpu-memory-utilization", args.gpu_memory_utilization, 0.92),
        ("--num-scheduler-steps", args.num_scheduler_steps, 1), ("--input-len", args.input_len, None),
        ("--output-len", args.output_len, None), ("--calibration", args.calibration, None),
        ("--output", args.output, None),
    ):
        if value != default:
            parts += [flag, str(value)]
    if not args.enable_chunked_prefill:
        parts.append("--no-enable-chunked-prefill")
    if not args.enable_prefix_caching:
        parts.append("--no-enable-prefix-caching")
    return " ".join(shlex.quote(p) for p in parts)


def read_operator_csv(path: str) -> tuple[str, list]:
    try:
        # utf-8-sig: a spreadsheet's byte-order mark would otherwise hide the first column's name;
        # read_text's universal newlines turn "\r\n" and a lone "\r" into "\n".
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected an operator-timing CSV") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_operator_csv(text, path)


def parse_operator_csv(text: str, path: str) -> tuple[str, list]:
    """``("gemm" | "all_reduce", records)`` from an operator CSV's text, or a ConfigError naming ``path``."""
    layout = detect_layout(text)
    parse = {"vidur-mlp": ("gemm", gemms_from_vidur), "servelab-profiler": ("gemm", gemms_from_profiler),
             "vidur-all-reduce": ("all_reduce", all_reduces_from_vidur)}.get(layout)
    if parse is None:
        header = text.split("\n", 1)[0].strip()
        raise ConfigError(f"{path}: not an operator-timing CSV: expected Vidur's mlp.csv or all_reduce.csv columns, "
                          f"or the profiler's (op,m,n,k,dtype_bytes,time_ms); found the header "
                          f"{header[:120]!r}{'...' if len(header) > 120 else ''}. Results of whole vLLM runs are "
                          f"the JSON files of `vllm bench serve --save-result` or `vllm bench throughput --output-json`")
    kind, parser = parse
    try:
        return kind, parser(text, path)
    except csv.Error as exc:  # a cell past the csv module's size limit, a stray NUL
        raise ConfigError(f"{path}: not a readable CSV ({exc})") from None


def fit_files(args) -> int:
    command = command_line(args)
    gpu = get_gpu(args.gpu)
    check_profile(args.calibration)
    check_writable("--output", args.output)
    flags = EngineFlags(
        gpu=gpu.name, model=args.model, tensor_parallel_size=args.tensor_parallel_size,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
        enable_chunked_prefill=args.enable_chunked_prefill, enable_prefix_caching=args.enable_prefix_caching,
        num_scheduler_steps=args.num_scheduler_steps, input_len=args.input_len, output_len=args.output_len,
    )
    if args.max_evaluations <= 0:
        raise ConfigError(f"--max-evaluations: expected a positive integer, got {args.max_evaluations}")

    points, gemms, reduces, json_files, csv_files = [], [], [], [], []
    for path in args.files:
        if path.lower().endswith(".csv"):
            kind, records = read_operator_csv(path)
            (gemms if kind == "gemm" else reduces).extend(records)
            csv_files.append(path)
        else:
            points.extend(points_from_file(path, flags))
            json_files.append(path)

    models = sorted({get_model(p.config.model).name for p in points} | ({get_model(args.model).name} if args.model else set()))
    if len(models) > 1:
        raise ConfigError(f"the files are of several models {models}: fit one model at a time (or pass --model)")
    if not models:
        raise ConfigError("no model: pass --model, or at least one vllm bench result JSON that names it")
    model = models[0]
    base_path = args.calibration or str(SHIPPED)
    profile = load_profile(base_path)
    start = select(profile, gpu.name, model, args.tensor_parallel_size)
    # The API server's times stay as they are (the file's client measured through it): `bench
    # serve` simulates it, so the fit does too, and the fitted entry keeps it.
    frontend_map = (select_entry(profile, gpu.name, model, args.tensor_parallel_size,
                                 step_model="operators") or {}).get("frontend")
    if frontend_map:
        frontend = FrontendCoefficients(**frontend_map)
        points = [replace(p, frontend=frontend) if p.usage == "serve" else p for p in points]
    free = _free_coefficients(args.free, start, gpu.name)

    provenance: dict = {"fitted_to": list(args.files), "command": command,
                        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "start": base_path}
    fixed = []
    if gemms:
        f = fit_gemms(gemms, gpu)
        start = replace(start, **f.coefficients)
        fixed += list(f.coefficients)
        provenance["operator_fit_gemm"] = _op_summary(f)
        print(f"GEMM fit ({f.num_records} timings): {f.coefficients}; "
              f"median |error| {f.median_abs_error:.1%}, max {f.max_abs_error:.1%}")
    if reduces:
        f = fit_all_reduce(reduces, gpu)
        start = replace(start, **f.coefficients)
        fixed += list(f.coefficients)
        provenance["operator_fit_all_reduce"] = _op_summary(f)
        print(f"all-reduce fit ({f.num_records} timings): {f.coefficients}; "
              f"median |error| {f.median_abs_error:.1%}, max {f.max_abs_error:.1%}")

    coefficients = start
    if points:
        free_now = tuple(n for n in free if n not in fixed)
        if not free_now:
            raise ConfigError(f"--free: every coefficient in {list(free)} was set by the operator CSVs; free others")
        before = evaluate(points, start)
        result = fit(points, start=start, free=free_now, max_evaluations=args.max_evaluations)
        coefficients = result.coefficients
        print(f"end-to-end fit of {', '.join(free_now)} on {len(points)} point(s), "
              f"{result.num_evaluations} evaluations")
        _print_residuals(before, result.rows)
        provenance["free"] = list(free_now)
        provenance["fitted_points"] = [r["label"] for r in result.rows if not r["held_out"]]
        provenance["residuals"] = [
            {"label": r["label"], "metric": r["metric"], "measured": round(r["measured"], 4),
             "simulated": round(r["simulated"], 4), "error": round(r["error"], 4)} for r in result.rows
        ]
    entry = {
        "name": f"fitted {gpu.name} {model} tp{args.tensor_parallel_size}",
        "match": {"gpu": gpu.name, "model": model, "tensor_parallel_size": args.tensor_parallel_size},
        "coefficients": coefficients_dict(coefficients),
        "provenance": provenance,
    }
    if frontend_map and coefficients.step_model == "operators":
        entry["frontend"] = dict(frontend_map)
    write_profile(args.output, base_path, entry)
    print(f"Wrote {args.output} (select it with --calibration {args.output})")
    return 0


HOST_ONLY = ("overhead_s", "per_seq_s")


def _free_coefficients(flag: str | None, start, gpu: str) -> tuple[str, ...]:
    """What the end-to-end fit moves: ``--free``, or by default what the step model uses
    (on a GPU with measured operator tables, only the engine core's host time)."""
    operators = start.step_model == "operators"
    if flag is None:
        return HOST_ONLY if operators else ("overhead_s", "per_seq_s", "kv_bw_eff", "matmul_eff")
    free = tuple(f.strip() for f in flag.split(",") if f.strip())
    bad = [f for f in free if f not in BOUNDS]
    if bad or not free:
        raise ConfigError(f"--free: unknown coefficient(s) {bad}; expected some of {list(BOUNDS)}")
    roofline_only = [f for f in free if f not in HOST_ONLY]
    if operators and roofline_only:
        raise ConfigError(f"--free: {gpu} has measured operator tables, so the roofline's {roofline_only} do not "
                          f"apply there; free only {', '.join(HOST_ONLY)}")
    return free


def _op_summary(f) -> dict:
    return {"coefficients": f.coefficients, "num_timings": f.num_records,
            "median_abs_error": round(f.median_abs_error, 4), "max_abs_error": round(f.max_abs_error, 4)}


def _print_residuals(before: list[dict], after: list[dict]) -> None:
    print(f"{'point':<52} {'measured':>10} {'before':>10} {'error':>8} {'after':>10} {'error':>8}")
    for b, a in zip(before, after):
        print(f"{a['label'][:52]:<52} {a['measured']:>10.3f} {b['simulated']:>10.3f} {b['error']:>+8.1%} "
              f"{a['simulated']:>10.3f} {a['error']:>+8.1%}")


def write_operator_entry(path: str, base_path: str, entry: dict) -> None:
    """Write the profile at ``base_path`` with its operator default entry (the operator entry
    that matches everything) replaced by ``entry``."""
    is_default_operator = lambda e: not e.get("match") and (e.get("coefficients") or {}).get("step_model") == "operators"
    _write_with(path, base_path, entry, replaces=is_default_operator,
                command="servelab calibrate fit --from-aiconfigurator")


def write_profile(path: str, base_path: str, entry: dict) -> None:
    """Write the profile at ``base_path`` with the entry of the same match replaced by ``entry``."""
    _write_with(path, base_path, entry, replaces=lambda e: (e.get("match") or {}) == entry["match"],
                command="servelab calibrate fit")


def _write_with(path: str, base_path: str, entry: dict, replaces, command: str) -> None:
    import yaml

    kept = [dict(e) for e in load_profile(base_path) if not replaces(e)]
    doc = {"profiles": [entry] + kept}
    header = (f"# Calibration profile written by `{command}` on {entry['provenance']['date']}.\n"
              f"# The first entry is the new fit; the others are copied from {base_path}.\n")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(header + yaml.safe_dump(doc, sort_keys=False, width=110))
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write ({exc.strerror})") from None
    load_profile.cache_clear()

