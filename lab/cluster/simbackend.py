"""The sim backend, the default: the course's manifests run in ServeLab's rollout simulator.

No Docker, no Kubernetes: ``deploy`` loads the manifests folder into ``sim.rollout``'s
simulation of Argo Rollouts (canary steps, analysis runs against simulated Prometheus series,
faults), and ``status``/``promote``/``abort``/``retry``/``undo``/``fault`` act on it as
``kubectl argo rollouts`` would on a cluster.

Time. By default the simulation is *accelerated*: simulated time moves only when a command
moves it. ``deploy``, ``promote``, ``abort``, ``retry``, ``undo`` and ``fault`` run the rollout on until
it settles (Healthy, Degraded, or paused waiting for a promote), or to ``--until``; ``status``
does not move time unless given ``--advance``. With ``--speed X`` at deploy, simulated time
is wall-clock time since the deploy times X (1 = real time), so a classroom can watch a
rollout unfold; every command then sees the rollout as it stands at that moment.

Between commands the state is a small JSON file (lab/cluster/state.py): the seed and the
actions with their simulated times, replayed on each command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from lab.cluster.base import Check, ClusterBackend, ClusterError, ClusterStatus, clock_text
from lab.cluster.state import Action, SimState, StateStore

SETTLE_CAP_S = 2 * 24 * 3600.0  # never run on for more than two simulated days at once


class Simulation(Protocol):
    """What the sim backend needs from a rollout simulation (``sim.rollout``)."""

    def advance(self, until_s: float) -> None: ...
    def promote(self, full: bool = False) -> None: ...
    def abort(self) -> None: ...
    def retry(self) -> None: ...
    def undo(self) -> None: ...
    def set_fault(self, spec: str) -> None: ...
    def now_s(self) -> float: ...
    def settle(self, max_s: float) -> None: ...  # advance until settled, or to max_s
    def status(self) -> ClusterStatus: ...
    # Optional: ``warnings() -> list[str]``, what the deploy should tell the student (the adapter's
    # analysis queries that read series no pod exports).


SimulationFactory = Callable[[Path, int, list[str]], Simulation]


def default_factory(manifests_dir: Path, seed: int, faults: list[str]) -> Simulation:
    from lab.cluster import simadapter

    return simadapter.RolloutSimulationAdapter(manifests_dir, seed, faults)


def check_like_kind(manifests_dir: Path) -> list[str]:
    """What ``deploy --backend kind`` would say about this folder: refuse what kind refuses.

    The simulator reads only the Rollout, the AnalysisTemplates, the Services and the
    VirtualService, and ignores images and most fields. A folder that runs here must also apply
    on kind, so the deploy validates the rendered manifests the way the kind backend does
    (raising ClusterError) and returns its warnings (an image the node does not have, an
    emulator listening on 127.0.0.1)."""
    from lab.cluster import kind, manifests

    if not any((manifests_dir / n).is_file() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        return [f"{manifests_dir}: no kustomization.yaml. The simulator reads every *.yaml here, but "
                "'kubectl apply -k' on kind needs one listing them (copy the course's and edit its resources)"]
    docs = manifests.load_documents(manifests.render(manifests_dir)[0])
    problems = kind.validation_problems(manifests_dir, docs)
    if problems:
        raise ClusterError("the manifests do not validate (kind would refuse them too); nothing was deployed:\n  "
                           + "\n  ".join(problems))
    return kind.deploy_warnings(docs)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


class SimBackend(ClusterBackend):
    name = "sim"

    def __init__(self, *, store: StateStore | None = None, factory: SimulationFactory | None = None,
                 clock: Callable[[], float] = time.time, until_s: float | None = None,
                 advance_s: float | None = None, check: Callable[[Path], list[str]] = check_like_kind,
                 say: Callable[[str], None] = _to_stderr):
        self.store = store or StateStore()
        self.factory = factory or default_factory
        self.check = check  # deploy: refuses invalid manifests, returns warnings
        self.say = say  # warnings and notes, apart from the status on stdout
        self.clock = clock
        self.until_s = until_s
        self.advance_s = advance_s

    # -- state ------------------------------------------------------------------------------------

    def _state(self) -> SimState:
        state = self.store.load()
        if state is None:
            raise ClusterError(
                f"nothing deployed in the simulated cluster ({self.store.path} does not exist); "
                "run: servelab cluster deploy"
            )
        return state

    def _clock_s(self, state: SimState) -> float:
        if state.speed is None:
            return state.now_s
        return max(state.now_s, (self.clock() - state.deployed_wall_s) * state.speed)

    def _replay(self, state: SimState) -> Simulation:
        manifests = Path(state.manifests)
        if not manifests.is_dir():
            raise ClusterError(f"{manifests}: the deployed manifests folder is gone; deploy again")
        sim = self.factory(manifests, state.seed, list(state.faults))
        for action in state.actions:
            sim.advance(action.t_s)
            _apply(sim, action)
        return sim

    def _run_on(self, sim: Simulation, state: SimState, start_s: float, *, settle: bool) -> None:
        """Move the clock: to --until, by --advance, to the settling point, or (wall mode) to now."""
        if self.until_s is not None:
            target = self.until_s
        elif self.advance_s is not None:
            target = start_s + self.advance_s
        elif state.speed is not None or not settle:
            target = start_s
        else:
            target = None
        if target is not None:
            if target < start_s:
                raise ClusterError(
                    f"--until: {clock_text(target)} is before the simulated clock ({clock_text(start_s)}); "
                    "time only moves forward. Use --advance to move on from now, or deploy again to start over."
                )
            sim.advance(target)
        else:
            sim.advance(start_s)
            sim.settle(start_s + SETTLE_CAP_S)
        state.now_s = max(state.now_s, sim.now_s())

    def _act(self, action: str, arg: str | None = None, *, settle: bool = True) -> ClusterStatus:
        state = self._state()
        sim = self._replay(state)
        now = self._clock_s(state)
        sim.advance(now)
        before = sim.status()
        record = Action(t_s=now, action=action, arg=arg)
        _apply(sim, record)
        # A fault always counts (it acts later). Retry acts on an abort alone: were it to abort
        # again at once, nothing would look moved.
        if action == "fault":
            idle = False
        elif action == "retry":
            idle = not before.aborted
        else:
            idle = _where(sim.status()) == _where(before)
        if idle:
            # As the plugin, a verb with nothing to act on changes nothing; unlike the plugin's
            # silence, say so, and keep it out of the replayed log.
            self.say(f"note: {action} changed nothing: {_why_nothing(action, before.phase)}")
        else:
            state.actions.append(record)
        # A verb that did nothing leaves the clock where it is too (retry in a timed pause must not
        # run the rollout on to its end); --until and --advance still move it, as for status.
        self._run_on(sim, state, now, settle=settle and not idle)
        self.store.save(state)
        return sim.status()

    # -- the verbs --------------------------------------------------------------------------------

    def preflight(self) -> list[Check]:
        checks = [Check("simulator", True, "embedded in ServeLab; nothing to install")]
        try:
            self.store.path.parent.mkdir(parents=True, exist_ok=True)
            checks.append(Check("state folder", True, str(self.store.path.parent)))
        except OSError as exc:
            checks.append(Check("state folder", False, f"{self.store.path.parent}: {exc}",
                                "Set SERVELAB_STATE_DIR to a folder you can write."))
        return checks

    def up(self) -> str:
        return "The simulated cluster needs no setting up; deploy with: servelab cluster deploy"

    def deploy(self, manifests_dir: Path, *, seed: int = 0, speed: float | None = None,
               faults: list[str] | None = None) -> ClusterStatus:
        if speed is not None and not speed > 0:
            raise ClusterError(f"--speed: expected simulated seconds per wall second > 0, got {speed:g}")
        manifests_dir = Path(manifests_dir).resolve()
        state = SimState(manifests=str(manifests_dir), seed=seed, speed=speed,
                         deployed_wall_s=self.clock(), faults=list(faults or []))
        sim = self.factory(manifests_dir, seed, list(state.faults))  # checks manifests and faults
        warnings = self.check(manifests_dir)
        self._run_on(sim, state, 0.0, settle=speed is None)
        self.store.save(state)
        for warning in warnings + getattr(sim, "warnings", list)():
            self.say(f"warning: {warning}")
        return sim.status()

    def status(self) -> ClusterStatus:
        state = self._state()
        sim = self._replay(state)
        now = self._clock_s(state)
        self._run_on(sim, state, now, settle=False)
        if self.until_s is not None or self.advance_s is not None:
            self.store.save(state)
        return sim.status()

    def promote(self, full: bool = False) -> ClusterStatus:
        return self._act("promote-full" if full else "promote")

    def abort(self) -> ClusterStatus:
        return self._act("abort")

    def retry(self) -> ClusterStatus:
        return self._act("retry")

    def undo(self) -> ClusterStatus:
        return self._act("undo")

    def set_fault(self, spec: str) -> ClusterStatus:
        return self._act("fault", spec)

    def down(self) -> str:
        if self.store.clear():
            return f"Simulated cluster removed ({self.store.path} deleted)."
        return "Nothing was deployed in the simulated cluster."


def _apply(sim: Simulation, action: Action) -> None:
    if action.action == "promote":
        sim.promote(full=False)
    elif action.action == "promote-full":
        sim.promote(full=True)
    elif action.action == "abort":
        sim.abort()
    elif action.action == "retry":
        sim.retry()
    elif action.action == "undo":
        sim.undo()
    elif action.action == "fault":
        sim.set_fault(str(action.arg))
    else:
        raise ClusterError(f"unknown action {action.action!r} in the sim cluster state")


def _where(status: ClusterStatus) -> tuple:
    """What a promote, abort or undo changes; equal before and after means it did nothing."""
    return (status.phase, status.current_step_index, status.canary_weight, status.aborted, status.message)


def _why_nothing(action: str, phase: str) -> str:
    if action == "retry":
        return (f"the rollout is {phase}, not aborted, and retry only restarts an aborted one "
                "(kind's retry sends its patch all the same, and it changes nothing there either).")
    if phase == "Healthy":
        return ("the rollout is Healthy, with no canary in progress. Deploy again to start one "
                "(the simulated cluster takes every deploy as a new revision).")
    if phase == "Degraded":
        return ("the rollout was aborted (Degraded). Start its steps again with 'servelab cluster retry', "
                "go back to the stable revision with 'servelab cluster undo', or deploy again.")
    return f"the rollout is {phase} and {action} does not apply there."


def status_dict(status: ClusterStatus) -> dict[str, Any]:
    return status.to_dict()
