"""The ``calculator`` tool: arithmetic by walking the expression's syntax tree, never ``eval``.

Accepted: int/float literals, ``+ - * / // % **``, unary ``+ -``, parentheses, the constants ``pi``
and ``e``, and the functions ``sqrt log log10 exp sin cos tan asin acos atan abs round floor ceil``.
Anything else (names, attributes, calls of other functions, strings, comprehensions) is refused with
a message. Sizes are bounded so that no expression can run for long or exhaust memory: the text
length, the nesting depth, and the size of integer powers and products (checked before computing them).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_EXPRESSION_CHARS = 1000
MAX_INT_BITS = 4096  # ~1233 decimal digits; larger integer results are refused

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable] = {
    "sqrt": math.sqrt, "log": math.log, "log10": math.log10, "exp": math.exp, "sin": math.sin,
    "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    """The expression is not accepted or cannot be evaluated; the message says why."""


def calculate(expression: str) -> int | float:
    """The value of ``expression``; raises :class:`CalculatorError` for anything outside the grammar above."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc}") from None
    try:
        value = _eval(tree.body)
    except CalculatorError:
        raise
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CalculatorError(f"{type(exc).__name__}: {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError(f"result is not finite ({value})")
    return value


def calculator(expression: str) -> str:
    """The built-in tool's function: the value as text (integral floats without a trailing ``.0``)."""
    value = calculate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        _check_size(type(node.op), left, right)
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex):
            raise CalculatorError(f"complex result: {ast.unparse(node)[:60]!r}")
        return value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not 1 <= len(node.args) <= 2:
            raise CalculatorError(f"{node.func.id}() takes one or two positional arguments")
        return _FUNCTIONS[node.func.id](*[_eval(a) for a in node.args])
    raise CalculatorError(f"not allowed in a calculator expression: {ast.unparse(node)[:60]!r}")


def _check_size(op: type, left: int | float, right: int | float) -> None:
    """Refuse integer results above MAX_INT_BITS before computing them (floats overflow on their own)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if op is ast.Pow and abs(left) > 1 and right > 0 and right * abs(left).bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
    if op is ast.Mult and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result too large (more than {MAX_INT_BITS} bits)")
