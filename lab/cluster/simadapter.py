"""Glue between the sim backend and ``sim.rollout``'s :class:`RolloutSimulation`.

The rollout simulator is a library (no files, no printing); this adapter gives it the verbs
the sim backend replays and turns its status into a :class:`ClusterStatus`, the same record
the kind backend reads off a real Rollout.
"""

from __future__ import annotations

from pathlib import Path

from lab.cluster.base import ClusterError, ClusterStatus


class RolloutSimulationAdapter:
    def __init__(self, manifests_dir: Path, seed: int, faults: list[str]):
        from sim.rollout.api import create_simulation

        self.sim = create_simulation(manifests_dir, faults=tuple(faults), seed=seed)
        meta = self.sim.m.rollout.metadata
        self.name = f"{meta.namespace or 'default'}/{meta.name}"

    def advance(self, until_s: float) -> None:
        self.sim.advance(until_s)

    def settle(self, max_s: float) -> None:
        self.sim.run_to_completion(max_s=max_s)

    def now_s(self) -> float:
        return float(self.sim.now_s)

    def promote(self, full: bool = False) -> None:
        self.sim.promote(full=full)

    def abort(self) -> None:
        self.sim.abort()

    def retry(self) -> None:
        self.sim.retry()

    def undo(self) -> None:
        self.sim.undo()

    def set_fault(self, spec: str) -> None:
        """Add a fault from now on ('none' clears them all); its @START-END count from the deploy."""
        current = [f.spec for f in self.sim.fleet.faults]
        self.sim.set_faults([] if spec.strip() == "none" else current + [spec])

    def warnings(self) -> list[str]:
        """Analysis queries that read a metric no simulated pod exports.

        Such a query returns no series, so its metric fails (``len(result) > 0``) or errors
        (``result[0]``) at every measurement, and the rollout aborts for a reason that has
        nothing to do with the canary. Checked against the series the run has written so far.
        """
        import difflib

        exported = self.sim.fleet.store.names()
        if not exported:  # nothing scraped yet (deployed with --until 0)
            return []
        runs = [self.sim.m.background, *self.sim.m.step_analyses.values()]
        out, seen = [], set()
        for metric in (m for run in runs if run is not None for m in run.metrics):
            for name in _metric_names(metric.query):
                if name in exported or (metric.template, metric.name, name) in seen:
                    continue
                seen.add((metric.template, metric.name, name))
                close = difflib.get_close_matches(name, exported, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" The pods export: {', '.join(exported)}."
                out.append(
                    f"AnalysisTemplate {metric.template!r}, metric {metric.name!r}: the query reads "
                    f"{name!r}, which no pod exports, so it returns no data and the metric cannot pass.{hint}"
                )
        return out

    def status(self) -> ClusterStatus:
        s = self.sim.status()
        aborted = bool(s.get("aborted"))  # undo and retry clear it, as Argo does
        details = {
            "Pods": f"canary {s.get('canary_pods', 0)}, stable {s.get('stable_pods', 0)}",
            "Revision": str(s.get("revision")),  # as kind shows the Rollout's revision annotation
        }
        runs = s.get("runs") or []
        if runs:
            last = runs[-1]
            details["Last analysis"] = f"{last['name']} ({last['kind']}): {last['phase']}" + (
                f", {last['message']}" if last.get("message") else "")
        faults = [f.spec for f in getattr(self.sim.fleet, "faults", ())]
        if faults:
            details["Faults"] = ", ".join(faults)
        return ClusterStatus(
            backend="sim",
            rollout=self.name,
            phase=s["phase"],
            message=s.get("message", ""),
            current_step_index=s.get("step_index"),
            total_steps=s.get("num_steps", 0),
            canary_weight=int(s.get("weight", 0)),
            aborted=aborted,
            abort_reason=getattr(self.sim, "abort_reason", None) if aborted else None,
            t_s=float(s.get("t_s", 0.0)),
            timeline=[e.to_dict() for e in self.sim.timeline],
            details=details,
        )


def _metric_names(query: str) -> list[str]:
    """The metric names a PromQL query selects, in order of appearance."""
    import dataclasses

    from sim.promql import ast
    from sim.promql.parse import parse_query

    names: list[str] = []

    def walk(node) -> None:
        if isinstance(node, ast.Selector) and node.name and node.name not in names:
            names.append(node.name)
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                walk(getattr(node, f.name))
        elif isinstance(node, (tuple, list)):
            for item in node:
                walk(item)

    walk(parse_query(query))
    return names


def check_available() -> None:
    try:
        import sim.rollout.api  # noqa: F401
    except ImportError as exc:
        raise ClusterError(f"the rollout simulator is not available in this build ({exc})") from None
