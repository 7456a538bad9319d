"""From answered engine configurations to deployments: replicas, cost, ranking and the Pareto front.

For an engine configuration whose highest load per replica meeting the SLA is ``g``:

* replicas = ceil(target load / g) (1 without a target), raised until the deployment's output
  throughput reaches the SLA's ``output_throughput`` term, if any;
* cost per hour = replicas x GPUs per replica (tensor x data parallel size) x the GPU's price per hour;
* output tokens/s = the load the deployment serves x mean output tokens per request (rate mode;
  in concurrency mode, the per-replica throughput measured at ``g`` clients, scaled to the load);
* cost per million output tokens = cost per hour / (output tokens per hour / 10^6);
* tokens/s per GPU = output tokens/s / GPUs; tokens/s per user = 1000 / mean TPOT (ms), the
  speed one stream sees (the axes of NVIDIA aiconfigurator's Pareto plots).

What each figure is measured at: output tokens/s, tokens/s per GPU and the cost per million
tokens are at the deployment's ``load``, which is the target when one is given (``at_target``:
every deployment carrying 5 req/s of 256-token answers serves 1,280 tokens/s, over however many
GPUs it has) and otherwise replicas x ``g``. Tokens/s per user and the SLA margins are measured at
``g``, one replica's highest load meeting the SLA, as are the ``*_at_max_load`` properties, which
say what one replica does when run that hard.

Ranking: deployments that meet everything first, cheapest per hour first when a target load is
given (the deployment must carry it), cheapest per million tokens otherwise; ties go to the one
with more headroom on its tightest SLA term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.config import EngineConfig
from sim.tune.evaluate import Evaluation
from sim.tune.prices import GPUPrice
from sim.tune.sla import SLA, margins


@dataclass(frozen=True)
class Deployment:
    config: EngineConfig
    replicas: int
    num_gpus: int
    meets: bool
    load_per_replica: float  # the highest load per replica found to meet the latency terms
    load: float  # what the deployment serves: the target, or replicas x load_per_replica
    output_tokens_per_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    cost_per_hour: float
    cost_per_million_tokens: float
    margins: dict = field(default_factory=dict)  # term key -> (limit - measured) / limit
    misses: tuple = ()  # for a deployment that misses: {term, key, measured, limit, unit, over_pct}, worst first
    capped: bool = False  # met at the top of the bracket: the true limit may be higher
    at_target: bool = False  # load is the target load (else replicas x load_per_replica)

    @property
    def min_margin(self) -> float:
        return min(self.margins.values()) if self.margins else math.inf

    @property
    def tokens_per_s_per_gpu_at_max_load(self) -> float:
        """Output tokens/s per GPU of one replica at ``load_per_replica`` (NaN for a miss)."""
        if not (self.meets and self.load > 0 and self.replicas > 0):
            return math.nan
        return self.output_tokens_per_s * self.load_per_replica / self.load / (self.num_gpus / self.replicas)

    @property
    def cost_per_million_tokens_at_max_load(self) -> float:
        """Dollars per million output tokens of one replica at ``load_per_replica`` (NaN for a miss)."""
        per_gpu = self.tokens_per_s_per_gpu_at_max_load
        if not per_gpu > 0:
            return math.nan
        return self.cost_per_hour / self.num_gpus / (per_gpu * 3600 / 1e6)


def deployment(ev: Evaluation, sla: SLA, target_load: float | None, price: GPUPrice | None,
               max_replicas: int, *, one_replica: bool = False) -> Deployment:
    """The cheapest replica count of ``ev``'s configuration that carries the target (or its misses).

    ``one_replica``: one replica at its highest load meeting the SLA, whatever the SLA's
    ``output_throughput`` floor, which is the whole deployment's (the Pareto front's points)."""
    gpus_per_replica = getattr(ev.config, "num_gpus", ev.config.tensor_parallel_size)  # tp x dp
    usd = price.usd_per_gpu_hour if price else math.nan
    if ev.status != "meets":
        return Deployment(ev.config, 0, 0, False, 0.0, 0.0, math.nan, math.nan, math.nan, math.nan, math.nan,
                          misses=ev.miss_terms or ({"term": "simulation", "key": "error", "measured": ev.error,
                                                    "limit": "", "unit": "", "over_pct": math.inf},))
    g, best = ev.best_load, ev.best
    per_replica_tokens = g * ev.mean_output_len if ev.mode == "rate" else best.output_throughput
    replicas = 1 if target_load is None else max(1, math.ceil(target_load / g - 1e-9))
    floor = None if one_replica else sla.min_output_throughput
    if floor is not None and per_replica_tokens > 0:
        if target_load is None:
            replicas = max(replicas, math.ceil(floor / per_replica_tokens - 1e-9))
    load = target_load if target_load is not None else replicas * g
    # Rate mode: the load times the mean answer, not load / g x g x mean, whose rounding differs
    # between configurations that serve the same tokens and would break their tie on cost per token.
    tokens = load * ev.mean_output_len if ev.mode == "rate" else load / g * per_replica_tokens
    cost = replicas * gpus_per_replica * usd
    gpus = replicas * gpus_per_replica
    problems = []
    if replicas > max_replicas:
        problems.append({"term": f"replicas <= {max_replicas}", "key": "replicas", "measured": replicas,
                         "limit": max_replicas, "unit": "replicas", "over_pct": (replicas / max_replicas - 1) * 100})
    if floor is not None and tokens < floor * (1 - 1e-9):
        problems.append({"term": f"output throughput >= {floor:g} tok/s", "key": "output_throughput",
                         "measured": tokens, "limit": floor, "unit": "tok/s",
                         "over_pct": (floor / tokens - 1) * 100 if tokens > 0 else math.inf})
    return Deployment(
        config=ev.config, replicas=replicas, num_gpus=gpus, meets=not problems, load_per_replica=g, load=load,
        output_tokens_per_s=tokens, tokens_per_s_per_gpu=tokens / gpus,
        tokens_per_s_per_user=1000.0 / best.mean_tpot_ms if best.mean_tpot_ms > 0 else math.nan,
        cost_per_hour=cost, cost_per_million_tokens=cost / (tokens * 3600 / 1e6) if tokens > 0 else math.nan,
        margins=margins(sla.terms, best.measured), misses=tuple(problems),
        capped=ev.capacity is not None and g >= ev.capacity, at_target=target_load is not None,
    )


def _nan_last(x: float) -> float:
    return math.inf if x is None or math.isnan(x) else x


def rank(deployments: list[Deployment], *, by_cost_per_hour: bool) -> list[Deployment]:
    """Those that meet the SLA, best first (see the module docstring)."""
    ok = [d for d in deployments if d.meets]
    if by_cost_per_hour:
        key = lambda d: (_nan_last(d.cost_per_hour), _nan_last(d.cost_per_million_tokens), -d.min_margin)
    else:
        key = lambda d: (_nan_last(d.cost_per_million_tokens), _nan_last(d.cost_per_hour), -d.min_margin)
    return sorted(ok, key=key)


def closest(deployments: list[Deployment], k: int = 5) -> list[Deployment]:
    """Those that miss, the smallest worst miss first."""
    missing = [d for d in deployments if not d.meets and d.misses]
    return sorted(missing, key=lambda d: _nan_last(d.misses[0]["over_pct"]))[:k]


def pareto_front(points: list[Deployment]) -> list[Deployment]:
    """The deployments no other beats on both tokens/s per GPU and tokens/s per user."""
    pts = [d for d in points if math.isfinite(d.tokens_per_s_per_gpu) and math.isfinite(d.tokens_per_s_per_user)]
    pts.sort(key=lambda d: (-d.tokens_per_s_per_user, -d.tokens_per_s_per_gpu))
    front, best_gpu = [], -math.inf
    for d in pts:
        if d.tokens_per_s_per_gpu > best_gpu:
            front.append(d)
            best_gpu = d.tokens_per_s_per_gpu
    return front
