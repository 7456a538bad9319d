"""Evaluate PromQL instant queries against a :class:`~sim.promql.store.SeriesStore`.

Semantics are Prometheus 2.42's (the version the agreement test runs), for the subset listed in
:mod:`sim.promql.parse` and docs/promql.md:

- An instant-vector selector takes, per series, the latest sample at or before the evaluation
  time that is at most ``lookback_delta_s`` old (both ends included, as in 2.x).
- Prometheus also ends a series early when it meets a *staleness marker* (a special NaN written
  when a target disappears or a series vanishes from a scrape). The store holds no staleness
  markers, since the simulation writes whole series, and backfilled blocks hold none either;
  so a series that stops simply fades out after the lookback window, in both.
- A range selector ``[d]`` takes the samples in ``[t - d, t]`` (both ends included in 2.x;
  Prometheus 3 excludes the start).
- Functions, aggregations, arithmetic and ``bool`` comparisons drop ``__name__``; filtering
  comparisons and ``and``/``or``/``unless`` keep it, as Prometheus does.
- Results are sorted by labels. Prometheus returns an instant vector in no guaranteed order,
  which is why Argo Rollouts' ``result[0]`` over several series is a trap; sorting makes ours
  deterministic and does not change which series exist or their values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from sim.promql import ast
from sim.promql.functions import bucket_quantile, extrapolated_rate, instant_rate, over_time
from sim.promql.operators import (
    Labels,
    Vector,
    aggregate,
    check_unique,
    drop_name,
    scalar_binop,
    set_binop,
    vector_binop,
    vector_scalar_binop,
)
from sim.promql.parse import PromQLError, parse_query
from sim.promql.store import SeriesStore, _SeriesData

__all__ = ["PromQLError", "QueryResult", "instant_query", "range_query"]

Value = Union[float, Vector, str]


@dataclass(frozen=True)
class QueryResult:
    """What Prometheus's /api/v1/query returns, for a vector or a scalar result."""

    kind: Literal["vector", "scalar"]
    vector: tuple[tuple[Labels, float], ...] = ()  # sorted by labels; labels include __name__ if kept
    scalar: float | None = None

    def values(self) -> list[float]:
        """Argo Rollouts' ``result``: one float per series for a vector, ``[value]`` for a scalar."""
        if self.kind == "scalar":
            return [self.scalar]  # type: ignore[list-item]
        return [v for _, v in self.vector]


def instant_query(query: str, store: SeriesStore, at_s: float, *, lookback_delta_s: float = 300.0) -> QueryResult:
    """Evaluate ``query`` at time ``at_s`` (seconds), as ``/api/v1/query?time=at_s`` would."""
    node = parse_query(query)
    at_ms = _to_ms(at_s, "at_s")
    ctx = _Context(query, store, at_ms, _to_ms(lookback_delta_s, "lookback_delta_s"), at_ms, at_ms)
    return _result(query, _evaluate(ctx, node))


def range_query(
    query: str, store: SeriesStore, start_s: float, end_s: float, step_s: float, *, lookback_delta_s: float = 300.0
) -> list[QueryResult]:
    """One :class:`QueryResult` per step from ``start_s`` to ``end_s`` inclusive, as
    ``/api/v1/query_range`` evaluates each step (for plots)."""
    node = parse_query(query)
    start_ms, end_ms, step_ms = _to_ms(start_s, "start_s"), _to_ms(end_s, "end_s"), _to_ms(step_s, "step_s")
    if step_ms <= 0:
        raise PromQLError(f"range query {query!r}: step_s must be positive, got {step_s}")
    if end_ms < start_ms:
        raise PromQLError(f"range query {query!r}: end_s ({end_s}) is before start_s ({start_s})")
    if (end_ms - start_ms) // step_ms > 11_000:
        # Prometheus's own cap on a range query's resolution, with its advice.
        raise PromQLError(
            f"range query {query!r}: exceeded maximum resolution of 11,000 points per timeseries; "
            "try a larger step_s"
        )
    lookback_ms = _to_ms(lookback_delta_s, "lookback_delta_s")
    out = []
    for t_ms in range(start_ms, end_ms + 1, step_ms):
        ctx = _Context(query, store, t_ms, lookback_ms, start_ms, end_ms)
        out.append(_result(query, _evaluate(ctx, node)))
    return out


def _evaluate(ctx: _Context, node: ast.Node) -> Value:
    try:
        return ctx.eval(node)
    except RecursionError:
        # parse_query caps the depth, so this needs a caller already deep in its own stack.
        raise PromQLError(f"PromQL query {ctx.query[:200]!r} nests too deeply to evaluate here") from None


def _to_ms(x: float, what: str) -> int:
    if not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x):
        raise PromQLError(f"{what} must be a finite number of seconds, got {x!r}")
    return int(round(float(x) * 1000))


def _result(query: str, value: Value) -> QueryResult:
    if isinstance(value, float):
        return QueryResult("scalar", (), value)
    if isinstance(value, str):
        raise PromQLError(f"PromQL query {query!r} yields a string; an analysis needs a vector or a scalar")
    return QueryResult("vector", tuple(sorted(value, key=lambda e: e[0])), None)


