"""Shared fixtures: the test functions, pickled by value so any worker process can run them."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import elementwise  # noqa: E402

cloudpickle.register_pickle_by_value(elementwise)


@pytest.fixture(scope="session")
def ew():
    """The module of test functions and the serial reference."""
    return elementwise
