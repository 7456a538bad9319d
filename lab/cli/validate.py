"""``servelab validate``: every published vLLM measurement against the simulator, with errors.

Per point: source, setup, metric, measured, simulated, error; then the mean absolute
percentage error per metric, fitted points apart from held-out ones; then the vLLM paper's
Table 1 (KV-cache memory); then the real vLLM runs on H200 (TTFT and TPOT, real against
simulated, per model, with MAPE per model and overall: the dense rows, which the shipped profile
is fitted to, and the MoE rows, a prediction). ``--silicon`` runs only those;
``--cross`` refits leaving out one model, one GPU or one TP size at a time and predicts what was
left out. ``--paper DIR`` instead reproduces the vLLM paper's OPT-13B results (see docs/paper.md)
and writes CSV tables and PNG plots into DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sim.errors import ConfigError


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON here ('-': stdout only)")
    parser.add_argument("--calibration", metavar="FILE", default=None, help="profile to validate (default: the shipped one)")
    parser.add_argument("--max-prompts", type=int, default=0,
                        help="cap on prompts per point (default 0: as many as the sources sent, up to 5000); "
                             "a cap is faster but moves the Llama-3.1-8B points, whose queues need the full trace")
    parser.add_argument("--points", metavar="TEXT", default=None,
                        help="run only the points whose label contains TEXT (e.g. 'llama-2-7b')")
    parser.add_argument("--silicon", action="store_true",
                        help="only the real vLLM runs on H200 (sim/data/reference/vllm-silicon.csv)")
    parser.add_argument("--no-silicon", action="store_true", help="leave out the real H200 runs (faster)")
    parser.add_argument("--cross", action="store_true",
                        help="refit the engine-core and API-server times leaving out one model, one GPU, one TP "
                             "size at a time, and predict the rows left out (several minutes)")
    parser.add_argument("--cross-evaluations", type=int, default=None,
                        help="simulations of the training rows per refit in --cross (default 10)")
    parser.add_argument("--paper", metavar="DIR", default=None,
                        help="reproduce the vLLM paper's OPT-13B figures into DIR instead")
    parser.add_argument("--paper-prompts", type=int, default=None,
                        help="prompts per rate point for --paper (default: the module's, see docs/paper.md)")
    parser.add_argument("--paper-rates", type=int, default=None, help="rate points per curve for --paper")
    parser.add_argument("--paper-profile", choices=("2023", "shipped"), default=None,
                        help="step-time profile for --paper: 2023 (the default; fitted to the paper's Fig. 13 vLLM "
                             "bars, sim/data/calibration-paper-2023.yaml) or shipped (today's vLLM)")


def check_flags(args) -> None:
    """Refuse a flag the chosen mode would silently ignore, before anything runs (a full
    ``validate`` takes minutes, ``--cross`` ten)."""
    given = {  # flag -> whether the user set it
        "--silicon": args.silicon, "--no-silicon": args.no_silicon, "--cross": args.cross,
        "--points": args.points is not None, "--max-prompts": args.max_prompts != 0,
        "--calibration": args.calibration is not None, "--json": args.json is not None,
        "--cross-evaluations": args.cross_evaluations is not None,
        "--paper-prompts": args.paper_prompts is not None, "--paper-rates": args.paper_rates is not None,
        "--paper-profile": args.paper_profile is not None,
    }
    if args.paper:
        ignored = [f for f in ("--silicon", "--no-silicon", "--cross", "--points", "--max-prompts", "--calibration",
                               "--json", "--cross-evaluations") if given[f]]
        if ignored:
            raise ConfigError(f"{ignored[0]}: not used with --paper, which reproduces the vLLM paper's figures into "
                              f"{args.paper} (its profile is --paper-profile); run it without {ignored[0]}")
        return
    paper_only = [f for f in ("--paper-prompts", "--paper-rates", "--paper-profile") if given[f]]
    if paper_only:
        raise ConfigError(f"{paper_only[0]}: only with --paper DIR (the vLLM paper's figures)")
    if args.max_prompts < 0:
        raise ConfigError(f"--max-prompts: expected 0 (no cap) or a positive integer, got {args.max_prompts}")
    if args.cross:
        ignored = [f for f in ("--no-silicon", "--points", "--max-prompts") if given[f]]
        if ignored:
            raise ConfigError(f"{ignored[0]}: not used with --cross, which refits on the real H200 runs only; "
                              f"run it without {ignored[0]}")
        if args.cross_evaluations is not None and args.cross_evaluations <= 0:
            raise ConfigError(f"--cross-evaluations: expected a positive integer, got {args.cross_evaluations}")
    elif given["--cross-evaluations"]:
        raise ConfigError("--cross-evaluations: only with --cross (the simulations per refit)")
    if args.silicon:
        ignored = [f for f in ("--no-silicon", "--points", "--max-prompts") if given[f]]
        if ignored:
            raise ConfigError(f"{ignored[0]}: not used with --silicon, which runs only the real H200 runs "
                              f"(--points and --max-prompts select the published points); choose one")


def run(args) -> int:
    check_flags(args)
    if args.paper:
        from lab.paper import write_paper

        return write_paper(args.paper, num_prompts=args.paper_prompts, num_rates=args.paper_rates,
                           profile=args.paper_profile or "2023")
    from lab.calibrate.args import check_profile, check_writable

    check_profile(args.calibration)
    if args.json and args.json != "-":
        check_writable("--json", args.json)
    if args.cross:
        return _run_cross(args)
    from sim.validate import reference_points, validate

    data: dict = {}
    report = None
    if not args.silicon:
        points = reference_points(args.max_prompts or None)
        if args.points:
            points = [p for p in points if args.points in p.label]
            if not points:
                raise ConfigError(f"--points {args.points!r}: no reference point has that in its label")
        report = validate(points, profile_path=args.calibration, num_prompts_cap=args.max_prompts or None)
        data = report.to_dict()
    silicon = None
    if args.silicon or not (args.no_silicon or args.points):
        from lab.calibrate.silicon import silicon_report

        silicon = silicon_report(args.calibration)
        data["silicon"] = silicon
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    if report is not None:
        print_report(report)
    if silicon is not None:
        from lab.calibrate.silicon import print_silicon

        if report is not None:
            print()
        print_silicon(silicon)
    if args.json:
        _write(args.json, data)
    return 0


def _run_cross(args) -> int:
    from lab.calibrate.silicon import cross_validate

    print("Cross-validation on the real H200 runs: refit the engine core's and the API server's times without "
          "each group, predict the group (targets: TTFT MAPE <= 30%, TPOT MAPE <= 15% per group)")
    folds = cross_validate(args.calibration, args.cross_evaluations or 10)
    worst_ttft = max((f["ttft"] for f in folds if f["ttft"] is not None), default=0.0)
    worst_tpot = max((f["tpot"] for f in folds if f["tpot"] is not None), default=0.0)
    print(f"Worst held-out group: TTFT MAPE {worst_ttft:.1%} ({'ok' if worst_ttft <= 0.30 else 'MISS'} <= 30%), "
          f"TPOT MAPE {worst_tpot:.1%} ({'ok' if worst_tpot <= 0.15 else 'MISS'} <= 15%)")
    if args.json:
        _write(args.json, {"cross": folds})
    return 0


def _write(path: str, data: dict) -> None:
    if path == "-":
        print(json.dumps(data, indent=2))
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"--json {path}: cannot write ({exc.strerror})") from None
    print(f"Wrote {path}")


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}"


def print_report(report) -> None:
    cap = report.num_prompts_cap
    print(f"ServeLab against published vLLM measurements (profile {report.profile}; "
          f"{'prompts capped at ' + str(cap) if cap else 'prompts as the sources'})")
    for held_out in (False, True):
        rows = [r for r in report.rows if r["held_out"] == held_out]
        if not rows:
            continue
        print()
        print("Held out (nothing was fitted to these):" if held_out else "Fitted (the profile was fitted to these):")
        print(f"  {'setup':<70} {'metric':<20} {'measured':>9} {'simulated':>10} {'error':>7}  target")
        for r in rows:
            mark = "ok" if r["within_target"] else "MISS"
            print(f"  {r['setup'][:70]:<70} {r['metric']:<20} {_fmt(r['measured']):>9} {_fmt(r['simulated']):>10} "
                  f"{r['error']:>+7.1%}  {mark} (±{r['target']:.0%})")
        sources = sorted({r["source"] for r in rows})
        for s in sources:
            print(f"  source: {s}")
    print()
    for held_out, title in ((False, "fitted"), (True, "held out")):
        mape = report.mape(held_out)
        if mape:
            print(f"MAPE ({title}): " + ", ".join(f"{k} {v:.1%}" for k, v in mape.items()))
    print()
    print("Memory: vLLM paper Table 1 (fp16, block 16, gpu_memory_utilization 0.90, vLLM 0.1's profile)")
    for r in report.memory_rows:
        mark = "ok" if r["within_target"] else "MISS"
        print(f"  {r['label']:<32} {r['metric']:<14} {_fmt(r['measured']):>9} {_fmt(r['simulated']):>10} "
              f"{r['error']:>+7.1%}  {mark} (±{r['target']:.0%})")
    print()
    print(f"{len(report.misses)} value(s) outside their target" + (": see docs/calibration.md" if report.misses else ""))
