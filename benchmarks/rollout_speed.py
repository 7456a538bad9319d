"""Wall time of the course's full 7-hour canary rollout at 20 requests/s (target: < 20 s on
one core). Prints one line per configuration; the first run includes computing the engine
surface cells (memoised afterwards, as in a Streamlit session or a --trials run).

    python3 benchmarks/rollout_speed.py [--rate 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.rollout import simulate  # noqa: E402
from sim.rollout.surface import engine_cell  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--judge", default="threshold", choices=("threshold", "kayenta"))
    args = ap.parse_args()
    for i in range(args.repeat):
        cold = engine_cell.cache_info().currsize == 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        r = simulate(seed=i, rate=args.rate, judge=args.judge)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        cells = engine_cell.cache_info().currsize
        print(
            f"run {i}: {'cold (surface computed)' if cold else 'warm (surface memoised)'}: "
            f"wall {wall:.2f} s, cpu {cpu:.2f} s; simulated {r.duration_s / 3600:.1f} h, "
            f"{r.requests['total']:,} requests, status {r.status}; engine cells {cells}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
