"""Shared helpers for the PyTorch format tests: the real files in ``tests/data/torch`` and their ground
truth, and the opcode-by-opcode pickle writer of ``tests/hostile/make_hostile.py`` (nothing here is
ever pickled from live objects or loaded by :mod:`pickle`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from typing import Any

import pytest

from ...conftest import DATA, TESTS

TORCH_DATA = DATA / "torch"
EXPECTED: dict[str, Any] = json.loads((TORCH_DATA / "EXPECTED.json").read_text())["files"]
HOSTILE = TESTS / "hostile"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_hostile_torch", HOSTILE / "make_hostile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gen() -> Any:
    """``make_hostile.py`` as a module: ``Pk`` (a pickle written opcode by opcode), ``torch_zip``, ``torch_legacy``."""
    return _generator()


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def records(sd: Any) -> list[tuple[str, Any]]:
    return list(sd)
