"""The highest load that still meets the SLA, by bisection.

``probe(load)`` runs one simulation and says whether the SLA was met. Latency grows with load,
so "met" is (close to) monotone: met below some load, missed above it. We bracket that load
between ``lo`` and ``hi`` and halve the bracket until it is narrower than ``rel_tol`` of its top
(and one unit, for integer loads such as a concurrency). Each probe's outcome is kept, so a
caller can show every load it tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BisectResult:
    best_load: float | None  # the highest load seen to meet the SLA; None: even ``lo`` missed
    lowest_miss: float | None  # the lowest load seen to miss it; None: even ``hi`` met
    probes: list[tuple[float, Any]] = field(default_factory=list)  # (load, probe outcome) in order


def bisect_max_load(probe: Callable[[float], tuple[bool, Any]], lo: float, hi: float, *,
                    rel_tol: float = 0.05, integer: bool = False, max_probes: int = 12) -> BisectResult:
    """The highest load in [lo, hi] whose probe meets, to within ``rel_tol`` of the lowest load
    seen to miss (and one unit, for integer loads).

    ``probe(load) -> (met, outcome)``. ``hi`` is tried first (a configuration that meets at its
    top load needs no more), then ``lo`` (one that misses there needs no more either), then
    midpoints.
    """
    if not 0 < lo <= hi:
        raise ValueError(f"bisect_max_load: need 0 < lo (={lo}) <= hi (={hi})")
    result = BisectResult(None, None)

    def run(load: float) -> bool:
        met, outcome = probe(load)
        result.probes.append((load, outcome))
        if met:
            result.best_load = load if result.best_load is None else max(result.best_load, load)
        else:
            result.lowest_miss = load if result.lowest_miss is None else min(result.lowest_miss, load)
        return met

    if run(hi) or lo == hi or not run(lo):
        return result
    good, bad = lo, hi
    while bad - good > max(rel_tol * bad, 1.0 if integer else 0.0) and len(result.probes) < max_probes:
        mid = (good + bad) / 2
        if integer:
            mid = math.floor(mid)
            if mid <= good:
                break
        if run(mid):
            good = mid
        else:
            bad = mid
    return result
