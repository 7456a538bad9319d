"""The sim backend: state kept between commands, replayed deterministically, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli.main import main
from lab.cluster import simbackend
from lab.cluster.base import ClusterError, ClusterStatus
from lab.cluster.simbackend import SimBackend
from lab.cluster.state import StateStore

ROOT = Path(__file__).resolve().parent.parent


class ToySim:
    """A rollout with known timing: 10% at once, 50% and an indefinite pause at 1 h, Healthy on
    promote. With any fault it aborts at 30 min. Records every verb it receives."""

    instances: list["ToySim"] = []

    def __init__(self, manifests: Path, seed: int, faults: list[str]):
        self.t, self.phase, self.weight = 0.0, "Progressing", 10
        self.faults = list(faults)
        self.calls: list[tuple[float, str]] = []
        ToySim.instances.append(self)

    def _update(self) -> None:
        if self.phase in ("Degraded", "Healthy"):
            return
        if self.faults and self.t >= 1800:
            self.phase, self.weight = "Degraded", 0
        elif self.t >= 3600 and self.phase == "Progressing":
            self.phase, self.weight = "Paused", 50

    def advance(self, until_s: float) -> None:
        assert until_s >= self.t, "time went backwards"
        for event_s in (1800.0, 3600.0):
            if self.t < event_s <= until_s:
                self.t = event_s
                self._update()
        self.t = until_s
        self._update()

    def settle(self, max_s: float) -> None:
        for event_s in (1800.0, 3600.0):
            if self.phase in ("Progressing",) and self.t < event_s <= max_s:
                self.advance(event_s)

    def now_s(self) -> float:
        return self.t

    def promote(self, full: bool = False) -> None:
        self.calls.append((self.t, "promote-full" if full else "promote"))
        if self.phase == "Paused" or full:
            self.phase, self.weight = "Healthy", 100

    def abort(self) -> None:
        self.calls.append((self.t, "abort"))
        self.phase, self.weight = "Degraded", 0

    def retry(self) -> None:
        self.calls.append((self.t, "retry"))
        if self.phase == "Degraded":
            self.phase, self.weight = "Progressing", 10

    def undo(self) -> None:
        self.calls.append((self.t, "undo"))
        self.phase, self.weight = "Healthy", 0

    def set_fault(self, spec: str) -> None:
        self.calls.append((self.t, f"fault {spec}"))
        self.faults.append(spec)

    def status(self) -> ClusterStatus:
        return ClusterStatus(backend="sim", rollout="ai-prod/ai-api", phase=self.phase,
                             canary_weight=self.weight, t_s=self.t, aborted=self.phase == "Degraded")


@pytest.fixture
def store(tmp_path):
    ToySim.instances = []
    return StateStore(tmp_path / "state")


def backend(store, **kw) -> SimBackend:
    # A new backend object per command, as a new process would have.
    return SimBackend(store=store, factory=ToySim, **kw)


def test_deploy_status_promote_across_commands(store, tmp_path):
    s = backend(store).deploy(tmp_path)
    assert (s.phase, s.canary_weight, s.t_s) == ("Paused", 50, 3600.0)
    assert store.path.is_file()
    s = backend(store).status()
    assert (s.phase, s.t_s) == ("Paused", 3600.0)
    s = backend(store).promote()
    assert (s.phase, s.canary_weight) == ("Healthy", 100)
    # The next command replays the promote at the time it was given.
    s = backend(store).status()
    assert s.phase == "Healthy"
    assert ToySim.instances[-1].calls == [(3600.0, "promote")]
    state = json.loads(store.path.read_text())
    assert state["actions"] == [{"action": "promote", "arg": None, "t_s": 3600.0}]


def test_until_and_advance_move_the_clock(store, tmp_path):
    s = backend(store, until_s=600).deploy(tmp_path)
    assert (s.phase, s.t_s) == ("Progressing", 600.0)
    assert backend(store).status().t_s == 600.0  # status alone does not move time
    s = backend(store, advance_s=1200).status()
    assert s.t_s == 1800.0
    s = backend(store, until_s=1900).abort()
    assert (s.phase, s.canary_weight, s.t_s) == ("Degraded", 0, 1900.0)
    assert ToySim.instances[-1].calls == [(1800.0, "abort")]


def test_until_cannot_go_back(store, tmp_path):
    backend(store, until_s=600).deploy(tmp_path)
    with pytest.raises(ClusterError, match=r"--until: 0h01m00s is before the simulated clock \(0h10m00s\); time only moves forward"):
        backend(store, until_s=60).status()


def test_a_verb_that_changes_nothing_says_so_and_is_not_replayed(store, tmp_path):
    said: list[str] = []
    backend(store).deploy(tmp_path)
    backend(store, say=said.append).promote()  # Paused at 1 h: promoted, Healthy
    assert said == []
    s = backend(store, say=said.append).promote()  # Healthy: nothing to promote
    assert s.phase == "Healthy"
    assert said == ["note: promote changed nothing: the rollout is Healthy, with no canary in progress. "
                    "Deploy again to start one (the simulated cluster takes every deploy as a new revision)."]
    assert [a["action"] for a in json.loads(store.path.read_text())["actions"]] == ["promote"]


def test_retry_after_an_abort_is_replayed(store, tmp_path):
    said: list[str] = []
    backend(store, until_s=600).deploy(tmp_path)
    backend(store, until_s=600).abort()
    s = backend(store, until_s=900, say=said.append).retry()
    assert (s.phase, s.canary_weight, s.aborted, said) == ("Progressing", 10, False, [])
    assert backend(store).status().phase == "Progressing"  # replayed: abort at 10 min, retry after it
    assert ToySim.instances[-1].calls == [(600.0, "abort"), (600.0, "retry")]


@pytest.mark.parametrize("until_s, phase", [
    pytest.param(600, "Progressing", id="progressing"),
    pytest.param(None, "Paused", id="paused"),
])
def test_retry_when_not_aborted_says_so_and_is_not_replayed(store, tmp_path, until_s, phase):
    said: list[str] = []
    s = backend(store, until_s=until_s).deploy(tmp_path)
    t_s = s.t_s
    s = backend(store, say=said.append).retry()  # nothing changes: the clock does not run on either
    assert (s.phase, s.t_s, s.aborted) == (phase, t_s, False)
    assert backend(store).status().t_s == t_s
    assert said == [f"note: retry changed nothing: the rollout is {phase}, not aborted, and retry only restarts "
                    "an aborted one (kind's retry sends its patch all the same, and it changes nothing there either)."]
    assert json.loads(store.path.read_text())["actions"] == []


def test_deploy_refuses_manifests_kind_would_refuse(store, tmp_path, course_copy):
    folder = course_copy("services.yaml", "  selector: {app: ai-api}", "  selectr: {app: ai-api}")
    with pytest.raises(ClusterError, match="kind would refuse them too\\); nothing was deployed:\n  "
                                           "Service ai-prod/ai-api-stable: spec: Additional properties"):
        backend(store).deploy(folder)
    assert not store.path.exists()


def test_deploy_warns_of_an_image_the_kind_node_lacks(store, tmp_path, course_copy):
    folder = course_copy("rollout.yaml", "image: servelab/emulator:0.1.0", "image: servelab/emulatr:0.1.0")
    said: list[str] = []
    s = backend(store, say=said.append).deploy(folder)
    assert s.phase == "Paused"  # the simulator runs it all the same
    assert len(said) == 1 and said[0].startswith("warning: Rollout ai-prod/ai-api: container 'vllm' has image "
                                                 "'servelab/emulatr:0.1.0'")


def test_an_abort_reason_without_a_value_asks_about_the_query():
    status = ClusterStatus(backend="sim", rollout="ai-prod/ai-api", phase="Degraded", aborted=True,
                           abort_reason={"metric": "error-rate", "value": None, "analysis": "ai-api-health",
                                         "message": "Metric \"error-rate\" assessed Failed"})
    assert ("Abort reason:  Metric \"error-rate\" assessed Failed [error-rate = no value: did the query match "
            "any series? (a misspelt metric or label name matches none), analysis ai-api-health]") in status.render()


def test_a_fault_at_deploy_aborts(store, tmp_path):
    s = backend(store).deploy(tmp_path, faults=["canary:error-rate=0.05"])
    assert (s.phase, s.t_s) == ("Degraded", 1800.0)


def test_a_fault_added_later_is_replayed(store, tmp_path):
    backend(store, until_s=60).deploy(tmp_path)
    backend(store, until_s=120).set_fault("canary:latency=3x")
    s = backend(store).status()
    assert s.phase == "Progressing" and s.t_s == 120.0
    s = backend(store, until_s=2000).status()
    assert s.phase == "Degraded"
    assert ToySim.instances[-1].calls == [(60.0, "fault canary:latency=3x")]


def test_wall_clock_mode(store, tmp_path):
    wall = [1000.0]
    clock = lambda: wall[0]  # noqa: E731
    s = SimBackend(store=store, factory=ToySim, clock=clock).deploy(tmp_path, speed=60)
    assert (s.phase, s.t_s) == ("Progressing", 0.0)
    wall[0] = 1000.0 + 45  # 45 wall seconds at 60x: 45 simulated minutes
    s = SimBackend(store=store, factory=ToySim, clock=clock).status()
    assert s.t_s == 2700.0
    wall[0] = 1000.0 + 61
    s = SimBackend(store=store, factory=ToySim, clock=clock).promote()
    assert (s.phase, s.t_s) == ("Healthy", 3660.0)


def test_down_forgets_and_status_then_says_deploy(store, tmp_path):
    backend(store).deploy(tmp_path)
    assert "deleted" in backend(store).down()
    with pytest.raises(ClusterError, match="nothing deployed in the simulated cluster"):
        backend(store).status()
    assert "Nothing was deployed" in backend(store).down()


def test_a_damaged_state_file_is_reported(store, tmp_path):
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(ClusterError, match="unreadable sim cluster state"):
        backend(store).status()


def test_bad_speed(store, tmp_path):
    with pytest.raises(ClusterError, match="--speed"):
        backend(store).deploy(tmp_path, speed=0)


# -- the command line, in process (the toy simulation stands in for sim.rollout) -------------------


@pytest.fixture
def toy_cli(monkeypatch, tmp_path):
    ToySim.instances = []
    monkeypatch.setenv("SERVELAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(simbackend, "default_factory", ToySim)


def test_cli_sequence(toy_cli, capsys):
    assert main(["cluster", "deploy", "--until", "10m"]) == 0
    assert "Status:        Progressing" in capsys.readouterr().out
    assert main(["cluster", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["t_s"] == 600.0
    assert main(["cluster", "promote", "--full"]) == 0
    assert "Status:        Healthy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(["cluster", "status"], "nothing deployed", id="nothing-deployed"),
        pytest.param(["cluster", "fault"], "expected a fault SPEC", id="fault-without-spec"),
        pytest.param(["cluster", "deploy", "--until", "soon"], "--until 'soon': expected a duration", id="bad-duration"),
        pytest.param(["cluster", "up", "--dry-run"], "--dry-run belongs to the kind backend", id="dry-run-on-sim"),
        pytest.param(["cluster", "status", "extra"], "unexpected argument 'extra'", id="stray-arg"),
        pytest.param(["cluster", "fault", "bogus"], "servelab cluster fault 'bogus': expected KIND=VALUE", id="bad-fault"),
        pytest.param(["cluster", "fault", "canary:explode=1", "--backend", "kind"],
                     "unknown kind 'explode'", id="bad-fault-on-kind"),
    ],
)
def test_cli_errors(toy_cli, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


# -- with the real rollout simulator -----------------------------------------------------------------


@pytest.fixture
def real_sim(monkeypatch, tmp_path):
    pytest.importorskip("sim.engine", reason="the engine simulator (sim.engine) is not in this build yet")
    monkeypatch.setenv("SERVELAB_STATE_DIR", str(tmp_path / "state"))


@pytest.mark.slow
def test_course_rollout_goes_healthy(real_sim, capsys):
    assert main(["cluster", "deploy", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "Healthy" and status["canary_weight"] == 100


@pytest.mark.slow
def test_course_rollout_with_a_fault_goes_degraded_and_undo_recovers(real_sim, capsys):
    assert main(["cluster", "deploy", "--fault", "canary:error-rate=0.05", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "Degraded" and status["canary_weight"] == 0 and status["aborted"]
    assert main(["cluster", "undo", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "Healthy"
    assert not status["aborted"] and status["abort_reason"] is None  # Healthy again: no abort shown


@pytest.mark.slow
def test_a_query_on_a_metric_no_pod_exports_is_named(real_sim, capsys, tmp_path, course_copy):
    folder = course_copy("analysis-health.yaml", 'sum(rate(http_requests_total{service="{{args.canary-service}}",status',
                          'sum(rate(http_request_total{service="{{args.canary-service}}",status')
    assert main(["cluster", "deploy", "--manifests", str(folder), "--until", "10m"]) == 0
    err = capsys.readouterr().err
    assert ("warning: AnalysisTemplate 'ai-api-health', metric 'error-rate': the query reads 'http_request_total', "
            "which no pod exports") in err
    assert "Did you mean 'http_requests_total'?" in err
    assert main(["cluster", "deploy", "--until", "10m"]) == 0  # the course's own: no warning
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_course_rollout_manual_abort_replays(real_sim, capsys):
    assert main(["cluster", "deploy", "--until", "20m"]) == 0
    capsys.readouterr()
    assert main(["cluster", "abort", "--json"]) == 0
    aborted = json.loads(capsys.readouterr().out)
    assert aborted["phase"] == "Degraded"
    assert main(["cluster", "status", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["timeline"] == aborted["timeline"]


@pytest.mark.slow
def test_course_rollout_abort_then_retry(real_sim, capsys):
    assert main(["cluster", "deploy", "--until", "20m"]) == 0
    capsys.readouterr()
    assert main(["cluster", "abort", "--until", "20m", "--json"]) == 0
    aborted = json.loads(capsys.readouterr().out)
    assert aborted["message"] == "RolloutAborted: Rollout aborted update to revision 2"
    assert aborted["details"]["Revision"] == "2"
    assert main(["cluster", "retry", "--until", "30m", "--json"]) == 0
    retried = json.loads(capsys.readouterr().out)
    assert not retried["aborted"] and retried["phase"] in ("Paused", "Progressing") and retried["canary_weight"] > 0
    assert "retry: steps restart from 0" in [row["event"] for row in retried["timeline"]]
    assert main(["cluster", "undo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["details"]["Revision"] == "3"


@pytest.mark.slow
def test_course_rollout_retry_in_a_timed_pause_changes_nothing(real_sim, capsys):
    assert main(["cluster", "deploy", "--until", "20m", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert (before["phase"], before["message"]) == ("Paused", "CanaryPauseStep")  # the 1 h pause
    assert main(["cluster", "retry", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == before
    assert err.startswith("note: retry changed nothing: the rollout is Paused, not aborted") and err.count("\n") == 1


@pytest.mark.slow
def test_a_fault_injected_mid_rollout_aborts_it(real_sim, capsys):
    assert main(["cluster", "deploy", "--until", "10m"]) == 0
    capsys.readouterr()
    assert main(["cluster", "fault", "canary:error-rate=0.05", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "Degraded"
    assert status["abort_reason"]["metric"] == "error-rate"
    events = [row["event"] for row in status["timeline"]]
    assert "faults set: canary:error-rate=0.05" in events
    # The abort comes from measurements after the fault: never before 10 minutes.
    assert 600 < next(r["t_s"] for r in status["timeline"] if r["event"].startswith("ABORT")) <= 1800
