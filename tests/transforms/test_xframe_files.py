"""ckptsurgeon reads the files of ``tests/data/xframe`` as the libraries that wrote them recorded (EXPECTED.json):
names as stored and in order, shapes, dtypes, each tensor's sha256, and a Keras 3 variable's Keras path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ckptsurgeon.formats import open_checkpoint

from ..conftest import manifest_code
from .xframe import DATA

EXPECTED = json.loads((DATA / "EXPECTED.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_every_tensor_as_the_writing_library_recorded(name: str) -> None:
    recorded = EXPECTED["files"][name]["tensors"]
    with open_checkpoint(DATA / name) as r:
        assert [t.name for t in r.tensors] == [t["name"] for t in recorded]
        for t in recorded:
            info, value = r[t["name"]], r.read(t["name"])
            assert list(info.shape) == t["shape"] == list(value.shape), t["name"]
            assert info.dtype == manifest_code(t["dtype"]) and value.dtype == np.dtype(t["dtype"]), t["name"]
            assert hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest() == t["sha256"], t["name"]
            assert r.match_names.get(t["name"]) == t.get("keras"), t["name"]


def test_every_file_and_the_library_versions_are_recorded() -> None:
    assert set(EXPECTED["files"]) == {p.name for p in DATA.iterdir() if p.suffix in (".h5", ".pt", ".safetensors")}
    keras, torch = EXPECTED["versions"]["keras"], EXPECTED["versions"]["torch"]
    assert keras["keras"].startswith("3.") and keras["keras_backend"] == "jax"
    assert torch["torch"].startswith("2.") and torch["transformers"]
