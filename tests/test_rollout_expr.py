"""The expr-lang subset of Argo's conditions: a table of expressions, results and outcomes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.rollout.expr import ExprEvalError, ExprSyntaxError, compile_expr

NAN = math.nan


@pytest.mark.parametrize(
    "text, result, expected",
    [
        pytest.param("result[0] < 0.01", [0.005], True, id="vector-below"),
        pytest.param("result[0] < 0.01", [0.02], False, id="vector-above"),
        pytest.param("result[0] < 0.05", [NAN], False, id="nan-compares-false"),
        pytest.param("result[0] > 0.05", [NAN], False, id="nan-failure-only-false"),
        pytest.param("isNaN(result[0])", [NAN], True, id="isNaN"),
        pytest.param("isInf(result[0])", [math.inf], True, id="isInf"),
        pytest.param("len(result) > 0 && result[0] < 1", [], False, id="guard-short-circuits"),
        pytest.param("len(result) == 0 || result[0] < 1", [], True, id="or-short-circuits"),
        pytest.param("!(result[0] > 2)", [1.0], True, id="not"),
        pytest.param("not (result[0] > 2) and true", [3.0], False, id="word-operators"),
        pytest.param("result > 0.9", 0.95, True, id="scalar-result"),
        pytest.param("default(result, 7) == 7", None, True, id="default-on-nil"),
        pytest.param("default(result, 7) == 7", 3, False, id="default-keeps-value"),
        pytest.param("isNil(result)", None, True, id="isNil"),
        pytest.param("result[-1] == 3", [1, 2, 3], True, id="negative-index"),
        pytest.param("1 + 2 * 3 == 7", None, True, id="precedence"),
        pytest.param("(1 + 2) * 3 == 9", None, True, id="parentheses"),
        pytest.param("2 ** 3 ** 2 == 512", None, True, id="power-right-assoc"),
        pytest.param("7 / 2 == 3.5", None, True, id="division-is-float"),
        pytest.param("7 % 3 == 1", None, True, id="modulo"),
        pytest.param("-result[0] < 0", [2.0], True, id="unary-minus"),
        pytest.param("result[0] / result[1] > 3", [9.0, 2.0], True, id="arithmetic-on-result"),
        pytest.param("asInt(result[0]) == 2", [2.9], True, id="asInt-truncates"),
        pytest.param('asFloat("0.5") == 0.5', None, True, id="asFloat-string"),
        pytest.param("result[0] > 1 ? true : false", [2], True, id="ternary"),
        pytest.param("abs(result[0]) < 1 && max(1, 2) == 2", [-0.5], True, id="abs-max"),
        pytest.param('"a" < "b"', None, True, id="string-compare"),
    ],
)
def test_evaluates(text, result, expected):
    assert compile_expr(text).evaluate(result) == expected


@pytest.mark.parametrize(
    "text, result, message",
    [
        pytest.param("result[0] < 0.01", [], "index out of range: 0 (array length is 0)", id="empty-vector"),
        pytest.param("result[0] < 0.01", None, "cannot fetch 0 from nil", id="nil-result"),
        pytest.param("result < 1", [1.0], "mismatched types []float64 and int", id="list-vs-number"),
        pytest.param("result[0] && true", [1.0], "operands must be bool", id="number-as-bool"),
        pytest.param("result[0] + 1", [1.0], "expected bool, but got float64", id="not-a-bool"),
    ],
)
def test_evaluation_errors(text, result, message):
    with pytest.raises(ExprEvalError) as e:
        compile_expr(text).evaluate_bool(result)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("result[0] <", "unexpected 'end of expression'", id="dangling-operator"),
        pytest.param("foo > 1", "unknown name foo", id="unknown-name"),
        pytest.param("__import__('os')", "unknown function __import__()", id="no-python"),
        pytest.param("result[0] < 1 )", "unexpected ')'", id="unbalanced"),
        pytest.param("result[0] << 1", "unexpected '<'", id="shift-is-not-expr"),
        pytest.param("", "empty", id="empty"),
        pytest.param("result[0] < 1 ; 1", "unexpected character ';'", id="bad-character"),
    ],
)
def test_syntax_errors(text, message):
    with pytest.raises(ExprSyntaxError) as e:
        compile_expr(text)
    assert message in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="result[]0123456789.<>=!&|()+-*/% ,?:lenisNaN\"'x", max_size=40))
def test_fuzz_never_crashes(text):
    """Any input parses or raises ExprSyntaxError; evaluation raises only ExprEvalError."""
    try:
        e = compile_expr(text)
    except ExprSyntaxError:
        return
    for result in ([], [0.5], [math.nan], None, 2.0):
        try:
            e.evaluate(result)
        except ExprEvalError:
            pass
