"""Parse PromQL with a real parser and keep only what the evaluator implements.

The grammar is Prometheus's own, through ``promql-parser`` (Rust bindings of GreptimeTeam's
parser, which declares compatibility with Prometheus 2.45). Its tree is translated into the
small records of :mod:`sim.promql.ast`; any construct outside the supported subset stops the
translation with a :class:`PromQLError` that names the construct and quotes the query.
Every failure of the parser, including a panic inside the Rust code, becomes a
:class:`PromQLError`: callers only ever see that or a parsed tree.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta

import promql_parser as pp

from sim.errors import ServeLabError
from sim.promql import ast

AGGREGATIONS = ("sum", "avg", "max", "min", "count")

# Supported functions: name -> argument kinds ("v" instant vector, "m" range vector,
# "s" scalar). Optional trailing arguments are written with a "?".
FUNCTIONS: dict[str, str] = {
    "rate": "m",
    "irate": "m",
    "increase": "m",
    "delta": "m",
    "idelta": "m",
    "avg_over_time": "m",
    "sum_over_time": "m",
    "min_over_time": "m",
    "max_over_time": "m",
    "count_over_time": "m",
    "last_over_time": "m",
    "histogram_quantile": "sv",
    "vector": "s",
    "scalar": "v",
    "time": "",
    "clamp": "vss",
    "clamp_min": "vs",
    "clamp_max": "vs",
    "abs": "v",
    "ceil": "v",
    "floor": "v",
    "round": "vs?",
    "sqrt": "v",
    "exp": "v",
    "ln": "v",
    "log2": "v",
    "log10": "v",
}

_BINARY_OPS = ast.ARITHMETIC_OPS | ast.COMPARISON_OPS | ast.SET_OPS
# The binding's enum members do not hash, so the mapping is a list searched by equality.
_MATCH_OPS = (
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)


class PromQLError(ServeLabError):
    """A query that cannot be parsed, uses a construct ServeLab does not evaluate, or fails
    at evaluation the way Prometheus would fail it (e.g. duplicate series in a match group)."""


# Limits that Prometheus does not have. The Rust parser recurses on nesting and crashes the
# process (a stack overflow, not an exception) at a few thousand levels; 4096 characters keep
# any query below that (measured: 4096-character chains of `(`, `-` and `+` parse fine). The
# evaluator recurses too, so the tree may be at most MAX_DEPTH levels deep. An analysis query
# is a few hundred characters and a dozen levels.
MAX_QUERY_CHARS = 4096
MAX_DEPTH = 128


def parse_query(query: str) -> ast.Node:
    """Parse ``query`` into the evaluator's tree, or raise :class:`PromQLError`."""
    if not isinstance(query, str):
        raise PromQLError(f"a PromQL query must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise PromQLError(
            f"PromQL query of {len(query)} characters starting {query[:60]!r}: ServeLab accepts at "
            f"most {MAX_QUERY_CHARS} characters (its parser cannot nest deeper safely); shorten it"
        )
    return _parse_cached(query)


@functools.lru_cache(maxsize=1024)
def _parse_cached(query: str) -> ast.Node:
    try:
        tree = pp.parse(query)
    except BaseException as exc:  # noqa: BLE001 - a Rust panic arrives as a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise PromQLError(f"cannot parse PromQL query {query!r}: {exc}") from None
    return _Translator(query).node(tree)


