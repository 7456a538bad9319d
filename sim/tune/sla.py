"""Service-level objectives: what a deployment must deliver, and how a run is judged against it.

An SLA is a list of terms spelled with ``vllm bench serve``'s JSON keys::

    p90_ttft_ms<=500, p99_tpot_ms<=50, median_e2el_ms<=8000, output_throughput>=2000

Latency terms (``ttft``, ``tpot``, ``e2el`` at a percentile; ``median`` is p50) are per request:
TTFT = first token - arrival, TPOT = (finish - first token) / (output tokens - 1) for outputs
longer than one token (as vLLM's benchmark), E2EL = finish - arrival. The throughput term
(output tokens per second) applies to the whole deployment (all replicas together).

Percentiles are nearest-rank: the p-th percentile of n values is the ceil(p/100 x n)-th
smallest. A term ``pP_X_ms <= L`` therefore holds exactly when at most
``n - ceil(P/100 x n)`` requests exceed L. vLLM's benchmark interpolates linearly between ranks
(numpy's default); on a few hundred requests the two differ by well under a percent. We use
nearest rank because it makes early stopping exact (:class:`SLAMonitor`): once more requests
have exceeded L than that allowance, the term is missed whatever the rest do; once the requests
not yet finished could no longer push it over, it is met.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError

METRICS = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "E2EL"}
_TERM = re.compile(r"^\s*(?:p(\d+(?:\.\d+)?)|(mean|median))_(ttft|tpot|e2el)_ms\s*(<=|<)\s*([0-9.eE+-]+)\s*(?:ms)?\s*$")
_THROUGHPUT = re.compile(r"^\s*output_throughput\s*(>=|>)\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True, slots=True)
class SLATerm:
    """``p{percentile}_{metric}_ms <= limit_ms`` for one latency metric."""

    metric: str  # "ttft" | "tpot" | "e2el"
    percentile: float  # 50 for the median
    limit_ms: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"--sla: unknown metric {self.metric!r}; expected ttft, tpot or e2el")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"--sla: percentile {self.percentile:g} is out of range; expected 0 < p <= 100")
        if not math.isfinite(self.limit_ms) or self.limit_ms <= 0:
            raise ConfigError(f"--sla: the limit of {self.key} must be a positive number of ms, got {self.limit_ms}")

    @property
    def key(self) -> str:
        """vLLM's JSON key for the measured value (``p90_ttft_ms``; ``median_ttft_ms`` for p50)."""
        p = "median" if self.percentile == 50 else f"p{self.percentile:g}"
        return f"{p}_{self.metric}_ms"

    @property
    def label(self) -> str:
        p = "median" if self.percentile == 50 else f"p{self.percentile:g}"
        return f"{p} {METRICS[self.metric]} <= {self.limit_ms:g} ms"

    def allowed_misses(self, n: int) -> int:
        """How many of n requests may exceed the limit with the nearest-rank percentile still within it."""
        return n - math.ceil(self.percentile / 100 * n) if n else 0


@dataclass(frozen=True, slots=True)
class SLA:
    terms: tuple[SLATerm, ...]
    min_output_throughput: float | None = None  # output tokens/s of the whole deployment
    headroom: float = 0.0  # the share of each limit held back (see with_headroom); 0: the SLA as given

    def __post_init__(self) -> None:
        if not self.terms and self.min_output_throughput is None:
            raise ConfigError("--sla: give at least one term, e.g. p90_ttft_ms<=500,p99_tpot_ms<=50")

    def with_headroom(self, headroom: float) -> "SLA":
        """The SLA to plan against, with ``headroom`` (a fraction) of every limit held back:
        each latency limit times (1 - headroom), the throughput floor divided by it. A planner
        that trusts its simulator to within, say, 10% asks for 10% to spare."""
        if not (isinstance(headroom, (int, float)) and 0 <= headroom < 1):
            raise ConfigError(f"--headroom: expected a fraction from 0 up to (not including) 1, e.g. 0.1 for 10%; "
                              f"got {headroom!r}")
        if headroom == 0:
            return self
        keep = 1 - headroom
        terms = tuple(SLATerm(t.metric, t.percentile, t.limit_ms * keep) for t in self.terms)
        floor = None if self.min_output_throughput is None else self.min_output_throughput / keep
        return SLA(terms, floor, headroom=float(headroom))

    def describe(self) -> str:
        parts = [t.label for t in self.terms]
        if self.min_output_throughput is not None:
            parts.append(f"output throughput >= {self.min_output_throughput:g} tok/s")
        text = ", ".join(parts)
        if self.headroom:
            text += f" (the SLA less {100 * self.headroom:g}% headroom)"
        return text


