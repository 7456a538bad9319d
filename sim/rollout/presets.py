"""The course's five rollback triggers, and one preset that each should catch on its own.

The course names five reasons to roll a canary back: its error rate, its p99 latency against
the baseline (stable), its cost, its judged quality, and an engineer's manual abort. The
AnalysisTemplates in ``manifests/`` implement the first four as metrics; a metric belongs to
exactly one trigger (:data:`TRIGGER_OF_METRIC`), and a manual abort has no metric.

Each :class:`TriggerPreset` is a fault (or an abort by hand) built to trip its trigger and no
other, so an instructor can show each one alone. ``servelab rollout simulate --preset``, the
lab's canary page and ``benchmarks/rollout_trials.py`` all read :data:`PRESETS`.

Why these values:

- ``error-rate=0.02``: twice the 1% health threshold; latency, cost and quality do not move.
- ``latency=4x``: every canary request four times slower: past both the 3000 ms ceiling and
  3x stable's p99 (stable's p99 is about 2.2 s at 20 req/s); errors, tokens and scores do not move.
- ``price=3x``: the same tokens at three times the price per token (a canary routed to a bigger
  model): cost per request 3x stable, past the 2x trigger, with latency untouched. The
  ``cost`` fault (longer answers) is not used: its longer answers move p99 too, and the p99
  check trips first (docs/rollout.md).
- ``quality=-0.15``: the judge's mean score drops from 0.90 to 0.75, under both the 0.85 floor
  and 90% of stable's score.
- manual: no fault, aborted by hand at 2h30m (in phase 2), before any gate could promote.
"""

from __future__ import annotations

from dataclasses import dataclass

TRIGGERS = ("error-rate", "p99", "cost", "quality", "manual")

# Metric name (in manifests/analysis-*.yaml) -> the trigger it implements. The gates'
# metrics carry the same names as the background checks they tighten.
TRIGGER_OF_METRIC = {
    "error-rate": "error-rate",
    "error-rate-vs-stable": "error-rate",
    "latency-p99": "p99",
    "p99-vs-stable": "p99",
    "cost-per-request-vs-stable": "cost",
    "llm-judge-score": "quality",
    "quality-vs-stable": "quality",
}


@dataclass(frozen=True)
class TriggerPreset:
    trigger: str  # one of TRIGGERS
    faults: tuple[str, ...]  # fault SPECs (sim/rollout/faults.py)
    abort_at: str | None  # an abort by hand at this duration from the start, e.g. "2h30m"
    summary: str  # one line for menus

    @property
    def abort_at_s(self) -> float | None:
        from sim.rollout.durations import parse_go_duration

        return None if self.abort_at is None else parse_go_duration(self.abort_at)

    def cli_flags(self) -> str:
        """The same run spelled as ``servelab rollout simulate`` flags."""
        flags = [f"--fault {f}" for f in self.faults]
        if self.abort_at is not None:
            flags.append(f"--abort-at {self.abort_at}")
        return " ".join(flags)


PRESETS: dict[str, TriggerPreset] = {
    "error-rate": TriggerPreset("error-rate", ("error-rate=0.02",), None,
                                "2% of the canary's requests fail (threshold 1%)"),
    "p99": TriggerPreset("p99", ("latency=4x",), None,
                         "the canary answers 4x slower (threshold 3x stable's p99, and 3000 ms)"),
    "cost": TriggerPreset("cost", ("price=3x",), None,
                          "the same tokens at 3x the price per token (threshold 2x stable's cost per request)"),
    "quality": TriggerPreset("quality", ("quality=-0.15",), None,
                             "judged quality 0.15 lower (thresholds 0.85, and 90% of stable's)"),
    "manual": TriggerPreset("manual", (), "2h30m", "no fault; the on-call engineer aborts at 2h30m"),
}


def trigger_of(abort_reason: dict | None) -> str:
    """The trigger that aborted a rollout: its failing metric's trigger, or ``manual`` when the
    abort came by hand (no metric)."""
    metric = (abort_reason or {}).get("metric")
    if metric is None:
        return "manual"
    return TRIGGER_OF_METRIC.get(metric, f"other ({metric})")


def triggers_failed(measurements: list[dict], until_s: float | None = None) -> list[str]:
    """Every trigger with at least one Failed measurement (dry-run ones excluded), up to
    ``until_s``, in TRIGGERS order: a preset caught by its trigger alone has only its own."""
    seen = set()
    for m in measurements:
        if m.get("phase") != "Failed" or m.get("dry_run"):
            continue
        if until_s is not None and m["t_s"] > until_s:
            continue
        seen.add(TRIGGER_OF_METRIC.get(m["metric"], f"other ({m['metric']})"))
    return [t for t in TRIGGERS if t in seen] + sorted(t for t in seen if t not in TRIGGERS)
