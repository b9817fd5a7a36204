"""A small, safe mask language for the command line: ``--mask "(in1 <= -1e10) | isnan(in2)"``.

numpy only. The text is read by a hand-written tokenizer and recursive-descent parser into a tree
of a handful of node types, and evaluated by calling numpy on that tree. It is never given to
``eval``, ``exec`` or ``compile``: anything outside the grammar below is rejected with an
:class:`~chunkmap.errors.OptionError` naming the column (1-based) where it went wrong.

Grammar
-------
::

    mask       := or
    or         := and ( "|" and )*
    and        := comparison ( "&" comparison )*
    comparison := unary ( ("<" | "<=" | ">" | ">=" | "==" | "!=") unary )*
    unary      := "~" unary | "-" unary | primary
    primary    := NUMBER | "nan" | "inf" | "in1" ... "inN"
                | ("isnan" | "isinf" | "isfinite" | "abs") "(" mask ")"
                | "(" mask ")"

``in1`` .. ``inN`` are the inputs in the order given (1-based); ``NUMBER`` is a decimal integer or
float with an optional exponent (``3``, ``0.5``, ``.5``, ``-1e10``, ``2.5E-3``). Whitespace is free.

Precedence, tightest first: ``~`` and unary ``-``; comparisons; ``&``; ``|``. So, unlike in
Python, comparisons need no parentheses:

- ``in1 <= -1e10 | isnan(in2)`` means ``(in1 <= -1e10) | isnan(in2)``;
- ``in1 > 0 & in2 < 1 | in3 == 0`` means ``((in1 > 0) & (in2 < 1)) | (in3 == 0)``;
- ``~isnan(in1) & in1 > 0`` means ``(~isnan(in1)) & (in1 > 0)``;
- ``0 <= in1 < 1`` chains as in Python: ``(0 <= in1) & (in1 < 1)``.

Types are checked when parsing. Inputs, numbers, ``-x`` and ``abs(x)`` are *numbers*;
comparisons, ``isnan``/``isinf``/``isfinite`` and the logical operators are *conditions*.
``~``, ``&`` and ``|`` take conditions (``~in1 > 0`` is rejected: write ``~(in1 > 0)``),
comparisons and functions take numbers, and the whole mask must be a condition: ``in1`` alone or
``in1 + 1`` is not a mask. There is no arithmetic, no attribute access, no subscript, no string
and no call of anything but the four functions.

Values follow numpy: a comparison with NaN is False (``!=`` is True), so ``in1 <= -1e10`` does
not mask NaN; add ``| isnan(in1)`` for that. ``-x`` of an unsigned or boolean input is computed
in a signed type, so ``-in1 < 0`` is never wrapped around. The :func:`repr` of a compiled mask is
its normalised text: fully parenthesised where precedence differs from numpy's, so it is also a
numpy expression with the same meaning.

Examples
--------
>>> import numpy as np
>>> mask = compile_mask("in1 <= -1e10 | isnan(in2)", n_inputs=2)
>>> mask
MaskExpression('(in1 <= -1e10) | isnan(in2)', n_inputs=2)
>>> mask(np.array([-1e12, 0.5, 0.5]), np.array([1.0, np.nan, 2.0]))
array([ True,  True, False])
>>> compile_mask("in1 <= import os", n_inputs=1)
Traceback (most recent call last):
...
chunkmap.errors.OptionError: unexpected name 'import' at column 8 of the mask; expected a number, in1, nan, inf, isnan(...), isinf(...), isfinite(...), abs(...), '-', '~' or '('
  in1 <= import os
         ^
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from ..errors import MaskError, OptionError

__all__ = ["MaskExpression", "compile_mask"]

#: longest mask text accepted, in characters.
MAX_LENGTH = 10_000
#: deepest nesting of parentheses, calls and unary operators.
MAX_DEPTH = 100

FUNCTIONS: dict[str, tuple[Callable[[Any], Any], str]] = {
    # name: (numpy function, kind of its result)
    "isnan": (np.isnan, "condition"),
    "isinf": (np.isinf, "condition"),
    "isfinite": (np.isfinite, "condition"),
    "abs": (np.abs, "number"),
}
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
HINTS = {
    "and": "use '&' for 'and'",
    "or": "use '|' for 'or'",
    "not": "use '~' for 'not'",
    "=": "use '==' to compare",
    "!": "use '~' for 'not' or '!=' to compare",
    "+": "the mask grammar has no arithmetic",
    "*": "the mask grammar has no arithmetic",
    "/": "the mask grammar has no arithmetic",
    "%": "the mask grammar has no arithmetic",
    "**": "the mask grammar has no arithmetic",
    "&&": "use '&' for 'and'",
    "||": "use '|' for 'or'",
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


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    index: int  # 0-based

    kind = "number"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        return columns[self.index]

    def text(self) -> str:
        return f"in{self.index + 1}"


@dataclass(frozen=True)
class Number:
    value: Union[int, float]
    literal: str

    kind = "number"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        return self.value

    def text(self) -> str:
        return self.literal


@dataclass(frozen=True)
class Negate:
    operand: Node

    kind = "number"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        value = np.asarray(self.operand.evaluate(columns))
        if value.dtype.kind in "bu":  # negate in a signed type, never wrap around
            value = value.astype(np.result_type(value.dtype, np.int8))
        return np.negative(value)

    def text(self) -> str:
        return f"-{_wrap(self.operand, (Input, Number, Call, Negate))}"


@dataclass(frozen=True)
class Call:
    name: str
    argument: Node

    @property
    def kind(self) -> str:
        return FUNCTIONS[self.name][1]

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        return FUNCTIONS[self.name][0](self.argument.evaluate(columns))

    def text(self) -> str:
        return f"{self.name}({self.argument.text()})"


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node

    kind = "condition"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        return COMPARISONS[self.op](self.left.evaluate(columns), self.right.evaluate(columns))

    def text(self) -> str:
        return f"{self.left.text()} {self.op} {self.right.text()}"


@dataclass(frozen=True)
class Not:
    operand: Node

    kind = "condition"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        return np.logical_not(self.operand.evaluate(columns))

    def text(self) -> str:
        return f"~{_wrap(self.operand, (Call, Not))}"


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]

    kind = "condition"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        result = self.operands[0].evaluate(columns)
        for operand in self.operands[1:]:
            result = np.logical_and(result, operand.evaluate(columns))
        return result

    def text(self) -> str:
        return " & ".join(_wrap(operand, (Call, Not, And)) for operand in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]

    kind = "condition"

    def evaluate(self, columns: tuple[np.ndarray, ...]) -> Any:
        result = self.operands[0].evaluate(columns)
        for operand in self.operands[1:]:
            result = np.logical_or(result, operand.evaluate(columns))
        return result

    def text(self) -> str:
        return " | ".join(_wrap(operand, (Call, Not, And, Or)) for operand in self.operands)


Node = Union[Input, Number, Negate, Call, Compare, Not, And, Or]


def _wrap(node: Node, bare: tuple[type, ...]) -> str:
    """The node's text, in parentheses unless it is of one of the ``bare`` types."""
    return node.text() if isinstance(node, bare) else f"({node.text()})"


