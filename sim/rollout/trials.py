"""Many seeds of one rollout: how often a fault is caught, by which rollback trigger, how often
a healthy canary is rolled back anyway, and how long detection takes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.rollout.api import simulate
from sim.rollout.faults import Fault, parse_fault
from sim.rollout.presets import trigger_of, triggers_failed


@dataclass(frozen=True)
class TrialsReport:
    trials: int
    faults: tuple[str, ...]
    judge: str
    detection_rate: float | None  # aborted after the fault started / trials (None without faults)
    false_alarm_rate: float  # aborted in fault-free runs (or before the fault began) / trials
    time_to_detect_s: dict | None  # {mean, median, p90} over detected runs
    exposed_canary_requests_mean: float
    aborts_by_metric: dict[str, int]
    # The trigger (sim/rollout/presets.py) that aborted each run, counted; and the runs where
    # that trigger was the only one with a failed measurement up to the abort.
    aborts_by_trigger: dict[str, int]
    caught_alone_by_trigger: dict[str, int]
    abort_at_s: float | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__, faults=list(self.faults))


@functools.lru_cache(maxsize=4096)
def _aborts_without_faults(manifests_dir: str, seed: int, rate: float, judge: str, traffic: str) -> bool:
    """Memoised: traffic is the same for every fault at a seed (common random numbers), so the
    fault-free run of a seed serves every fault's false-alarm count in a process."""
    return simulate(manifests_dir, (), seed, rate, judge=judge, traffic=traffic).aborted_at_s is not None


def run_trials(
    manifests_dir,
    faults=(),
    trials: int = 10,
    seed: int = 0,
    rate: float = 20.0,
    *,
    judge: str = "threshold",
    traffic: str = "poisson",
    abort_at_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrialsReport:
    """Seeds seed .. seed+trials-1 with the faults (and the abort by hand at ``abort_at_s``, if
    given), and the same seeds without either."""
    parsed = tuple(f if isinstance(f, Fault) else parse_fault(f) for f in faults)
    injected = bool(parsed) or abort_at_s is not None
    starts = [f.start_s for f in parsed] + ([abort_at_s] if abort_at_s is not None else [])
    start = min(starts, default=0.0)
    detected, ttd, exposed, by_metric, early = 0, [], [], {}, 0
    by_trigger: dict[str, int] = {}
    alone: dict[str, int] = {}
    total_runs = trials * (2 if injected else 1)
    done = 0
    for k in range(trials):
        r = simulate(manifests_dir, parsed, seed + k, rate, judge=judge, traffic=traffic, abort_at_s=abort_at_s)
        done += 1
        if progress:
            progress(done, total_runs)
        exposed.append(r.requests["canary"])
        if r.aborted_at_s is not None:
            name = (r.abort_reason or {}).get("metric") or "manual"
            by_metric[name] = by_metric.get(name, 0) + 1
            trigger = trigger_of(r.abort_reason)
            by_trigger[trigger] = by_trigger.get(trigger, 0) + 1
            others = [t for t in triggers_failed(r.measurements, r.aborted_at_s) if t != trigger]
            if not others:
                alone[trigger] = alone.get(trigger, 0) + 1
            if injected and r.aborted_at_s >= start:
                detected += 1
                ttd.append(r.aborted_at_s - start)
            else:
                early += 1
    false_alarms = early
    if injected:
        false_alarms = 0
        for k in range(trials):
            false_alarms += _aborts_without_faults(str(manifests_dir), seed + k, rate, judge, traffic)
            done += 1
            if progress:
                progress(done, total_runs)
    t = np.array(ttd)
    return TrialsReport(
        trials=trials,
        faults=tuple(f.spec for f in parsed),
        judge=judge,
        detection_rate=(detected / trials) if injected else None,
        false_alarm_rate=false_alarms / trials,
        time_to_detect_s=(
            {"mean": float(t.mean()), "median": float(np.median(t)), "p90": float(np.quantile(t, 0.9))} if len(t) else None
        ),
        exposed_canary_requests_mean=float(np.mean(exposed)),
        aborts_by_metric=dict(sorted(by_metric.items())),
        aborts_by_trigger=dict(sorted(by_trigger.items())),
        caught_alone_by_trigger=dict(sorted(alone.items())),
        abort_at_s=abort_at_s,
    )
