"""How close the fleet's response surface stays to running the full engine.

For a pod load (requests/s), a step-time multiplier and a KV loss, compare request durations
(arrival to last token) of
  - the full engine: sim.engine.run_engine on N requests of the fleet's traffic mix, Poisson at
    that rate (one engine per replica, the "truth");
  - the surface: TTFT and TPOT drawn from the interpolated grid cells, duration =
    TTFT + TPOT x (output - 1), as the fleet samples them.
Prints mean, p50, p90 and p99 of both and the relative differences.

    python3 benchmarks/rollout_surface_fidelity.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.engine import run_engine  # noqa: E402
from sim.rollout.api import DEFAULT_MANIFESTS  # noqa: E402
from sim.rollout.loader import load_manifests  # noqa: E402
from sim.rollout.surface import RATE_GRID, Surface, TrafficMix, sample_quantiles  # noqa: E402
from sim.workload import Workload  # noqa: E402

CASES = [  # (label, rate per pod, step multiplier, KV fraction lost)
    ("canary pod at 1% (0.2 req/s)", 0.2, 1.0, 0.0),
    ("stable pod at 50% (1.0 req/s)", 1.0, 1.0, 0.0),
    ("off-grid rate 1.5 req/s", 1.5, 1.0, 0.0),
    ("canary pod at 10%/50% (2.0 req/s)", 2.0, 1.0, 0.0),
    ("off-grid rate 3.0 req/s", 3.0, 1.0, 0.0),
    ("heavy load 8 req/s", 8.0, 1.0, 0.0),
    ("slow-gpu 3x at 2.0 req/s", 2.0, 3.0, 0.0),
    ("kv-leak 99.5% lost at 2.0 req/s", 2.0, 1.0, 0.995),
]


def full_engine(config, mix: TrafficMix, surface: Surface, rate, mult, lost, n, seed=12345):
    rng = np.random.default_rng(seed)
    p, o = mix.sample(rng, n)
    w = Workload(name="fidelity", arrival_s=np.cumsum(rng.exponential(1 / rate, n)), prompt_len=p, output_len=o,
                 prefix_len=np.full(n, mix.system_prompt_tokens, dtype=np.int64),
                 prefix_group=np.zeros(n, dtype=np.int64), token_seed=seed)
    blocks = surface.kv_blocks(lost)
    cfg = config if blocks is None else config.with_(num_gpu_blocks_override=blocks)
    res = run_engine(cfg, w, seed=seed, usage="serve", step_time_multiplier=mult)
    skip = n // 10
    return (res.finish_s - res.arrival_s)[skip:]


def surface_draws(mix: TrafficMix, surface: Surface, rate, mult, lost, n, seed=54321):
    rng = np.random.default_rng(seed)
    cell = surface.point(rate, mult, lost)
    p, o = mix.sample(rng, n)
    return sample_quantiles(cell.ttft_s, rng.random(n)) + sample_quantiles(cell.tpot_s, rng.random(n)) * (o - 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    m = load_manifests(DEFAULT_MANIFESTS)
    mix = TrafficMix()
    surface = Surface(m.engine_config, mix)
    print(f"engine: {m.engine_config.model} on {m.engine_config.gpu}; grid rates {', '.join(f'{r:.3g}' for r in RATE_GRID[:9])} ...")
    print(f"{'case':36} {'stat':>5} {'engine s':>9} {'surface s':>9} {'diff':>7}")
    worst = 0.0
    for label, rate, mult, lost in CASES:
        t0 = time.perf_counter()
        truth = full_engine(m.engine_config, mix, surface, rate, mult, lost, args.requests)
        t_engine = time.perf_counter() - t0
        approx = surface_draws(mix, surface, rate, mult, lost, 20000)
        for stat, f in (("mean", np.mean), ("p50", lambda x: np.quantile(x, 0.5)),
                         ("p90", lambda x: np.quantile(x, 0.9)), ("p99", lambda x: np.quantile(x, 0.99))):
            a, b = float(f(truth)), float(f(approx))
            d = (b - a) / a
            worst = max(worst, abs(d))
            print(f"{label if stat == 'mean' else '':36} {stat:>5} {a:9.3f} {b:9.3f} {d:+7.1%}")
        print(f"{'':36} (full engine: {len(truth)} requests in {t_engine:.1f} s)")
    print(f"largest relative difference: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
