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
            return [Finding(False, what or str(exc), where if what else "rollout.yaml", _manifest_fix(what))], {}

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
        blind = [m for _, m in live if m.success is None and m.failure is None]
        if blind:
            findings.append(
                Finding(
                    False,
                    f"metric {blind[0].name!r} has neither successCondition nor failureCondition, so Argo counts "
                    "every measurement Successful and nothing can roll back",
                    f"analysis-template.yaml: spec.metrics[{blind[0].name}].successCondition",
                    "add successCondition: len(result) > 0 && result[0] > 0.85",
                )
            )
            return findings, details
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
        findings.append(_healthy_not_promoted(healthy, quality_metrics))
    # 2. The analysis watches from the first step with traffic.
    late = _late_start(manifests)
    if late:
        findings.append(late)
    # 3. A quality drop rolls back, on a low score of the quality metric, at its first failure.
    findings.append(_degraded_finding(degraded, quality_metrics))
    return findings, details


def _manifest_fix(message: str) -> str:
    """What to change for a manifest the loader refused, where its message says enough."""
    if "not found (defined:" in message:
        defined = message.rsplit("(defined: ", 1)[1].rstrip(")")
        return (f"use the name of an AnalysisTemplate that exists ({defined}: its metadata.name in "
                "analysis-template.yaml), or rename the template to match")
    if "expected a duration" in message:
        return "write the duration with its unit, as Argo does: 30s, 10m or 1h (a bare number is refused)"
    return "fix that field (see README.md)"


def _healthy_not_promoted(result, quality_metrics: set[str]) -> Finding:
    """Why a healthy canary was stopped: a query error, no data, a wrong query or a wrong condition."""
    reason = result.abort_reason or {}
    metric, value = reason.get("metric"), reason.get("value")
    head = f"a healthy canary was not promoted: status {result.status}"
    if result.aborted_at_s is None:
        return Finding(False, head, "rollout.yaml: spec.strategy.canary.steps", "every pause needs a duration, so the steps end by themselves")
    head += f", aborted at {_hm(result.aborted_at_s)} by {metric}"
    path = f"analysis-template.yaml: spec.metrics[{metric}]"
    if reason.get("phase") == "Error":
        return Finding(
            False,
            f"{head}, which could not be evaluated: {reason.get('message')}",
            f"{path}.successCondition",
            "Argo's result is a list: compare result[0], not result; and test the query's syntax "
            "(servelab rollout simulate --manifests <folder> shows each measurement)",
        )
    if value is None:
        return Finding(
            False,
            f"{head}, whose query returned no value (an empty result or NaN)",
            f"{path}.initialDelay",
            "the first measurement runs as soon as the analysis starts, before the judge has scored any "
            "canary answer in the window: add initialDelay: 30m; if that is set, check the metric name "
            f"and the service label in the query ({JUDGE_SERIES}_sum / _count)",
        )
    true_mean = _judge_mean(result)
    if true_mean is not None and abs(value - true_mean) > 0.02:
        return Finding(
            False,
            f"{head}: your query measured {_v(value)}, but the canary's mean judge score over the last 30 minutes "
            f"was {true_mean:.3f}",
            f"{path}.provider.prometheus.query",
            f"the mean score is the rate of {JUDGE_SERIES}_sum divided by the rate of {JUDGE_SERIES}_count, "
            "both for the canary Service over the same window",
        )
    return Finding(
        False,
        f"{head} = {_v(value)}",
        f"{path}.successCondition",
        "the condition must hold for good answers: a healthy canary scores about "
        f"{_typical(result, quality_metrics)}; success means result[0] > 0.85 (and an empty result is a failure)",
    )


def _late_start(manifests) -> Finding | None:
    """A background analysis that starts after the canary first took traffic leaves it unwatched."""
    analysis = manifests.canary.analysis
    if analysis is None:
        return None
    first = next((i for i, st in enumerate(manifests.canary.steps) if st.setWeight), None)
    start = analysis.startingStep or 0
    if first is None or start <= first + 1:
        return None
    return Finding(
        False,
        f"the background analysis starts at step {start}, but the canary takes traffic from step {first} "
        f"(setWeight {manifests.canary.steps[first].setWeight}): nobody judges it until then",
        "rollout.yaml: spec.strategy.canary.analysis.startingStep",
        f"set startingStep: {first + 1}, the step after the first setWeight",
    )


def _degraded_finding(result, quality_metrics: set[str]) -> Finding:
    reason = result.abort_reason or {}
    judged = [m for m in result.measurements if m["metric"] in quality_metrics and not m["dry_run"]]
    if result.promoted or result.aborted_at_s is None:
        return Finding(
            False,
            f"the canary with its judge score lowered by 0.15 was not rolled back (status {result.status}); "
            f"your metric measured about {_typical(result, quality_metrics)}",
            "analysis-template.yaml: spec.metrics[].successCondition",
            "the course's threshold is 0.85: a canary scoring below it must fail the measurement, "
            "with failureLimit 0 so one failure aborts",
        )
    if reason.get("metric") not in quality_metrics:
        return Finding(
            False,
            f"the quality drop was rolled back, but by {reason.get('metric')!r}, not by the judge metric",
            "analysis-template.yaml: spec.metrics",
            "make the judge metric the one that catches a quality drop",
        )
    if reason.get("phase") == "Error" or reason.get("value") is None:
        return Finding(
            False,
            f"the quality drop was rolled back at {_hm(result.aborted_at_s)}, but not on a low score: "
            + ("the metric could not be evaluated" if reason.get("phase") == "Error" else "the query returned no value"),
            "analysis-template.yaml: spec.metrics",
            "make the healthy run pass first (see the finding above); a rollback must come from a measured score below 0.85",
        )
    first_failed = next((m for m in judged if m["phase"] == "Failed"), None)
    if first_failed is not None and first_failed["t_s"] < result.aborted_at_s:
        n = sum(1 for m in judged if m["phase"] == "Failed")
        return Finding(
            False,
            f"your judge metric first failed at {_hm(first_failed['t_s'])} ({_v(first_failed['value'])}), but the rollout "
            f"was aborted only at {_hm(result.aborted_at_s)}, after {n} failed measurements; the canary served "
            f"{result.requests.get('canary', 0):,} requests by then",
            f"analysis-template.yaml: spec.metrics[{reason['metric']}].failureLimit",
            "set failureLimit: 0 (the default): one bad score is enough to roll back a quality drop",
        )
    return Finding(
        True,
        f"a quality drop is rolled back at {_hm(result.aborted_at_s)} by {reason['metric']} = {_v(reason.get('value'))}, "
        f"with {result.requests.get('canary', 0):,} requests served by the canary",
        "analysis-template.yaml",
    )


def _judge_mean(result) -> float | None:
    """The canary's true mean judge score over the 30 minutes before the abort (the course's query)."""
    import math

    from sim.promql import instant_query

    sim = result.simulation
    svc = sim.fleet.services["canary"]
    query = (
        f'sum(rate({JUDGE_SERIES}_sum{{service="{svc}"}}[30m])) / sum(rate({JUDGE_SERIES}_count{{service="{svc}"}}[30m]))'
    )
    values = instant_query(query, sim.fleet.store, result.aborted_at_s).values()
    return values[0] if values and math.isfinite(values[0]) else None


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