# --- the parser ----------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; characters outside the grammar become ``"other"`` tokens.

    Examples
    --------
    >>> [t.text for t in tokenize("(in1<=-1e10)|isnan(in2)")]
    ['(', 'in1', '<=', '-', '1e10', ')', '|', 'isnan', '(', 'in2', ')', '']
    """
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), match.start() + 1))
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


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
        token = self.tokens[self.position]
        self.position += 1
        return token

    def fail(self, message: str, column: int) -> OptionError:
        caret = " " * (column - 1) + "^"
        shown = self.source.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        return OptionError(f"{message}\n  {shown}\n  {caret}")

    def unexpected(self, token: Token, expected: str) -> OptionError:
        if token.kind == "end":
            what = "end"
        elif token.kind == "name":
            what = f"name {token.text!r}"
        elif token.kind == "number":
            what = f"number {token.text!r}"
        else:
            what = repr(token.text)
        hint = HINTS.get(token.text)
        hint = f" ({hint})" if hint else ""
        return self.fail(f"unexpected {what} at column {token.column} of the mask{hint}; expected {expected}",
                         token.column)

    def operand_expected(self) -> str:
        last = f"in{self.n_inputs}"
        names = "in1" if self.n_inputs == 1 else f"in1..{last}"
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
            raise self.fail(
                f"{context} needs a {kind}; got the {node.kind} {node.text()!r} at column "
                f"{token.column} of the mask (e.g. {example})",
                token.column,
            )
        return node

    # grammar

    def parse(self) -> Node:
        start = self.token
        if start.kind == "end":
            raise self.fail("the mask is empty; expected a condition such as 'in1 <= -1e10'", 1)
        node = self.parse_or()
        if self.token.kind != "end":
            expected = "'&', '|', a comparison or the end of the mask"
            if self.token.text == ")":
                raise self.fail(f"unbalanced ')' at column {self.token.column} of the mask", self.token.column)
            raise self.unexpected(self.token, expected)
        if node.kind != "condition":
            raise self.fail(
                f"the mask must be a condition (True = do not compute); got the number "
                f"{node.text()!r}: compare it, e.g. '{node.text()} <= -1e10' or '{node.text()} != 0'",
                start.column,
            )
        return node

    def parse_or(self) -> Node:
        first = self.token
        operands = [self.parse_and()]
        while self.token.text == "|":
            operator = self.advance()
            self.require(operands[0], "condition", first, "'|'")
            following = self.token
            operands.append(self.require(self.parse_and(), "condition", following, f"'|' at column {operator.column}"))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Node:
        first = self.token
        operands = [self.parse_comparison()]
        while self.token.text == "&":
            operator = self.advance()
            self.require(operands[0], "condition", first, "'&'")
            following = self.token
            operands.append(
                self.require(self.parse_comparison(), "condition", following, f"'&' at column {operator.column}")
            )
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_comparison(self) -> Node:
        first = self.token
        left = self.parse_unary()
        comparisons: list[Node] = []
        while self.token.text in COMPARISONS:
            operator = self.advance()
            self.require(left, "number", first, f"comparison {operator.text!r}")
            first = self.token
            right = self.require(self.parse_unary(), "number", first, f"comparison {operator.text!r}")
            comparisons.append(Compare(operator.text, left, right))
            left = right
        if not comparisons:
            return left
        return comparisons[0] if len(comparisons) == 1 else And(tuple(comparisons))

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
                    f"'~' needs a condition; got the number {operand.text()!r} at column "
                    f"{operand_token.column} of the mask; '~' binds tighter than comparisons: write ~({operand.text()} > 0), "
                    f"with the comparison in parentheses",
                    operand_token.column,
                )
            return Not(operand)
        self.require(operand, "number", operand_token, f"'-' at column {token.column}")
        if isinstance(operand, Number) and not operand.literal.startswith("-"):
            return Number(-operand.value, "-" + operand.literal)
        return Negate(operand)

    def parse_primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            return Number(_number(token.text), token.text)
        if token.text == "(":
            self.advance()
            self.nested(token.column)
            node = self.parse_or()
            self.depth -= 1
            self.close(token)
            return node
        if token.kind == "name":
            return self.parse_name()
        raise self.unexpected(token, self.operand_expected())

    def parse_name(self) -> Node:
        token = self.advance()
        name = token.text
        if name in ("nan", "inf"):
            return Number(float(name), name)
        match = _INPUT.fullmatch(name)
        if match:
            number = int(match.group(1)) if len(match.group(1)) < 10 else self.n_inputs + 1
            if not 1 <= number <= self.n_inputs or name != f"in{number}":
                plural = "input" if self.n_inputs == 1 else "inputs"
                raise self.fail(
                    f"name {name!r} at column {token.column} of the mask is out of range: there "
                    f"{'is' if self.n_inputs == 1 else 'are'} {self.n_inputs} {plural}, "
                    f"in1..in{self.n_inputs}",
                    token.column,
                )
            return Input(number - 1)
        if name in FUNCTIONS:
            opening = self.token
            if opening.text != "(":
                raise self.unexpected(opening, f"'(' after {name}: functions are called as {name}(in1)")
            self.advance()
            self.nested(opening.column)
            argument_token = self.token
            argument = self.parse_or()
            self.depth -= 1
            self.close(opening)
            return Call(name, self.require(argument, "number", argument_token, f"{name}()"))
        self.position -= 1
        raise self.unexpected(token, self.operand_expected())

    def close(self, opening: Token) -> None:
        if self.token.text != ")":
            raise self.unexpected(
                self.token, f"')' to close the '(' at column {opening.column}, '&', '|' or a comparison"
            )
        self.advance()


def _number(literal: str) -> Union[int, float]:
    """An integer literal below 2**63 stays an exact int (so is its negation); anything else is a float.

    Examples
    --------
    >>> _number("3"), _number("3.0"), _number("1e999"), _number("1" * 30)
    (3, 3.0, inf, 1.111111111111111e+29)
    """
    if literal.isdigit() and len(literal) <= 20:
        value = int(literal)
        if value < 2**63:
            return value
    return float(literal)


# --- the compiled mask ---------------------------------------------------------------------


class MaskExpression:
    """A compiled mask: call it with one 1-D array per input to get the bool array to skip.

    Made by :func:`compile_mask`. Pickles as its normalised text and number of inputs, and
    compares equal to another mask with the same normalised text.

    Parameters
    ----------
    text : str
        The mask, in the grammar of :mod:`chunkmap.cli.maskexpr`.
    n_inputs : int
        Number of inputs, ``in1..inN``.

    Attributes
    ----------
    text : str
        The normalised text.
    n_inputs : int
        Number of inputs the mask is called with.
    """

    def __init__(self, text: str, n_inputs: int) -> None:
        if not isinstance(text, str):
            raise OptionError(f"the mask must be a str such as 'in1 <= -1e10'; got {type(text).__name__} {text!r:.80}")
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, (int, np.integer)) or n_inputs < 1:
            raise OptionError(f"n_inputs must be a positive int (the number of inputs); got {n_inputs!r}")
        if len(text) > MAX_LENGTH:
            raise OptionError(f"the mask is {len(text):,} characters long; expected at most {MAX_LENGTH:,}")
        self.n_inputs = int(n_inputs)
        self._tree = _Parser(text, self.n_inputs).parse()
        self.text = self._tree.text()

    def __call__(self, *columns: Any) -> np.ndarray:
        """Evaluate the mask on one 1-D array per input; True = do not compute.

        Raises
        ------
        chunkmap.errors.MaskError
            Not one array per input, arrays of different lengths, or a dtype numpy cannot
            compare.
        """
        if len(columns) != self.n_inputs:
            raise MaskError(
                f"the mask {self.text!r} takes {self.n_inputs} input arrays (in1..in{self.n_inputs}); "
                f"got {len(columns)}"
            )
        arrays = tuple(np.asarray(column) for column in columns)
        lengths = {array.shape for array in arrays}
        if len(lengths) != 1 or any(array.ndim != 1 for array in arrays):
            shapes = ", ".join(str(array.shape) for array in arrays)
            raise MaskError(f"the mask {self.text!r} takes 1-D arrays of one length; got shapes {shapes}")
        length = len(arrays[0])
        try:
            with np.errstate(all="ignore"):
                result = np.asarray(self._tree.evaluate(arrays))
        except (TypeError, ValueError, OverflowError) as exc:
            dtypes = ", ".join(str(array.dtype) for array in arrays)
            raise MaskError(f"the mask {self.text!r} cannot be evaluated on inputs of dtypes {dtypes}: {exc}") from None
        if result.dtype != bool:  # not reachable for a parsed condition; kept as a guard
            raise MaskError(f"the mask {self.text!r} gave dtype {result.dtype}; expected bool")
        if result.shape != (length,):
            result = np.broadcast_to(result, (length,)).copy()
        return result

    def __repr__(self) -> str:
        return f"MaskExpression({self.text!r}, n_inputs={self.n_inputs})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskExpression):
            return NotImplemented
        return (self.text, self.n_inputs) == (other.text, other.n_inputs)

    def __hash__(self) -> int:
        return hash((MaskExpression, self.text, self.n_inputs))

    def __reduce__(self):
        return (MaskExpression, (self.text, self.n_inputs))

    def __dask_tokenize__(self):
        return ("chunkmap.cli.maskexpr.MaskExpression", self.text, self.n_inputs)


def compile_mask(text: str, n_inputs: int) -> MaskExpression:
    """Parse a mask expression over ``in1..inN`` into a vectorised, picklable callable.

    Parameters
    ----------
    text : str
        The mask in the grammar of :mod:`chunkmap.cli.maskexpr`, e.g. ``"in1 <= -1e10"``.
    n_inputs : int
        Number of inputs; names beyond ``in{n_inputs}`` are rejected.

    Returns
    -------
    MaskExpression
        Called with one 1-D array per input, returns a bool array of the same length (True =
        do not compute): the ``mask=`` callable of :func:`chunkmap.run`.

    Raises
    ------
    chunkmap.errors.OptionError
        The text is outside the grammar; the message names the column and shows a caret.

    Examples
    --------
    >>> import numpy as np
    >>> mask = compile_mask("~(in1 > 0) & (in2 != 3)", 2)
    >>> mask(np.array([-1, 1, -1]), np.array([0, 0, 3]))
    array([ True, False, False])
    >>> compile_mask("1 > 0", 1)(np.zeros(2))
    array([ True,  True])
    >>> compile_mask("0 <= in1 < 1 | isnan(in1)", 1)
    MaskExpression('(0 <= in1) & (in1 < 1) | isnan(in1)', n_inputs=1)
    """
    return MaskExpression(text, n_inputs)
