"""Run traces through vLLM (in .venv-vllm) and ServeLab, and compare them step by step.

Runs in ServeLab's own Python (not in the reference venv). Used by
tests/test_vllm_reference.py and benchmarks/vllm_match.py:

    loaded by file path (importlib), see tests/test_vllm_reference.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
DRIVER = Path(__file__).resolve().parent / "driver.py"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
MARKER = ROOT / ".venv-vllm" / ".servelab-vllm-reference-complete"

# The fields of a step record that must agree, in the order a mismatch is reported.
COMPARED_FIELDS = (
    "aborted",
    "scheduled",
    "preempted",
    "new",
    "resumed",
    "cached_tokens",
    "finished",
    "finish_reasons",
    "kv_free_blocks_after_schedule",
    "kv_free_blocks",
    "kv_usage",
    "prefix_queries",
    "prefix_hits",
    "preempted_prefix_queries",
    "preempted_prefix_hits",
    "num_running",
    "num_waiting",
)


def pinned_vllm_version() -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        if line.startswith("vllm=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError(f"{REQUIREMENTS} has no vllm== line")


def reference_venv_ready() -> bool:
    return VENV_PYTHON.exists() and MARKER.exists()


def run_vllm(traces: list[dict[str, Any]], *, timeout_s: float = 900) -> dict[str, Any]:
    """All traces through vLLM's scheduler in ONE subprocess of the reference venv."""
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", VLLM_LOGGING_LEVEL="ERROR")
    proc = subprocess.run(
        [str(VENV_PYTHON), str(DRIVER), "-"],
        input=json.dumps({"traces": traces}),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{DRIVER.name} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout)


@dataclass
class TraceComparison:
    name: str
    num_steps: int  # the longer of the two step lists
    num_equal_steps: int
    first_mismatch: dict[str, Any] | None = None  # {step, fields: {name: (vllm, servelab)}}
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.first_mismatch is None and not self.notes


def compare_trace(name: str, vllm: dict[str, Any], servelab: dict[str, Any]) -> TraceComparison:
    """Step-by-step comparison of one trace's decisions (vLLM's result against ServeLab's)."""
    notes = []
    if vllm.get("error"):
        notes.append(f"vLLM driver error: {vllm['error']}")
    if servelab.get("error"):
        notes.append(f"ServeLab replay error: {servelab['error']}")
    for key in ("rejected", "stalled"):
        if not notes and vllm.get(key) != servelab.get(key):
            notes.append(f"{key}: vLLM {vllm.get(key)!r}, ServeLab {servelab.get(key)!r}")
    v_steps = vllm.get("steps") or []
    s_steps = servelab.get("steps") or []
    equal = 0
    first = None
    for i in range(max(len(v_steps), len(s_steps))):
        v = v_steps[i] if i < len(v_steps) else None
        s = s_steps[i] if i < len(s_steps) else None
        diff = _step_diff(v, s)
        if diff:
            if first is None:
                first = {
                    "index": i,
                    "step": (v or s or {}).get("step"),
                    "fields": diff,
                }
        else:
            equal += 1
    return TraceComparison(
        name=name,
        num_steps=max(len(v_steps), len(s_steps)),
        num_equal_steps=equal,
        first_mismatch=first,
        notes=notes,
    )


def _step_diff(v: dict | None, s: dict | None) -> dict[str, tuple[Any, Any]]:
    if v is None or s is None:
        return {"present": (v is not None, s is not None)}
    out = {}
    for key in ("step",) + COMPARED_FIELDS:
        if v.get(key) != s.get(key):
            out[key] = (v.get(key), s.get(key))
    return out


@dataclass
class MatchSummary:
    comparisons: list[TraceComparison]

    @property
    def steps_total(self) -> int:
        return sum(c.num_steps for c in self.comparisons)

    @property
    def steps_equal(self) -> int:
        return sum(c.num_equal_steps for c in self.comparisons)

    @property
    def traces_identical(self) -> int:
        return sum(c.identical for c in self.comparisons)

    def line(self) -> str:
        n = len(self.comparisons)
        st, se = self.steps_total, self.steps_equal
        return (
            f"vLLM match: {se}/{st} steps identical ({100 * se / max(st, 1):.2f}%), "
            f"{self.traces_identical}/{n} traces fully identical "
            f"({100 * self.traces_identical / max(n, 1):.2f}%)"
        )

    def describe_mismatches(self, limit: int = 10) -> str:
        lines = []
        for c in [c for c in self.comparisons if not c.identical][:limit]:
            lines.append(f"- {c.name}: {c.num_equal_steps}/{c.num_steps} steps equal")
            lines.extend(f"    {note}" for note in c.notes)
            if c.first_mismatch:
                fm = c.first_mismatch
                lines.append(f"    first mismatch at step {fm['step']} (#{fm['index']}):")
                for key, (v, s) in fm["fields"].items():
                    lines.append(f"      {key}: vLLM {v!r}  ServeLab {s!r}")
        return "\n".join(lines)


def compare_all(
    traces: list[dict[str, Any]], vllm_doc: dict[str, Any], servelab_results: list[dict[str, Any]]
) -> MatchSummary:
    results = vllm_doc["results"]
    if len(results) != len(traces) or len(servelab_results) != len(traces):
        raise RuntimeError(
            f"{len(traces)} traces but {len(results)} vLLM and {len(servelab_results)} ServeLab results"
        )
    return MatchSummary(
        [
            compare_trace(t.get("name", f"trace{i}"), v, s)
            for i, (t, v, s) in enumerate(zip(traces, results, servelab_results))
        ]
    )


if __name__ == "__main__":  # pragma: no cover - a convenience, see benchmarks/vllm_match.py
    print(pinned_vllm_version(), reference_venv_ready(), file=sys.stderr)
