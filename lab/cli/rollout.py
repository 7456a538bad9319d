"""``servelab rollout simulate``: the course's Argo Rollouts canary against a simulated fleet.

    servelab rollout simulate [--manifests DIR] [--fault SPEC ...] [--seed N] [--trials N]
                              [--rate R] [--traffic poisson|diurnal] [--json FILE] [--png FILE]
                              [--abort-at DURATION] [--judge threshold|kayenta]
                              [--preset error-rate|p99|cost|quality|manual]

Prints a readable timeline; ``--json`` writes DESIGN.md's contract (status, promoted,
aborted_at_s, abort_reason, final_weight, timeline, requests); ``--png`` draws weight, error
rate, p99, cost and quality over time with every analysis measurement marked. ``--trials N``
runs N seeds (and, with faults, the same seeds without them) and reports the detection rate,
the false-alarm rate and the time to detect. ``--preset T`` injects the fault (or the abort by
hand) that rollback trigger T, and no other, should catch (``sim/rollout/presets.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

FAULT_HELP = (
    "inject a fault: [stable:|canary:]KIND=VALUE[@START[-END]], KIND one of error-rate (0.02), latency (4x), "
    "slow-gpu (2x), kv-leak (0.5 per hour), crash-loop (10m between crashes), cost (3x output tokens), "
    "price (3x price per token), quality (-0.15); repeatable"
)


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND")
    p = sub.add_parser("simulate", help="run the canary rollout in simulation", description=__doc__.splitlines()[0])
    p.add_argument("--manifests", default=None, metavar="DIR",
                   help="folder with the Rollout, AnalysisTemplates, Services, VirtualService (default: manifests/)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help=FAULT_HELP)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same output")
    p.add_argument("--trials", type=int, default=None, metavar="N", help="run N seeds and report detection rates")
    p.add_argument("--rate", type=float, default=20.0, metavar="R", help="requests per second (default 20)")
    p.add_argument("--traffic", choices=("poisson", "diurnal"), default="poisson", help="arrival pattern")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    p.add_argument("--png", default=None, metavar="FILE", help="draw weight and metrics over time")
    p.add_argument("--abort-at", default=None, metavar="DURATION", help="abort by hand at this time (e.g. 2h30m)")
    p.add_argument("--judge", choices=("threshold", "kayenta"), default="threshold",
                   help="threshold: the AnalysisTemplates; kayenta: Mann-Whitney canary vs stable")
    p.add_argument("--preset", default=None, metavar="TRIGGER",
                   help="one rollback trigger's preset: error-rate, p99, cost, quality or manual "
                        "(adds its fault, or for manual its --abort-at)")
    p.add_argument("--quiet", action="store_true", help="no timeline on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sim.errors import ServeLabError

    if getattr(args, "rollout_command", None) != "simulate":
        print("error: servelab rollout: expected a subcommand: simulate", file=sys.stderr)
        return 2
    from sim.rollout import parse_fault
    from sim.rollout.durations import parse_go_duration

    manifests = _manifests_dir(args.manifests)
    _apply_preset(args)
    faults = [parse_fault(s) for s in args.fault]
    if not (args.rate > 0 and math.isfinite(args.rate)):
        raise ServeLabError(f"--rate: expected a positive number of requests per second, got {args.rate}")
    abort_at = None
    if args.abort_at is not None:
        try:
            abort_at = parse_go_duration(args.abort_at)
        except ValueError:
            raise ServeLabError(f"--abort-at: expected a duration like 45m or 2h30m, got {args.abort_at!r}") from None
    if args.png is not None and not Path(args.png).resolve().parent.is_dir():
        raise ServeLabError(f"--png: cannot write {args.png}: folder {Path(args.png).parent} does not exist")
    if args.trials is not None:
        if args.trials < 1:
            raise ServeLabError(f"--trials: expected a positive number of runs, got {args.trials}")
        if args.png is not None:
            print("note: --png draws one run and is ignored with --trials; drop --trials and pick a --seed",
                  file=sys.stderr)
        return _trials(args, manifests, faults)
    from sim.rollout import simulate

    result = simulate(manifests, faults, args.seed, args.rate, traffic=args.traffic, judge=args.judge, abort_at_s=abort_at)
    for note in _unconditioned(result.simulation.m):
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        _print_result(result)
    if args.json:
        _write(args.json, json.dumps(result.to_json(), indent=2, sort_keys=True, default=_json_default) + "\n")
    if args.png:
        draw_png(result, args.png)
        print(f"wrote {args.png}")
    return 0


def _apply_preset(args: argparse.Namespace) -> None:
    """``--preset T``: T's faults join --fault; its abort by hand sets --abort-at unless given."""
    if args.preset is None:
        return
    from sim.errors import ServeLabError
    from sim.rollout.presets import PRESETS

    preset = PRESETS.get(args.preset)
    if preset is None:
        raise ServeLabError(f"--preset: expected one of {', '.join(PRESETS)}, got {args.preset!r}")
    args.fault = [*preset.faults, *args.fault]
    if preset.abort_at is not None and args.abort_at is None:
        args.abort_at = preset.abort_at


