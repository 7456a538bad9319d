"""Exercise 6.1: the reference ScaledObject passes; the starter and typical mistakes fail by name."""

import copy

import pytest
import yaml

pytest.importorskip("sim.autoscale", reason="sim.autoscale (the cluster part) is not in this checkout")

from lab.exercises import get_exercise  # noqa: E402

EX = get_exercise("6.1")
SOLUTION = yaml.safe_load((EX.solution / "scaledobject.yaml").read_text())


def variant(tmp_path, change):
    doc = copy.deepcopy(SOLUTION)
    change(doc)
    (tmp_path / "scaledobject.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def trigger_meta(doc):
    return doc["spec"]["triggers"][0]["metadata"]


def test_reference_solution_passes():
    result = EX.check(EX.solution)
    assert result.passed, result.report()
    assert max(result.details["series"]["replicas"]) >= 10
    assert result.details["series"]["replicas"][-1] == 0


MISTAKES = [
    pytest.param(None, "spec.triggers", "expected a trigger of type 'redis'", id="starter-no-trigger"),
    pytest.param(
        lambda d: d["spec"].__setitem__("maxReplicaCount", 3),
        "spec.maxReplicaCount",
        "peak of 3 workers against the 10 the burst needs",
        id="max-replicas-too-low",
    ),
    pytest.param(
        lambda d: trigger_meta(d).__setitem__("listLength", "200"),
        "metadata.listLength",
        "was gone",
        id="list-length-too-large",
    ),
    pytest.param(
        lambda d: trigger_meta(d).__setitem__("listName", "jobs"),
        "metadata.listName",
        "listName is 'jobs', but the workers read the Redis list 'prompts'",
        id="wrong-list-name",
    ),
    pytest.param(
        lambda d: d["spec"]["scaleTargetRef"].__setitem__("name", "vllm"),
        "spec.scaleTargetRef.name",
        "scales 'vllm', but the workers are the Deployment 'queue-worker'",
        id="wrong-target",
    ),
    pytest.param(
        lambda d: d["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].__setitem__(
            "stabilizationWindowSeconds", 30
        ),
        "stabilizationWindowSeconds",
        "the workers flapped",
        id="short-scale-down-window-flaps",
    ),
    pytest.param(
        lambda d: d["spec"].__setitem__("pollingInterval", 600),
        "spec.pollingInterval",
        "the course asks for at most 60 s",
        id="slow-polling",
    ),
    pytest.param(
        lambda d: trigger_meta(d).__setitem__("listLength", 5),
        "metadata.listLength",
        "listLength is the int 5; KEDA's trigger metadata are strings",
        id="list-length-unquoted",
    ),
    pytest.param(
        lambda d: d["spec"].__setitem__("triggers", d["spec"]["triggers"][0]),
        "spec.triggers",
        "spec.triggers is a mapping, but KEDA expects a list",
        id="triggers-not-a-list",
    ),
    pytest.param(
        lambda d: d["metadata"].pop("namespace"),
        "metadata.namespace",
        "metadata.namespace is missing",
        id="no-namespace",
    ),
    pytest.param(
        lambda d: trigger_meta(d).__setitem__("listLength", "five"),
        "listLength",
        "expected a number, got 'five'",
        id="list-length-not-a-number",
    ),
]


@pytest.mark.parametrize("change, where, expected", MISTAKES)
def test_mistakes_fail_with_feedback(tmp_path, change, where, expected):
    folder = EX.starter if change is None else variant(tmp_path, change)
    result = EX.check(folder)
    assert not result.passed
    hits = [f for f in result.failures if expected in f.what]
    assert hits, result.report()
    assert where in hits[0].where and hits[0].fix


def test_broken_yaml_names_the_line(tmp_path):
    (tmp_path / "scaledobject.yaml").write_text("kind: ScaledObject\nspec:\n  triggers: [\n")
    failure = EX.check(tmp_path).failures[0]
    assert failure.what.startswith("not valid YAML") and failure.where.startswith("scaledobject.yaml:line")
