"""A small, safe evaluator for the subset of expr-lang that Argo Rollouts conditions use.

Argo evaluates ``successCondition``/``failureCondition`` with expr-lang
(github.com/expr-lang/expr) over an environment holding ``result`` and the helpers
``isNaN``, ``isInf``, ``isNil``, ``default``, ``asInt`` and ``asFloat``
(``utils/evaluate/evaluate.go``). This module parses that language into a tree and
interprets it; it never calls Python's ``eval``.

Supported: number, string, ``true``/``false``/``nil`` literals; ``result`` and indexing
(``result[0]``, negative indices count from the end as in expr-lang); calls of the helpers
above plus ``len``, ``abs``, ``min``, ``max``; unary ``!``/``not``/``-``/``+``; ``**``,
``*``, ``/``, ``%``, ``+``, ``-``; comparisons; ``&&``/``and``, ``||``/``or`` (short-circuit);
and ``cond ? a : b``. Precedence follows expr-lang. ``/`` always gives a float, as in expr-lang.

Errors: :class:`ExprSyntaxError` at compile time (the manifest is wrong);
:class:`ExprEvalError` at run time (e.g. ``index out of range``), which Argo turns into a
measurement Error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


class ExprSyntaxError(ValueError):
    """The condition does not parse, or names something unknown."""


class ExprEvalError(ValueError):
    """The condition failed while running (index out of range, wrong types...)."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>\*\*|&&|\|\||==|!=|<=|>=|[-+*/%<>!()\[\],?:^])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
)""",
    re.VERBOSE,
)

FUNCTIONS = ("len", "isNaN", "isInf", "isNil", "default", "asInt", "asFloat", "abs", "min", "max")
NAMES = ("result",)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_BINARY = {  # operator -> (precedence, right associative)
    "||": (10, False),
    "&&": (20, False),
    "==": (30, False), "!=": (30, False), "<": (30, False), "<=": (30, False), ">": (30, False), ">=": (30, False),
    "+": (40, False), "-": (40, False),
    "*": (50, False), "/": (50, False), "%": (50, False),
    "**": (60, True), "^": (60, True),
}
_UNARY_PRECEDENCE = 55  # binds tighter than * and looser than ** (expr-lang: -2 ** 2 == -4)


@dataclass(frozen=True)
class Node:
    kind: str  # num, str, const, name, index, call, unary, binary, cond
    value: Any = None
    args: tuple["Node", ...] = ()


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprSyntaxError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos + 1} in {text!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "name" and value in _WORD_OPS:
            kind, value = "op", _WORD_OPS[value]
        tokens.append((kind, value, m.start(kind)))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self):
        return self.tokens[self.i]

    def next(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, value: str):
        kind, got, pos = self.next()
        if got != value or kind not in ("op",):
            shown = got or "end of expression"
            raise ExprSyntaxError(f"expected {value!r} at position {pos + 1}, found {shown!r} in {self.text!r}")

    def parse(self) -> Node:
        node = self.ternary()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ExprSyntaxError(f"unexpected {value!r} at position {pos + 1} in {self.text!r}")
        return node

    def ternary(self) -> Node:
        cond = self.binary(0)
        if self.peek()[1] == "?" and self.peek()[0] == "op":
            self.next()
            a = self.ternary()
            self.expect(":")
            b = self.ternary()
            return Node("cond", None, (cond, a, b))
        return cond

    def binary(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            kind, op, _ = self.peek()
            if kind != "op" or op not in _BINARY:
                return left
            prec, right_assoc = _BINARY[op]
            if prec < min_prec:
                return left
            self.next()
            right = self.binary(prec if right_assoc else prec + 1)
            left = Node("binary", "**" if op == "^" else op, (left, right))

    def unary(self) -> Node:
        kind, op, _ = self.peek()
        if kind == "op" and op in ("!", "-", "+"):
            self.next()
            operand = self.binary(_UNARY_PRECEDENCE) if op != "!" else self.unary()
            return Node("unary", op, (operand,))
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while self.peek()[0] == "op" and self.peek()[1] == "[":
            self.next()
            index = self.ternary()
            self.expect("]")
            node = Node("index", None, (node, index))
        return node

    def primary(self) -> Node:
        kind, value, pos = self.next()
        if kind == "num":
            is_float = any(c in value for c in ".eE")
            return Node("num", float(value) if is_float else int(value))
        if kind == "str":
            return Node("str", bytes(value[1:-1], "utf-8").decode("unicode_escape"))
        if kind == "op" and value == "(":
            node = self.ternary()
            self.expect(")")
            return node
        if kind == "name":
            if value in ("true", "false"):
                return Node("const", value == "true")
            if value == "nil":
                return Node("const", None)
            if self.peek()[1] == "(" and self.peek()[0] == "op":
                if value not in FUNCTIONS:
                    raise ExprSyntaxError(
                        f"unknown function {value}() in {self.text!r}; expected one of {', '.join(FUNCTIONS)}"
                    )
                self.next()
                args: list[Node] = []
                if self.peek()[1] != ")":
                    args.append(self.ternary())
                    while self.peek()[1] == ",":
                        self.next()
                        args.append(self.ternary())
                self.expect(")")
                return Node("call", value, tuple(args))
            if value not in NAMES:
                raise ExprSyntaxError(f"unknown name {value} in {self.text!r}; the only variable is result")
            return Node("name", value)
        shown = value or "end of expression"
        raise ExprSyntaxError(f"unexpected {shown!r} at position {pos + 1} in {self.text!r}")


@dataclass(frozen=True)
class Expression:
    """A compiled condition: ``compile_expr(text).evaluate(result)``."""

    text: str
    tree: Node

    def evaluate(self, result: Any) -> Any:
        return _eval(self.tree, result)

    def evaluate_bool(self, result: Any) -> bool:
        out = self.evaluate(result)
        if not isinstance(out, bool):
            raise ExprEvalError(f"expected bool, but got {_go_type(out)}")
        return out


def compile_expr(text: str) -> Expression:
    if not isinstance(text, str) or not text.strip():
        raise ExprSyntaxError("expected an expression over result, got an empty string")
    if len(text) > 4096:
        raise ExprSyntaxError(f"expression too long ({len(text)} characters; at most 4096)")
    try:
        return Expression(text, _Parser(text).parse())
    except RecursionError:
        raise ExprSyntaxError("expression nested too deeply") from None


def _go_type(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]float64"
    return type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _eval(node: Node, result: Any) -> Any:
    k = node.kind
    if k in ("num", "str", "const"):
        return node.value
    if k == "name":
        return result
    if k == "index":
        seq, idx = _eval(node.args[0], result), _eval(node.args[1], result)
        if not isinstance(seq, (list, tuple)):
            raise ExprEvalError(f"cannot fetch {idx} from {_go_type(seq)}")
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise ExprEvalError(f"cannot use {_go_type(idx)} as index to {_go_type(seq)}")
        j = idx + len(seq) if idx < 0 else idx
        if not 0 <= j < len(seq):
            raise ExprEvalError(f"index out of range: {idx} (array length is {len(seq)})")
        return seq[j]
    if k == "unary":
        v = _eval(node.args[0], result)
        if node.value == "!":
            if not isinstance(v, bool):
                raise ExprEvalError(f"invalid operation: ! {_go_type(v)}")
            return not v
        if not _is_num(v):
            raise ExprEvalError(f"invalid operation: {node.value} {_go_type(v)}")
        return -v if node.value == "-" else v
    if k == "binary":
        return _binary(node, result)
    if k == "cond":
        c = _eval(node.args[0], result)
        if not isinstance(c, bool):
            raise ExprEvalError(f"non-bool expression (type {_go_type(c)}) used as condition")
        return _eval(node.args[1] if c else node.args[2], result)
    if k == "call":
        return _call(node, result)
    raise AssertionError(k)


def _binary(node: Node, result: Any) -> Any:
    op = node.value
    if op in ("&&", "||"):
        a = _eval(node.args[0], result)
        if not isinstance(a, bool):
            raise ExprEvalError(f"invalid operation: {_go_type(a)} {op} ... (operands must be bool)")
        if (op == "&&" and not a) or (op == "||" and a):
            return a
        b = _eval(node.args[1], result)
        if not isinstance(b, bool):
            raise ExprEvalError(f"invalid operation: bool {op} {_go_type(b)} (operands must be bool)")
        return b
    a, b = _eval(node.args[0], result), _eval(node.args[1], result)
    if op == "==":
        return (_is_num(a) and _is_num(b) and a == b) or (not (_is_num(a) and _is_num(b)) and type(a) is type(b) and a == b)
    if op == "!=":
        return not _binary(Node("binary", "==", node.args), result)
    if op in ("<", "<=", ">", ">="):
        if not ((_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str))):
            raise ExprEvalError(f"invalid operation: {op} (mismatched types {_go_type(a)} and {_go_type(b)})")
        # IEEE semantics: every comparison with NaN is false, as in Go.
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not (_is_num(a) and _is_num(b)):
        raise ExprEvalError(f"invalid operation: {op} (mismatched types {_go_type(a)} and {_go_type(b)})")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        a, b = float(a), float(b)
        if b == 0.0:
            return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    if op == "%":
        if not (isinstance(a, int) and isinstance(b, int)):
            raise ExprEvalError(f"invalid operation: % (mismatched types {_go_type(a)} and {_go_type(b)})")
        if b == 0:
            raise ExprEvalError("integer divide by zero")
        return int(math.fmod(a, b))
    if op == "**":
        try:
            return float(a) ** float(b)
        except (OverflowError, ZeroDivisionError):
            return math.inf
    raise AssertionError(op)


def _call(node: Node, result: Any) -> Any:
    name = node.value
    args = [_eval(a, result) for a in node.args]

    def arity(n: int) -> None:
        if len(args) != n:
            raise ExprEvalError(f"{name}() takes {n} argument(s), got {len(args)}")

    if name == "len":
        arity(1)
        if not isinstance(args[0], (list, tuple, str)):
            raise ExprEvalError(f"invalid argument for len (type {_go_type(args[0])})")
        return len(args[0])
    if name in ("isNaN", "isInf", "abs"):
        arity(1)
        if not _is_num(args[0]):
            raise ExprEvalError(f"{name}() expects a number, got {_go_type(args[0])}")
        x = float(args[0])
        return math.isnan(x) if name == "isNaN" else math.isinf(x) if name == "isInf" else abs(args[0])
    if name == "isNil":
        # Argo's isNil ignores its argument and asks whether the provider's result is nil.
        arity(1)
        return result is None
    if name == "default":
        # Argo's default(x, d) likewise: d only when the whole result is nil (not [] or NaN).
        arity(2)
        return args[1] if result is None else result
    if name in ("asInt", "asFloat"):
        arity(1)
        v = args[0]
        try:
            if isinstance(v, str):
                return int(v) if name == "asInt" else float(v)
            if _is_num(v):
                return int(v) if name == "asInt" else float(v)
        except ValueError as exc:
            raise ExprEvalError(f"{name}(): {exc}") from None
        raise ExprEvalError(f"{name}() not supported on {_go_type(v)} {v}")
    if name in ("min", "max"):
        if not args or not all(_is_num(a) for a in args):
            raise ExprEvalError(f"{name}() expects numbers")
        return min(args) if name == "min" else max(args)
    raise AssertionError(name)
