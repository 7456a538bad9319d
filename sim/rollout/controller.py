"""The rollout controller: Argo Rollouts' canary steps on a simulated clock.

:class:`RolloutSimulation` is stepwise, for an interactive cluster: ``advance(until_s)``,
``promote(full=False)``, ``abort()``, ``undo()``, ``retry()``, ``status()``. It owns the fleet
(traffic and metrics) and the analysis runs. Time moves from event to event (a pause ends, a
measurement is due); before anything is decided at time t the fleet has scraped up to t.

Semantics (reference: argo-rollouts-analysis.md, sections 1, 2, 7, 8):

- ``setWeight`` completes at once: the router's weight is set and the canary scaled to
  ceil(replicas x w / 100). (Argo also waits for the pods to be ready; ours start instantly.)
- ``pause: {duration}`` waits, ``pause: {}`` waits for ``promote``; an ``analysis`` step waits
  for its run: Successful moves on, Failed or Error aborts, Inconclusive pauses.
- The background run starts when the step index reaches ``startingStep``; a Failed or Error
  aborts, Inconclusive pauses. It is terminated at full promotion.
- Abort: canary weight 0 at once, runs terminated, status Degraded, step index 0; the spec
  stays at the new version, so the canary pods are only scaled away (after
  abortScaleDownDelaySeconds).
- Undo and retry both leave the abort behind, as Argo's ``resetRolloutStatus`` and ``RemoveAbort``
  do (rollout/sync.go, rollout/pause.go): ``aborted`` false, no abort time or reason, no pause.
  Undo puts the stable revision's template back, so Argo skips every step ("Rollback to stable
  ReplicaSets": the step index becomes the number of steps) and the rollout is Healthy with no
  message. Retry restarts the steps from 0 on the new revision.
- Revisions are numbered as Argo numbers them (annotation ``rollout.argoproj.io/revision``): the
  stable one is ``revision - 1`` and the canary ``revision`` (2 after a first update). Undo moves
  the spec to the stable template, whose ReplicaSet Argo stamps with the next number
  (``SetNewReplicaSetAnnotations``: max + 1), so it adds one; retry keeps the same template and
  number. (A fault set here changes the running pods, not the template: no new revision. On kind
  a fault is a new template, so Argo numbers a new revision and starts a canary.)
- ``message`` is Argo's ``status.message`` (``CalculateRolloutPhase`` in
  utils/rollout/rolloututil.go): while a pause condition is on, its reason alone, so a pause step
  reads ``CanaryPauseStep`` whether it has a duration or waits for promote; aborted, it is the
  ``RolloutAborted`` condition (see :func:`abort_message`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.rollout.analysis import AnalysisRun, Phase, ProviderError
from sim.rollout.durations import format_duration
from sim.rollout.fleet import Fleet
from sim.rollout.loader import Manifests, ResolvedAnalysis

EPS = 1e-9
PAUSE_STEP = "CanaryPauseStep"  # Argo's PauseReasonCanaryPauseStep, shown as status.message
ANALYSIS_ABORT_HEAD = {"step": "Step-based", "background": "Background"}  # rollout/analysis.go


@dataclass(frozen=True)
class Event:
    t_s: float
    event: str
    weight: int
    kind: str = "info"  # info, step, analysis, abort, promote, pause, measurement

    def to_dict(self) -> dict:
        return {"t_s": round(self.t_s, 3), "event": self.event, "weight": self.weight}


@dataclass(frozen=True)
class MeasurementRecord:
    t_s: float
    run: str
    kind: str
    metric: str
    phase: str
    value: Any
    dry_run: bool


class RolloutSimulation:
    def __init__(self, manifests: Manifests, fleet: Fleet, provider, *, abort_at_s: float | None = None,
                 revision: int = 2):
        if revision < 2:
            raise ValueError(f"revision (={revision}) must be >= 2: the canary's, after at least one stable revision")
        self.m = manifests
        self.fleet = fleet
        self.provider = provider
        self.now_s = 0.0
        self.steps = manifests.canary.steps
        self.step_index = 0
        self.weight = 0
        self.phase = "Progressing"  # Progressing, Paused, Healthy, Degraded
        self.message = ""
        self.aborted = False
        self.promoted = False
        self.aborted_at_s: float | None = None
        self.abort_reason: dict | None = None
        self.pause_until_s: float | None = None  # timed pause in progress
        self.pause_started = False
        self.paused_by_analysis = False
        self.step_run: AnalysisRun | None = None
        self.background_run: AnalysisRun | None = None
        self.runs: list[AnalysisRun] = []
        self.timeline: list[Event] = []
        self.measurements: list[MeasurementRecord] = []
        self.abort_at_s = abort_at_s
        self.revision = revision  # the spec's revision: the canary's until undo (see the module docstring)
        self.undone = False
        self._log("rollout started: new revision, 0% canary", "info")
        self._reconcile()

    # -- public verbs ---------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "t_s": self.now_s,
            "phase": self.phase,
            "message": self.message,
            "step_index": self.step_index,
            "num_steps": len(self.steps),
            "weight": self.weight,
            "canary_pods": self.fleet.canary_pods,
            "stable_pods": self.fleet.replicas,
            "promoted": self.promoted,
            "aborted": self.aborted,
            "revision": self.revision,
            "runs": [{"name": r.name, "kind": r.kind, "phase": r.phase.value, "message": r.message} for r in self.runs],
        }

    @property
    def finished(self) -> bool:
        return self.promoted or self.aborted or self.phase == "Healthy"

    def next_event_s(self) -> float | None:
        times = []
        if self.pause_until_s is not None and not self.paused_by_analysis:
            times.append(self.pause_until_s)
        for run in (self.step_run, self.background_run):
            if run is not None and not run.completed:
                d = run.due_s()
                if d is not None:
                    times.append(d)
        if self.abort_at_s is not None and not self.aborted:
            times.append(self.abort_at_s)
        return min(times) if times else None

    def advance(self, until_s: float) -> None:
        """Run the clock to ``until_s``, acting on every event on the way."""
        while True:
            nxt = self.next_event_s()
            if nxt is None or nxt > until_s + EPS:
                break
            nxt = max(nxt, self.now_s)
            self.fleet.advance_to(nxt)
            self.now_s = nxt
            if self.abort_at_s is not None and not self.aborted and self.abort_at_s <= nxt + EPS:
                self.abort_at_s = None
                self.abort(reason={"metric": None, "value": None, "analysis": "manual", "message": "aborted by hand"})
                continue
            self._measure()
            self._reconcile()
        self.fleet.advance_to(until_s)
        self.now_s = max(self.now_s, until_s)

    def run_to_completion(self, max_s: float = 48 * 3600.0) -> None:
        """Advance until Healthy, Degraded, an indefinite pause, or ``max_s``."""
        while not self.finished:
            nxt = self.next_event_s()
            if nxt is None or nxt > max_s:
                break
            self.advance(nxt)
        # Scrape up to the decision so the last interval's traffic is counted.
        self.fleet.advance_to(self.now_s)

    def promote(self, full: bool = False) -> None:
        if self.finished:  # aborted, promoted or undone: no step to move past
            return
        if full:
            self._log("promote --full: skipping the remaining steps and analysis", "promote")
            self._full_promotion(skip_analysis=True)
            return
        step = self.steps[self.step_index] if self.step_index < len(self.steps) else None
        self._log("promote: clearing the pause", "promote")
        if self.paused_by_analysis:
            self.paused_by_analysis = False
            if self.step_run is not None and self.step_run.phase is Phase.INCONCLUSIVE:
                self.step_run = None
                self.step_index += 1
        elif step is not None and (step.pause is not None or step.analysis is not None):
            if self.step_run is not None:
                self.step_run.terminate(self.now_s)
                self.step_run = None
            self.pause_until_s, self.pause_started = None, False
            self.step_index += 1
        self.phase, self.message = "Progressing", ""  # the pause condition is gone, and its message
        self._reconcile()

    def abort(self, reason: dict | None = None) -> None:
        # Nothing to abort once the canary is promoted or undone. Argo takes the abort all the
        # same and turns such a rollout Degraded (calculateRolloutConditions sets RolloutAborted
        # whenever status.abort is true); we leave it Healthy, since no traffic would move.
        if self.finished:
            return
        self.aborted = True
        self.aborted_at_s = self.now_s
        self.abort_reason = reason or {"metric": None, "value": None, "analysis": "manual", "message": "aborted by hand"}
        for run in (self.step_run, self.background_run):
            if run is not None:
                run.terminate(self.now_s)
        self.weight = 0
        # The canary pods stay until abortScaleDownDelaySeconds; with weight 0 they get no traffic.
        self.fleet.set_weight(0, canary_pods=0)
        self.step_index = 0
        self.pause_until_s, self.pause_started, self.paused_by_analysis = None, False, False
        self.phase = "Degraded"
        why = self.abort_reason.get("message", "")
        self.message = abort_message(self.revision, self.abort_reason)
        self._log(f"ABORT: {why}; canary weight -> 0, status Degraded", "abort")

    def undo(self) -> None:
        """``kubectl argo rollouts undo``: the spec goes back to the stable revision's template.

        Argo sees a pod template that is the stable ReplicaSet's, resets the status (abort
        removed, pause conditions cleared, analysis runs dropped) and skips every step: Healthy,
        with no message. An abort before it is forgotten, so a retry after it does nothing. The
        stable template becomes the newest revision (one more than the canary's).
        """
        if self.promoted:
            # Argo runs the steps again towards the older template (unless spec.rollbackWindow
            # covers it); we go straight back to it, its ReplicaSet being still up.
            self._log("undo: the previous revision is still kept (scaleDownDelaySeconds); back to it", "info")
            self.fleet.stable_is_new = False
        for run in (self.step_run, self.background_run):
            if run is not None:
                run.terminate(self.now_s)
        self.step_run = self.background_run = None
        self.weight = 0
        self.fleet.set_weight(0, canary_pods=0)
        self._clear_abort_and_pause()
        self.step_index = len(self.steps)  # Argo's "Rollback to stable ReplicaSets": steps skipped
        self.phase, self.message = "Healthy", ""
        if not self.undone:
            # Argo would take a second undo back to the canary's template (the second-highest
            # revision) and start it again; here it changes nothing, so the number stays.
            self.revision += 1
            self.undone = True
        self._log("undo: spec restored to the stable revision; steps skipped, status Healthy", "info")

    def set_faults(self, faults) -> None:
        """Replace the injected faults from now on (times still count from the rollout's start)."""
        from sim.rollout.faults import Fault, parse_fault

        parsed = tuple(f if isinstance(f, Fault) else parse_fault(f) for f in faults)
        self.fleet.faults = parsed
        self._log(f"faults set: {', '.join(f.spec for f in parsed) or 'none'}", "info")

    def retry(self) -> None:
        """``kubectl argo rollouts retry``: clears the abort, the steps restart from 0.

        The plugin sends ``{"status":{"abort":false}}`` whatever the rollout's state; on one that
        is not aborted the flag is false already and nothing changes, here as there. The
        revision stays: the template is the same.
        """
        if not self.aborted:
            return
        self._clear_abort_and_pause()
        self.phase, self.message = "Progressing", ""
        self.step_index = 0
        self.step_run = self.background_run = None
        self._log("retry: steps restart from 0", "info")
        self._reconcile()

    def _clear_abort_and_pause(self) -> None:
        """Argo's ``RemoveAbort`` and ``ClearPauseConditions``: what undo and retry both reset."""
        self.aborted = False
        self.aborted_at_s = self.abort_reason = None  # Argo clears status.abortedAt with the flag
        self.pause_until_s, self.pause_started, self.paused_by_analysis = None, False, False

    # -- the control loop -----------------------------------------------------------------------

    def _measure(self) -> None:
        for run in (self.background_run, self.step_run):
            if run is None or run.completed:
                continue
            due = run.due_s()
            if due is None or due > self.now_s + EPS:
                continue
            for spec, m in run.step(self.now_s, self._provider):
                self.measurements.append(
                    MeasurementRecord(self.now_s, run.name, run.kind, spec.name, m.phase.value, m.value, spec.dry_run)
                )
                if m.phase is not Phase.SUCCESSFUL:
                    shown = _show(m.value)
                    extra = f" ({m.message})" if m.message else ""
                    self._log(f"{run.kind} analysis {spec.name} = {shown}: {m.phase.value}{extra}", "measurement")
            if run.completed:
                self._log(f"{run.kind} analysis run {run.name}: {run.phase.value}"
                          + (f": {run.message}" if run.message else ""), "analysis")

    def _provider(self, query: str, at_s: float):
        return self.provider(query, at_s)

    def _reconcile(self) -> None:
        for _ in range(4 * len(self.steps) + 8):  # each pass makes progress or returns
            if self.aborted or self.promoted or self.phase == "Healthy":
                return
            if self._check_runs():
                return
            if self.paused_by_analysis:
                self.phase = "Paused"
                return
            bg = self.m.background
            start = (self.m.canary.analysis.startingStep or 0) if self.m.canary.analysis else 0
            if bg is not None and self.background_run is None and self.step_index >= start:
                self.background_run = self._start_run(bg, "background")
                continue
            if self.step_index >= len(self.steps):
                self._full_promotion(skip_analysis=False)
                return
            step = self.steps[self.step_index]
            if step.setWeight is not None:
                self.weight = step.setWeight
                self.fleet.set_weight(self.weight)
                self._log(f"step {self.step_index}: setWeight {self.weight} "
                          f"({self.fleet.canary_pods} canary pods, {self.fleet.replicas} stable)", "step")
                self.step_index += 1
                continue
            if step.pause is not None:
                if not self.pause_started:
                    self.pause_started = True
                    if step.pause.duration is None:
                        self.pause_until_s = None
                        self._log(f"step {self.step_index}: pause (until promoted)", "pause")
                    else:
                        self.pause_until_s = self.now_s + step.pause.duration
                        self._log(f"step {self.step_index}: pause {format_duration(step.pause.duration)}", "pause")
                if self.pause_until_s is not None and self.now_s + EPS >= self.pause_until_s:
                    # The duration is over: Argo removes the CanaryPauseStep condition, and its message.
                    self.pause_until_s, self.pause_started = None, False
                    self.phase, self.message = "Progressing", ""
                    self.step_index += 1
                    continue
                # Timed or not, Argo adds the CanaryPauseStep pause condition (reconcileCanaryPause)
                # and status.message is its reason.
                self.phase, self.message = "Paused", PAUSE_STEP
                return
            if step.analysis is not None:
                self.phase = "Progressing"
                if self.step_run is None:
                    self.step_run = self._start_run(self.m.step_analyses[self.step_index], "step")
                    self._measure()
                    continue
                if self.step_run.phase is Phase.SUCCESSFUL:
                    self.step_run = None
                    self.step_index += 1
                    continue
                return
        raise RuntimeError("rollout controller made no progress")  # a bug, never a user mistake

    def _check_runs(self) -> bool:
        """Act on finished runs; True when the rollout stops progressing (abort or pause)."""
        for run in (self.step_run, self.background_run):
            if run is None or not run.completed:
                continue
            if run.phase in (Phase.FAILED, Phase.ERROR):
                decided = run.deciding_metric()
                spec, value = decided if decided else (None, None)
                self.abort(
                    reason={
                        "metric": spec.name if spec else None,
                        "value": value,
                        "analysis": spec.template if spec else run.name,
                        "run": run.kind,
                        "message": run.message or f"AnalysisRun {run.name} {run.phase.value}",
                        # What a reader needs beside the value: the condition it was held to, and
                        # where the rollout stood (the step being run, the weight).
                        "phase": run.phase.value,
                        "condition": _condition(spec),
                        "step": self.step_index,
                        "weight": self.weight,
                    }
                )
                return True
            if run.phase is Phase.INCONCLUSIVE and not run.acknowledged:
                # Inconclusive pauses the rollout once; promote acknowledges it and goes on.
                run.acknowledged = True
                self.paused_by_analysis = True
                self.phase = "Paused"
                self.message = f"InconclusiveAnalysisRun: {run.message}"
                self._log(f"paused: {run.kind} analysis inconclusive ({run.message}); promote to go on", "pause")
                return True
        return False

    def _start_run(self, resolved: ResolvedAnalysis, kind: str) -> AnalysisRun:
        run = AnalysisRun(resolved.name, kind, resolved.metrics, self.now_s)
        self.runs.append(run)
        self._log(f"{kind} analysis run {resolved.name} started ({len(resolved.metrics)} metrics)", "analysis")
        return run

    def _full_promotion(self, skip_analysis: bool) -> None:
        for run in (self.step_run, self.background_run):
            if run is not None:
                run.terminate(self.now_s)
        if self.background_run is not None and self.background_run.phase in (Phase.FAILED, Phase.ERROR) and not skip_analysis:
            self._check_runs()
            return
        self.step_run = None
        self.weight = 100
        self.promoted = True
        self.fleet.promote_new_version()
        self.phase = "Healthy"
        self.message = ""
        delay = self.m.canary.scaleDownDelaySeconds
        keep = f"; old ReplicaSet kept {format_duration(delay)}" if delay else ""
        self._log(f"fully promoted: canary is the new stable at 100%{keep}", "promote")

    def _log(self, text: str, kind: str) -> None:
        self.timeline.append(Event(self.now_s, text, self.weight, kind))


def abort_message(revision: int, reason: dict | None) -> str:
    """Argo's ``status.message`` for an aborted rollout, word for word.

    ``calculateRolloutConditions`` (rollout/sync.go) writes the RolloutAborted condition as
    ``Rollout aborted update to revision N``, plus ``: <abort message>`` when the controller
    aborted it itself; ``CalculateRolloutPhase`` shows ``<reason>: <message>``. An analysis run's
    abort message (rollout/analysis.go) is ``Step-based analysis phase error/failed`` or
    ``Background analysis phase error/failed``, then ``: <run message>``. A manual abort
    (``kubectl argo rollouts abort``, our ``abort_at_s``) only sets ``status.abort``: no suffix.
    """
    message = f"RolloutAborted: Rollout aborted update to revision {revision}"
    head = ANALYSIS_ABORT_HEAD.get((reason or {}).get("run"))
    if head is None:
        return message
    why = (reason or {}).get("message") or ""
    return f"{message}: {head} analysis phase error/failed" + (f": {why}" if why else "")


def _condition(spec) -> str | None:
    """``successCondition: ...`` and/or ``failureCondition: ...`` of a metric, as written."""
    if spec is None:
        return None
    parts = [f"{name}: {expr.text}" for name, expr in (("successCondition", spec.success), ("failureCondition", spec.failure)) if expr]
    return "; ".join(parts) or None


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        value = value[0]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


class PromQLProvider:
    """Argo's Prometheus provider over the in-memory store (reference section 6)."""

    def __init__(self, store):
        self.store = store

    def __call__(self, query: str, at_s: float):
        from sim.promql.evaluate import PromQLError, instant_query

        try:
            res = instant_query(query, self.store, at_s)
        except PromQLError as exc:
            raise ProviderError(str(exc)) from None
        if res.kind == "scalar":
            return float(res.scalar)  # a scalar becomes a float, not a list
        return [float(v) for v in res.values()]
