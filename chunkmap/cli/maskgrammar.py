"""The parser of the mask language of :mod:`chunkmap.cli.maskexpr` (its grammar, precedence,
types and the reason it is not Python's ``ast`` are documented there).

numpy only. :func:`tokenize` splits the text with one regular expression; :func:`parse` reads the
tokens by recursive descent, one method per level of the grammar, checking types as it goes, into
a tree of :class:`Node`; :meth:`Node.evaluate` calls numpy on the tree and :meth:`Node.text` prints
its normalised text. Nothing is given to ``eval``, ``exec`` or ``compile``.

Examples
--------
>>> tree = parse("in1 <= -1e10 | isnan(in2)", n_inputs=2)
>>> tree.op, [operand.op for operand in tree.operands], tree.text()
('|', ['<=', 'isnan'], '(in1 <= -1e10) | isnan(in2)')
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from ..errors import OptionError

__all__ = ["MAX_DEPTH", "Node", "parse", "tokenize"]

#: deepest nesting of parentheses, calls and unary operators.
MAX_DEPTH = 100


def _negate(value: Any) -> Any:
    """``-value``, in a signed type for unsigned and boolean inputs (never wrapped around)."""
    value = np.asarray(value)
    if value.dtype.kind in "bu":
        value = value.astype(np.result_type(value.dtype, np.int8))
    return np.negative(value)


FUNCTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    # name: (numpy function, kind of its result)
    "isnan": (np.isnan, "condition"),
    "isinf": (np.isinf, "condition"),
    "isfinite": (np.isfinite, "condition"),
    "abs": (np.abs, "number"),
}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}
#: what each operator of the tree computes (``&`` and ``|`` fold over any number of operands)
OPERATIONS: dict[str, Callable[..., Any]] = {
    "-": _negate, "~": np.logical_not, "&": np.logical_and, "|": np.logical_or, **COMPARISONS,
    **{name: function for name, (function, _) in FUNCTIONS.items()},
}
#: how tightly numpy (Python) binds each operator; an operand binding looser is parenthesised in
#: the normalised text. Inputs, numbers, calls and ``-x`` bind tightest.
NUMPY_BINDING = {**dict.fromkeys(COMPARISONS, 0), "|": 1, "&": 2, "~": 3}
TIGHTEST = 4
#: the logical operators, loosest first: the grammar's levels above comparisons
LOGICAL = ("|", "&")
NO_ARITHMETIC = "the mask grammar has no arithmetic"
HINTS = {
    "and": "use '&' for 'and'", "&&": "use '&' for 'and'", "or": "use '|' for 'or'", "||": "use '|' for 'or'",
    "not": "use '~' for 'not'", "=": "use '==' to compare", "!": "use '~' for 'not' or '!=' to compare",
    **dict.fromkeys(("+", "*", "/", "%", "**"), NO_ARITHMETIC),
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op><=|>=|==|!=|\*\*|&&|\|\||[<>&|~()\-])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL | re.ASCII,
)
_INPUT = re.compile(r"in(\d+)", re.ASCII)


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "op", "other" or "end"
    text: str
    column: int  # 1-based


@dataclass(frozen=True)
class Node:
    """One node of a parsed mask.

    ``op`` is ``"input"`` (``value``: the 0-based input index), ``"number"`` (``value`` and its
    ``literal``), or an operator of :data:`OPERATIONS` applied to ``operands``.
    """

    op: str
    operands: tuple[Node, ...] = ()
    value: Union[int, float] = 0
    literal: str = ""

    @property
    def kind(self) -> str:
        """``"number"`` or ``"condition"``."""
        if self.op in FUNCTIONS:
            return FUNCTIONS[self.op][1]
        return "number" if self.op in ("input", "number", "-") else "condition"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        if self.op == "input":
            return columns[int(self.value)]
        if self.op == "number":
            return self.value
        values = [operand.evaluate(columns) for operand in self.operands]
        operation = OPERATIONS[self.op]
        return operation(values[0]) if len(values) == 1 else functools.reduce(operation, values)

    def text(self) -> str:
        """The normalised text: numpy's meaning, parenthesised where numpy's precedence differs."""
        if self.op == "input":
            return f"in{int(self.value) + 1}"
        if self.op == "number":
            return self.literal
        if self.op in FUNCTIONS:
            return f"{self.op}({self.operands[0].text()})"
        if self.op == "-":
            return f"-{self.operands[0].text()}"
        if self.op == "~":
            return f"~{self.operands[0].bound_text(NUMPY_BINDING['~'])}"
        return f" {self.op} ".join(operand.bound_text(NUMPY_BINDING[self.op]) for operand in self.operands)

    def bound_text(self, binding: int) -> str:
        """The text as an operand of an operator that binds ``binding`` tightly."""
        text = self.text()
        return text if NUMPY_BINDING.get(self.op, TIGHTEST) >= binding else f"({text})"


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; characters outside the grammar become ``"other"`` tokens.

    Examples
    --------
    >>> [t.text for t in tokenize("(in1<=-1e10)|isnan(in2)")]
    ['(', 'in1', '<=', '-', '1e10', ')', '|', 'isnan', '(', 'in2', ')', '']
    """
    tokens = [Token(match.lastgroup or "", match.group(), match.start() + 1)
              for match in _TOKEN.finditer(text) if match.lastgroup != "space"]
    return [*tokens, Token("end", "", len(text) + 1)]


