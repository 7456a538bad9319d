"""The controller's Argo semantics on small manifests, with a scripted metric provider and a
recording stand-in for the fleet (the fleet itself is tested in test_rollout_simulate.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from sim.rollout.controller import RolloutSimulation
from sim.rollout.loader import load_manifests

SERVICES = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}}
    for n in ("canary", "stable")
]
VS = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService", "metadata": {"name": "vs"},
    "spec": {"hosts": ["x"], "http": [{"name": "primary", "route": [
        {"destination": {"host": "stable"}, "weight": 100}, {"destination": {"host": "canary"}, "weight": 0}]}]},
}


def template(name: str, *metrics: dict, **spec) -> dict:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name},
            "spec": {"metrics": list(metrics), **spec}}


def metric(name: str, query: str, **kw) -> dict:
    return {"name": name, "provider": {"prometheus": {"query": query}}, **kw}


def rollout(steps: list, background: dict | None = None) -> dict:
    canary = {"canaryService": "canary", "stableService": "stable", "steps": steps,
              "trafficRouting": {"istio": {"virtualService": {"name": "vs", "routes": ["primary"]}}}}
    if background:
        canary["analysis"] = background
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [
                     {"name": "c", "image": "i", "command": ["servelab", "serve"],
                      "args": ["meta-llama/Llama-3.1-8B", "--gpu=h100-80gb"]}]}},
                 "strategy": {"canary": canary}},
    }


class FleetStub:
    """Records weights; the controller only needs these few members."""

    def __init__(self):
        self.replicas, self.canary_pods, self.t_s = 10, 0, 0.0
        self.weights: list[tuple[float, int]] = []
        self.promoted = False
        self.stable_is_new = False

    def set_weight(self, w, canary_pods=None):
        self.canary_pods = math.ceil(self.replicas * w / 100) if canary_pods is None else canary_pods
        self.weights.append((self.t_s, w))

    def advance_to(self, t):
        self.t_s = max(self.t_s, t)

    def promote_new_version(self):
        self.promoted = True


class Script:
    """query -> function of time returning Argo's result (or raising)."""

    def __init__(self, **by_query):
        self.by_query = by_query
        self.calls: list[tuple[str, float]] = []

    def __call__(self, query, at_s):
        self.calls.append((query, at_s))
        return self.by_query[query](at_s)


def build(tmp_path: Path, docs: list[dict], provider, **kw) -> RolloutSimulation:
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs + SERVICES + [VS]))
    return RolloutSimulation(load_manifests(tmp_path), FleetStub(), provider, **kw)


def events(sim) -> list[str]:
    return [e.event for e in sim.timeline]


def test_steps_weights_and_full_promotion(tmp_path):
    sim = build(tmp_path, [rollout([{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 60},
                                    {"pause": {"duration": 60}}])], Script())
    sim.run_to_completion()
    assert sim.fleet.weights == [(0.0, 20), (600.0, 60)]
    assert sim.phase == "Healthy" and sim.promoted and sim.weight == 100 and sim.now_s == 660.0
    assert sim.fleet.canary_pods == 6  # ceil(10 * 60 / 100) before promotion


def test_indefinite_pause_waits_for_promote(tmp_path):
    sim = build(tmp_path, [rollout([{"setWeight": 5}, {"pause": {}}, {"setWeight": 50}])], Script())
    sim.advance(10 * 3600)
    assert sim.phase == "Paused" and sim.weight == 5
    sim.promote()
    assert sim.phase == "Healthy" and sim.weight == 100