def parse_sla(text: str) -> SLA:
    """``"p90_ttft_ms<=500,p99_tpot_ms<=50,output_throughput>=2000"`` -> SLA."""
    terms: list[SLATerm] = []
    throughput = None
    for raw in str(text).split(","):
        if not raw.strip():
            continue
        m = _TERM.match(raw)
        if m:
            pct, word, metric, _, value = m.groups()
            if word == "mean":
                raise ConfigError(f"--sla: {raw.strip()!r}: a mean is not an SLA term here; use a percentile "
                                  f"(median_{metric}_ms, p90_{metric}_ms, p99_{metric}_ms)")
            percentile = 50.0 if word == "median" else float(pct)
            terms.append(SLATerm(metric, percentile, _number(value, raw)))
            continue
        m = _THROUGHPUT.match(raw)
        if m:
            if throughput is not None:  # the second would silently replace the first
                raise ConfigError(f"--sla: {raw.strip()!r}: output_throughput is given twice; keep one floor")
            throughput = _number(m.group(2), raw)
            if not (math.isfinite(throughput) and throughput > 0):
                raise ConfigError(f"--sla: {raw.strip()!r}: the throughput must be positive")
            continue
        if re.search(r"_itl(_ms)?\b", raw):
            raise ConfigError(f"--sla: {raw.strip()!r}: ITL is not an SLA term here: its percentiles are over the "
                              f"gaps between tokens, not over requests; use the same percentile of TPOT (each "
                              f"request's mean gap), e.g. {re.sub(r'_itl(_ms)?', '_tpot_ms', raw.strip())}")
        raise ConfigError(
            f"--sla: cannot read {raw.strip()!r}; expected terms like p90_ttft_ms<=500, median_tpot_ms<=30, "
            f"p99_e2el_ms<=10000 or output_throughput>=2000, separated by commas"
        )
    return SLA(tuple(terms), throughput)


