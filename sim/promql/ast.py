"""The evaluator's own expression tree: small frozen records for the supported subset.

:func:`sim.promql.parse.parse_query` builds it from the tree of the real PromQL parser
(``promql-parser``), checking on the way that every construct is one the evaluator implements;
the evaluator then never has to guess what an unsupported node means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Union

MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class LabelMatcher:
    name: str
    op: MatchOp
    value: str
    # Prometheus anchors regexes at both ends: `^(?:re)$`; fullmatch does the same.
    regex: re.Pattern | None = field(default=None, compare=False)

    def matches(self, actual: str) -> bool:
        """``actual`` is "" for a missing label, as Prometheus treats it."""
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self.regex.fullmatch(actual) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class At:
    """The @ modifier: a fixed time, or the query's start() or end()."""

    kind: Literal["time", "start", "end"]
    t_ms: int = 0


@dataclass(frozen=True)
class Selector:
    """An instant-vector selector: the latest sample within the lookback window."""

    name: str | None
    matchers: tuple[LabelMatcher, ...]  # includes a __name__ matcher when the name is set
    offset_ms: int = 0
    at: At | None = None


@dataclass(frozen=True)
class RangeSelector:
    """A range-vector selector `sel[range]`, only ever an argument of a range function."""

    selector: Selector
    range_ms: int


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregate:
    op: Literal["sum", "avg", "max", "min", "count"]
    expr: Node
    grouping: tuple[str, ...]
    without: bool  # False: `by (grouping)`, or no clause (grouping empty)


@dataclass(frozen=True)
class Matching:
    """`on(...)` (on=True) or `ignoring(...)`; the default is ignoring()."""

    on: bool
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / % ^ == != > < >= <= and or unless
    lhs: Node
    rhs: Node
    return_bool: bool
    matching: Matching


@dataclass(frozen=True)
class Negate:
    expr: Node


Node = Union[Number, String, Selector, RangeSelector, Call, Aggregate, Binary, Negate]

ARITHMETIC_OPS = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON_OPS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPS = frozenset({"and", "or", "unless"})
