"""Argo's analysis algebra: truth table, metric assessment, run assessment, the run's clock.
Tables of named cases, as Argo's own evaluate_test.go and analysis_test.go."""

from __future__ import annotations

import math

import pytest

from sim.rollout.analysis import (
    AnalysisRun,
    Measurement,
    MetricResult,
    MetricSpec,
    Phase,
    ProviderError,
    assess_metric,
    assess_run,
    judge_measurement,
    worst,
)
from sim.rollout.expr import compile_expr

S, F, I, E, R, P = Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE, Phase.ERROR, Phase.RUNNING, Phase.PENDING


def spec(name="m", success=None, failure=None, **kw) -> MetricSpec:
    return MetricSpec(
        name=name, query="q", template="t",
        success=compile_expr(success) if success else None,
        failure=compile_expr(failure) if failure else None,
        **kw,
    )


def test_phase_order_is_argos():
    order = [S, R, P, I, E, F]
    assert sorted(Phase, key=lambda p: p.rank) == order
    assert worst([S, I, R]) is I and worst([E, F]) is F and worst([]) is None


@pytest.mark.parametrize(
    "success, failure, value, expected",
    [
        pytest.param(None, None, [1.0], S, id="neither"),
        pytest.param("result[0] < 1", None, [0.5], S, id="success-only-true"),
        pytest.param("result[0] < 1", None, [2.0], F, id="success-only-false-fails"),
        pytest.param("result[0] < 1", None, [math.nan], F, id="success-only-nan-fails"),
        pytest.param(None, "result[0] > 1", [2.0], F, id="failure-only-true"),
        pytest.param(None, "result[0] > 1", [0.5], S, id="failure-only-false-passes"),
        pytest.param(None, "result[0] > 1", [math.nan], S, id="failure-only-nan-passes-silently"),
        pytest.param("result[0] < 1", "result[0] > 2", [0.5], S, id="both-success"),
        pytest.param("result[0] < 1", "result[0] > 2", [3.0], F, id="both-failure"),
        pytest.param("result[0] < 1", "result[0] > 2", [1.5], I, id="both-neither-inconclusive"),
        pytest.param("result[0] < 5", "result[0] > 2", [3.0], F, id="both-true-failure-wins"),
        pytest.param("result[0] < 1", None, [], E, id="empty-vector-error"),
    ],
)
def test_judge_measurement(success, failure, value, expected):
    assert judge_measurement(spec(success=success, failure=failure), value)[0] is expected


def result_with(phases, **counters) -> MetricResult:
    r = MetricResult("m")
    for p in phases:
        r.record(Measurement(0.0, p, [0.0]))
    for k, v in counters.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize(
    "kw, phases, terminating, expected",
    [
        pytest.param({}, [], False, P, id="no-measurement-pending"),
        pytest.param({}, [], True, S, id="no-measurement-terminating-successful"),
        pytest.param({}, [S], False, S, id="count-1-reached"),
        pytest.param({}, [F], False, F, id="failed-1-gt-limit-0"),
        pytest.param({"failure_limit": 1, "interval_s": 60}, [F], False, R, id="failed-1-within-limit-1"),
        pytest.param({"failure_limit": 1, "interval_s": 60}, [F, S, F], False, F, id="failures-are-cumulative"),
        pytest.param({"interval_s": 60}, [S, S, S], False, R, id="interval-no-count-runs-forever"),
        pytest.param({"interval_s": 60}, [S, S], True, S, id="indefinite-terminated-successful"),
        pytest.param({"interval_s": 60, "count": 3}, [S, S, S], False, S, id="count-3-reached"),
        pytest.param({"interval_s": 60, "count": 3}, [S, E, S], False, R, id="errors-do-not-count"),
        pytest.param({}, [I], False, I, id="inconclusive-gt-limit"),
        pytest.param({"inconclusive_limit": 1, "interval_s": 60, "count": 2}, [I, S], False, S, id="inconclusive-within-limit"),
        pytest.param({"interval_s": 10}, [E] * 4, False, R, id="four-errors-still-running"),
        pytest.param({"interval_s": 10}, [E] * 5, False, E, id="fifth-consecutive-error"),
        pytest.param({"interval_s": 10}, [E, E, S, E, E, E], False, R, id="success-resets-consecutive-errors"),
        pytest.param({"interval_s": 10, "consecutive_error_limit": 0}, [E], False, E, id="error-limit-0"),
        pytest.param({"failure_limit": 5, "interval_s": 10}, [F, F, E, E, E, E, E], False, E, id="error-beats-failed"),
        pytest.param({"interval_s": 10, "consecutive_success_limit": 2}, [S, F, S, S], False, F, id="csl-but-failed-first"),
        pytest.param({"interval_s": 10, "consecutive_success_limit": 2, "failure_limit": 3}, [F, S, S], False, S, id="csl-reached"),
        pytest.param({"interval_s": 10, "count": 3, "consecutive_success_limit": 2, "failure_limit": 3}, [S, F, S], False, I, id="count-without-csl-inconclusive"),
        pytest.param({"interval_s": 10, "count": 2, "consecutive_success_limit": 2, "failure_limit": -1}, [F, S], False, F, id="count-without-csl-limit-off-failed"),
    ],
)
def test_assess_metric(kw, phases, terminating, expected):
    assert assess_metric(spec(**kw), result_with(phases), terminating) is expected


