"""One interface for the clusters the course's manifests run on.

A backend deploys a manifests folder and then follows and steers the Argo Rollout in it, the
way ``kubectl argo rollouts`` does: ``status``, ``promote`` (``--full``), ``abort``, ``retry``,
``undo``.
``set_fault`` makes the canary misbehave (ServeLab's fault SPEC, see DESIGN.md), so the
analysis has something to catch. Two backends implement it: ``sim`` (the simulator, the
default) and ``kind`` (a real local Kubernetes in Docker).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import ServeLabError


class ClusterError(ServeLabError):
    """A cluster that is missing, refused (not a kind context) or in the wrong state."""


@dataclass(frozen=True)
class Check:
    """One preflight finding: a program, its version, and what to do when it is missing."""

    name: str
    ok: bool
    detail: str  # the version found, or what is wrong
    fix: str = ""  # what to install and how, when not ok
    required: bool = True

    def render(self) -> str:
        mark = "ok  " if self.ok else ("MISSING" if self.required else "warn")
        line = f"[{mark}] {self.name}: {self.detail}"
        if not self.ok and self.fix:
            line += "\n" + "\n".join("         " + part for part in self.fix.splitlines())
        return line


@dataclass(frozen=True)
class ClusterStatus:
    """Where the course's Rollout stands, in Argo's words (``status.phase`` and friends)."""

    backend: str
    rollout: str  # namespace/name
    phase: str  # Healthy, Progressing, Paused, Degraded; or NotDeployed
    message: str = ""
    current_step_index: int | None = None
    total_steps: int = 0
    canary_weight: int = 0
    aborted: bool = False
    abort_reason: dict[str, Any] | None = None
    t_s: float | None = None  # simulated seconds since the deploy (sim backend only)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        step = "-" if self.current_step_index is None else f"{self.current_step_index}/{self.total_steps}"
        lines = [
            f"Name:          {self.rollout}",
            f"Backend:       {self.backend}",
            f"Status:        {self.phase}" + (f" ({self.message})" if self.message else ""),
            f"Step:          {step}",
            f"Canary weight: {self.canary_weight}%",
        ]
        if self.t_s is not None:
            lines.append(f"Sim time:      {clock_text(self.t_s)}")
        if self.abort_reason:
            lines.append(f"Abort reason:  {_reason(self.abort_reason)}")
        for key, value in self.details.items():
            lines.append(f"{key + ':':<15}{value}")
        if self.timeline:
            lines.append("Timeline:")
            if len(self.timeline) > 15:
                earlier = len(self.timeline) - 15
                lines.append(f"  ({earlier} earlier event{'s' if earlier > 1 else ''}; --json lists them all)")
            for row in self.timeline[-15:]:
                lines.append(f"  {clock_text(float(row.get('t_s', 0))):>9}  w={row.get('weight', '?'):>3}  {row.get('event', '')}")
        return "\n".join(lines)


def _reason(reason: dict[str, Any]) -> str:
    """``{metric, value, analysis, message}`` as one line."""
    text = str(reason.get("message") or "")
    if reason.get("metric"):
        value = reason.get("value")
        if value is None or value == []:
            # Argo's `result` is empty when the query matched no series; then `result[0]` fails
            # or `len(result) > 0` is false, and the message alone does not say why.
            shown = "no value: did the query match any series? (a misspelt metric or label name matches none)"
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else value
        text += f" [{reason['metric']} = {shown}, analysis {reason.get('analysis')}]"
    return text or str(reason)


def clock_text(t_s: float) -> str:
    t = int(round(t_s))
    return f"{t // 3600}h{t % 3600 // 60:02d}m{t % 60:02d}s"


class ClusterBackend(abc.ABC):
    """What every cluster backend does. Each verb returns what it did, as text for the CLI."""

    name: str = ""

    @abc.abstractmethod
    def preflight(self) -> list[Check]:
        """What this backend needs on this machine, each as a :class:`Check`."""

    @abc.abstractmethod
    def up(self) -> str:
        """Create the cluster and install what the manifests need (idempotent)."""

    @abc.abstractmethod
    def deploy(self, manifests_dir: Path) -> ClusterStatus:
        """Apply the manifests folder; a changed Rollout template starts a canary."""

    @abc.abstractmethod
    def status(self) -> ClusterStatus:
        """The Rollout now."""

    @abc.abstractmethod
    def promote(self, full: bool = False) -> ClusterStatus:
        """Move past the current pause or analysis step; ``full`` skips every remaining step."""

    @abc.abstractmethod
    def abort(self) -> ClusterStatus:
        """Send all traffic back to stable (the Rollout turns Degraded)."""

    @abc.abstractmethod
    def retry(self) -> ClusterStatus:
        """Clear an abort: the steps start again from 0 (nothing to do when not aborted)."""

    @abc.abstractmethod
    def undo(self) -> ClusterStatus:
        """Restore the previous revision's pod template."""

    @abc.abstractmethod
    def set_fault(self, spec: str) -> ClusterStatus:
        """Make the canary (or stable) misbehave, from a fault SPEC."""

    @abc.abstractmethod
    def down(self) -> str:
        """Delete the cluster (kind) or forget the state (sim)."""
