"""The mask grammar of the command line: what it accepts equals numpy, everything else is refused."""

from __future__ import annotations

import builtins
import pickle
import re
import sys
import threading
from contextlib import contextmanager
from unittest import mock

import cloudpickle
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chunkmap
from chunkmap.errors import MaskError, OptionError
from chunkmap.cli.maskexpr import MAX_DEPTH, MaskExpression, compile_mask


def columns(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three float columns with sentinels, NaN, +-inf, zeros and small integers."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.normal(size=n) for _ in range(3))
    for column in (a, b, c):
        special = rng.integers(0, 8, size=n)
        column[special == 0] = -1e11
        column[special == 1] = np.nan
        column[special == 2] = np.inf
        column[special == 3] = -np.inf
        column[special == 4] = rng.integers(-3, 4, size=int((special == 4).sum()))
    return a, b, c


ACCEPTED = [
    ("in1 <= -1e10", lambda a, b, c: a <= -1e10),
    ("(in1 <= -1e10) | isnan(in2)", lambda a, b, c: (a <= -1e10) | np.isnan(b)),
    ("in1 <= -1e10 | isnan(in2)", lambda a, b, c: (a <= -1e10) | np.isnan(b)),
    ("~(in1 > 0) & (in2 != 3)", lambda a, b, c: ~(a > 0) & (b != 3)),
    ("~(in1 > 0) & in2 != 3", lambda a, b, c: ~(a > 0) & (b != 3)),
    ("in1 > 0 & in2 < 1 | in3 == 0", lambda a, b, c: ((a > 0) & (b < 1)) | (c == 0)),
    ("in1 > 0 | in2 < 1 & in3 == 0", lambda a, b, c: (a > 0) | ((b < 1) & (c == 0))),
    ("(in1 > 0 | in2 < 1) & in3 == 0", lambda a, b, c: ((a > 0) | (b < 1)) & (c == 0)),
    ("~isnan(in1) & in1 >= 0", lambda a, b, c: ~np.isnan(a) & (a >= 0)),
    ("~~isnan(in1)", lambda a, b, c: np.isnan(a)),
    ("~~~isinf(in2)", lambda a, b, c: ~np.isinf(b)),
    ("isfinite(in3)", lambda a, b, c: np.isfinite(c)),
    ("isinf(in1) | isinf(in2) | isinf(in3)", lambda a, b, c: np.isinf(a) | np.isinf(b) | np.isinf(c)),
    ("abs(in1) < 0.5", lambda a, b, c: np.abs(a) < 0.5),
    ("abs(-in1) >= abs(in2)", lambda a, b, c: np.abs(a) >= np.abs(b)),
    ("-in1 > 1", lambda a, b, c: -a > 1),
    ("--in1 > 1", lambda a, b, c: a > 1),
    ("- - 1 < in1", lambda a, b, c: 1 < a),
    ("in1 < in2", lambda a, b, c: a < b),
    ("in1 == in1", lambda a, b, c: a == a),
    ("in1 != in1", lambda a, b, c: a != a),
    ("0 <= in1 < 1", lambda a, b, c: (0 <= a) & (a < 1)),
    ("in1 < in2 <= in3 != 0", lambda a, b, c: (a < b) & (b <= c) & (c != 0)),
    ("in1 == inf | in1 == -inf", lambda a, b, c: np.isinf(a)),
    ("in1 == nan", lambda a, b, c: np.zeros_like(a, bool)),
    ("in1 != nan", lambda a, b, c: np.ones_like(a, bool)),
    ("1 > 0", lambda a, b, c: np.ones_like(a, bool)),
    ("1 < 0 | in2 > 0", lambda a, b, c: b > 0),
    ("in1 > 1e999", lambda a, b, c: np.zeros_like(a, bool)),
    ("in1 >= -1E+3 & in1 <= 2.5e-1 & in2 > .5 & in3 < 3.", lambda a, b, c: (a >= -1e3) & (a <= 0.25) & (b > 0.5) & (c < 3)),
    ("((((in1 > 0))))", lambda a, b, c: a > 0),
    ("isnan((in1))", lambda a, b, c: np.isnan(a)),
    ("in1\n<=\t-1e10\r\n|  isnan( in2 )", lambda a, b, c: (a <= -1e10) | np.isnan(b)),
]


@pytest.mark.parametrize("text, reference", ACCEPTED, ids=[text for text, _ in ACCEPTED])
def test_accepted_expressions_equal_numpy(text, reference):
    a, b, c = columns()
    mask = compile_mask(text, 3)
    got = mask(a, b, c)
    assert got.dtype == bool and got.shape == a.shape
    np.testing.assert_array_equal(got, reference(a, b, c))


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("in1 <= -1e10 | isnan(in2)", "(in1 <= -1e10) | isnan(in2)"),
        ("in1 > 0 & in2 < 1 | in2 == 0", "(in1 > 0) & (in2 < 1) | (in2 == 0)"),
        ("in1>0|in2<1&in2==0", "(in1 > 0) | (in2 < 1) & (in2 == 0)"),
        ("(in1 > 0 | in2 < 1) & in2 == 0", "((in1 > 0) | (in2 < 1)) & (in2 == 0)"),
        ("~(in1 > 0) & (in2 != 3)", "~(in1 > 0) & (in2 != 3)"),
        ("~isnan(in1)", "~isnan(in1)"),
        ("0 <= in1 < 1", "(0 <= in1) & (in1 < 1)"),
        ("((in1 > 0))", "in1 > 0"),
        ("-(-in1) > -(2)", "--in1 > -2"),
        ("abs( - in2 )>=1E3", "abs(-in2) >= 1E3"),
    ],
)
def test_precedence_shows_in_the_normalised_text(text, normalised):
    mask = compile_mask(text, 2)
    assert mask.text == str(mask) == normalised
    assert repr(mask) == f"MaskExpression({normalised!r}, n_inputs=2)"
    assert compile_mask(normalised, 2) == mask  # the normalised text parses to itself


