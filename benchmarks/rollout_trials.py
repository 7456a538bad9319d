"""Which rollback trigger catches each preset, and how often; detection and false alarms per fault.

Without FAULT arguments: one row per preset of ``sim/rollout/presets.py`` (one per rollback
trigger: error rate, p99, cost, quality, manual), saying which trigger aborted each seed's
rollout, and in how many seeds that trigger was the only one with a failed measurement ("alone").
With FAULT arguments (or ``--all-faults``): detection rate, false-alarm rate and time to detect
per fault, the same numbers as `servelab rollout simulate --trials N --fault F`.

Both run in one process, so the fault-free runs (the same traffic for every fault, common
random numbers) are computed once and give the false-alarm rate.

    python3 benchmarks/rollout_trials.py [--trials 50] [--judge threshold|kayenta]       # presets
    python3 benchmarks/rollout_trials.py [--trials 50] --all-faults | FAULT ...           # faults
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.rollout import run_trials  # noqa: E402
from sim.rollout.api import DEFAULT_MANIFESTS  # noqa: E402
from sim.rollout.presets import PRESETS  # noqa: E402

DEFAULT_FAULTS = ["error-rate=0.02", "latency=4x", "quality=-0.15", "latency=1.3x", "cost=2x", "price=3x",
                  "slow-gpu=2x", "kv-leak=0.5", "crash-loop=30m"]


def _hms(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600}:{t % 3600 // 60:02d}:{t % 60:02d}"


def presets_table(trials: int, seed: int, judge: str) -> None:
    print(f"{'preset':11} {'injected':28} {'caught by it alone':>19} {'false alarms':>13} "
          f"{'median time':>12}  aborts by trigger (metric)")
    for name, p in PRESETS.items():
        rep = run_trials(DEFAULT_MANIFESTS, p.faults, trials, seed, judge=judge, abort_at_s=p.abort_at_s)
        alone = rep.caught_alone_by_trigger.get(p.trigger, 0)
        ttd = rep.time_to_detect_s
        med = _hms(ttd["median"]) if ttd else "-"
        by_trigger = ", ".join(f"{k} {v}" for k, v in rep.aborts_by_trigger.items()) or "none"
        by_metric = ", ".join(f"{k} {v}" for k, v in rep.aborts_by_metric.items())
        print(f"{name:11} {p.cli_flags():28} {alone:>8}/{trials} {alone / trials:>5.0%} {rep.false_alarm_rate:>13.0%} "
              f"{med:>12}  {by_trigger} ({by_metric})")
    clean = run_trials(DEFAULT_MANIFESTS, (), trials, seed, judge=judge)
    aborted = sum(clean.aborts_by_metric.values())
    print(f"{'no fault':11} {'':28} {'':>19} {clean.false_alarm_rate:>13.0%} {'-':>12}  "
          f"{aborted} of {trials} aborted")


def faults_table(faults: list[str], trials: int, seed: int, judge: str) -> None:
    print(f"{'fault':18} {'detected':>9} {'false alarms':>13} {'median time to detect':>22} {'p90':>8}  aborts by metric")
    for f in faults:
        rep = run_trials(DEFAULT_MANIFESTS, (f,), trials, seed, judge=judge)
        ttd = rep.time_to_detect_s
        med = _hms(ttd["median"]) if ttd else "-"
        p90 = _hms(ttd["p90"]) if ttd else "-"
        by = ", ".join(f"{k} {v}" for k, v in rep.aborts_by_metric.items())
        print(f"{f:18} {rep.detection_rate:>9.0%} {rep.false_alarm_rate:>13.0%} {med:>22} {p90:>8}  {by}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", default="threshold", choices=("threshold", "kayenta"))
    ap.add_argument("--all-faults", action="store_true", help=f"the fault table for {' '.join(DEFAULT_FAULTS)}")
    ap.add_argument("faults", nargs="*", help="fault SPECs for the fault table (default: the presets table)")
    args = ap.parse_args()
    print(f"{args.trials} seeds ({args.seed}..{args.seed + args.trials - 1}), judge {args.judge}, 20 req/s")
    t0 = time.perf_counter()
    faults = DEFAULT_FAULTS if args.all_faults else args.faults
    if faults:
        faults_table(faults, args.trials, args.seed, args.judge)
    else:
        presets_table(args.trials, args.seed, args.judge)
    print(f"wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
