"""Hostile MindSpore checkpoints: each refused with exit 3 and one line naming the file, nothing written.

The corpus is ``tests/hostile/mindspore`` (written by ``tests/hostile/make_hostile_mindspore.py``;
``CASES.json`` gives, per file, the key to open it with, its mode and a fragment of the message).
Every file goes through ``ckpt inspect`` and ``ckpt convert -o out.safetensors``, in process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats import OpenOptions, detect, open_checkpoint
from ckptsurgeon.formats._protobuf import length_delimited
from ckptsurgeon.formats.mindspore.crypto import Secret

from ...conftest import TESTS
from ...support.fixtures import CliRunner

HOSTILE = TESTS / "hostile"
CORPUS = HOSTILE / "mindspore"
GENERATOR = HOSTILE / "make_hostile_mindspore.py"
CASES: dict[str, dict[str, Any]] = json.loads((CORPUS / "CASES.json").read_text())
ENCRYPTED = [name for name, c in CASES.items() if c["mode"] is not None]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_hostile_mindspore", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPT_DEC_KEY", raising=False)


def _key_args(name: str, where: Path) -> list[str]:
    key_hex = CASES[name]["key_hex"]
    if key_hex is None:
        return []
    key_file = where / "key.bin"
    key_file.write_bytes(bytes.fromhex(key_hex))
    return ["--dec-key-file", str(key_file)]


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_refused_cleanly(name: str, command: str, cli: CliRunner, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows here
    keys, out = tmp_path / "keys", tmp_path / "out"
    keys.mkdir()
    out.mkdir()
    path = CORPUS / name
    before = path.read_bytes()
    argv = ["inspect", path] if command == "inspect" else ["convert", path, "-o", out / "out.safetensors"]
    result = cli(*argv, *_key_args(name, keys))
    assert result.code == 3, result.err
    line = result.line  # exactly one line, no traceback
    assert line.startswith(f"ckpt: error: {path}: "), line
    assert CASES[name]["message"] in line, line
    assert not list(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "out"]
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", [n for n in ENCRYPTED if n.startswith("wrong_key_")])
def test_wrong_key_files_open_with_the_right_key(name: str) -> None:
    """The wrong-key files are valid files: with key A they read (so the refusal is the key's doing)."""
    gen = _generator()
    assert CASES[name]["key_hex"] == gen.KEY_B.hex()
    with open_checkpoint(CORPUS / name, options=OpenOptions(dec_key=Secret(gen.KEY_A))) as reader:
        assert reader.encryption == CASES[name]["mode"]
        assert [(t.name, t.shape) for t in reader.tensors] == [("w", (2, 3)), ("b", (3,))]
        np.testing.assert_array_equal(reader.read("w"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_every_case_is_recognized_as_mindspore() -> None:
    """Each file is refused by the MindSpore reader, not as an unknown format (truncated ones included)."""
    assert all(detect(CORPUS / name) == "mindspore" for name in CASES)


def test_corpus_is_reproducible_and_small(tmp_path: Path) -> None:
    """make_hostile_mindspore.py rewrites the committed files byte for byte (fixed keys and IVs)."""
    gen = _generator()
    gen.build(tmp_path)
    assert json.loads((tmp_path / "CASES.json").read_text()) == CASES
    fresh, committed = _digests(tmp_path), _digests(CORPUS)
    assert set(fresh) == set(committed) == set(CASES) | {"CASES.json"}
    changed = [name for name, digest in fresh.items() if committed[name] != digest]
    assert not changed, f"these differ from what make_hostile_mindspore.py writes: {changed}"
    assert max((CORPUS / name).stat().st_size for name in CASES) < 4096
    required = {"content_short", "content_long", "dims_overflow", "negative_dim", "truncated_value",
                "varint_11_bytes", "length_past_end", "tag_not_utf8", "slices_disagree", "maptensor", "int4",
                "unknown_type", "wrong_key_aes_gcm", "wrong_key_aes_cbc", "wrong_key_sm4_cbc", "gcm_tag_tampered",
                "gcm_cipher_flipped", "truncated_cipher", "blk_len_disagrees", "cbc_ct_len_not_16", "mixed_magics",
                "bad_crc", "decrypts_to_noise"}
    assert {f"{n}.ckpt" for n in required} <= set(CASES)


def test_packed_dims_are_counted_before_they_are_listed(tmp_path: Path) -> None:
    """A packed dims field of a million varints is refused from its length: nothing is allocated per dim."""
    gen = _generator()
    n = 1 << 20
    path = tmp_path / "many_dims.ckpt"
    path.write_bytes(gen.raw_value(b"w", length_delimited(1, b"\x01" * n) + gen.tensor([], "Float32", bytes(4))))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more than 64 dims"):
            open_checkpoint(path).close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n, f"{peak} bytes traced while refusing {n} packed dims"