def test_normalised_text_is_numpy_with_the_same_meaning():
    """The normalised text means the same in numpy (checked by the test, never by chunkmap)."""
    a, b, c = columns()
    for text, _ in ACCEPTED:
        mask = compile_mask(text, 3)
        names = {"in1": a, "in2": b, "in3": c, "isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite,
                 "abs": np.abs, "nan": np.nan, "inf": np.inf}
        expected = np.broadcast_to(eval(mask.text, {"__builtins__": {}}, names), a.shape)  # noqa: S307
        np.testing.assert_array_equal(mask(a, b, c), expected, err_msg=text)


REJECTED = [
    # (text, column of the error)
    ("", 1),
    ("   ", 1),
    ("in1", 1),  # a number, not a condition
    ("in1 + 1", 5),
    ("in1 * 2 > 0", 5),
    ("in1 ** 2 > 0", 5),
    ("~in1 > 0", 2),  # ~ binds tighter than comparisons
    ("in1 & in2", 1),
    ("(in1 > 0) & in2", 13),
    ("in1.real > 0", 4),  # attribute access
    ("in1.__class__", 4),
    ("__import__('os').system('true')", 1),  # dunder names, calls
    ("__builtins__", 1),
    ("lambda: in1 > 0", 1),
    ("open('x') > 0", 1),
    ("eval('1') > 0", 1),
    ("exec > 0", 1),
    ("in1[0] > 0", 4),  # subscripts
    ("in1 > in2[::2]", 10),
    ("'a' < in1", 1),  # strings
    ('in1 > "0"', 7),
    ("(x := in1) > 0", 2),  # walrus
    ("in1 := 3", 5),
    ("[x for x in in1]", 1),  # comprehensions
    ("{in1 > 0}", 1),
    ("in3 > 0", 1),  # only 2 inputs
    ("in0 > 0", 1),
    ("in01 > 0", 1),
    ("in99999999999999999999 > 0", 1),
    ("x > 0", 1),
    ("in1 <= import os", 8),
    ("(in1 > 0", 9),  # unbalanced
    ("in1 > 0)", 8),
    ("((in1 > 0)", 11),
    ("isnan(in1", 10),
    ("isnan", 6),
    ("isnan in1", 7),
    ("isnan(in1, in2)", 10),
    ("isnan(in1 > 0)", 7),
    ("isnan(in1) == 1", 1),
    ("in1 > 0 and in2 > 0", 9),
    ("not in1 > 0", 1),
    ("in1 = 0", 5),
    ("in1 && in2", 5),
    ("in1 > 0 if in2 else in1 < 0", 9),
    ("1e < in1", 1),
    ("1.2.3 < in1", 1),
    ("0x10 < in1", 1),
    ("1_000 < in1", 1),
    ("in1 >", 6),
    ("> in1", 1),
    ("in1 > 0 |", 10),
    ("in1 > 0 # comment", 9),
    ("in1 > 0; in2", 8),
    ("in1 > \\", 7),
    ("in١ > 0", 1),  # non-ASCII digit: the name is 'in'
    ("in1 > ٣", 7),
    ("in1 > ０", 7),  # full-width zero
    ("True", 1),
    ("None == in1", 1),
    ("(" * (MAX_DEPTH + 1) + "in1 > 0" + ")" * (MAX_DEPTH + 1), MAX_DEPTH + 1),
    ("~" * (MAX_DEPTH + 1) + "isnan(in1)", MAX_DEPTH + 1),
]


