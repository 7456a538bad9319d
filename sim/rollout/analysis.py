"""Argo Rollouts' analysis algebra: measurement -> metric result -> run.

One :class:`Phase` type serves all three levels, with one total order from best to worst
(``utils/analysis/helpers.go``): Successful < Running < Pending < Inconclusive < Error < Failed.
:func:`judge_measurement` is ``EvaluateResult`` (``utils/evaluate/evaluate.go``),
:func:`assess_metric` is ``assessMetricStatus`` and :func:`assess_run` is ``assessRunStatus``
(``analysis/analysis.go``): pure functions of plain values. :class:`AnalysisRun` adds the clock
(initialDelay, interval, the 10 s error retry) and takes measurements through a provider.
Messages use Argo's wording, e.g. ``Metric "error-rate" assessed Failed due to failed (2) >
failureLimit (1)``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.rollout.expr import Expression, ExprEvalError

# Argo's DefaultErrorRetryInterval: a measurement that errored is retried after 10 s.
ERROR_RETRY_INTERVAL_S = 10.0
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4


class Phase(enum.Enum):
    SUCCESSFUL = "Successful"
    RUNNING = "Running"
    PENDING = "Pending"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    FAILED = "Failed"

    @property
    def rank(self) -> int:
        return _ORDER[self]

    @property
    def completed(self) -> bool:
        return self in (Phase.SUCCESSFUL, Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE)

    def is_worse_than(self, other: "Phase") -> bool:
        return self.rank > other.rank

    def __str__(self) -> str:
        return self.value


_ORDER = {p: i for i, p in enumerate(Phase)}  # declaration order is best-to-worst


def worst(phases: Iterable[Phase]) -> Phase | None:
    out = None
    for p in phases:
        if out is None or p.is_worse_than(out):
            out = p
    return out


class ProviderError(Exception):
    """The metric provider could not produce a value (query error, no such series...)."""


@dataclass(frozen=True)
class MetricSpec:
    """One resolved metric of a run (template args already substituted)."""

    name: str
    query: str
    template: str  # the AnalysisTemplate it came from, for messages and reports
    success: Expression | None = None
    failure: Expression | None = None
    interval_s: float | None = None
    initial_delay_s: float = 0.0
    count: int | None = None
    failure_limit: int = 0  # -1: off
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    consecutive_success_limit: int = 0  # 0: off
    dry_run: bool = False

    @property
    def effective_count(self) -> int | None:
        """``count``; 1 without interval; None (unbounded) with an interval and no count."""
        if self.count is not None:
            return self.count
        return None if self.interval_s is not None else 1


@dataclass(frozen=True)
class Measurement:
    at_s: float
    phase: Phase
    value: Any  # Argo's `result`: a list of floats for a vector, a float for a scalar
    message: str = ""


@dataclass
class MetricResult:
    """Counters of one metric (``MetricResult`` in analysis_types.go).

    ``count`` = successful + failed + inconclusive; errors are counted apart.
    """

    name: str
    phase: Phase = Phase.PENDING
    measurements: list[Measurement] = field(default_factory=list)
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    message: str = ""

    def record(self, m: Measurement) -> None:
        """Argo's switch on the new measurement's phase."""
        self.measurements.append(m)
        if m.phase is Phase.ERROR:
            self.error += 1
            self.consecutive_error += 1
            self.consecutive_success = 0
            return
        self.count += 1
        self.consecutive_error = 0
        if m.phase is Phase.SUCCESSFUL:
            self.successful += 1
            self.consecutive_success += 1
        else:
            self.consecutive_success = 0
            if m.phase is Phase.FAILED:
                self.failed += 1
            elif m.phase is Phase.INCONCLUSIVE:
                self.inconclusive += 1


def judge_measurement(spec: MetricSpec, value: Any) -> tuple[Phase, str]:
    """EvaluateResult: the truth table of successCondition and failureCondition.

    | conditions   | outcome                                                        |
    | neither      | Successful                                                     |
    | success only | true -> Successful, false -> Failed                            |
    | failure only | true -> Failed, false -> Successful                            |
    | both         | failure true -> Failed; success true -> Successful; else Inconclusive |
    | eval error   | Error                                                          |
    """
    try:
        ok = spec.success.evaluate_bool(value) if spec.success is not None else False
        bad = spec.failure.evaluate_bool(value) if spec.failure is not None else False
    except ExprEvalError as exc:
        return Phase.ERROR, str(exc)
    if spec.success is None and spec.failure is None:
        return Phase.SUCCESSFUL, ""
    if spec.failure is None:
        bad = not ok
    elif spec.success is None:
        ok = not bad
    if bad:
        return Phase.FAILED, ""
    if not ok:
        return Phase.INCONCLUSIVE, ""
    return Phase.SUCCESSFUL, ""


def assess_limits(spec: MetricSpec, r: MetricResult) -> tuple[Phase | None, str]:
    """assessMetricFailureInconclusiveOrError: checked failed, inconclusive, error; a later
    match overrides an earlier one, so Error beats Inconclusive beats Failed."""
    phase, message = None, ""
    if spec.failure_limit >= 0 and r.failed > spec.failure_limit:
        phase, message = Phase.FAILED, f"failed ({r.failed}) > failureLimit ({spec.failure_limit})"
    if r.inconclusive > spec.inconclusive_limit:
        phase = Phase.INCONCLUSIVE
        message = f"inconclusive ({r.inconclusive}) > inconclusiveLimit ({spec.inconclusive_limit})"
    if r.consecutive_error > spec.consecutive_error_limit:
        phase = Phase.ERROR
        message = (
            f"consecutiveErrors ({r.consecutive_error}) > consecutiveErrorLimit ({spec.consecutive_error_limit})"
        )
    return phase, message


def assess_metric(spec: MetricSpec, r: MetricResult, terminating: bool) -> Phase:
    """assessMetricStatus: the phase of one metric from its counters."""
    if r.phase.completed:
        return r.phase
    if not r.measurements:
        return Phase.SUCCESSFUL if terminating else Phase.PENDING
    limit_phase, _ = assess_limits(spec, r)
    if limit_phase is not None:
        return limit_phase
    csl = spec.consecutive_success_limit
    if csl > 0 and r.consecutive_success >= csl:
        return Phase.SUCCESSFUL
    count = spec.effective_count
    if count is not None and r.count >= count:
        if csl > 0:
            # consecutiveSuccessLimit set but not reached: Inconclusive, or Failed when
            # failureLimit is -1 (off).
            return Phase.INCONCLUSIVE if spec.failure_limit >= 0 else Phase.FAILED
        return Phase.SUCCESSFUL
    return Phase.SUCCESSFUL if terminating else Phase.RUNNING


def assess_run(
    specs: Sequence[MetricSpec], results: dict[str, MetricResult], terminate: bool = False
) -> tuple[Phase, str, dict[str, Phase]]:
    """assessRunStatus: (run phase, Argo's message, each metric's phase).

    Running while any metric is unfinished; then the worst metric phase, dry-run metrics
    excluded. A non-dry-run metric that completes Failed, Error or Inconclusive terminates
    the run: unfinished metrics then count as Successful and the run ends at once.
    """
    def metric_phases(terminating: bool) -> dict[str, Phase]:
        return {s.name: assess_metric(s, results[s.name], terminating) for s in specs}

    phases = metric_phases(terminate)
    bad = (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE)
    terminating = terminate or any(phases[s.name] in bad for s in specs if not s.dry_run)
    if terminating and not terminate:
        phases = metric_phases(True)
    worst_phase: Phase | None = None
    message = "Run Terminated" if terminate else ""
    everything_completed = True
    for s in specs:
        p = phases[s.name]
        if not p.completed:
            everything_completed = False
            continue
        if s.dry_run:
            worst_phase = worst_phase or Phase.SUCCESSFUL
            continue
        if worst_phase is None or p.is_worse_than(worst_phase):
            worst_phase = p
            _, why = assess_limits(s, results[s.name])
            if why:
                message = f'Metric "{s.name}" assessed {p} due to {why}'
                last = results[s.name].measurements[-1] if results[s.name].measurements else None
                if last is not None and last.message:
                    message += f': "Error Message: {last.message}"'
    if terminating:
        return (worst_phase or Phase.SUCCESSFUL), message, phases
    if not everything_completed or worst_phase is None:
        return Phase.RUNNING, "", phases
    return worst_phase, message, phases


Provider = Callable[[str, float], Any]  # (query, at_s) -> Argo's result; raises ProviderError


class AnalysisRun:
    """One AnalysisRun on the simulated clock.

    ``due_s()`` is the next time a metric wants a measurement (None when finished);
    ``step(now_s, provider)`` takes every measurement due by ``now_s`` and reassesses.
    Measurements are instantaneous here (a Prometheus query takes milliseconds).
    """

    def __init__(self, name: str, kind: str, specs: Sequence[MetricSpec], started_s: float):
        if not specs:
            raise ValueError(f"analysis run {name}: no metrics")
        self.name = name
        self.kind = kind  # "background" or "step"
        self.specs = tuple(specs)
        self.started_s = started_s
        self.results = {s.name: MetricResult(s.name) for s in self.specs}
        self._next = {s.name: started_s + s.initial_delay_s for s in self.specs}
        self.phase = Phase.RUNNING
        self.message = ""
        self.finished_s: float | None = None
        self.acknowledged = False  # an Inconclusive run the controller has paused for

    @property
    def completed(self) -> bool:
        return self.phase.completed

    def due_s(self) -> float | None:
        if self.completed:
            return None
        times = [t for n, t in self._next.items() if t is not None and not self.results[n].phase.completed]
        return min(times) if times else None

    def step(self, now_s: float, provider: Provider) -> list[tuple[MetricSpec, Measurement]]:
        """Take the measurements due at or before now_s (in metric order) and reassess."""
        taken = []
        if self.completed:
            return taken
        for spec in self.specs:
            due = self._next[spec.name]
            r = self.results[spec.name]
            if due is None or due > now_s + 1e-9 or r.phase.completed:
                continue
            try:
                value = provider(spec.query, now_s)
            except ProviderError as exc:
                m = Measurement(now_s, Phase.ERROR, None, str(exc))
            else:
                phase, why = judge_measurement(spec, value)
                m = Measurement(now_s, phase, value, why)
            r.record(m)
            taken.append((spec, m))
            r.phase = assess_metric(spec, r, False)
            if m.phase is Phase.ERROR:
                self._next[spec.name] = now_s + ERROR_RETRY_INTERVAL_S
            elif spec.interval_s is not None:
                self._next[spec.name] = now_s + spec.interval_s
            else:
                self._next[spec.name] = None
        self._reassess(now_s, terminate=False)
        return taken

    def terminate(self, now_s: float) -> None:
        """spec.terminate: stop measuring; unfinished metrics count as Successful."""
        if not self.completed:
            self._reassess(now_s, terminate=True)

    def _reassess(self, now_s: float, terminate: bool) -> None:
        phase, message, phases = assess_run(self.specs, self.results, terminate)
        for name, p in phases.items():
            self.results[name].phase = p
        self.phase, self.message = phase, message
        if phase.completed:
            self.finished_s = now_s

    def deciding_metric(self) -> tuple[MetricSpec, Any] | None:
        """The non-dry-run metric that gave the run its phase, and its last value."""
        for spec in self.specs:
            r = self.results[spec.name]
            if not spec.dry_run and r.phase is self.phase and r.measurements:
                return spec, _plain(r.measurements[-1].value)
        return None


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a result: first element of a vector, NaN as None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
