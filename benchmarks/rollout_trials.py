"""Detection rate, false-alarm rate and time to detect, for the issue's faults, over N seeds.

The same numbers as `servelab rollout simulate --trials N --fault F` for each F, in one
process so the fault-free runs (the same traffic for every fault) are computed once.

    python3 benchmarks/rollout_trials.py [--trials 50] [--judge threshold|kayenta] [FAULT ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.rollout import run_trials  # noqa: E402
from sim.rollout.api import DEFAULT_MANIFESTS  # noqa: E402

DEFAULT_FAULTS = ["error-rate=0.02", "latency=4x", "quality=-0.15", "latency=1.3x", "cost=2x", "slow-gpu=2x",
                  "kv-leak=0.5", "crash-loop=30m"]


def _hms(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600}:{t % 3600 // 60:02d}:{t % 60:02d}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", default="threshold", choices=("threshold", "kayenta"))
    ap.add_argument("faults", nargs="*", default=DEFAULT_FAULTS)
    args = ap.parse_args()
    print(f"{args.trials} seeds ({args.seed}..{args.seed + args.trials - 1}), judge {args.judge}, 20 req/s")
    print(f"{'fault':18} {'detected':>9} {'false alarms':>13} {'median time to detect':>22} {'p90':>8}  aborts by metric")
    t0 = time.perf_counter()
    for f in args.faults:
        rep = run_trials(DEFAULT_MANIFESTS, (f,), args.trials, args.seed, judge=args.judge)
        ttd = rep.time_to_detect_s
        med = _hms(ttd["median"]) if ttd else "-"
        p90 = _hms(ttd["p90"]) if ttd else "-"
        by = ", ".join(f"{k} {v}" for k, v in rep.aborts_by_metric.items())
        print(f"{f:18} {rep.detection_rate:>9.0%} {rep.false_alarm_rate:>13.0%} {med:>22} {p90:>8}  {by}")
    print(f"wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