class _Context:
    def __init__(self, query: str, store: SeriesStore, at_ms: int, lookback_ms: int, start_ms: int, end_ms: int):
        self.query = query
        self.store = store
        self.at_ms = at_ms
        self.lookback_ms = lookback_ms
        self.start_ms = start_ms
        self.end_ms = end_ms

    # -- dispatch ------------------------------------------------------------------------------

    def eval(self, node: ast.Node) -> Value:
        if isinstance(node, ast.Number):
            return node.value
        if isinstance(node, ast.String):
            return node.value
        if isinstance(node, ast.Selector):
            return self.instant_vector(node)
        if isinstance(node, ast.Call):
            value = self.call(node)
            return check_unique(value, self.query) if isinstance(value, list) else value
        if isinstance(node, ast.Aggregate):
            vec = self.vector_arg(node.expr, node.op)
            return aggregate(node.op, vec, node.grouping, node.without)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Negate):
            value = self.eval(node.expr)
            if isinstance(value, float):
                return -value
            return check_unique([(drop_name(labels), -v) for labels, v in self.as_vector(value, "-")], self.query)
        if isinstance(node, ast.RangeSelector):
            raise PromQLError(
                f"PromQL query {self.query!r} yields a range vector; instant queries for an analysis "
                "need an instant vector or a scalar (wrap it in rate(), increase() or *_over_time())"
            )
        raise PromQLError(f"PromQL query {self.query!r}: cannot evaluate {node!r}")

    def as_vector(self, value: Value, where: str) -> Vector:
        if isinstance(value, list):
            return value
        raise PromQLError(f"PromQL query {self.query!r}: {where} needs an instant vector, got {_kind(value)}")

    def vector_arg(self, node: ast.Node, where: str) -> Vector:
        return self.as_vector(self.eval(node), where)

    def scalar_arg(self, node: ast.Node, where: str) -> float:
        value = self.eval(node)
        if isinstance(value, float):
            return value
        raise PromQLError(f"PromQL query {self.query!r}: {where} needs a scalar, got {_kind(value)}")

    # -- selectors -----------------------------------------------------------------------------

    def select(self, sel: ast.Selector) -> list[tuple[Labels, _SeriesData]]:
        store = self.store
        return store.cached_select(("sel", sel.matchers), lambda: _select(store, sel.matchers))

    def ref_time(self, sel: ast.Selector) -> int:
        if sel.at is None:
            base = self.at_ms
        elif sel.at.kind == "start":
            base = self.start_ms
        elif sel.at.kind == "end":
            base = self.end_ms
        else:
            base = sel.at.t_ms
        return base - sel.offset_ms

    def instant_vector(self, sel: ast.Selector) -> Vector:
        ref = self.ref_time(sel)
        oldest = ref - self.lookback_ms
        out: Vector = []
        for labels, data in self.select(sel):
            t_ms, v = data.arrays()
            i = int(np.searchsorted(t_ms, ref, side="right")) - 1
            if i >= 0 and t_ms[i] >= oldest:
                out.append((labels, float(v[i])))
        return out

    def windows(self, rs: ast.RangeSelector):
        """(labels, t_ms, values, window start, window end) per series with samples in range."""
        end = self.ref_time(rs.selector)
        start = end - rs.range_ms
        for labels, data in self.select(rs.selector):
            t_ms, v = data.arrays()
            lo = int(np.searchsorted(t_ms, start, side="left"))
            hi = int(np.searchsorted(t_ms, end, side="right"))
            if hi > lo:
                yield labels, t_ms[lo:hi], v[lo:hi], start, end

    # -- functions -----------------------------------------------------------------------------

    def call(self, node: ast.Call) -> Value:  # noqa: C901 - one branch per function family
        f, args = node.func, node.args
        if f in ("rate", "increase", "delta", "irate", "idelta") or f.endswith("_over_time"):
            rs = args[0]
            if not isinstance(rs, ast.RangeSelector):
                raise PromQLError(f"PromQL query {self.query!r}: {f}() needs a range selector such as x[5m]")
            out: Vector = []
            for labels, t_ms, v, start, end in self.windows(rs):
                if f in ("irate", "idelta"):
                    r = instant_rate(t_ms, v, is_rate=f == "irate")
                elif f.endswith("_over_time"):
                    r = over_time(f, v)
                else:
                    r = extrapolated_rate(
                        t_ms, v, start, end, rs.range_ms, is_counter=f != "delta", is_rate=f == "rate"
                    )
                if r is not None:
                    out.append((labels if f == "last_over_time" else drop_name(labels), r))
            return out
        if f == "histogram_quantile":
            return _histogram_quantile(self.scalar_arg(args[0], f), self.vector_arg(args[1], f))
        if f == "vector":
            return [((), self.scalar_arg(args[0], f))]
        if f == "scalar":
            vec = self.vector_arg(args[0], f)
            return vec[0][1] if len(vec) == 1 else math.nan
        if f == "time":
            return self.at_ms / 1000
        vec = self.vector_arg(args[0], f)
        scalars = [self.scalar_arg(a, f) for a in args[1:]]
        return _elementwise(f, vec, scalars)

    # -- operators -----------------------------------------------------------------------------

    def binary(self, node: ast.Binary) -> Value:
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        op = node.op
        if op in ast.SET_OPS:
            where = f"the operator {op}"
            return check_unique(
                set_binop(op, self.as_vector(lhs, where), self.as_vector(rhs, where), node.matching), self.query
            )
        if isinstance(lhs, float) and isinstance(rhs, float):
            return scalar_binop(op, lhs, rhs)
        if isinstance(lhs, list) and isinstance(rhs, float):
            out = vector_scalar_binop(op, lhs, rhs, swap=False, return_bool=node.return_bool)
        elif isinstance(lhs, float) and isinstance(rhs, list):
            out = vector_scalar_binop(op, rhs, lhs, swap=True, return_bool=node.return_bool)
        elif isinstance(lhs, list) and isinstance(rhs, list):
            try:
                out = vector_binop(op, lhs, rhs, node.matching, return_bool=node.return_bool)
            except PromQLError as exc:
                raise PromQLError(f"PromQL query {self.query!r}: {exc}") from None
        else:
            raise PromQLError(f"PromQL query {self.query!r}: operator {op} between {_kind(lhs)} and {_kind(rhs)}")
        return check_unique(out, self.query)


