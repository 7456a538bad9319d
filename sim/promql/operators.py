"""Binary operators and aggregations over instant vectors, as Prometheus 2.42's engine does them.

A vector here is a list of ``(labels, value)`` pairs; ``labels`` is a tuple of
``(name, value)`` pairs sorted by name that includes ``__name__`` while the metric name is
kept. Vectors are small (one element per series, tens of them), so plain Python is fine.
"""

from __future__ import annotations

import math

import numpy as np

from sim.promql.ast import ARITHMETIC_OPS, COMPARISON_OPS, Matching
from sim.promql.functions import incremental_mean
from sim.promql.parse import PromQLError

Labels = tuple[tuple[str, str], ...]
Vector = list[tuple[Labels, float]]

NAME = "__name__"


def drop_name(labels: Labels) -> Labels:
    if labels and labels[0][0] == NAME:
        return labels[1:]
    return tuple(p for p in labels if p[0] != NAME)


def format_labels(labels: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


def check_unique(vec: Vector, query: str) -> Vector:
    """Prometheus refuses a result with two elements of the same labels (after dropping names)."""
    if len(vec) > 1:
        seen = set()
        for labels, _ in vec:
            if labels in seen:
                raise PromQLError(
                    f"PromQL query {query!r}: vector cannot contain metrics with the same labelset "
                    f"({format_labels(labels)}), as Prometheus reports"
                )
            seen.add(labels)
    return vec


# -- element operations --------------------------------------------------------------------------


def arithmetic(op: str, a: float, b: float) -> float:
    """IEEE arithmetic as Go does it: x/0 is ±Inf or NaN, never an exception."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    with np.errstate(all="ignore"):
        if op == "/":
            return float(np.float64(a) / np.float64(b))
        if op == "%":
            return float(np.fmod(np.float64(a), np.float64(b)))  # Go's math.Mod: sign of a
        if op == "^":
            return float(np.power(np.float64(a), np.float64(b)))
    raise AssertionError(op)


def compare(op: str, a: float, b: float) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    if op == "<=":
        return a <= b
    raise AssertionError(op)


def scalar_binop(op: str, a: float, b: float) -> float:
    if op in COMPARISON_OPS:  # the parser demands `bool` between scalars
        return 1.0 if compare(op, a, b) else 0.0
    return arithmetic(op, a, b)


def vector_scalar_binop(op: str, vec: Vector, scalar: float, *, swap: bool, return_bool: bool) -> Vector:
    """``vector op scalar`` (or ``scalar op vector`` when ``swap``)."""
    out: Vector = []
    comparison = op in COMPARISON_OPS
    for labels, v in vec:
        a, b = (scalar, v) if swap else (v, scalar)
        if comparison:
            keep = compare(op, a, b)
            value = v  # a filter keeps the vector's own value, whichever side it is on
        else:
            keep, value = True, arithmetic(op, a, b)
        if return_bool:
            value, keep = (1.0 if keep else 0.0), True
        if keep:
            if not comparison or return_bool:
                labels = drop_name(labels)
            out.append((labels, value))
    return out


def signature(labels: Labels, matching: Matching) -> Labels:
    """The labels two elements must share to match: `on(...)`, or all but `ignoring(...)`."""
    if matching.on:
        return tuple(p for p in labels if p[0] in matching.labels)
    return tuple(p for p in labels if p[0] != NAME and p[0] not in matching.labels)


def vector_binop(op: str, lhs: Vector, rhs: Vector, matching: Matching, *, return_bool: bool) -> Vector:
    """One-to-one matching of two vectors (Prometheus's ``VectorBinop`` without group_x)."""
    if not lhs or not rhs:
        return []
    right: dict[Labels, tuple[Labels, float]] = {}
    for labels, v in rhs:
        sig = signature(labels, matching)
        if sig in right:
            raise PromQLError(
                f"found duplicate series for the match group {format_labels(sig)} on the right "
                f"hand-side of the operation: [{format_labels(labels)}, {format_labels(right[sig][0])}]; "
                "many-to-many matching not allowed: matching labels must be unique on one side"
            )
        right[sig] = (labels, v)
    comparison = op in COMPARISON_OPS
    matched: set[Labels] = set()
    out: Vector = []
    for labels, lv in lhs:
        sig = signature(labels, matching)
        hit = right.get(sig)
        if hit is None:
            continue
        rv = hit[1]
        if comparison:
            keep, value = compare(op, lv, rv), lv
        else:
            keep, value = True, arithmetic(op, lv, rv)
        if return_bool:
            value = 1.0 if keep else 0.0
        elif not keep:
            continue
        metric = labels
        if op in ARITHMETIC_OPS:
            metric = drop_name(metric)
        if matching.on:
            metric = tuple(p for p in metric if p[0] in matching.labels)
        elif matching.labels:
            metric = tuple(p for p in metric if p[0] not in matching.labels)
        if return_bool:
            metric = drop_name(metric)
        if sig in matched:
            raise PromQLError(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
            )
        matched.add(sig)
        out.append((metric, value))
    return out


def set_binop(op: str, lhs: Vector, rhs: Vector, matching: Matching) -> Vector:
    """``and``, ``or``, ``unless``: element labels and values pass through unchanged."""
    if op == "or":
        if not lhs or not rhs:
            return list(lhs) + list(rhs)
        left = {signature(labels, matching) for labels, _ in lhs}
        return list(lhs) + [e for e in rhs if signature(e[0], matching) not in left]
    if op == "and":
        if not lhs or not rhs:
            return []
        right = {signature(labels, matching) for labels, _ in rhs}
        return [e for e in lhs if signature(e[0], matching) in right]
    if op == "unless":
        if not lhs or not rhs:
            return list(lhs)
        right = {signature(labels, matching) for labels, _ in rhs}
        return [e for e in lhs if signature(e[0], matching) not in right]
    raise AssertionError(op)


# -- aggregation ---------------------------------------------------------------------------------


def aggregate(op: str, vec: Vector, grouping: tuple[str, ...], without: bool) -> Vector:
    """sum/avg/max/min/count by (...) or without (...), groups in first-seen order."""
    groups: dict[Labels, list[float]] = {}
    drop = set(grouping) | {NAME} if without else None
    keep = set(grouping)
    for labels, v in vec:
        if without:
            key = tuple(p for p in labels if p[0] not in drop)  # type: ignore[operator]
        else:
            key = tuple(p for p in labels if p[0] in keep)
        groups.setdefault(key, []).append(v)
    out: Vector = []
    for key, values in groups.items():
        out.append((key, _reduce(op, values)))
    return out


def _reduce(op: str, values: list[float]) -> float:
    if op == "sum":
        total = values[0]
        for x in values[1:]:
            total += x
        return total
    if op == "count":
        return float(len(values))
    if op == "avg":
        return incremental_mean(values)
    if op == "max":
        best = values[0]
        for x in values[1:]:
            if best < x or math.isnan(best):
                best = x
        return best
    if op == "min":
        best = values[0]
        for x in values[1:]:
            if best > x or math.isnan(best):
                best = x
        return best
    raise AssertionError(op)
