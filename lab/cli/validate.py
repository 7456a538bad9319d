"""``servelab validate``: every published vLLM measurement against the simulator, with errors.

Per point: source, setup, metric, measured, simulated, error; then the mean absolute
percentage error per metric, fitted points apart from held-out ones; then the vLLM paper's
Table 1 (KV-cache memory). ``--paper DIR`` instead reproduces the vLLM paper's OPT-13B results
(see docs/paper.md) and writes CSV tables and PNG plots into DIR.
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
    parser.add_argument("--paper", metavar="DIR", default=None,
                        help="reproduce the vLLM paper's OPT-13B figures into DIR instead")
    parser.add_argument("--paper-prompts", type=int, default=None,
                        help="prompts per rate point for --paper (default: the module's, see docs/paper.md)")
    parser.add_argument("--paper-rates", type=int, default=None, help="rate points per curve for --paper")
    parser.add_argument("--paper-profile", choices=("2023", "shipped"), default="2023",
                        help="step-time profile for --paper: 2023 (fitted to the paper's Fig. 13 vLLM bars, "
                             "sim/data/calibration-paper-2023.yaml) or shipped (today's vLLM)")


def run(args) -> int:
    if args.paper:
        from lab.paper import write_paper

        return write_paper(args.paper, num_prompts=args.paper_prompts, num_rates=args.paper_rates,
                           profile=args.paper_profile)
    if args.max_prompts < 0:
        raise ConfigError(f"--max-prompts: expected 0 (no cap) or a positive integer, got {args.max_prompts}")
    from sim.validate import validate

    from sim.validate import reference_points

    points = reference_points(args.max_prompts or None)
    if args.points:
        points = [p for p in points if args.points in p.label]
        if not points:
            raise ConfigError(f"--points {args.points!r}: no reference point has that in its label")
    report = validate(points, profile_path=args.calibration, num_prompts_cap=args.max_prompts or None)
    data = report.to_dict()
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    print_report(report)
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"--json {args.json}: cannot write ({exc.strerror})") from None
        print(f"Wrote {args.json}")
    return 0


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