def _select(store: SeriesStore, matchers: tuple[ast.LabelMatcher, ...]) -> list[tuple[Labels, _SeriesData]]:
    """The series whose labels (name included) satisfy every matcher, in label order."""
    name = next((m.value for m in matchers if m.name == "__name__" and m.op == "="), None)
    candidates = store.raw(name) if name is not None else store.all_raw()
    out = []
    for data in candidates:
        labels = dict(data.labels)
        labels["__name__"] = data.name
        if all(m.matches(labels.get(m.name, "")) for m in matchers):
            out.append((tuple(sorted(labels.items())), data))
    return out


def _histogram_quantile(q: float, vec: Vector) -> Vector:
    """Group bucket series by their labels without `le`; one quantile per group."""
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for labels, v in vec:
        le = dict(labels).get("le")
        bound = _parse_go_float(le) if le is not None else None
        if bound is None:
            continue  # no `le` label, or one Go cannot parse: Prometheus skips the sample
        key = tuple(p for p in labels if p[0] != "le")
        groups.setdefault(key, []).append((bound, v))
    return [(drop_name(key), bucket_quantile(q, buckets)) for key, buckets in groups.items()]


def _parse_go_float(text: str) -> float | None:
    """``strconv.ParseFloat`` for decimal text and Inf/NaN spellings; None where Go fails."""
    if text != text.strip() or "_" in text or text.lower().lstrip("+-").startswith("0x"):
        return None  # Go accepts neither padding nor (outside hex) underscores; hex is skipped
    try:
        return float(text)
    except ValueError:
        return None


def _go_max(x: float, y: float) -> float:
    if x == math.inf or y == math.inf:
        return math.inf
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0 and x == y:
        return y if math.copysign(1, x) < 0 else x
    return x if x > y else y


def _go_min(x: float, y: float) -> float:
    if x == -math.inf or y == -math.inf:
        return -math.inf
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x == 0 and x == y:
        return x if math.copysign(1, x) < 0 else y
    return x if x < y else y


def _elementwise(f: str, vec: Vector, scalars: list[float]) -> Vector:
    """Functions of one instant vector (and scalar parameters); all drop the metric name."""
    if f == "clamp":
        low, high = scalars
        if high < low:
            return []
        return [(drop_name(lb), _go_max(low, _go_min(high, v))) for lb, v in vec]
    if f == "clamp_min":
        return [(drop_name(lb), _go_max(scalars[0], v)) for lb, v in vec]
    if f == "clamp_max":
        return [(drop_name(lb), _go_min(scalars[0], v)) for lb, v in vec]
    if f == "round":
        # Go: math.Floor(v*inverse+0.5) / inverse, ties rounding up.
        inverse = _divide(1.0, scalars[0] if scalars else 1.0)
        with np.errstate(all="ignore"):
            return [(drop_name(lb), float(np.floor(np.float64(v) * inverse + 0.5) / inverse)) for lb, v in vec]
    ufunc = {
        "abs": np.abs,
        "ceil": np.ceil,
        "floor": np.floor,
        "sqrt": np.sqrt,
        "exp": np.exp,
        "ln": np.log,
        "log2": np.log2,
        "log10": np.log10,
    }[f]
    with np.errstate(all="ignore"):
        return [(drop_name(lb), float(ufunc(np.float64(v)))) for lb, v in vec]


def _divide(a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _kind(value: Value) -> str:
    if isinstance(value, float):
        return "a scalar"
    if isinstance(value, str):
        return "a string"
    return "an instant vector"