def _manifests_dir(arg: str | None) -> str:
    from sim.errors import ManifestError
    from sim.rollout.api import DEFAULT_MANIFESTS

    if arg is None:
        local = Path("manifests")
        return str(local if (local / "kustomization.yaml").exists() or (local / "rollout.yaml").exists() else DEFAULT_MANIFESTS)
    if not Path(arg).is_dir():
        raise ManifestError(f"--manifests: {arg!r} is not a folder; point it at the folder holding rollout.yaml")
    return arg


def _hms(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def _print_result(r) -> None:
    faults = ", ".join(r.faults) or "none"
    print(f"rollout ai-api: faults {faults}; seed {r.seed}; judge {r.judge}")
    print("   time   weight  event")
    for e in r.timeline:
        print(f"{_hms(e['t_s']):>8} {e['weight']:>6}%  {e['event']}")
    print()
    line = f"status {r.status}; promoted {str(r.promoted).lower()}; final weight {r.final_weight}%"
    if r.aborted_at_s is not None:
        line += f"; aborted at {_hms(r.aborted_at_s)}"
    print(line)
    if r.abort_reason:
        ar = r.abort_reason
        print(f"abort reason: {ar.get('message')} (metric {ar.get('metric')}, value {_fmt(ar.get('value'))}, "
              f"analysis {ar.get('analysis')})")
        why = _why(ar, r.simulation.steps if r.simulation is not None else ())
        if why:
            print(f"why: {why}")
    q = r.requests
    share = 100.0 * q["canary"] / q["total"] if q["total"] else 0.0
    print(f"requests: {q['total']:,} total, {q['canary']:,} to the canary ({share:.2f}%), "
          f"{q['canary_failed']:,} canary requests failed")


def _unconditioned(manifests) -> list[str]:
    """Metrics with neither condition: Argo counts every such measurement Successful."""
    runs = ([manifests.background] if manifests.background else []) + list(manifests.step_analyses.values())
    return [
        f"metric {m.name!r} (AnalysisTemplate {m.template}) has neither successCondition nor failureCondition, "
        "so every measurement passes (Argo's rule); add the condition it should meet"
        for run in runs
        for m in run.metrics
        if m.success is None and m.failure is None
    ]


def _why(reason: dict, steps) -> str:
    """One sentence: the metric's last value against its condition, and where the rollout stood."""
    if not reason.get("metric"):
        return ""
    value = reason.get("value")
    if reason.get("phase") == "Error":
        out = f"{reason['metric']} could not be evaluated (phase Error: the query or the condition failed, as the message says)"
    elif value is None:
        out = (f"{reason['metric']} measured no value (an empty result or NaN: no data in the window yet, "
               "or a query that matches no series)")
    else:
        out = f"{reason['metric']} measured {_fmt(value)}"
    if reason.get("condition"):
        out += f", held to {reason['condition']}"
    where = f"in the {reason.get('run', '')} analysis ({reason.get('analysis')})"
    step = reason.get("step")
    if step is not None and step < len(steps):
        where += f", at step {step} ({_describe_step(steps[step])})"
    if reason.get("weight") is not None:
        where += f", canary weight {reason['weight']}%"
    return f"{out}; {where}"


def _describe_step(step) -> str:
    from sim.rollout.durations import format_duration

    if step.setWeight is not None:
        return f"setWeight {step.setWeight}"
    if step.pause is not None:
        return f"pause {format_duration(step.pause.duration)}" if step.pause.duration is not None else "pause until promoted"
    return "analysis gate"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o).__name__)