class _Parser:
    def __init__(self, text: str, n_inputs: int) -> None:
        self.source = text
        self.n_inputs = n_inputs
        self.tokens = tokenize(text)
        self.position = 0
        self.depth = 0
        self._check_numbers()

    # helpers

    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def advance(self) -> Token:
        self.position += 1
        return self.tokens[self.position - 1]

    def fail(self, message: str, column: int) -> OptionError:
        caret = " " * (column - 1) + "^"
        shown = self.source.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        return OptionError(f"{message}\n  {shown}\n  {caret}")

    def unexpected(self, token: Token, expected: str) -> OptionError:
        what = {"end": "end", "name": f"name {token.text!r}", "number": f"number {token.text!r}"}.get(
            token.kind, repr(token.text))
        hint = f" ({HINTS[token.text]})" if token.text in HINTS else ""
        return self.fail(f"unexpected {what} at column {token.column} of the mask{hint}; expected {expected}",
                         token.column)

    def operand_expected(self) -> str:
        names = "in1" if self.n_inputs == 1 else f"in1..in{self.n_inputs}"
        functions = ", ".join(f"{name}(...)" for name in FUNCTIONS)
        return f"a number, {names}, nan, inf, {functions}, '-', '~' or '('"

    def _check_numbers(self) -> None:
        """A number glued to a name or another number (``1e``, ``1.2.3``, ``2x``) is malformed."""
        for token, following in zip(self.tokens, self.tokens[1:]):
            glued = following.column == token.column + len(token.text)
            if token.kind == "number" and glued and following.kind in ("name", "number"):
                raise self.fail(f"malformed number {token.text + following.text!r} at column {token.column} "
                                f"of the mask; expected a decimal number such as 3, 0.5 or -1e10",
                                token.column)

    def nested(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the mask nests deeper than {MAX_DEPTH} levels at column {column}", column)

    def require(self, node: Node, kind: str, token: Token, context: str) -> Node:
        if node.kind != kind:
            example = "(in1 != 0)" if kind == "condition" else "in1"
            raise self.fail(f"{context} needs a {kind}; got the {node.kind} {node.text()!r} at column "
                            f"{token.column} of the mask (e.g. {example})", token.column)
        return node

    def inner(self, opening: Token) -> Node:
        """The mask inside ``(...)`` or a call, ``opening`` just consumed; one level deeper."""
        self.nested(opening.column)
        node = self.parse_logical()
        self.depth -= 1
        if self.token.text != ")":
            raise self.unexpected(self.token, f"')' to close the '(' at column {opening.column}, '&', '|' "
                                              f"or a comparison")
        self.advance()
        return node

    # grammar

    def parse(self) -> Node:
        start = self.token
        if start.kind == "end":
            raise self.fail("the mask is empty; expected a condition such as 'in1 <= -1e10'", 1)
        node = self.parse_logical()
        if self.token.text == ")":
            raise self.fail(f"unbalanced ')' at column {self.token.column} of the mask", self.token.column)
        if self.token.kind != "end":
            raise self.unexpected(self.token, "'&', '|', a comparison or the end of the mask")
        if node.kind != "condition":
            raise self.fail(f"the mask must be a condition (True = do not compute); got the number "
                            f"{node.text()!r}: compare it, e.g. '{node.text()} <= -1e10' or '{node.text()} != 0'",
                            start.column)
        return node

    def parse_logical(self, level: int = 0) -> Node:
        """``|`` (level 0) over ``&`` (level 1) over comparisons."""
        if level == len(LOGICAL):
            return self.parse_comparison()
        symbol, first = LOGICAL[level], self.token
        operands = [self.parse_logical(level + 1)]
        while self.token.text == symbol:
            operator = self.advance()
            self.require(operands[0], "condition", first, repr(symbol))
            following = self.token
            operands.append(self.require(self.parse_logical(level + 1), "condition", following,
                                         f"{symbol!r} at column {operator.column}"))
        return operands[0] if len(operands) == 1 else Node(symbol, tuple(operands))

    def parse_comparison(self) -> Node:
        first = self.token
        left = self.parse_unary()
        comparisons: list[Node] = []
        while self.token.text in COMPARISONS:
            operator = self.advance()
            self.require(left, "number", first, f"comparison {operator.text!r}")
            first = self.token
            right = self.require(self.parse_unary(), "number", first, f"comparison {operator.text!r}")
            comparisons.append(Node(operator.text, (left, right)))
            left = right
        if len(comparisons) < 2:
            return comparisons[0] if comparisons else left
        return Node("&", tuple(comparisons))

    def parse_unary(self) -> Node:
        token = self.token
        if token.text not in ("~", "-"):
            return self.parse_primary()
        self.advance()
        self.nested(token.column)
        operand_token = self.token
        operand = self.parse_unary()
        self.depth -= 1
        if token.text == "~":
            if operand.kind != "condition":
                raise self.fail(
                    f"'~' needs a condition; got the number {operand.text()!r} at column {operand_token.column} "
                    f"of the mask; '~' binds tighter than comparisons: write ~({operand.text()} > 0), "
                    f"with the comparison in parentheses", operand_token.column)
            return Node("~", (operand,))
        self.require(operand, "number", operand_token, f"'-' at column {token.column}")
        if operand.op == "number" and not operand.literal.startswith("-"):
            return Node("number", value=-operand.value, literal="-" + operand.literal)
        return Node("-", (operand,))

    def parse_primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            return Node("number", value=_number(token.text), literal=token.text)
        if token.text == "(":
            return self.inner(self.advance())
        if token.kind == "name":
            return self.parse_name()
        raise self.unexpected(token, self.operand_expected())

    def parse_name(self) -> Node:
        token = self.token
        name = token.text
        if name in ("nan", "inf"):
            self.advance()
            return Node("number", value=float(name), literal=name)
        match = _INPUT.fullmatch(name)
        if match:
            number = int(match.group(1)) if len(match.group(1)) < 10 else self.n_inputs + 1
            if not 1 <= number <= self.n_inputs or name != f"in{number}":
                inputs = "is 1 input" if self.n_inputs == 1 else f"are {self.n_inputs} inputs"
                raise self.fail(f"name {name!r} at column {token.column} of the mask is out of range: there "
                                f"{inputs}, in1..in{self.n_inputs}", token.column)
            self.advance()
            return Node("input", value=number - 1)
        if name not in FUNCTIONS:
            raise self.unexpected(token, self.operand_expected())
        self.advance()
        if self.token.text != "(":
            raise self.unexpected(self.token, f"'(' after {name}: functions are called as {name}(in1)")
        argument_token = self.tokens[self.position + 1]
        argument = self.inner(self.advance())
        return Node(name, (self.require(argument, "number", argument_token, f"{name}()"),))


def _number(literal: str) -> Union[int, float]:
    """An integer literal below 2**63 stays an exact int (so is its negation); anything else is a float.

    Examples
    --------
    >>> _number("3"), _number("3.0"), _number("1e999"), _number("1" * 30)
    (3, 3.0, inf, 1.111111111111111e+29)
    """
    if literal.isdigit() and len(literal) <= 20 and int(literal) < 2**63:
        return int(literal)
    return float(literal)


def parse(text: str, n_inputs: int) -> Node:
    """The tree of a mask over ``in1..in{n_inputs}``; an :class:`~chunkmap.errors.OptionError`
    naming the column, with a caret under it, for anything outside the grammar."""
    return _Parser(text, n_inputs).parse()
