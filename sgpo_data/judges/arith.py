"""The arithmetic check behind the `arith` judge: every equation written in a step is evaluated exactly.

In each step, runs like `12 * 3 = 36`, chains (`3 + 4 = 7 * 2 = 14`), `$5`, `1,200`, `3/4`, `20% of 50`, `5 × 7`
and units after numbers (`5 apples + 3 apples = 8 apples`) are read, line by line; every side is evaluated with
exact fractions, and a side that is not plain arithmetic is skipped, as is one too big to be a calculation (more
than 100 operators, or a number of more than 100 digits). A run of arithmetic that touches algebra
(`x^2 - 3 = 8`, `2x + 3 = 7`, `a_3`, `\frac{1}{2}`) is skipped whole: the numbers in it are not the terms. In a chain a side may also match the first
number of the next (`3 + 4 = 7 * 2 = 14`, a common shorthand). Only an equation whose left side holds an
operator is checked (`x = 5`, `2 dozen = 24` are statements, not calculations). A right side written as a
rounded decimal (`1/3 = 0.33`) is compared at its own precision.

`first_false_step(steps)` is the index of the first step holding a false equation, or -1. `ArithJudge` is
the `arith` judge built on it.
"""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict
from sgpo_data.schema import JudgeStatus

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_PERCENT_OF = re.compile(r"(\d(?:\.\d+)?)\s*%\s*of\s*", re.IGNORECASE)
_PERCENT = re.compile(r"(\d(?:\.\d+)?)\s*%")
_TIMES = re.compile(r"(?<=[\d)])\s*(?:×|x|times|\\times|\\cdot|·)\s*(?=[\d($])", re.IGNORECASE)
_DIVIDE = re.compile(r"÷|\\div")
_UNIT = re.compile(r"(?<=\d)\s*(?:[A-Za-z]+\b\.?)(?!\s*[\d(])")  # a word right after a number, not before one
# Algebra, not arithmetic: a letter written onto a number (2x, 3n) and LaTeX structure (x^2, a_3, \frac{1}{2}).
# They become a mark no arithmetic run may touch, so "x^2 - 3 = 8" is not read as "2 - 3 = 8".
_ALGEBRA = re.compile(r"(?<=\d)[A-Za-z](?![A-Za-z])|[A-Za-z](?=[\d(])|[\^_{}\\]")
_MARK = "\u00a7"
_ARITHMETIC_RUN = re.compile(r"[\d\s.+\-*/()=]+")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# A side past these bounds is a runaway (a repetition loop, a pasted table), not a calculation: parsing it or
# computing it exactly could exhaust memory, the recursion limit or the time, so it is not checked.
_MAX_OPERATORS = 100
_LONG_NUMBER = re.compile(r"(?<!\d)\d{101}")  # more than 100 digits


def _evaluate(expr: str) -> Fraction | None:
    """The exact value of a plain arithmetic expression; None for anything else, and for one past the bounds."""
    if sum(map(expr.count, "+-*/")) > _MAX_OPERATORS or _LONG_NUMBER.search(expr):
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None

    def value(node) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        raise ValueError

    try:
        return value(tree)
    except (ValueError, ZeroDivisionError):
        return None


def _normalise(text: str) -> str:
    text = text.replace("$", "").replace("\\$", "")
    text = _THOUSANDS.sub("", text)
    text = _PERCENT_OF.sub(r"\1/100*", text)
    text = _PERCENT.sub(r"(\1/100)", text)
    text = _DIVIDE.sub("/", _TIMES.sub("*", text))
    return _UNIT.sub("", _ALGEBRA.sub(_MARK, text))


def _agrees(left: Fraction, right: Fraction, written: str) -> bool:
    decimals = re.fullmatch(r"\s*-?\d+\.(\d+)\s*", written)
    if decimals and left != right:  # a rounded decimal: equal at its own precision
        return abs(left - right) <= Fraction(1, 2 * 10 ** len(decimals.group(1)))
    return left == right


def false_equations(step: str) -> list[str]:
    """The equations of `step` that do not hold, as written after normalisation."""
    wrong = []
    for line in _normalise(step).splitlines():
        for match in _ARITHMETIC_RUN.finditer(line):
            # a run takes in the whitespace around it, so its neighbours are the characters next to it
            if _MARK in (line[match.start() - 1:match.start()], line[match.end():match.end() + 1]):
                continue  # part of an algebraic expression
            run = match.group(0)
            sides = [side.strip().rstrip(".").strip() for side in run.split("=")]
            for left, right in zip(sides, sides[1:]):
                if not re.search(r"\d\s*[-+*/]\s*[\d(]", left):
                    continue  # no calculation on the left
                a, b = _evaluate(left), _evaluate(right)
                if a is None or b is None or _agrees(a, b, right):
                    continue
                # a sloppy chain, "3 + 4 = 7 * 2 = 14": the left side may equal the right side's first number
                first = re.match(r"\(?\s*(-?\d+(?:\.\d+)?)", right)
                if first and _agrees(a, Fraction(first.group(1)), first.group(1)):
                    continue
                wrong.append(f"{left} = {right}")
    return wrong


def first_false_step(steps: list[str]) -> int:
    """The index of the first step with a false equation; -1 when every equation holds (or there is none)."""
    return next((i for i, step in enumerate(steps) if false_equations(step)), -1)


class ArithJudge(Judge):
    """The `arith` judge: the first step with a false equation is the first error; -1 when none is false (which
    says nothing about errors that are not arithmetic: chain it before an LLM judge with `cascade`)."""

    model_name = "arith"

    def decide(self, item: JudgeInput) -> Verdict:
        for k, step in enumerate(item.steps):
            if wrong := false_equations(step):
                return Verdict(k, JudgeStatus.OK, "; ".join(wrong), judge="arith")
        return Verdict(-1, JudgeStatus.OK, "no false equation", judge="arith")


@JUDGES.register("arith")
def _arith(engine, options, policy=None) -> Judge:
    """Checks every written calculation (`a + b = c`) exactly; no model."""
    return ArithJudge()
