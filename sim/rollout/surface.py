"""The engine's response surface: latency distributions of one replica at a given load.

Hours of fleet traffic (half a million requests) are too many to push through one simulated
vLLM engine per replica in seconds. Instead, for a replica's load (requests/s), a step-time
multiplier (the slow-gpu fault) and a KV capacity (the kv-leak fault), one *cell* runs
:class:`sim.engine.Engine` on a few hundred requests of the fleet's traffic mix, Poisson at
that rate, and keeps the distributions the fleet samples from:

- TTFT and TPOT as quantile tables (``QUANTILE_LEVELS``); a request's duration is
  ``ttft + tpot * (output_tokens - 1)``, so longer outputs (the cost fault) cost time too;
- time-averaged ``num_requests_running``, ``num_requests_waiting``, ``kv_cache_usage_perc``,
  and preemptions per request, for vLLM's own series.

Cells sit on a geometric grid of rates (``RATE_GRID``, ratio sqrt 2) and are computed once per
process (``functools.lru_cache`` keyed on the frozen config and the grid point), with a seed
fixed by the cell, so every rollout seed reuses them. Between grid rates the quantile tables
are interpolated linearly in log(rate) (a quantile average, which keeps them monotone).
Sampling TTFT and TPOT independently drops their correlation: a departure from one engine per
replica that docs/rollout.md measures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from sim.config import EngineConfig

QUANTILE_LEVELS = np.concatenate(
    [np.linspace(0.0, 0.9, 37), np.array([0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0])]
)
RATE_GRID = tuple(0.05 * 2 ** (k / 2) for k in range(19))  # 0.05 .. 25.6 requests/s per replica
WARMUP_FRACTION = 0.1  # requests dropped from the start of a cell (the engine starts empty)


@dataclass(frozen=True)
class TrafficMix:
    """Prompt and output lengths of the API's requests: ShareGPT-like log-normals.

    The locations follow sim.workload's ``sharegpt-vllm`` (vLLM's ShareGPT benchmark sample:
    mean prompt 202, output 179 tokens). The API caps ``max_tokens`` at 200, as a chat product
    does; on the simulated H100 (about 10 ms per output token) that puts the p99 request time
    near 2 s, under the course's 3000 ms check with room for a 1.3x slowdown.
    Every prompt starts with the same 64-token system prompt (prefix caching shares it).
    """

    prompt_mu: float = 4.9402
    prompt_sigma: float = 1.1
    output_mu: float = 4.7212
    output_sigma: float = 1.0
    max_prompt_tokens: int = 2048
    max_output_tokens: int = 200
    system_prompt_tokens: int = 64

    def sample(self, rng: np.random.Generator, n: int, output_mult: float | np.ndarray = 1.0):
        """(prompt_tokens, output_tokens) int64 arrays. ``output_mult`` (the cost fault)
        multiplies the output, past the cap: the new version writes longer answers."""
        p = np.minimum(np.rint(rng.lognormal(self.prompt_mu, self.prompt_sigma, n)), self.max_prompt_tokens)
        o = np.minimum(np.rint(rng.lognormal(self.output_mu, self.output_sigma, n)), self.max_output_tokens)
        p = np.maximum(p, 4).astype(np.int64) + self.system_prompt_tokens
        o = np.maximum(np.rint(np.maximum(o, 1) * output_mult), 1).astype(np.int64)
        return p, o


@dataclass(frozen=True)
class Cell:
    """One grid point's measured distributions."""

    rate_per_replica: float
    ttft_s: np.ndarray  # quantiles at QUANTILE_LEVELS
    tpot_s: np.ndarray
    num_running: float
    num_waiting: float
    kv_usage: float
    preemptions_per_request: float
    num_requests: int
    saturated: bool  # the queue grew through the run: the rate is past the replica's capacity


def cell_requests(rate: float) -> int:
    """Requests per cell: about 10 minutes of traffic, between 200 and 800."""
    return int(min(800, max(200, round(rate * 600))))


