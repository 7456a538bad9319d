"""Reading the manifests strictly: every mistake names the file, the YAML path, what was
expected and what was found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from sim.errors import ManifestError
from sim.rollout.loader import load_manifests
from sim.rollout.podargs import engine_config_from_args

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture()
def folder(tmp_path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(MANIFESTS, dst, ignore=shutil.ignore_patterns("schemas"))
    return dst


def edit_yaml(folder: Path, name: str, doc_index: int, change) -> None:
    path = folder / name
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    change(docs[doc_index])
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_the_course_manifests_load():
    m = load_manifests(MANIFESTS)
    assert m.replicas == 10 and m.canary.canaryService == "ai-api-canary"
    assert [s.setWeight for s in m.canary.steps if s.setWeight is not None] == [1, 10, 50]
    assert [s.pause.duration for s in m.canary.steps if s.pause is not None] == [3600.0, 7200.0, 14400.0]
    assert m.canary.scaleDownDelaySeconds == 86400
    bg = {s.name: s for s in m.background.metrics}
    assert bg["error-rate"].interval_s == 300 and bg["llm-judge-score"].interval_s == 1800
    assert 'service="ai-api-canary"' in bg["error-rate"].query and "{{" not in bg["p99-vs-stable"].query
    assert sorted(m.step_analyses) == [2, 5, 8]


def _set(path, value):
    def change(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return change


def _pop(path):
    def change(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    return change


C = ("spec", "strategy", "canary")


@pytest.mark.parametrize(
    "file, doc, change, message",
    [
        pytest.param("rollout.yaml", 0, _set(C + ("steps", 4, "pause", "duration"), "1hour"),
                     'rollout.yaml: spec.strategy.canary.steps[4].pause.duration: expected a duration like 30s, 5m, 1h, got "1hour"',
                     id="bad-pause-duration"),
        pytest.param("rollout.yaml", 0, _set(("spec", "replicas"), "ten"),
                     "rollout.yaml: spec.replicas: expected an integer, got 'ten'", id="wrong-type"),
        pytest.param("rollout.yaml", 0, _set(C + ("stepz",), []),
                     "rollout.yaml: spec.strategy.canary.stepz: unknown field (expected one of: steps,", id="unknown-field"),
        pytest.param("rollout.yaml", 0, _set(C + ("steps", 0, "setWeight"), 150),
                     "rollout.yaml: spec.strategy.canary.steps[0].setWeight: expected a value less than or equal to 100, got 150",
                     id="weight-over-100"),
        pytest.param("rollout.yaml", 0, _set(C + ("steps", 2, "analysis", "templates", 0, "templateName"), "nope"),
                     "rollout.yaml: spec.strategy.canary.steps[2].analysis.templates[0].templateName: AnalysisTemplate 'nope' not found",
                     id="missing-template"),
        pytest.param("rollout.yaml", 0, _set(C + ("steps", 0), {"setWeight": 1, "pause": {}}),
                     "rollout.yaml: spec.strategy.canary.steps[0]: expected exactly one of setWeight, pause, analysis, got setWeight, pause",
                     id="two-kinds-in-a-step"),
        pytest.param("rollout.yaml", 0, _set(C + ("steps", 0), {"experiment": {}}),
                     "rollout.yaml: spec.strategy.canary.steps[0].experiment: unknown field", id="unsupported-step"),
        pytest.param("rollout.yaml", 0, _set(C + ("canaryService",), "ai-api-preview"),
                     "rollout.yaml: spec.strategy.canary.canaryService: Service 'ai-api-preview' is not defined", id="unknown-service"),
        pytest.param("services.yaml", 0, lambda d: d.update(metadata={"name": "other"}),
                     "copy services.yaml and virtualservice.yaml from the course's manifests/", id="no-services-says-copy"),
        pytest.param("rollout.yaml", 0, _pop(C + ("analysis", "args")),
                     "needs args canary-service", id="missing-args"),
        pytest.param("rollout.yaml", 0, _set(C + ("analysis", "startingStep"), 42),
                     "spec.strategy.canary.analysis.startingStep: expected a step index from 0 to 9, got 42", id="starting-step"),
        pytest.param("rollout.yaml", 0, _set(("spec", "template", "spec", "containers", 0, "args", 1), "--gpus=h100-80gb"),
                     "spec.template.spec.containers[0].args: unknown flag '--gpus'", id="unknown-engine-flag"),
        pytest.param("analysis-health.yaml", 0, _set(("spec", "metrics", 0, "interval"), "5 minutes"),
                     'analysis-health.yaml: spec.metrics[0].interval: expected a duration like 30s, 5m, 1h, got "5 minutes"',
                     id="bad-interval"),
        pytest.param("analysis-health.yaml", 0, _set(("spec", "metrics", 1, "successCondition"), "result[0] << 3000"),
                     "analysis-health.yaml: spec.metrics[1].successCondition: unexpected '<'", id="bad-condition"),
        pytest.param("analysis-health.yaml", 0, _set(("spec", "metrics", 0, "provider"), {"job": {}}),
                     "analysis-health.yaml: spec.metrics[0].provider: provider 'job' is not simulated",
                     id="unsupported-provider"),
        pytest.param("analysis-health.yaml", 0, _set(("spec", "metrics", 0, "count"), 3),
                     "",
                     id="count-with-interval-ok"),
        pytest.param("analysis-quality.yaml", 0, _pop(("spec", "metrics", 0, "interval")),
                     "", id="no-interval-count-1-ok"),
        pytest.param("analysis-gates.yaml", 1, _set(("spec", "metrics", 0, "count"), 2),
                     "analysis-gates.yaml (document 2): spec.metrics[0].interval: required when count > 1 (got count 2)",
                     id="count-without-interval"),
        pytest.param("analysis-gates.yaml", 0, _set(("spec", "metrics", 0, "failureLimit"), -1),
                     "failureLimit: -1 turns failures off, so consecutiveSuccessLimit must be set", id="failure-limit-off"),
        pytest.param("analysis-rollback.yaml", 0,
                     _set(("spec", "metrics", 0, "provider", "prometheus", "query"), 'up{service="{{args.svc}}"}'),
                     "failed to resolve {{args.svc}}", id="unknown-arg-ref"),
        pytest.param("virtualservice.yaml", 0, _set(("spec", "http", 0, "name"), "main"),
                     "virtualservice.yaml: spec.http: no route named 'primary'", id="route-name"),
    ],
)
def test_mistakes_are_reported(folder, file, doc, change, message):
    edit_yaml(folder, file, doc, change)
    if not message:
        load_manifests(folder)  # a valid variation loads
        return
    with pytest.raises(ManifestError) as e:
        load_manifests(folder)
    assert message in str(e.value)


def test_yaml_syntax_error_names_the_file_line_and_the_usual_cause(folder):
    (folder / "rollout.yaml").write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nspec: [\n")
    with pytest.raises(ManifestError, match=r"rollout.yaml: line \d+, column \d+: not valid YAML"):
        load_manifests(folder)
    # An indentation slip, the usual one: the file as given (its folder too) and what to look at.
    (folder / "rollout.yaml").write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nspec:\n  steps:\n"
                                         "  - setWeight: 1\n   - pause: {}\n")
    with pytest.raises(ManifestError) as e:
        load_manifests(folder)
    assert str(e.value).startswith(f"{folder / 'rollout.yaml'}: line 6, column ")
    assert "indentation" in str(e.value)


def test_missing_folder():
    with pytest.raises(ManifestError, match="not a folder"):
        load_manifests("/nonexistent/manifests")


@pytest.mark.parametrize(
    "args, field, value",
    [
        pytest.param(("servelab", "serve", "meta-llama/Llama-3.1-8B", "--gpu=h100-80gb", "--max-num-seqs=64"), "max_num_seqs", 64, id="equals"),
        pytest.param(("vllm", "serve", "meta-llama/Llama-3.1-8B", "--gpu", "a100-80gb", "--tensor-parallel-size", "2"),
                     "tensor_parallel_size", 2, id="separate-value"),
        pytest.param(("servelab", "serve", "meta-llama/Llama-3.1-8B", "--gpu=h100-80gb", "--no-enable-prefix-caching"),
                     "enable_prefix_caching", False, id="negated-switch"),
        pytest.param(("vllm", "serve", "meta-llama/Llama-3.1-8B", "--gpu=h200", "--performance-mode", "throughput"),
                     "performance_mode", "throughput", id="performance-mode"),
    ],
)
def test_engine_flags_from_the_pod(args, field, value):
    assert getattr(engine_config_from_args(args, "rollout.yaml"), field) == value


def test_engine_flag_value_errors():
    with pytest.raises(ManifestError, match="--max-num-seqs: expected an integer, got 'many'"):
        engine_config_from_args(("servelab", "serve", "m", "--gpu=x", "--max-num-seqs=many"), "rollout.yaml")
    with pytest.raises(ManifestError, match="--gpu is missing"):
        engine_config_from_args(("vllm", "serve", "m"), "rollout.yaml")


def test_a_student_folder_is_completed_from_the_course_manifests(tmp_path):
    """Exercise 6.3: only a Rollout and an AnalysisTemplate; the rest comes from fill_from."""
    d = tmp_path / "student"
    d.mkdir()
    shutil.copy(MANIFESTS / "rollout.yaml", d / "rollout.yaml")
    quality = yaml.safe_load((MANIFESTS / "analysis-quality.yaml").read_text())
    quality["spec"]["metrics"][0]["successCondition"] = "len(result) > 0 && result[0] > 0.8"
    (d / "quality.yaml").write_text(yaml.safe_dump(quality))
    with pytest.raises(ManifestError, match="Service 'ai-api-canary' is not defined"):
        load_manifests(d)
    m = load_manifests(d, fill_from=MANIFESTS)
    bg = {s.name: s for s in m.background.metrics}
    assert bg["llm-judge-score"].success.text.endswith("> 0.8")  # the student's template wins
    assert "ai-api-gate-phase1" in m.templates and "ai-api-canary" in m.services


def test_parallel_flags_from_the_pod():
    c = engine_config_from_args(("vllm", "serve", "Qwen/Qwen3-30B-A3B", "--gpu=h100", "-tp", "2", "-dp=2",
                                 "--enable-expert-parallel"), "rollout.yaml")
    assert (c.tensor_parallel_size, c.data_parallel_size, c.enable_expert_parallel) == (2, 2, True)


def test_tp_times_dp_must_fit_the_pods_gpus(folder):
    """vLLM needs a GPU per rank in the pod; with resources.limits nvidia.com/gpu set, tp x dp is held to it."""
    container = ["spec", "template", "spec", "containers", 0]

    def change(doc):
        c = doc["spec"]["template"]["spec"]["containers"][0]
        c["args"] = [a for a in c["args"] if not a.startswith("--tensor-parallel-size")] + [
            "--tensor-parallel-size=2", "--data-parallel-size=2"]
        c["resources"] = {"limits": {"nvidia.com/gpu": 2}}

    edit_yaml(folder, "rollout.yaml", 0, change)
    with pytest.raises(ManifestError, match=r"containers\[0\]: --data-parallel-size 2 x --tensor-parallel-size 2 = 4 "
                                            r"GPUs, more than the 2 available"):
        load_manifests(folder)
    edit_yaml(folder, "rollout.yaml", 0, _set(container + ["resources", "limits", "nvidia.com/gpu"], 4))
    assert load_manifests(folder).engine_config.data_parallel_size == 2