@pytest.mark.parametrize(
    "specs, phases, terminate, expected, message",
    [
        pytest.param([spec("a"), spec("b")], {"a": [S], "b": []}, False, R, "", id="one-pending-running"),
        pytest.param([spec("a"), spec("b")], {"a": [S], "b": [S]}, False, S, "", id="all-successful"),
        pytest.param([spec("a", interval_s=60), spec("b")], {"a": [S], "b": [F]}, False, F,
                     'Metric "b" assessed Failed due to failed (1) > failureLimit (0)', id="failure-terminates-others"),
        pytest.param([spec("a", interval_s=60, inconclusive_limit=0), spec("b", interval_s=60, failure_limit=0)],
                     {"a": [I], "b": [F]}, False, F,
                     'Metric "b" assessed Failed due to failed (1) > failureLimit (0)', id="worst-phase-wins"),
        pytest.param([spec("a", dry_run=True), spec("b")], {"a": [F], "b": [S]}, False, S, "", id="dry-run-never-decides"),
        pytest.param([spec("a", interval_s=60)], {"a": [S, S]}, True, S, "Run Terminated", id="terminated-indefinite"),
        pytest.param([spec("a", interval_s=10)], {"a": [E] * 5}, False, E,
                     'Metric "a" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4)', id="error-run"),
    ],
)
def test_assess_run(specs, phases, terminate, expected, message):
    results = {s.name: result_with(phases[s.name]) for s in specs}
    phase, msg, _ = assess_run(specs, results, terminate)
    assert phase is expected
    assert msg == message


class Script:
    """A provider returning queued values (or raising) and recording when it was asked."""

    def __init__(self, *values):
        self.values = list(values)
        self.asked = []

    def __call__(self, query, at_s):
        self.asked.append(at_s)
        v = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(v, Exception):
            raise v
        return v


def drive(run: AnalysisRun, provider, until_s: float) -> None:
    while (t := run.due_s()) is not None and t <= until_s:
        run.step(t, provider)


def test_run_clock_initial_delay_and_interval():
    s = spec(success="result[0] < 1", interval_s=300.0, initial_delay_s=300.0, count=3)
    run = AnalysisRun("r", "background", [s], started_s=100.0)
    prov = Script([0.5])
    drive(run, prov, 10_000)
    assert prov.asked == [400.0, 700.0, 1000.0]
    assert run.phase is S and run.finished_s == 1000.0


def test_errors_are_retried_every_10s_and_the_fifth_aborts():
    s = spec(success="result[0] < 1", interval_s=300.0)
    run = AnalysisRun("r", "background", [s], started_s=0.0)
    prov = Script([])  # an empty vector: result[0] is an index error
    drive(run, prov, 10_000)
    assert prov.asked == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert run.phase is E
    assert "index out of range" in run.message


def test_provider_error_is_a_measurement_error():
    s = spec(success="result[0] < 1", consecutive_error_limit=0)
    run = AnalysisRun("r", "step", [s], started_s=0.0)
    drive(run, Script(ProviderError("parse error at char 3")), 100)
    assert run.phase is E
    assert run.message.endswith('"Error Message: parse error at char 3"')


def test_recovery_after_errors_keeps_interval():
    s = spec(success="result[0] < 1", interval_s=60.0, count=2)
    run = AnalysisRun("r", "step", [s], started_s=0.0)
    prov = Script([], [], [0.1], [0.1])
    drive(run, prov, 10_000)
    assert prov.asked == [0.0, 10.0, 20.0, 80.0]
    assert run.phase is S


def test_terminate_mid_run_is_successful_without_failures():
    s = spec(success="result[0] < 1", interval_s=60.0)
    run = AnalysisRun("r", "background", [s], started_s=0.0)
    drive(run, Script([0.1]), 200)
    run.terminate(200)
    assert run.phase is S and run.message == "Run Terminated"
    assert run.due_s() is None
