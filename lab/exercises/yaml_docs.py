"""Reading a student's YAML for a check: parse errors and missing fields become findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.exercises import Finding


def load_docs(path: Path) -> tuple[list[dict], Finding | None]:
    """All YAML documents of ``path`` (empty ones dropped), or a failed finding that says where."""
    if not path.is_file():
        return [], Finding(False, f"{path.name} not found", str(path.parent), f"put your {path.name} in this folder")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:line {mark.line + 1}" if mark is not None else path.name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], Finding(False, f"not valid YAML: {problem}", where, "fix the indentation or quoting on that line")
    bad = [i for i, d in enumerate(docs) if not isinstance(d, dict)]
    if bad:
        return [], Finding(
            False,
            f"document {bad[0] + 1} is a {type(docs[bad[0]]).__name__}, not a Kubernetes object",
            path.name,
            "each document needs apiVersion, kind, metadata and spec",
        )
    return docs, None


def find_kind(docs: list[dict], *kinds: str) -> dict | None:
    return next((d for d in docs if d.get("kind") in kinds), None)


def dig(doc: Any, dotted: str, default: Any = None) -> Any:
    """``dig(doc, "spec.strategy.canary")``; list indices as numbers (``steps.0``)."""
    node = doc
    for part in dotted.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
        if node is None:
            return default
    return node