def _number(value: str, raw: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--sla: {raw.strip()!r}: {value!r} is not a number") from None


def request_metrics_ms(arrival_s, first_token_s, finish_s, output_len) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT (outputs longer than one token only) and E2EL in ms."""
    arrival_s, first_token_s, finish_s = (np.asarray(a, dtype=float) for a in (arrival_s, first_token_s, finish_s))
    output_len = np.asarray(output_len)
    multi = output_len > 1
    return {
        "ttft": (first_token_s - arrival_s) * 1e3,
        "tpot": (finish_s[multi] - first_token_s[multi]) / (output_len[multi] - 1) * 1e3,
        "e2el": (finish_s - arrival_s) * 1e3,
    }


def nearest_rank(values: np.ndarray, percentile: float) -> float:
    v = np.sort(np.asarray(values, dtype=float))
    if not len(v):
        return math.nan
    return float(v[max(math.ceil(percentile / 100 * len(v)), 1) - 1])


def measure(terms: tuple[SLATerm, ...], metrics_ms: dict[str, np.ndarray]) -> dict[str, float]:
    """Each term's measured value (nearest rank), by its vLLM key."""
    return {t.key: nearest_rank(metrics_ms[t.metric], t.percentile) for t in terms}


def misses(terms: tuple[SLATerm, ...], measured: dict[str, float]) -> list[dict]:
    """The terms a measurement misses: {term, key, measured, limit, unit, over_pct}, worst first."""
    out = []
    for t in terms:
        v = measured.get(t.key, math.nan)
        if not v <= t.limit_ms:  # NaN (nothing measured) counts as a miss
            over = (v / t.limit_ms - 1) * 100 if math.isfinite(v) else math.inf
            out.append({"term": t.label, "key": t.key, "measured": v, "limit": t.limit_ms, "unit": "ms", "over_pct": over})
    return sorted(out, key=lambda m: -m["over_pct"])


def margins(terms: tuple[SLATerm, ...], measured: dict[str, float]) -> dict[str, float]:
    """Headroom per term, as a fraction of its limit: (limit - measured) / limit (negative: missed)."""
    return {t.key: (t.limit_ms - measured.get(t.key, math.nan)) / t.limit_ms for t in terms}


class StopSimulation(Exception):
    """Raised from inside a run by :class:`SLAMonitor` once the verdict cannot change."""

    # SimPy re-raises a process's exception as a new instance built from its args, so the
    # verdict travels as the one argument.
    def __init__(self, verdict: str) -> None:
        super().__init__(verdict)

    @property
    def met(self) -> bool:
        return self.args[0] == "met"


class SLAMonitor:
    """An engine listener that counts requests over each latency limit as they finish, and stops
    the run (raises :class:`StopSimulation`) as soon as the verdict is certain:

    * missed: some term has more requests over its limit than it allows (the rest cannot undo it);
    * met (if ``stop_when_met``): for every term, the requests over the limit plus all requests
      not yet finished are within the allowance (even if every one of them were late, it holds).

    ``num_requests``: requests in the run; ``num_multi_token``: those with more than one output
    token (the ones TPOT is defined for).
    """

    def __init__(self, terms: tuple[SLATerm, ...], num_requests: int, num_multi_token: int,
                 stop_when_met: bool = True, stop_when_missed: bool = True) -> None:
        self.terms = terms
        self.stop_when_met = stop_when_met
        self.stop_when_missed = stop_when_missed
        self.num_requests = num_requests
        self.population = {t: (num_multi_token if t.metric == "tpot" else num_requests) for t in terms}
        self.allowed = {t: t.allowed_misses(self.population[t]) for t in terms}
        self.over = {t: 0 for t in terms}
        self.seen = {"ttft": 0, "tpot": 0, "e2el": 0}
        self.finished = 0
        self.values: dict[str, list[float]] = {"ttft": [], "tpot": [], "e2el": []}

    def on_finish(self, request, now_s: float) -> None:
        self.finished += 1
        ttft = (request.first_token_s - request.arrival_s) * 1e3
        e2el = (request.finish_s - request.arrival_s) * 1e3
        self.values["ttft"].append(ttft)
        self.values["e2el"].append(e2el)
        if request.num_output_tokens > 1:
            self.values["tpot"].append((request.finish_s - request.first_token_s) / (request.num_output_tokens - 1) * 1e3)
        latest = {"ttft": ttft, "e2el": e2el, "tpot": self.values["tpot"][-1] if request.num_output_tokens > 1 else None}
        certain_met = True
        for t in self.terms:
            v = latest[t.metric]
            if v is not None and v > t.limit_ms:
                self.over[t] += 1
                if self.over[t] > self.allowed[t] and self.stop_when_missed:
                    raise StopSimulation("missed")
            unfinished = self.population[t] - len(self.values[t.metric])
            if self.over[t] + unfinished > self.allowed[t]:
                certain_met = False
        if certain_met and self.stop_when_met and self.finished < self.num_requests:
            raise StopSimulation("met")

    def verdict(self) -> bool:
        """Whether every term holds over the requests finished so far (all of them, after a full run)."""
        return all(self.over[t] <= self.allowed[t] for t in self.terms)

    def measured(self) -> dict[str, float]:
        """Each term's value over the requests finished so far (nearest rank)."""
        return {t.key: nearest_rank(np.asarray(self.values[t.metric]), t.percentile) for t in self.terms}