class _Translator:
    def __init__(self, query: str) -> None:
        self.query = query
        self.depth = 0

    def unsupported(self, what: str) -> PromQLError:
        return PromQLError(
            f"PromQL query {self.query!r} uses {what}, which ServeLab's evaluator does not "
            f"support (see docs/promql.md for the supported subset)"
        )

    def node(self, e) -> ast.Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise PromQLError(
                f"PromQL query {self.query[:200]!r} nests more than {MAX_DEPTH} levels deep, more than "
                "ServeLab's evaluator accepts; split it or simplify it"
            )
        try:
            return self._node(e)
        finally:
            self.depth -= 1

    def _node(self, e) -> ast.Node:  # noqa: C901 - one dispatch over the parser's node types
        if isinstance(e, pp.ParenExpr):
            return self.node(e.expr)
        if isinstance(e, pp.NumberLiteral):
            return ast.Number(float(e.val))
        if isinstance(e, pp.StringLiteral):
            return ast.String(str(e.val))
        if isinstance(e, pp.VectorSelector):
            return self.selector(e)
        if isinstance(e, pp.MatrixSelector):
            range_ms = _duration_ms(e.range)
            return ast.RangeSelector(self.selector(e.vector_selector), range_ms)
        if isinstance(e, pp.UnaryExpr):
            return ast.Negate(self.node(e.expr))
        if isinstance(e, pp.BinaryExpr):
            return self.binary(e)
        if isinstance(e, pp.AggregateExpr):
            return self.aggregate(e)
        if isinstance(e, pp.Call):
            return self.call(e)
        if isinstance(e, pp.SubqueryExpr):
            raise self.unsupported(f"a subquery ({e})")
        raise self.unsupported(f"a {type(e).__name__} ({e})")

    def selector(self, e) -> ast.Selector:
        if e.matchers.or_matchers:
            raise self.unsupported(f"'or' inside label matchers ({e})")
        matchers = []
        if e.name is not None:
            matchers.append(ast.LabelMatcher("__name__", "=", e.name))
        for m in e.matchers.matchers:
            op = next((sym for member, sym in _MATCH_OPS if member == m.op), None)
            if op is None:
                raise self.unsupported(f"the label matcher {m}")
            regex = None
            if op in ("=~", "!~"):
                try:
                    regex = _compile_regex(m.value)
                except re.error as exc:
                    raise self.unsupported(
                        f"the regex {m.value!r} of label {m.name}, which Python's re cannot compile ({exc})"
                    ) from None
            matchers.append(ast.LabelMatcher(m.name, op, m.value, regex))
        offset_ms = _duration_ms(e.offset) if e.offset is not None else 0
        at = None
        if e.at is not None:
            at = self.at(e)
        return ast.Selector(e.name, tuple(matchers), offset_ms, at)

    def at(self, e) -> ast.At:
        kind = e.at.type
        if kind == pp.AtModifierType.Start:
            return ast.At("start")
        if kind == pp.AtModifierType.End:
            return ast.At("end")
        try:
            when = e.at.at
        except BaseException as exc:  # noqa: BLE001 - the binding panics on times before 1970
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            raise self.unsupported("an @ modifier time outside 1970 to 9999") from None
        return ast.At("time", round(when.timestamp() * 1000))

    def binary(self, e) -> ast.Binary:
        op = str(e.op)
        if op not in _BINARY_OPS:
            raise self.unsupported(f"the binary operator {op!r}")
        mod = e.modifier
        return_bool = False
        matching = ast.Matching(on=False, labels=())
        if mod is not None:
            return_bool = bool(mod.return_bool)
            fill = mod.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise self.unsupported("fill() modifiers")
            card = mod.card
            if card in (pp.VectorMatchCardinality.ManyToOne, pp.VectorMatchCardinality.OneToMany):
                raise self.unsupported("group_left/group_right (many-to-one matching)")
            if mod.matching is not None:
                on = mod.matching.type == pp.LabelModifierType.Include
                matching = ast.Matching(on=on, labels=tuple(mod.matching.labels))
        return ast.Binary(op, self.node(e.lhs), self.node(e.rhs), return_bool, matching)

    def aggregate(self, e) -> ast.Aggregate:
        op = str(e.op)
        if op not in AGGREGATIONS:
            raise self.unsupported(f"the aggregation {op}()")
        grouping: tuple[str, ...] = ()
        without = False
        if e.modifier is not None:
            grouping = tuple(e.modifier.labels)
            without = e.modifier.type == pp.AggModifierType.Without
        return ast.Aggregate(op, self.node(e.expr), grouping, without)  # type: ignore[arg-type]

    def call(self, e) -> ast.Call:
        name = e.func.name
        if name not in FUNCTIONS:
            raise self.unsupported(f"the function {name}()")
        return ast.Call(name, tuple(self.node(a) for a in e.args))


def _duration_ms(d: timedelta) -> int:
    return round(d / timedelta(milliseconds=1))


@functools.lru_cache(maxsize=256)
def _compile_regex(pattern: str) -> re.Pattern:
    # Prometheus uses Go's RE2 syntax; for the patterns analyses use (alternations, classes,
    # `5..`, `.*`) Python's re means the same. Anchoring is by fullmatch, as `^(?:re)$`; like
    # Prometheus 2.x (not 3.x), `.` does not match a newline.
    return re.compile(pattern)