@functools.lru_cache(maxsize=512)
def engine_cell(config: EngineConfig, mix: TrafficMix, rate: float, step_mult: float, num_gpu_blocks: int | None) -> Cell:
    """Run one simulated vLLM engine at ``rate`` requests/s (memoised per process)."""
    from sim.engine import run_engine  # the documented entry point (sim.runner imports sim.engine)
    from sim.workload import Workload

    n = cell_requests(rate)
    seed = int(round(rate * 1000)) * 7919 + int(round(step_mult * 100)) * 31 + (num_gpu_blocks or 0)
    rng = np.random.default_rng(seed)
    prompts, outputs = mix.sample(rng, n)
    limit = config.max_model_len or 1 << 30
    prompts = np.minimum(prompts, limit - 1)
    outputs = np.maximum(np.minimum(outputs, limit - prompts), 1)
    workload = Workload(
        name=f"fleet-mix@{rate:g}rps",
        arrival_s=np.cumsum(rng.exponential(1.0 / rate, n)),
        prompt_len=prompts.astype(np.int64),
        output_len=outputs.astype(np.int64),
        prefix_len=np.full(n, mix.system_prompt_tokens, dtype=np.int64),
        prefix_group=np.zeros(n, dtype=np.int64),
        token_seed=seed,
    )
    cfg = config if num_gpu_blocks is None else config.with_(num_gpu_blocks_override=int(num_gpu_blocks))
    res = run_engine(cfg, workload, seed=seed, usage="serve", step_time_multiplier=step_mult)
    skip = int(n * WARMUP_FRACTION)
    ttft = res.ttft_s[skip:]
    keep = res.output_len[skip:] > 1
    tpot = ((res.finish_s[skip:] - res.first_token_s[skip:])[keep] / (res.output_len[skip:][keep] - 1))
    pre = float(res.num_preemptions[skip:].mean()) if n > skip else 0.0
    steps = res.steps
    t0 = float(res.arrival_s[skip]) if n > skip else 0.0
    t1 = float(np.nanmax(res.finish_s)) if n else 0.0
    span = max(1e-9, t1 - t0)
    if len(steps.get("t_s", ())):
        sel = steps["t_s"] >= t0
        w = steps["duration_s"][sel]
        running = float(np.sum(w * steps["num_running"][sel]) / span)
        waiting = float(np.sum(w * steps["num_waiting"][sel]) / span)
        kv = float(np.sum(w * steps["kv_usage"][sel]) / span)
    else:
        running = waiting = kv = 0.0
    # Saturation: TTFT of the last fifth far above that of the first fifth.
    k = max(1, len(ttft) // 5)
    saturated = bool(len(ttft) > 10 and np.median(ttft[-k:]) > 5 * max(np.median(ttft[:k]), 0.05))
    return Cell(
        rate_per_replica=rate,
        ttft_s=np.quantile(ttft, QUANTILE_LEVELS) if len(ttft) else np.zeros(len(QUANTILE_LEVELS)),
        tpot_s=np.quantile(tpot, QUANTILE_LEVELS) if len(tpot) else np.zeros(len(QUANTILE_LEVELS)),
        num_running=running,
        num_waiting=waiting,
        kv_usage=kv,
        preemptions_per_request=pre,
        num_requests=len(ttft),
        saturated=saturated,
    )


@functools.lru_cache(maxsize=32)
def baseline_num_gpu_blocks(config: EngineConfig) -> int:
    import simpy

    from sim.engine import Engine

    return int(Engine(simpy.Environment(), config, usage="serve").num_gpu_blocks)


@dataclass(frozen=True)
class Surface:
    """Latency distributions for a replica of ``config`` serving ``mix``."""

    config: EngineConfig
    mix: TrafficMix

    def kv_blocks(self, lost_fraction: float) -> int | None:
        """The KV capacity left after a leak, on a half-octave grid (None: untouched).

        The fleet's load fills a few percent of an H100's KV cache, so losing up to half of
        it changes nothing and keeps the baseline cell; below that, capacities are rounded
        down to 2^(k/2) blocks, never below what the longest request needs.
        """
        if lost_fraction < 0.5:
            return None
        total = baseline_num_gpu_blocks(self.config)
        left = max(1.0, total * (1.0 - lost_fraction))
        floor = math.ceil((self.mix.max_prompt_tokens + self.mix.system_prompt_tokens + self.mix.max_output_tokens) / self.config.block_size) + 2
        q = 2 ** (math.floor(2 * math.log2(left)) / 2)
        return int(max(floor, q))

    def cells_for(self, rate: float, step_mult: float = 1.0, lost_fraction: float = 0.0) -> tuple[Cell, Cell, float]:
        """The two grid cells around ``rate`` and the interpolation weight of the upper one."""
        step_mult = round(float(step_mult), 2)
        blocks = self.kv_blocks(lost_fraction)
        r = min(max(rate, RATE_GRID[0]), RATE_GRID[-1])
        k = min(int(math.floor(2 * math.log2(r / RATE_GRID[0]) + 1e-9)), len(RATE_GRID) - 2)
        lo, hi = RATE_GRID[k], RATE_GRID[k + 1]
        w = (math.log(r) - math.log(lo)) / (math.log(hi) - math.log(lo))
        w = min(max(w, 0.0), 1.0)
        c_lo = engine_cell(self.config, self.mix, lo, step_mult, blocks)
        c_hi = c_lo if w == 0.0 else engine_cell(self.config, self.mix, hi, step_mult, blocks)
        return c_lo, c_hi, w

    def point(self, rate: float, step_mult: float = 1.0, lost_fraction: float = 0.0) -> Cell:
        """An interpolated cell at an arbitrary rate."""
        a, b, w = self.cells_for(rate, step_mult, lost_fraction)
        if w == 0.0:
            return a
        mix = lambda x, y: (1 - w) * x + w * y  # noqa: E731
        return Cell(
            rate_per_replica=rate,
            ttft_s=mix(a.ttft_s, b.ttft_s),
            tpot_s=mix(a.tpot_s, b.tpot_s),
            num_running=mix(a.num_running, b.num_running),
            num_waiting=mix(a.num_waiting, b.num_waiting),
            kv_usage=mix(a.kv_usage, b.kv_usage),
            preemptions_per_request=mix(a.preemptions_per_request, b.preemptions_per_request),
            num_requests=a.num_requests + b.num_requests,
            saturated=a.saturated or b.saturated,
        )


def sample_quantiles(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling from a quantile table with uniform draws ``u``."""
    return np.interp(u, QUANTILE_LEVELS, table)