@pytest.mark.parametrize("text, column", REJECTED, ids=[repr(text)[:40] for text, _ in REJECTED])
def test_text_outside_the_grammar_is_refused_with_its_column(text, column):
    with pytest.raises(OptionError) as caught:
        compile_mask(text, 2)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert f"column {column}" in message or (column == 1 and "empty" in message) or "must be a condition" in message
    caret = message.splitlines()[-1]
    assert caret.strip() == "^" and len(caret) - 2 == column, message


def test_message_names_what_was_found_and_what_was_expected():
    with pytest.raises(OptionError, match=r"^unexpected name 'import' at column 8 of the mask; expected a number, "
                                          r"in1\.\.in2, nan, inf, isnan\(\.\.\.\)"):
        compile_mask("in1 <= import os", 2)
    with pytest.raises(OptionError, match="there are 2 inputs, in1..in2"):
        compile_mask("in3 > 0", 2)
    with pytest.raises(OptionError, match=r"use '&' for 'and'"):
        compile_mask("in1 > 0 and in2 > 0", 2)
    with pytest.raises(OptionError, match=r"write ~\(in1 > 0\)"):
        compile_mask("~in1 > 0", 1)
    with pytest.raises(OptionError, match=r"must be a condition .* 'in1 <= -1e10'"):
        compile_mask("in1", 1)


def test_bad_arguments_to_compile_mask():
    with pytest.raises(OptionError, match="must be a str"):
        compile_mask(b"in1 > 0", 1)  # type: ignore[arg-type]
    for n in (0, -1, 1.5, True, "2"):
        with pytest.raises(OptionError, match="n_inputs must be a positive int"):
            compile_mask("in1 > 0", n)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="characters long"):
        compile_mask("in1 > 0 | " * 2000 + "in1 > 0", 1)


def test_result_is_a_bool_array_of_the_input_length():
    for text in ("1 > 0", "nan == nan", "isnan(nan)", "in1 == in1"):
        for length in (0, 1, 5):
            got = compile_mask(text, 2)(np.arange(length), np.zeros(length))
            assert got.dtype == bool and got.shape == (length,), text
            got[:] = True  # writable, not a read-only broadcast view


def test_dtypes_of_inputs():
    mask = compile_mask("-in1 < 0 | isnan(in2) | abs(in3) > 2", 3)
    unsigned = np.array([0, 1, 255], np.uint8)
    flags = np.array([False, True, False])
    ints = np.array([-3, 0, 1], np.int64)
    np.testing.assert_array_equal(mask(unsigned, ints, ints), [True, True, True])
    np.testing.assert_array_equal(mask(flags, flags, ints), [True, True, False])
    np.testing.assert_array_equal(
        compile_mask("in1 > 9223372036854775807", 1)(np.array([2**64 - 1, 1], np.uint64)), [True, False]
    )
    np.testing.assert_array_equal(compile_mask("abs(in1) > 1", 1)(np.array([3j, 0.5 + 0j])), [True, False])


