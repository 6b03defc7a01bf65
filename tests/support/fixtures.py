"""Fixtures shared by every test module (imported into ``tests/conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from .cli import Result, run
from .factory import make_checkpoint as _make_checkpoint

CliRunner = Callable[..., Result]
CheckpointMaker = Callable[..., Path]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``cli("inspect", path)``: run ``ckpt`` in process; ``.code``, ``.out``, ``.err``, ``.line`` (the one stderr line)."""

    def call(*argv: str | os.PathLike[str]) -> Result:
        return Result(*run(argv, capsys))

    return call


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> CheckpointMaker:
    """``make_checkpoint("m.npz", "npz", {"w": array}, {"key": "value"})``: a checkpoint under ``tmp_path``."""

    def make(path: str | os.PathLike[str], fmt: str, tensors: Mapping[str, np.ndarray],
             metadata: Mapping[str, str] | None = None, **kwargs: int) -> Path:
        return _make_checkpoint(tmp_path / path, fmt, tensors, metadata, **kwargs)

    return make
