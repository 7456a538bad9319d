"""The course exercises 6.1 to 6.4 and their automatic checks.

Each exercise lives in ``exercises/<id>/`` (README.md, ``starter/``, ``solution/``) and has one
check module here. A check reads a folder of the student's files and returns a
:class:`CheckResult`: a list of findings, each saying what was checked, where (file and YAML
path), and, when it failed, what to do. The command line (``servelab exercise``) and the lab's
Exercises page print the same findings.

A check raises :class:`sim.errors.ServeLabError` only for a usage mistake (the folder does not
exist); everything wrong *inside* the student's files is a failed finding, never an exception.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sim.errors import ServeLabError

# The repository's exercises/ folder: the package is used from a checkout (`pip install -e .`);
# SERVELAB_EXERCISES_DIR points elsewhere (a course copy of the folder).
EXERCISES_DIR = Path(os.environ.get("SERVELAB_EXERCISES_DIR") or Path(__file__).resolve().parents[2] / "exercises")


@dataclass(frozen=True)
class Finding:
    """One thing the check looked at."""

    ok: bool
    what: str  # what was checked, or what is wrong, in one sentence
    where: str = ""  # "file" or "file: YAML.path" or "file:line"
    fix: str = ""  # what to do (failed findings only)
    info: bool = False  # a figure to show, neither pass nor fail

    def lines(self) -> list[str]:
        tag = "info" if self.info else ("PASS" if self.ok else "FAIL")
        head = f"{tag:>4}  {self.where + ': ' if self.where else ''}{self.what}"
        out = [head]
        if self.fix and not self.ok:
            out.append(f"      fix: {self.fix}")
        return out


@dataclass(frozen=True)
class CheckResult:
    exercise_id: str
    path: str
    findings: tuple[Finding, ...]
    # Figures and tables for the lab (plain JSON-able values): comparison tables, series.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def report(self) -> str:
        checks = [f for f in self.findings if not f.info]
        lines = [f"exercise {self.exercise_id}: checking {self.path}"]
        for f in self.findings:
            lines.extend("  " + line for line in f.lines())
        if self.passed:
            lines.append(f"result: PASS ({len(checks)} checks passed)")
        else:
            lines.append(f"result: FAIL ({len(self.failures)} of {len(checks)} checks failed)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    module: str  # the check module, imported on first use
    files: tuple[str, ...]  # the files a student hands in, relative to their folder

    @property
    def folder(self) -> Path:
        return EXERCISES_DIR / self.id

    @property
    def starter(self) -> Path:
        return self.folder / "starter"

    @property
    def solution(self) -> Path:
        return self.folder / "solution"

    def readme(self) -> str:
        return (self.folder / "README.md").read_text(encoding="utf-8")

    def check(self, path: str | Path, *, progress: Callable[[str], None] | None = None) -> CheckResult:
        path = Path(path)
        if not path.is_dir():
            raise ServeLabError(
                f"--path: {path} is not a folder; point it at the folder that holds "
                f"{', '.join(self.files)} (for example {self.starter})"
            )
        run = importlib.import_module(self.module).check
        findings, details = run(path, progress=progress or (lambda _msg: None))
        return CheckResult(self.id, str(path), tuple(findings), details)


EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in (
        Exercise(
            "6.1",
            "Scale the workers on Redis queue depth",
            "lab.exercises.ex61_queue_scaling",
            ("scaledobject.yaml",),
        ),
        Exercise(
            "6.2",
            "Route code generation to the large model, summarization to the small one",
            "lab.exercises.ex62_routing",
            ("router.py",),
        ),
        Exercise(
            "6.3",
            "A canary that rolls back when the LLM-judge quality score drops",
            "lab.exercises.ex63_quality_canary",
            ("rollout.yaml", "analysis-template.yaml"),
        ),
        Exercise(
            "6.4",
            "vLLM with tensor parallelism across 2 GPUs",
            "lab.exercises.ex64_tensor_parallel",
            ("deployment.yaml", "report.yaml"),
        ),
    )
}


def get_exercise(exercise_id: str) -> Exercise:
    try:
        return EXERCISES[exercise_id]
    except KeyError:
        known = ", ".join(EXERCISES)
        raise ServeLabError(
            f"exercise {exercise_id!r} does not exist; the exercises are {known} "
            "(run 'servelab exercise list')"
        ) from None