def test_call_checks_its_columns():
    mask = compile_mask("in1 > in2", 2)
    with pytest.raises(MaskError, match="takes 2 input arrays"):
        mask(np.zeros(3))
    with pytest.raises(MaskError, match="1-D arrays of one length"):
        mask(np.zeros(3), np.zeros(4))
    with pytest.raises(MaskError, match="1-D arrays of one length"):
        mask(np.zeros((2, 2)), np.zeros((2, 2)))


def test_pickles_as_its_text():
    a, b, c = columns(100)
    mask = compile_mask("in1 <= -1e10 | isnan(in2) | 0 < in3 < 1", 3)
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        again = loads(dumps(mask))
        assert isinstance(again, MaskExpression) and again == mask and hash(again) == hash(mask)
        np.testing.assert_array_equal(again(a, b, c), mask(a, b, c))
    assert compile_mask("in1 > 0", 3) != compile_mask("in1 > 0", 2)
    assert compile_mask("in1>0", 1) == compile_mask("(in1 > 0)", 1)


def test_is_a_mask_callable_of_run():
    a = np.array([[1.0, -1e12], [np.nan, 4.0]])
    b = np.array([[1.0, 2.0], [3.0, 4.0]])
    result = chunkmap.run(lambda x, y: x + y, a, b, mask=compile_mask("in1 <= -1e10 | isnan(in1)", 2),
                          scheduler="sync")
    assert result.flat_index.tolist() == [0, 3] and result.values.tolist() == [2.0, 8.0]


# --- fuzzing -----------------------------------------------------------------------------------

FORBIDDEN_EVENTS = {"exec", "compile", "import", "open", "os.system", "subprocess.Popen", "os.exec", "os.spawn",
                    "os.posix_spawn", "ctypes.dlopen", "socket.connect", "builtins.input"}
_audit = {"armed": False, "seen": [], "thread": None}


def _audit_hook(event: str, args: tuple) -> None:
    # only the parsing thread's events: threads left by other tests (zarr's I/O loop, a dask pool) open files too
    if _audit["armed"] and event in FORBIDDEN_EVENTS and threading.get_ident() == _audit["thread"]:
        _audit["seen"].append(event)


sys.addaudithook(_audit_hook)  # process-wide and permanent, but inert unless armed


def _refuse(*args, **kwargs):
    raise AssertionError(f"the mask parser called eval/exec/compile/__import__ with {args!r:.80}")


@contextmanager
def nothing_executes():
    """Fail if code is compiled, executed or imported, or a file opened, inside the block."""
    _audit["seen"].clear()
    with mock.patch.object(builtins, "eval", _refuse), mock.patch.object(builtins, "exec", _refuse), \
            mock.patch.object(builtins, "compile", _refuse):
        _audit["thread"] = threading.get_ident()
        _audit["armed"] = True
        try:
            yield
        finally:
            _audit["armed"] = False
    assert not _audit["seen"], f"forbidden audit events: {_audit['seen']}"


VOCABULARY = ["in1", "in2", "in3", "in0", "(", ")", "<", "<=", ">", ">=", "==", "!=", "=", "&", "|", "~", "-", "+",
              "*", "**", "isnan", "isinf", "isfinite", "abs", "nan", "inf", "1e10", "-1e10", "3", ".5", "2.", "1e",
              "import", "os", ".", ",", "[", "]", "lambda", ":", ":=", "__class__", "__import__", "'x'", '"', "and",
              "not", "or", "if", "else", "for", "True", "None", "open", "eval", "\\", "#", ";", "\n", "\t", "@", "$"]
