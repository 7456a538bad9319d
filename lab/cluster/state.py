"""The sim backend's memory between commands: a seed and a log of timed actions.

``servelab cluster deploy`` then ``status`` then ``promote`` are separate processes. Rather
than pickling a simulation, the state file records what was asked and when (in simulated
seconds since the deploy); every command rebuilds the simulation from the manifests and the
seed, and replays the log. The simulator is deterministic, so the replay lands exactly where
the last command left off, and the file stays small and readable.

The file is ``$SERVELAB_STATE_DIR/cluster-sim.json`` (default ``~/.servelab/``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.cluster.base import ClusterError

STATE_VERSION = 1


def state_dir() -> Path:
    return Path(os.environ.get("SERVELAB_STATE_DIR") or Path.home() / ".servelab")


@dataclass
class Action:
    t_s: float  # simulated seconds since the deploy
    action: str  # promote, promote-full, abort, undo, fault
    arg: str | None = None  # the fault SPEC


@dataclass
class SimState:
    manifests: str  # absolute path of the manifests folder
    seed: int = 0
    speed: float | None = None  # None: accelerated (the clock moves only when asked); else sim s per wall s
    deployed_wall_s: float = 0.0  # time.time() at the deploy, for the wall-clock mode
    now_s: float = 0.0  # the sim clock after the last command (accelerated mode)
    faults: list[str] = field(default_factory=list)  # faults given at deploy
    actions: list[Action] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "SimState":
        try:
            raw: dict[str, Any] = json.loads(text)
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {STATE_VERSION}")
            raw["actions"] = [Action(**a) for a in raw.get("actions", [])]
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise ClusterError(
                f"{where}: unreadable sim cluster state ({exc}). Remove it with "
                "'servelab cluster down' (or delete the file) and deploy again."
            ) from None


class StateStore:
    def __init__(self, directory: Path | None = None):
        self.path = (directory or state_dir()) / "cluster-sim.json"

    def load(self) -> SimState | None:
        if not self.path.is_file():
            return None
        return SimState.from_json(self.path.read_text(), str(self.path))

    def save(self, state: SimState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interrupted command never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cluster-sim.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(state.to_json())
        os.replace(tmp, self.path)

    def clear(self) -> bool:
        if self.path.is_file():
            self.path.unlink()
            return True
        return False