def _write(path: str, text: str) -> None:
    from sim.errors import ServeLabError

    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise ServeLabError(f"cannot write {path}: {exc.strerror}") from None


def _trials(args, manifests: str, faults) -> int:
    from sim.rollout import run_trials

    def progress(done: int, total: int) -> None:
        print(f"\rtrials: {done}/{total} runs", end="" if done < total else "\n", file=sys.stderr, flush=True)

    abort_at = None
    if args.abort_at is not None:
        from sim.rollout.durations import parse_go_duration

        abort_at = parse_go_duration(args.abort_at)
    rep = run_trials(manifests, faults, args.trials, args.seed, args.rate, judge=args.judge,
                     traffic=args.traffic, abort_at_s=abort_at, progress=progress)
    print(f"{rep.trials} trials, faults {', '.join(rep.faults) or 'none'}, judge {rep.judge}, seeds {args.seed}..{args.seed + args.trials - 1}")
    if rep.detection_rate is not None:
        print(f"  detection rate:   {rep.detection_rate:.0%} (aborted after the fault began)")
    print(f"  false-alarm rate: {rep.false_alarm_rate:.0%} ({'same seeds without the fault' if faults or abort_at is not None else 'aborted without a fault'})")
    if rep.time_to_detect_s:
        t = rep.time_to_detect_s
        print(f"  time to detect:   median {_hms(t['median'])}, mean {_hms(t['mean'])}, p90 {_hms(t['p90'])}")
    print(f"  canary requests before the end (mean): {rep.exposed_canary_requests_mean:,.0f}")
    if rep.aborts_by_metric:
        print("  aborts by metric: " + ", ".join(f"{k} {v}" for k, v in rep.aborts_by_metric.items()))
        print("  aborts by trigger: " + ", ".join(f"{k} {v} ({rep.caught_alone_by_trigger.get(k, 0)} with no other "
                                                  f"trigger failing)" for k, v in rep.aborts_by_trigger.items()))
    if args.json:
        _write(args.json, json.dumps(rep.to_json(), indent=2, sort_keys=True) + "\n")
    return 0


def draw_png(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.rollout.report import timeseries

    sim = result.simulation
    ts = timeseries(sim)
    h = ts["t_s"] / 3600.0
    fig, axes = plt.subplots(5, 1, figsize=(10, 11), sharex=True)
    axes[0].step(h, ts["weight"], where="post", color="tab:purple")
    axes[0].set_ylabel("canary weight %")
    axes[0].set_ylim(-5, 105)
    panels = [("error_rate", "error rate (5m)"), ("p99_ms", "p99 ms (5m)"), ("cost_per_request", "$ / request (5m)"),
              ("quality", "judge score (30m)")]
    for ax, (key, label) in zip(axes[1:], panels):
        ax.plot(h, ts[key]["stable"], color="tab:blue", label="stable")
        ax.plot(h, ts[key]["canary"], color="tab:orange", label="canary")
        ax.set_ylabel(label)
    axes[1].legend(loc="upper right", fontsize=8)
    colors = {"Successful": "tab:green", "Failed": "tab:red", "Error": "black", "Inconclusive": "gold"}
    for m in result.measurements:
        x = m["t_s"] / 3600.0
        c = colors.get(m["phase"], "grey")
        for ax in axes:
            ax.axvline(x, color=c, alpha=0.25 if m["phase"] == "Successful" else 0.8, lw=0.6)
    if result.aborted_at_s is not None:
        for ax in axes:
            ax.axvline(result.aborted_at_s / 3600.0, color="red", lw=2)
    axes[-1].set_xlabel("hours since the rollout started")
    title = f"ai-api rollout: {result.status}"
    if result.faults:
        title += f" (faults: {', '.join(result.faults)})"
    axes[0].set_title(title + "  |  lines: analysis measurements (green ok, red failed)", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=90)
    except (OSError, ValueError) as exc:  # a folder that vanished, or a suffix matplotlib cannot write
        from sim.errors import ServeLabError

        raise ServeLabError(f"--png: cannot write {path}: {exc} (give a file name ending in .png)") from None
    finally:
        plt.close(fig)
