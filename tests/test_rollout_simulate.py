"""End to end: the course's manifests, the engine-backed fleet, faults, the CLI and its JSON.

The fault cases are the issue's acceptance criteria: no fault goes 1 -> 10 -> 50 -> 100 and
ends Healthy; error-rate=0.02 aborts in phase 1 with about 1% of users exposed; latency=4x and
quality=-0.15 abort at the analysis that should catch them; latency=1.3x does not abort.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli.main import main
from sim.rollout import simulate
from tests.conftest import normalise_json

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def healthy():
    return simulate(MANIFESTS, (), seed=0)


def test_no_fault_goes_1_10_50_100_and_ends_healthy(healthy):
    r = healthy
    assert r.status == "Healthy" and r.promoted and r.final_weight == 100 and r.aborted_at_s is None
    weights = [e["weight"] for e in r.timeline if e["event"].startswith("step") and "setWeight" in e["event"]]
    assert weights == [1, 10, 50]
    assert r.timeline[-1]["weight"] == 100 and "fully promoted" in r.timeline[-1]["event"]
    assert r.duration_s == pytest.approx(7 * 3600)
    assert all(run["phase"] == "Successful" for run in r.runs)
    gates = [run["name"] for run in r.runs if run["kind"] == "step"]
    assert gates == ["ai-api-gate-phase1", "ai-api-gate-phase2", "ai-api-gate-phase3"]
    # 20 req/s for 7 h, with 1%, 10% then 50% of it to the canary.
    assert r.requests["total"] == pytest.approx(20 * 7 * 3600, rel=0.01)
    expected_canary = 20 * (0.01 * 3600 + 0.10 * 7200 + 0.50 * 14400)
    assert r.requests["canary"] == pytest.approx(expected_canary, rel=0.03)


@pytest.mark.parametrize(
    "fault, metric, analysis, by_s",
    [
        pytest.param("error-rate=0.02", "error-rate", "ai-api-health", 3600, id="error-rate-phase1"),
        pytest.param("latency=4x", "latency-p99", "ai-api-health", 900, id="latency-4x"),
        pytest.param("quality=-0.15", "llm-judge-score", "ai-api-quality", 1800, id="quality-drop"),
    ],
)
def test_faults_abort_at_the_analysis_that_catches_them(fault, metric, analysis, by_s):
    r = simulate(MANIFESTS, (fault,), seed=0)
    assert r.status == "Degraded" and not r.promoted and r.final_weight == 0
    assert r.aborted_at_s is not None and r.aborted_at_s <= by_s
    assert r.abort_reason["metric"] == metric and r.abort_reason["analysis"] == analysis
    assert "assessed Failed" in r.abort_reason["message"]


def test_error_rate_exposes_only_the_canarys_one_percent():
    r = simulate(MANIFESTS, ("error-rate=0.02",), seed=0)
    assert r.aborted_at_s < 3600  # still in phase 1
    assert 0.005 < r.requests["canary"] / r.requests["total"] < 0.02
    assert r.requests["canary_failed"] <= 0.05 * r.requests["canary"]


@pytest.mark.parametrize("fault", [pytest.param("latency=1.3x", id="latency-1.3x"), pytest.param("stable:latency=1.3x", id="stable-1.3x")])
def test_a_fault_under_the_thresholds_promotes(fault):
    r = simulate(MANIFESTS, (fault,), seed=0)
    assert r.status == "Healthy" and r.promoted, r.abort_reason


def test_fault_window_before_phase_2_is_caught_in_it():
    r = simulate(MANIFESTS, ("latency=4x@2h-3h",), seed=0)
    assert r.aborted_at_s is not None and 7200 < r.aborted_at_s <= 7200 + 900


def test_manual_abort_at_a_time():
    r = simulate(MANIFESTS, (), seed=0, abort_at_s=5400.0)
    assert r.status == "Degraded" and r.aborted_at_s == 5400.0 and r.abort_reason["analysis"] == "manual"


def test_same_seed_same_result_different_seed_different_traffic(healthy):
    again = simulate(MANIFESTS, (), seed=0)
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(healthy.to_json(), sort_keys=True)
    other = simulate(MANIFESTS, (), seed=1, abort_at_s=600.0)
    assert other.requests != simulate(MANIFESTS, (), seed=0, abort_at_s=600.0).requests


def test_series_use_the_names_the_templates_query(healthy):
    store = healthy.simulation.fleet.store
    names = set(store.names())
    for n in ("http_requests_total", "http_request_duration_seconds_bucket", "llm_request_cost_dollars_total",
              "llm_judge_quality_score_sum", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
              "vllm:generation_tokens_total", "vllm:num_preemptions_total"):
        assert n in names


def _golden(name: str, argv: list[str], tmp_path, update: bool):
    out = tmp_path / "out.json"
    assert main(["rollout", "simulate", "--quiet", "--json", str(out), *argv]) == 0
    got = normalise_json(json.loads(out.read_text()))
    path = GOLDEN / name
    if update or not path.exists():
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        if not update:
            pytest.fail(f"{path} did not exist; written now, review it and run again")
    assert got == json.loads(path.read_text())


@pytest.mark.parametrize(
    "name, argv",
    [
        pytest.param("rollout_simulate_seed0.json", ["--seed", "0"], id="no-fault"),
        pytest.param("rollout_simulate_error_rate_seed0.json", ["--seed", "0", "--fault", "error-rate=0.02"], id="error-rate"),
    ],
)
def test_golden_json(name, argv, tmp_path, update_golden):
    _golden(name, argv, tmp_path, update_golden)


def test_json_contract(tmp_path):
    out = tmp_path / "r.json"
    assert main(["rollout", "simulate", "--quiet", "--fault", "error-rate=0.02", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["status"] in ("Healthy", "Degraded", "Paused") and isinstance(d["promoted"], bool)
    assert set(d["abort_reason"]) >= {"metric", "value", "analysis"}
    assert 0 <= d["final_weight"] <= 100
    assert all(set(e) == {"t_s", "event", "weight"} for e in d["timeline"])
    assert set(d["requests"]) == {"total", "canary", "canary_failed"}


def test_abort_reason_says_condition_step_and_weight():
    r = simulate(MANIFESTS, ["error-rate=0.02"], seed=0)
    reason = r.abort_reason
    assert reason["condition"] == "successCondition: len(result) > 0 && result[0] < 0.01"
    assert reason["phase"] == "Failed" and reason["step"] == 1 and reason["weight"] == 1


def test_cli_explains_why_it_aborted(capsys):
    assert main(["rollout", "simulate", "--fault", "latency=4x"]) == 0
    why = [line for line in capsys.readouterr().out.splitlines() if line.startswith("why: ")]
    assert why == [
        "why: latency-p99 measured 7390, held to successCondition: len(result) > 0 && result[0] < 3000; "
        "in the background analysis (ai-api-health), at step 1 (pause 1h), canary weight 1%"
    ]


def _edited_manifests(tmp_path, file, old, new):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(MANIFESTS, d, ignore=shutil.ignore_patterns("schemas"))
    text = (d / file).read_text()
    assert old in text
    (d / file).write_text(text.replace(old, new))
    return d


def test_cli_explains_an_empty_result_and_a_query_error(tmp_path, capsys):
    d = _edited_manifests(tmp_path, "analysis-health.yaml", "http_requests_total", "http_request_total")
    assert main(["rollout", "simulate", "--manifests", str(d)]) == 0
    assert "why: error-rate measured no value (an empty result or NaN" in capsys.readouterr().out
    d = _edited_manifests(tmp_path / "b", "analysis-health.yaml", 'status=~"5.."}', 'status=~"5.."}}')
    assert main(["rollout", "simulate", "--manifests", str(d)]) == 0
    assert "why: error-rate could not be evaluated (phase Error" in capsys.readouterr().out


def test_cli_notes_a_metric_without_a_condition(tmp_path, capsys):
    d = _edited_manifests(tmp_path, "analysis-health.yaml", "      successCondition: len(result) > 0 && result[0] < 0.01\n", "")
    assert main(["rollout", "simulate", "--quiet", "--manifests", str(d)]) == 0
    err = capsys.readouterr().err
    assert "note: metric 'error-rate' (AnalysisTemplate ai-api-health) has neither successCondition nor failureCondition" in err


@pytest.mark.parametrize(
    "png, message",
    [
        pytest.param("/nonexistent/r.png", "--png: cannot write /nonexistent/r.png: folder /nonexistent does not exist",
                     id="no-folder"),
        pytest.param("r.txt", "--png: cannot write r.txt: Format 'txt' is not supported", id="bad-suffix"),
    ],
)
def test_cli_png_errors_exit_2_without_traceback(png, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["rollout", "simulate", "--quiet", "--png", png]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_cli_timeline_and_png(tmp_path, capsys):
    png = tmp_path / "r.png"
    assert main(["rollout", "simulate", "--fault", "latency=4x", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "setWeight 1" in out and "ABORT" in out and "status Degraded" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["--fault", "latency=fast"], "--fault 'latency=fast': expected a number", id="bad-fault"),
        pytest.param(["--abort-at", "soon"], "--abort-at: expected a duration", id="bad-abort-at"),
        pytest.param(["--manifests", "/nonexistent"], "--manifests: '/nonexistent' is not a folder", id="no-folder"),
        pytest.param(["--rate", "-3"], "--rate: expected a positive number", id="bad-rate"),
        pytest.param(["--trials", "0"], "--trials: expected a positive number", id="bad-trials"),
    ],
)
def test_cli_errors_exit_2_without_traceback(argv, message, capsys):
    assert main(["rollout", "simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_reports_manifest_errors(tmp_path, capsys):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(MANIFESTS, d, ignore=shutil.ignore_patterns("schemas"))
    text = (d / "rollout.yaml").read_text().replace("pause: {duration: 2h}", "pause: {duration: 2 hours}")
    (d / "rollout.yaml").write_text(text)
    assert main(["rollout", "simulate", "--manifests", str(d)]) == 2
    assert 'rollout.yaml: spec.strategy.canary.steps[4].pause.duration: expected a duration like 30s, 5m, 1h, got "2 hours"' in capsys.readouterr().err


def test_trials_report_rates(capsys):
    assert main(["rollout", "simulate", "--trials", "2", "--fault", "error-rate=0.05"]) == 0
    out = capsys.readouterr().out
    assert "detection rate:   100%" in out and "false-alarm rate:" in out and "time to detect:" in out


def test_kayenta_judge_catches_latency():
    r = simulate(MANIFESTS, ("latency=4x",), seed=0, judge="kayenta")
    assert r.status == "Degraded" and r.abort_reason["metric"] == "kayenta-score"


def test_stepwise_simulation_for_an_interactive_cluster():
    from sim.rollout import create_simulation

    sim = create_simulation(MANIFESTS, (), seed=3)
    sim.advance(1800)
    st = sim.status()
    assert st["phase"] == "Paused" and st["weight"] == 1 and st["canary_pods"] == 1
    sim.set_faults(["error-rate=0.2"])
    sim.advance(3000)
    assert sim.status()["phase"] == "Degraded" and 1800 < sim.aborted_at_s <= 1800 + 600
    sim.undo()
    assert sim.status()["phase"] == "Healthy" and sim.status()["weight"] == 0


def test_diurnal_traffic_follows_the_daily_curve():
    import math

    r = simulate(MANIFESTS, (), seed=0, traffic="diurnal", abort_at_s=6 * 3600.0)
    # 20 x integral over [0, 6 h] of 1 + 0.5 sin(2 pi t / 1 day)
    day = 86400.0
    expected = 20 * (6 * 3600 + 0.5 * day / (2 * math.pi) * (1 - math.cos(2 * math.pi * 6 * 3600 / day)))
    assert r.requests["total"] == pytest.approx(expected, rel=0.01)
