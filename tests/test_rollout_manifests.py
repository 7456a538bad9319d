"""The manifests are valid Kubernetes: core kinds by kubernetes-validate, Argo Rollouts and
Istio kinds by their vendored CRD schemas (manifests/schemas/README.md), strictly."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
SCHEMAS = MANIFESTS / "schemas"
K8S_VERSION = "1.31.0"

CRD_SCHEMAS = {
    ("argoproj.io/v1alpha1", "Rollout"): "argoproj.io_v1alpha1_rollout.json",
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): "argoproj.io_v1alpha1_analysistemplate.json",
    ("networking.istio.io/v1alpha3", "VirtualService"): "networking.istio.io_v1alpha3_virtualservice.json",
    ("networking.istio.io/v1alpha3", "Gateway"): "networking.istio.io_v1alpha3_gateway.json",
}


def _closed(schema):
    """Close every object schema that lists properties (strict field validation)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # The API server owns the root (apiVersion, kind, metadata); some CRDs do not list them.
    schema.pop("additionalProperties", None)
    return schema


def _documents():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for i, doc in enumerate(yaml.safe_load_all((MANIFESTS / name).read_text())):
            if doc:
                docs.append(pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}"))
    return docs


def _validate_crd(doc):
    schema = _closed(json.loads((SCHEMAS / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text()))
    jsonschema.validate(doc, schema)


@pytest.mark.parametrize("doc", _documents())
def test_every_manifest_is_valid(doc):
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        _validate_crd(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    if doc["kind"] == "Rollout":
        # The Rollout's pod template is a plain PodTemplateSpec: check it as a Deployment's.
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "probe"},
            "spec": {"selector": doc["spec"]["selector"], "template": doc["spec"]["template"]},
        }
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "path, value",
    [
        pytest.param(("spec", "strategy", "canary", "stepz"), [], id="misspelt-canary-field"),
        pytest.param(("spec", "replicas"), "ten", id="replicas-not-int"),
        pytest.param(("spec", "strategy", "canary", "trafficRouting", "istio", "virtualService", "nam"), "x", id="istio-typo"),
    ],
)
def test_schema_rejects_a_broken_rollout(path, value):
    doc = yaml.safe_load((MANIFESTS / "rollout.yaml").read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate_crd(doc)


def test_schema_rejects_a_broken_analysis_template():
    doc = next(yaml.safe_load_all((MANIFESTS / "analysis-health.yaml").read_text()))
    doc["spec"]["metrics"][0]["sucessCondition"] = doc["spec"]["metrics"][0].pop("successCondition")
    with pytest.raises(jsonschema.ValidationError):
        _validate_crd(doc)


def test_kustomize_renders_every_resource():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (kustomize rendering is checked where it is)")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    assert kinds.count("AnalysisTemplate") == 6
    assert {"Rollout", "VirtualService", "Gateway", "Deployment", "Namespace"} <= set(kinds)
    assert all(d["metadata"].get("namespace", "ai-prod") == "ai-prod" for d in yaml.safe_load_all(out) if d)
