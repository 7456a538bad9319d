"""Exercise 6.3: the reference canary promotes when healthy and aborts on a quality drop;
the starter and typical mistakes fail with feedback that names them."""

import pytest

pytest.importorskip("sim.rollout", reason="the rollout simulation is not in this checkout")

from lab.exercises import get_exercise  # noqa: E402

EX = get_exercise("6.3")
ROLLOUT = (EX.solution / "rollout.yaml").read_text()
TEMPLATE = (EX.solution / "analysis-template.yaml").read_text()
CONDITION = "successCondition: len(result) > 0 && result[0] > 0.85"


def write(tmp_path, rollout=ROLLOUT, template=TEMPLATE):
    (tmp_path / "rollout.yaml").write_text(rollout)
    (tmp_path / "analysis-template.yaml").write_text(template)
    return tmp_path


def test_reference_solution_passes():
    result = EX.check(EX.solution)
    assert result.passed, result.report()
    healthy, degraded = result.details["runs"]
    assert healthy["promoted"] and degraded["abort_metric"] == "llm-judge-score"


MISTAKES = [
    pytest.param(None, None, "no analysis the Rollout runs reads the judge's score", "spec.strategy.canary.analysis", id="starter"),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace(CONDITION, "successCondition: len(result) > 0 && result[0] < 0.85"),
        "a healthy canary was not promoted",
        "successCondition",
        id="inverted-condition",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace(CONDITION, "successCondition: len(result) > 0 && result[0] > 0.5"),
        "was not rolled back",
        "successCondition",
        id="threshold-too-low",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("  metrics:\n", "  dryRun:\n    - metricName: llm-judge-score\n  metrics:\n"),
        "are dryRun",
        "spec.dryRun",
        id="dry-run",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("      initialDelay: 30m\n", ""),
        "whose query returned no value",
        "spec.metrics[llm-judge-score].initialDelay",
        id="no-initial-delay",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace(CONDITION, "successCondition: result > 0.85"),
        "could not be evaluated",
        "successCondition",
        id="result-without-index",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("            /\n", "").replace(
            '            sum(rate(llm_judge_quality_score_count{service="{{args.canary-service}}"}[30m]))\n', ""
        ),
        "but the canary's mean judge score over the last 30 minutes was",
        "provider.prometheus.query",
        id="query-sum-only",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("failureLimit: 0", "failureLimit: 3"),
        "but the rollout was aborted only at",
        "failureLimit",
        id="failure-limit-too-high",
    ),
    pytest.param(
        ROLLOUT.replace("startingStep: 1", "startingStep: 3"),
        TEMPLATE,
        "the background analysis starts at step 3",
        "startingStep",
        id="analysis-starts-late",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("      " + CONDITION + "\n", ""),
        "neither successCondition nor failureCondition",
        "successCondition",
        id="no-condition",
    ),
    pytest.param(
        ROLLOUT,
        TEMPLATE.replace("llm_judge_quality_score_", "llm_judge_score_"),
        "no analysis the Rollout runs reads the judge's score",
        "analysis",
        id="wrong-series-name",
    ),
]


@pytest.mark.parametrize("rollout, template, expected, where", MISTAKES)
def test_mistakes_fail_with_feedback(tmp_path, rollout, template, expected, where):
    folder = EX.starter if rollout is None else write(tmp_path, rollout, template)
    result = EX.check(folder)
    assert not result.passed
    hits = [f for f in result.failures if expected in f.what]
    assert hits, result.report()
    assert where in hits[0].where and hits[0].fix


@pytest.mark.parametrize("edit, fix", [
    pytest.param(("templateName: llm-judge-quality", "templateName: llm-judge-qualty"), "llm-judge-quality",
                 id="wrong-template-name"),
    pytest.param(("interval: 30m", "interval: 30"), "with its unit", id="bare-number-interval"),
])
def test_a_manifest_error_says_what_to_change(tmp_path, edit, fix):
    rollout = (EX.solution / "rollout.yaml").read_text()
    template = (EX.solution / "analysis-template.yaml").read_text()
    old, new = edit
    assert old in rollout + template
    write(tmp_path, rollout.replace(old, new), template.replace(old, new))
    failure = EX.check(tmp_path).failures[0]
    assert fix in failure.fix and "see README.md" not in failure.fix, failure


def test_a_manifest_error_names_the_file(tmp_path):
    write(tmp_path, ROLLOUT.replace("setWeight: 10", "setWeight: ten"))
    failure = EX.check(tmp_path).failures[0]
    assert failure.where.startswith("rollout.yaml"), failure