def test_promote_full_skips_steps_and_analysis(tmp_path):
    prov = Script(q=lambda t: [1.0])
    docs = [rollout([{"setWeight": 5}, {"pause": {"duration": "1h"}}, {"analysis": {"templates": [{"templateName": "t"}]}}]),
            template("t", metric("m", "q", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.advance(600)
    sim.promote(full=True)
    sim.run_to_completion()
    assert sim.promoted and sim.phase == "Healthy" and prov.calls == []


def test_inline_analysis_gates_and_failure_aborts(tmp_path):
    prov = Script(q=lambda t: [0.2 if t < 7000 else 0.9])
    docs = [rollout([{"setWeight": 10}, {"pause": {"duration": "1h"}},
                     {"analysis": {"templates": [{"templateName": "t"}]}},
                     {"setWeight": 50}, {"pause": {"duration": "1h"}},
                     {"analysis": {"templates": [{"templateName": "t"}]}}]),
            template("t", metric("m", "q", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert [c[1] for c in prov.calls] == [3600.0, 7200.0]
    assert sim.phase == "Degraded" and sim.aborted_at_s == 7200.0 and sim.weight == 0
    assert sim.abort_reason["metric"] == "m" and sim.abort_reason["value"] == 0.9
    assert sim.abort_reason["message"] == 'Metric "m" assessed Failed due to failed (1) > failureLimit (0)'
    assert sim.fleet.weights[-1] == (7200.0, 0) and sim.step_index == 0


def test_background_starting_step_interval_and_failure_limit(tmp_path):
    bad_from = 2000.0
    prov = Script(q=lambda t: [0.9 if t >= bad_from else 0.1])
    bg = {"templates": [{"templateName": "t"}], "startingStep": 2}
    docs = [rollout([{"setWeight": 10}, {"pause": {"duration": "10m"}}, {"setWeight": 20},
                     {"pause": {"duration": "5h"}}], bg),
            template("t", metric("m", "q", interval="5m", initialDelay="5m", failureLimit=1,
                                 successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    times = [c[1] for c in prov.calls]
    assert times[0] == 600.0 + 300.0  # starts at step 2 (t = 10 min), after its initialDelay
    assert all(b - a == 300.0 for a, b in zip(times, times[1:]))
    # 2100 is the first failure, 2400 the second: failed (2) > failureLimit (1)
    assert sim.aborted_at_s == 2400.0 and sim.abort_reason["analysis"] == "t"


def test_empty_result_errors_five_times_then_aborts(tmp_path):
    prov = Script(q=lambda t: [])
    docs = [rollout([{"setWeight": 10}, {"pause": {"duration": "1h"}}], {"templates": [{"templateName": "t"}]}),
            template("t", metric("m", "q", interval="5m", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert [c[1] for c in prov.calls] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert sim.phase == "Degraded"
    assert "consecutiveErrors (5) > consecutiveErrorLimit (4)" in sim.abort_reason["message"]
    assert "index out of range" in sim.abort_reason["message"]


@pytest.mark.parametrize(
    "condition, aborts",
    [
        pytest.param({"successCondition": "result[0] < 0.5"}, True, id="nan-success-only-fails"),
        pytest.param({"failureCondition": "result[0] > 0.5"}, False, id="nan-failure-only-passes-silently"),
        pytest.param({"failureCondition": "isNaN(result[0]) || result[0] > 0.5"}, True, id="nan-guarded"),
    ],
)
def test_nan_results(tmp_path, condition, aborts):
    prov = Script(q=lambda t: [math.nan])
    docs = [rollout([{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "t"}]}}]),
            template("t", metric("m", "q", **condition))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert sim.aborted is aborts and sim.promoted is not aborts


def test_dry_run_metric_never_aborts(tmp_path):
    prov = Script(q=lambda t: [0.9], ok=lambda t: [0.1])
    docs = [rollout([{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "t"}],
                                                      "dryRun": [{"metricName": "strict.*"}]}}]),
            template("t", metric("strict-one", "q", successCondition="result[0] < 0.5"),
                     metric("fine", "ok", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert sim.promoted and not sim.aborted


def test_inconclusive_pauses_until_promote(tmp_path):
    prov = Script(q=lambda t: [0.5])
    docs = [rollout([{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "t"}]}}, {"setWeight": 40}]),
            template("t", metric("m", "q", successCondition="result[0] < 0.4", failureCondition="result[0] > 0.6"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert sim.phase == "Paused" and sim.weight == 10
    assert "inconclusive (1) > inconclusiveLimit (0)" in sim.message
    sim.promote()
    assert sim.promoted and sim.phase == "Healthy"


def test_manual_abort_at_a_time_then_undo(tmp_path):
    sim = build(tmp_path, [rollout([{"setWeight": 30}, {"pause": {"duration": "2h"}}])], Script(), abort_at_s=1800.0)
    sim.run_to_completion()
    assert sim.phase == "Degraded" and sim.aborted_at_s == 1800.0 and sim.weight == 0
    assert sim.abort_reason["analysis"] == "manual"
    sim.undo()
    assert sim.phase == "Healthy" and sim.weight == 0 and not sim.promoted


def test_retry_after_abort_restarts_the_steps(tmp_path):
    sim = build(tmp_path, [rollout([{"setWeight": 30}, {"pause": {"duration": "1h"}}])], Script())
    sim.advance(600)
    sim.abort()
    assert sim.phase == "Degraded"
    sim.retry()
    assert sim.phase == "Paused" and sim.weight == 30
    sim.run_to_completion()
    assert sim.promoted and sim.now_s == 600.0 + 3600.0


# -- what undo, retry, promote and abort leave behind (Argo's resetRolloutStatus and RemoveAbort) ---

COMMAND_STEPS = [{"setWeight": 30}, {"pause": {}}, {"analysis": {"templates": [{"templateName": "t"}]}},
                 {"setWeight": 60}, {"pause": {}}]
WAITING = "CanaryPauseStep"  # Argo's status.message: the pause condition's reason alone
# Undo puts the stable template back: Argo forgets the abort and the pauses, skips every step
# ("Rollback to stable ReplicaSets") and shows Healthy with no message.
UNDONE = {"phase": "Healthy", "message": "", "aborted": False, "aborted_at_s": None, "abort_reason": None,
          "step_index": len(COMMAND_STEPS), "weight": 0, "paused": (None, False, False)}


def _state(sim) -> dict:
    return {"phase": sim.phase, "message": sim.message, "aborted": sim.aborted, "aborted_at_s": sim.aborted_at_s,
            "abort_reason": sim.abort_reason, "step_index": sim.step_index, "weight": sim.weight,
            "paused": (sim.pause_until_s, sim.pause_started, sim.paused_by_analysis)}


@pytest.mark.parametrize(
    "commands, expected",
    [
        pytest.param(["abort", "undo"], UNDONE, id="undo-after-abort-clears-the-abort"),
        pytest.param(["undo"], UNDONE, id="undo-in-a-pause-clears-the-pause"),
        pytest.param(["abort", "undo", "retry"], UNDONE, id="retry-after-undo-does-nothing"),
        pytest.param(["undo", "promote"], UNDONE, id="promote-after-undo-does-nothing"),
        pytest.param(["undo", "promote-full"], UNDONE, id="promote-full-after-undo-does-nothing"),
        pytest.param(["undo", "abort"], UNDONE, id="abort-after-undo-does-nothing"),
        pytest.param(["abort", "retry"],
                     {"phase": "Paused", "message": WAITING, "aborted": False, "aborted_at_s": None,
                      "abort_reason": None, "step_index": 1, "weight": 30, "paused": (None, True, False)},
                     id="retry-restarts-the-steps-without-the-abort"),
        pytest.param(["promote"],
                     {"phase": "Progressing", "message": "", "aborted": False, "aborted_at_s": None,
                      "abort_reason": None, "step_index": 2, "weight": 30, "paused": (None, False, False)},
                     id="promote-clears-the-pause-message"),
    ],
)
def test_state_after_commands(tmp_path, commands, expected):
    prov = Script(q=lambda t: [0.1])  # the analysis step keeps running: interval and no count
    docs = [rollout(COMMAND_STEPS), template("t", metric("m", "q", interval="1m", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.advance(600)
    assert (sim.phase, sim.message, sim.step_index) == ("Paused", WAITING, 1)
    for command in commands:
        if command == "promote-full":
            sim.promote(full=True)
        else:
            getattr(sim, command)()
        sim.advance(sim.now_s + 600)
    assert _state(sim) == expected
    assert not sim.promoted and sim.status()["aborted"] is expected["aborted"]


# -- status.message in Argo's words (CalculateRolloutPhase, calculateRolloutConditions) ----------

ABORTED = "RolloutAborted: Rollout aborted update to revision 2"
FAILED = 'Metric "m" assessed Failed due to failed (1) > failureLimit (0)'
FAILING = template("t", metric("m", "q", successCondition="result[0] < 0.5"))
RUNNING = template("slow", metric("m", "q", interval="1m", successCondition="result[0] < 0.5"))  # never done
BACKGROUND = {"templates": [{"templateName": "t"}]}


@pytest.mark.parametrize(
    "steps, background, until_s, abort, expected",
    [
        pytest.param([{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}], None,
                     600, False, ("Paused", "CanaryPauseStep"), id="timed-pause"),
        pytest.param([{"setWeight": 10}, {"pause": {}}], None, 600, False, ("Paused", "CanaryPauseStep"),
                     id="indefinite-pause"),
        pytest.param([{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, {"pause": {}}], None,
                     3600, False, ("Paused", "CanaryPauseStep"), id="the-next-pause-after-a-timed-one"),
        pytest.param([{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"analysis": {"templates": [{"templateName": "slow"}]}}],
                     None, 3600, False, ("Progressing", ""), id="a-timed-pause-over-leaves-no-message"),
        pytest.param([{"setWeight": 10}, {"pause": {"duration": "1h"}}], None, 600, True, ("Degraded", ABORTED),
                     id="manual-abort-has-no-suffix"),
        pytest.param([{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "t"}]}}], None, 600, False,
                     ("Degraded", f"{ABORTED}: Step-based analysis phase error/failed: {FAILED}"), id="step-analysis-abort"),
        pytest.param([{"setWeight": 10}, {"pause": {"duration": "1h"}}], BACKGROUND, 600, False,
                     ("Degraded", f"{ABORTED}: Background analysis phase error/failed: {FAILED}"),
                     id="background-analysis-abort"),
    ],
)
def test_status_message(tmp_path, steps, background, until_s, abort, expected):
    # q fails in the first hour (the analysis rows abort) and passes after it ("slow" runs on).
    prov = Script(q=lambda t: [0.9] if t < 3600 else [0.1])
    sim = build(tmp_path, [rollout(steps, background), FAILING, RUNNING], prov)
    sim.advance(until_s)
    if abort:
        sim.abort()
    assert (sim.phase, sim.message) == expected
    assert sim.status()["message"] == expected[1]


@pytest.mark.parametrize(
    "revision, commands, expected",
    [
        pytest.param(2, ["abort"], (2, "RolloutAborted: Rollout aborted update to revision 2"), id="first-update"),
        pytest.param(7, ["abort"], (7, "RolloutAborted: Rollout aborted update to revision 7"), id="a-later-update"),
        pytest.param(2, ["abort", "retry", "abort"], (2, "RolloutAborted: Rollout aborted update to revision 2"),
                     id="retry-keeps-the-revision"),
        pytest.param(2, ["abort", "undo"], (3, ""), id="undo-makes-the-stable-template-the-next-revision"),
        pytest.param(4, ["undo", "undo"], (5, ""), id="a-second-undo-changes-nothing"),
        pytest.param(2, ["promote-full", "undo"], (3, ""), id="undo-after-promotion"),
    ],
)
def test_revision_named_by_the_abort(tmp_path, revision, commands, expected):
    sim = build(tmp_path, [rollout([{"setWeight": 30}, {"pause": {"duration": "1h"}}])], Script(), revision=revision)
    sim.advance(600)
    for command in commands:
        if command == "promote-full":
            sim.promote(full=True)
        else:
            getattr(sim, command)()
    assert (sim.status()["revision"], sim.message) == expected


def test_retry_when_not_aborted_changes_nothing(tmp_path):
    sim = build(tmp_path, [rollout([{"setWeight": 30}, {"pause": {"duration": "1h"}}])], Script())
    sim.advance(600)
    before = (sim.status(), list(sim.timeline))
    sim.retry()
    assert (sim.status(), list(sim.timeline)) == before


def test_a_revision_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"revision \(=1\) must be >= 2"):
        build(tmp_path, [rollout([{"setWeight": 30}])], Script(), revision=1)


def test_undo_in_an_inconclusive_pause_clears_it(tmp_path):
    prov = Script(q=lambda t: [0.5])
    docs = [rollout([{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "t"}]}}, {"setWeight": 40}]),
            template("t", metric("m", "q", successCondition="result[0] < 0.4", failureCondition="result[0] > 0.6"))]
    sim = build(tmp_path, docs, prov)
    sim.run_to_completion()
    assert sim.phase == "Paused" and sim.message.startswith("InconclusiveAnalysisRun:")
    sim.undo()
    sim.promote()  # no pause left to clear: the canary does not start again
    assert _state(sim) == {**UNDONE, "step_index": 3}
    assert sim.step_run is None and sim.fleet.canary_pods == 0


def test_status_reports_runs(tmp_path):
    prov = Script(q=lambda t: [0.1])
    docs = [rollout([{"setWeight": 10}, {"pause": {}}], {"templates": [{"templateName": "t"}]}),
            template("t", metric("m", "q", interval="1m", successCondition="result[0] < 0.5"))]
    sim = build(tmp_path, docs, prov)
    sim.advance(300)
    st = sim.status()
    assert st["phase"] == "Paused" and st["weight"] == 10 and st["canary_pods"] == 1
    assert st["runs"] == [{"name": "t", "kind": "background", "phase": "Running", "message": ""}]
    assert len(prov.calls) == 6  # t = 0, 60, ..., 300
