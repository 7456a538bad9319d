"""Render a manifests folder as ``kubectl apply -k`` would, and check it before applying.

Rendering is ``kubectl kustomize DIR`` (a local operation: no cluster is contacted). Where
kubectl is missing, a small fallback reads the kustomization's ``resources`` and
``namespace`` itself; it knows only those two fields and says so in its header.

Checking: core kinds against Kubernetes' own OpenAPI schemas (``kubernetes-validate``,
strict, so a misspelt field fails), custom resources with a vendored schema
(``manifests/schemas/``) against it, just as strictly, other custom resources for apiVersion,
kind and name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ManifestError

K8S_SCHEMA_VERSION = "1.31.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


def render(manifests_dir: Path) -> tuple[str, str]:
    """(rendered YAML, how it was rendered) for a folder with a kustomization.yaml."""
    manifests_dir = Path(manifests_dir)
    kustomization = _kustomization_file(manifests_dir)
    kubectl = shutil.which("kubectl")
    if kubectl:
        proc = subprocess.run([kubectl, "kustomize", str(manifests_dir)], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ManifestError(f"{manifests_dir}: 'kubectl kustomize' failed: {proc.stderr.strip()}")
        return proc.stdout, f"kubectl kustomize {manifests_dir}"
    docs = _fallback_render(manifests_dir, kustomization)
    return yaml.safe_dump_all(docs, sort_keys=False), f"ServeLab's fallback renderer (kubectl not found): {kustomization}"


def _kustomization_file(manifests_dir: Path) -> Path:
    if not manifests_dir.is_dir():
        raise ManifestError(f"--manifests {manifests_dir}: not a folder")
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (manifests_dir / name).is_file():
            return manifests_dir / name
    raise ManifestError(
        f"{manifests_dir}: no kustomization.yaml; 'kubectl apply -k' needs one listing the resources"
    )


def _fallback_render(manifests_dir: Path, kustomization: Path) -> list[dict]:
    spec = yaml.safe_load(kustomization.read_text()) or {}
    namespace = spec.get("namespace")
    docs: list[dict] = []
    for i, resource in enumerate(spec.get("resources") or []):
        path = manifests_dir / resource
        if path.is_dir():
            docs.extend(_fallback_render(path, _kustomization_file(path)))
            continue
        if not path.is_file():
            raise ManifestError(f"{kustomization}: resources[{i}]: {resource!r} does not exist")
        docs.extend(load_documents(path.read_text(), source=str(path)))
    if namespace:
        for doc in docs:
            if doc.get("kind") not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = namespace
    return docs


def load_documents(text: str, *, source: str = "manifests") -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML ({exc})") from None
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: document {i}: expected a mapping, got {type(doc).__name__}")
    return docs


def _label(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind', '?')} {ns}{meta.get('name') or meta.get('generateName') or '?'}"


def validate(docs: list[dict[str, Any]], schemas_dir: Path | None = None) -> list[str]:
    """Problems found, one line each (empty: all valid)."""
    import jsonschema
    import kubernetes_validate

    problems: list[str] = []
    crd_schemas = _crd_schemas(schemas_dir)
    for doc in docs:
        label = _label(doc)
        meta = doc.get("metadata") or {}
        if not doc.get("apiVersion") or not doc.get("kind") or not (meta.get("name") or meta.get("generateName")):
            problems.append(f"{label}: expected apiVersion, kind and metadata.name (or generateName)")
            continue
        key = (doc["apiVersion"], doc["kind"])
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if key in crd_schemas:
            for err in jsonschema.Draft7Validator(crd_schemas[key]).iter_errors(doc):
                problems.append(f"{label}: {_path(err)}: {err.message}")
        elif "." in group and not group.endswith(".k8s.io"):
            continue  # a custom resource without a vendored schema: checked by its controller
        else:
            try:
                kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                problems.append(f"{label}: {_path(err)}: {err.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as err:
                problems.append(f"{label}: no schema for {doc['apiVersion']} {doc['kind']} ({err})")
    return problems


def _path(err) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) or "(top level)"


def _crd_schemas(schemas_dir: Path | None) -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    if schemas_dir is None or not Path(schemas_dir).is_dir():
        return out
    for path in sorted(Path(schemas_dir).glob("*.json")):
        # File names are <group>_<version>_<kind>.json (manifests/schemas/README.md).
        parts = path.stem.split("_")
        if len(parts) != 3:
            continue
        group, version, kind_lower = parts
        schema = json.loads(path.read_text())
        kind = _kind_from_schema(schema, kind_lower)
        out[(f"{group}/{version}", kind)] = _strict(schema)
    return out


def _strict(schema: dict) -> dict:
    """The schema with unknown fields refused, as kubectl's default ``--validate=strict`` does.

    A CRD schema lists its fields but rarely says ``additionalProperties: false``; the API
    server refuses unknown fields all the same. So every object schema that lists properties
    is closed, except where the CRD keeps unknown fields on purpose. The root stays open: the
    API server owns apiVersion, kind and metadata, which some CRDs do not list."""

    def close(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node = {**node, "additionalProperties": False}
            return {key: close(value) for key, value in node.items()}
        if isinstance(node, list):
            return [close(value) for value in node]
        return node

    closed = close(schema)
    closed.pop("additionalProperties", None)
    return closed


def _kind_from_schema(schema: dict, kind_lower: str) -> str:
    known = {"rollout": "Rollout", "analysistemplate": "AnalysisTemplate", "virtualservice": "VirtualService",
             "gateway": "Gateway", "analysisrun": "AnalysisRun", "destinationrule": "DestinationRule",
             "clusteranalysistemplate": "ClusterAnalysisTemplate", "scaledobject": "ScaledObject"}
    return known.get(kind_lower, kind_lower.capitalize())
