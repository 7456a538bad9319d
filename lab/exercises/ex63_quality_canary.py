"""Check for exercise 6.3: a canary that rolls back when the LLM-judge quality score drops.

The student's ``rollout.yaml`` and ``analysis-template.yaml`` run, together with the course's
Services and VirtualService from ``manifests/``, in the rollout simulation (``sim.rollout``):
once with a healthy canary (it must promote) and once with the canary's judge score lowered by
0.15 (it must abort, on the quality metric, before full promotion).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lab.exercises import Finding
from lab.exercises.yaml_docs import load_docs
from sim.errors import ServeLabError

REPO = Path(__file__).resolve().parents[2]
COURSE_MANIFESTS = REPO / "manifests"
# The course objects the student's Rollout routes through; theirs are the Rollout and template.
ROUTING_FILES = ("namespace.yaml", "services.yaml", "virtualservice.yaml", "gateway.yaml")
QUALITY_FAULT = "quality=-0.15"
JUDGE_SERIES = "llm_judge_quality_score"
SEED = 0
RATE_RPS = 20.0


def assemble(folder: Path, into: Path) -> None:
    """The student's two files plus the course's routing objects, in one manifests folder."""
    for name in ("rollout.yaml", "analysis-template.yaml"):
        shutil.copy(folder / name, into / name)
    for name in ROUTING_FILES:
        if (COURSE_MANIFESTS / name).is_file():
            shutil.copy(COURSE_MANIFESTS / name, into / name)


def check(folder: Path, progress) -> tuple[list[Finding], dict]:
    from sim.rollout import simulate
    from sim.rollout.loader import load_manifests

    for name in ("rollout.yaml", "analysis-template.yaml"):
        _, problem = load_docs(folder / name)
        if problem:
            return [problem], {}
    findings: list[Finding] = []
    details: dict = {}
    with tempfile.TemporaryDirectory(prefix="servelab-6.3-") as tmp:
        assemble(folder, Path(tmp))
        try:
            manifests = load_manifests(tmp)
        except ServeLabError as exc:
            where, _, what = str(exc).partition(": ")
            return [Finding(False, what or str(exc), where if what else "rollout.yaml", "fix that field (see README.md)")], {}

        judged = _judge_metrics(manifests)
        if not judged:
            findings.append(
                Finding(
                    False,
                    f"no analysis the Rollout runs reads the judge's score ({JUDGE_SERIES}_sum / _count)",
                    "rollout.yaml: spec.strategy.canary.analysis",
                    "reference your AnalysisTemplate from spec.strategy.canary.analysis.templates (or an analysis "
                    f"step), and make its metric query the mean of {JUDGE_SERIES} for the canary Service",
                )
            )
            return findings, details
        names = ", ".join(f"{run}/{m.name}" for run, m in judged)
        live = [(run, m) for run, m in judged if not m.dry_run]
        if not live:
            findings.append(
                Finding(
                    False,
                    f"the judge metric(s) {names} are dryRun: they are measured but never decide",
                    "analysis-template.yaml: spec.dryRun",
                    "remove the metric from spec.dryRun so a failed measurement aborts the rollout",
                )
            )
            return findings, details
        findings.append(Finding(True, f"the Rollout runs the judge metric(s) {names}", "rollout.yaml"))
        quality_metrics = {m.name for _, m in live}

        progress("simulating the rollout with a healthy canary")
        healthy = simulate(manifests, faults=(), seed=SEED, rate=RATE_RPS)
        progress(f"simulating the rollout with the canary's quality lowered ({QUALITY_FAULT})")
        degraded = simulate(manifests, faults=(QUALITY_FAULT,), seed=SEED, rate=RATE_RPS)

    details["runs"] = [
        _summary("healthy canary", healthy, quality_metrics),
        _summary(f"canary with {QUALITY_FAULT}", degraded, quality_metrics),
    ]
    # 1. A healthy canary goes all the way.
    if healthy.promoted:
        findings.append(Finding(True, f"a healthy canary is promoted (status {healthy.status})", "rollout.yaml"))
    else:
        reason = healthy.abort_reason or {}
        metric, value = reason.get("metric"), reason.get("value")
        findings.append(
            Finding(
                False,
                f"a healthy canary was not promoted: status {healthy.status}"
                + (f", aborted at {_hm(healthy.aborted_at_s)} by {metric} = {_v(value)}" if healthy.aborted_at_s is not None else ""),
                f"analysis-template.yaml: spec.metrics[{metric}].successCondition" if metric else "rollout.yaml: spec.strategy.canary.steps",
                "the condition must hold for good answers: a healthy canary scores about "
                f"{_typical(healthy, quality_metrics)}; success means result[0] > 0.85 (and an empty result is a failure)",
            )
        )
    # 2. A quality drop rolls back, on the quality metric, before 100%.
    reason = degraded.abort_reason or {}
    if degraded.promoted or degraded.aborted_at_s is None:
        seen = _typical(degraded, quality_metrics)
        findings.append(
            Finding(
                False,
                f"the canary with its judge score lowered by 0.15 was not rolled back (status {degraded.status}); "
                f"your metric measured about {seen}",
                "analysis-template.yaml: spec.metrics[].successCondition",
                "the course's threshold is 0.85: a canary scoring below it must fail the measurement, "
                "with failureLimit 0 so one failure aborts",
            )
        )
    elif reason.get("metric") not in quality_metrics:
        findings.append(
            Finding(
                False,
                f"the quality drop was rolled back, but by {reason.get('metric')!r}, not by the judge metric",
                "analysis-template.yaml: spec.metrics",
                "make the judge metric the one that catches a quality drop",
            )
        )
    else:
        findings.append(
            Finding(
                True,
                f"a quality drop is rolled back at {_hm(degraded.aborted_at_s)} by {reason['metric']} = {_v(reason.get('value'))}, "
                f"with {degraded.requests.get('canary', 0):,} requests served by the canary",
                "analysis-template.yaml",
            )
        )
    return findings, details


def _judge_metrics(manifests) -> list[tuple[str, object]]:
    runs = []
    if manifests.background is not None:
        runs.append(("background", manifests.background))
    runs += [(f"step {i}", a) for i, a in sorted(manifests.step_analyses.items())]
    out = []
    for label, analysis in runs:
        for m in analysis.metrics:
            query = str(getattr(m, "query", "") or "")
            if JUDGE_SERIES in query:
                out.append((label, m))
    return out


def _summary(label: str, result, quality_metrics: set[str]) -> dict:
    values = [m["value"] for m in result.measurements if m["metric"] in quality_metrics and m["value"] is not None]
    return {
        "run": label,
        "status": result.status,
        "promoted": result.promoted,
        "aborted_at_s": result.aborted_at_s,
        "abort_metric": (result.abort_reason or {}).get("metric"),
        "judge_scores": ", ".join(f"{v:.3f}" for v in values) or "none",
        "canary_requests": result.requests.get("canary", 0),
    }


def _typical(result, quality_metrics: set[str]) -> str:
    values = [m["value"] for m in result.measurements if m["metric"] in quality_metrics and isinstance(m["value"], (int, float))]
    return f"{sum(values) / len(values):.2f}" if values else "nothing (no measurement had a value)"


def _hm(t_s: float | None) -> str:
    if t_s is None:
        return "-"
    t = int(round(t_s))
    return f"{t // 3600}h{t % 3600 // 60:02d}m"


def _v(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else repr(value)