ALPHABET = "in123()<>=!&|~-+*/.,:;'\"\\#[]{} \t\neE0123456789_abcdflmnoprstuxz@$%^`?é٣\x00"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_text(text: str) -> None:
    a, b, c = columns(50, seed=1)
    with nothing_executes():
        try:
            mask = compile_mask(text, 3)
        except OptionError as exc:
            assert re.search(r"column \d+|empty|must be a condition|characters long", str(exc)), str(exc)
            return
        got = mask(a, b, c)
        again = compile_mask(mask.text, 3)
    assert got.dtype == bool and got.shape == a.shape
    assert again == mask
    np.testing.assert_array_equal(again(a, b, c), got)


@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_fuzz_characters_only_raise_option_error(text):
    _check_text(text)


@FUZZ
@given(st.lists(st.sampled_from(VOCABULARY), max_size=14), st.sampled_from(["", " "]))
def test_fuzz_tokens_only_raise_option_error(tokens, separator):
    _check_text(separator.join(tokens))


# Random well-typed trees rendered with the fewest parentheses the documented precedence allows:
# the compiled mask must equal the tree evaluated by numpy, which tests the precedence at scale.

NUMBERS = st.one_of(
    st.sampled_from(["in1", "in2", "in3"]).map(lambda name: (name, "atom", lambda cols, i=int(name[2]) - 1: cols[i])),
    st.sampled_from(["0", "1", "-1e10", "0.5", "nan", "inf"]).map(
        lambda text: (text, "atom", lambda cols, v=float(text): v)),
)


def _number_tree(children):
    return st.one_of(
        children.map(lambda n: (f"-{n[0]}", "neg", lambda cols, f=n[2]: -f(cols))),
        children.map(lambda n: (f"abs({n[0]})", "atom", lambda cols, f=n[2]: np.abs(f(cols)))),
    )


NUMBER_TREES = st.recursive(NUMBERS, _number_tree, max_leaves=3)
COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
           "!=": np.not_equal}
CONDITION_LEAVES = st.one_of(
    st.tuples(NUMBER_TREES, st.sampled_from(sorted(COMPARE)), NUMBER_TREES).map(
        lambda t: (f"{t[0][0]} {t[1]} {t[2][0]}", "cmp", lambda cols, l=t[0][2], op=COMPARE[t[1]], r=t[2][2]: op(l(cols), r(cols)))),
    st.tuples(st.sampled_from(["isnan", "isinf", "isfinite"]), NUMBER_TREES).map(
        lambda t: (f"{t[0]}({t[1][0]})", "call", lambda cols, f=getattr(np, t[0]), x=t[1][2]: f(x(cols)))),
)


def _render(node, bare):
    return node[0] if node[1] in bare else f"({node[0]})"


def _condition_tree(children):
    return st.one_of(
        children.map(lambda c: ("~" + _render(c, {"call", "not"}), "not", lambda cols, f=c[2]: np.logical_not(f(cols)))),
        st.tuples(children, children).map(lambda t: (
            f"{_render(t[0], {'cmp', 'call', 'not', 'and'})} & {_render(t[1], {'cmp', 'call', 'not'})}", "and",
            lambda cols, l=t[0][2], r=t[1][2]: np.logical_and(l(cols), r(cols)))),
        st.tuples(children, children).map(lambda t: (
            f"{_render(t[0], {'cmp', 'call', 'not', 'and', 'or'})} | {_render(t[1], {'cmp', 'call', 'not', 'and'})}",
            "or", lambda cols, l=t[0][2], r=t[1][2]: np.logical_or(l(cols), r(cols)))),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(CONDITION_LEAVES, _condition_tree, max_leaves=6))
def test_fuzz_minimally_parenthesised_trees_equal_numpy(tree):
    text, _, reference = tree
    cols = columns(200, seed=2)
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(reference(cols), (200,))
    np.testing.assert_array_equal(compile_mask(text, 3)(*cols), expected, err_msg=text)


def test_the_guard_catches_execution():
    with pytest.raises(AssertionError, match="forbidden audit events"):
        with nothing_executes():
            open(__file__).close()
    with pytest.raises(AssertionError, match="eval/exec/compile"):
        with nothing_executes():
            eval("1")  # noqa: S307
