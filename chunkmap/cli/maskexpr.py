"""A small, safe mask language for the command line: ``--mask "(in1 <= -1e10) | isnan(in2)"``.

numpy only. The text is parsed by :mod:`chunkmap.cli.maskgrammar` (a regular-expression
tokenizer and a recursive-descent parser) into a tree evaluated by calling numpy. It is never
given to ``eval``, ``exec`` or ``compile``: anything outside the grammar below is rejected with an
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

Why a grammar of its own, not Python's ``ast``
----------------------------------------------
The precedence above is a documented promise that job files rely on, and it is not Python's:
Python binds ``|`` and ``&`` tighter than comparisons, so ``ast.parse("in1 <= -1e10 | isnan(in2)")``
reads ``in1 <= (-1e10 | isnan(in2))``. A whitelist over Python's tree could at best refuse such
masks, breaking every job file written to the documented rule; Python's tokenizer would bring
hex, ``1_000``, Unicode names and comments, and it changed between versions (3.12 tokenizes in C
and fails differently), which would move the error columns promised here. So the grammar stays,
implemented small in :mod:`chunkmap.cli.maskgrammar`: one node type, one parser method per level,
one tokenizer pattern.

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

from typing import Any

import numpy as np

from ..errors import MaskError, OptionError
from .maskgrammar import MAX_DEPTH, parse

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MaskExpression", "compile_mask"]

#: longest mask text accepted, in characters.
MAX_LENGTH = 10_000


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
        self._tree = parse(text, self.n_inputs)
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
            raise MaskError(f"the mask {self.text!r} takes {self.n_inputs} input arrays (in1..in{self.n_inputs}); "
                            f"got {len(columns)}")
        arrays = tuple(np.asarray(column) for column in columns)
        if len({array.shape for array in arrays}) != 1 or any(array.ndim != 1 for array in arrays):
            shapes = ", ".join(str(array.shape) for array in arrays)
            raise MaskError(f"the mask {self.text!r} takes 1-D arrays of one length; got shapes {shapes}")
        try:
            with np.errstate(all="ignore"):
                result = np.asarray(self._tree.evaluate(arrays))
        except (TypeError, ValueError, OverflowError) as exc:
            dtypes = ", ".join(str(array.dtype) for array in arrays)
            raise MaskError(f"the mask {self.text!r} cannot be evaluated on inputs of dtypes {dtypes}: {exc}") from None
        if result.dtype != bool:  # not reachable for a parsed condition; kept as a guard
            raise MaskError(f"the mask {self.text!r} gave dtype {result.dtype}; expected bool")
        length = len(arrays[0])
        return result if result.shape == (length,) else np.broadcast_to(result, (length,)).copy()

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
