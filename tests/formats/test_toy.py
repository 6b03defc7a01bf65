"""The toy format end to end: registered at run time, it works through every command like a built-in format.

Also: the toy reader refuses malformed headers in one line (exit 3), registration is undone by the
fixture, and what the registry does to a format whose 9th byte can be ``{``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckptsurgeon import formats
from ckptsurgeon.formats import detect, open_checkpoint
from ckptsurgeon.tensors import TensorSpec

from ..support.checks import METADATA, assert_checkpoint, sample_tensors
from ..support.cli import Result
from ..support.factory import checkpoint_name, make_checkpoint, open_writer, specs_of
from . import toy
from .toy.layout import MAGIC, MAX_HEADER_BYTES

OTHERS = [s.name for s in formats.FORMATS if s.writer is not None and s.shards_of is None and s.name != "toy"]


def other_values(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays of the same names, shapes and dtypes as ``tensors``, with different values."""
    out = {}
    for name, arr in tensors.items():
        raw = np.frombuffer(bytes(b ^ 0x5A for b in arr.tobytes()), dtype=arr.dtype) if arr.size else arr
        out[name] = np.array(raw.reshape(arr.shape))
    return out


def test_inspect(toy_format: str, tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = make_checkpoint(tmp_path / "x.toy", toy_format, sample_tensors(), METADATA)
    result = cli("inspect", path)
    assert result.code == 0 and result.err == ""
    assert "(toy)" in result.out.splitlines()[0]
    doc = json.loads(cli("inspect", "--json", path).out)
    assert doc["format"] == "toy"
    assert doc["metadata"] == METADATA
    assert [(t["name"], t["shape"], t["dtype"]) for t in doc["tensors"]] == [
        (s.name, list(s.shape), s.dtype) for s in specs_of(sample_tensors())
    ]


def test_convert_toy_to_safetensors_and_back(toy_format: str, tmp_path: Path, cli: Callable[..., Result]) -> None:
    tensors = sample_tensors()
    x = make_checkpoint(tmp_path / "x.toy", toy_format, tensors, METADATA)
    y = tmp_path / "y.safetensors"
    result = cli("convert", x, "-o", y)
    assert result.code == 0, result.err
    assert_checkpoint(y, tensors, fmt="safetensors", metadata=METADATA)
    z = tmp_path / "z.toy"  # the format chosen by the registered extension alone
    result = cli("convert", y, "-o", z)
    assert result.code == 0, result.err
    assert_checkpoint(z, tensors, fmt="toy", metadata=METADATA)
    assert z.read_bytes() == x.read_bytes()  # the writer is deterministic


@pytest.mark.parametrize("other", OTHERS)
def test_transfer_between_toy_and(other: str, toy_format: str, tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Toy weights into a target of another format, and that format's weights into a toy target."""
    tensors = sample_tensors(other)
    changed = other_values(tensors)
    for src_fmt, tgt_fmt in ((toy_format, other), (other, toy_format)):
        src = make_checkpoint(tmp_path / src_fmt / checkpoint_name(src_fmt, "src"), src_fmt, tensors)
        tgt = make_checkpoint(tmp_path / tgt_fmt / checkpoint_name(tgt_fmt, "tgt"), tgt_fmt, changed, {"kept": "yes"})
        out = tmp_path / f"{src_fmt}-into-{tgt_fmt}" / checkpoint_name(tgt_fmt, "out")
        out.parent.mkdir()
        result = cli("transfer", src, tgt, "-o", out)
        assert result.code == 0, result.err
        assert_checkpoint(out, tensors, fmt=tgt_fmt)  # the source's values, in the target's format
        with open_checkpoint(out) as reader:
            assert reader.metadata.get("kept") == "yes"  # the target's metadata


def test_registration_is_undone(tmp_path: Path) -> None:
    with toy.registered():
        path = make_checkpoint(tmp_path / "x.toy", "toy", {"w": np.ones(2, "<f4")})
        assert detect(path) == "toy"
        with pytest.raises(ValueError, match="registered already"):
            formats.register(toy.SPEC)
    assert "toy" not in [s.name for s in formats.FORMATS]
    with pytest.raises(formats.CkptError, match="not a checkpoint format"):
        detect(path)


def test_writer_refuses_non_text_metadata(toy_format: str, tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "x.toy", toy_format, {"k": 1})  # type: ignore[dict-item]
    with pytest.raises(formats.CkptError, match="strings"):
        writer.begin([TensorSpec("w", (1,), "F32")])
    writer.abort()
    assert not (tmp_path / "x.toy").exists()


# --- malformed toy files ---------------------------------------------------------------------------

GOOD = {"name": "w", "dtype": "F32", "shape": [2], "offset": 0, "length": 8}


def toy_bytes(header: Any, data: bytes = b"\0" * 8, *, raw: bytes | None = None, length: int | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    body += b" " * (-(12 + len(body)) % 8)
    return MAGIC + struct.pack("<I", len(body) if length is None else length) + body + data


#: a file with one defect each, and a fragment of the one line that must name it
MALFORMED: dict[str, tuple[bytes, str]] = {
    "shorter-than-the-prefix": (MAGIC + b"\1\0", "truncated: 10 bytes"),
    "header-past-the-end": (toy_bytes({"metadata": {}, "tensors": [GOOD]}, length=4096), "runs past the end"),
    "header-over-the-limit": (toy_bytes({"metadata": {}, "tensors": [GOOD]}, length=MAX_HEADER_BYTES + 1),
                              "exceeds the"),
    "not-utf8": (toy_bytes(None, raw=b'{"metadata": {"\xff": ""}, "tensors": []}', data=b""), "not UTF-8"),
    "not-json": (toy_bytes(None, raw=b'{"metadata": {}, "tensors": [', data=b""), "not valid JSON"),
    "duplicate-key": (toy_bytes(None, raw=b'{"metadata": {}, "metadata": {}, "tensors": []}', data=b""),
                      "duplicate key"),
    "nan-token": (toy_bytes(None, raw=b'{"metadata": {"a": NaN}, "tensors": []}', data=b""), "NaN is not JSON"),
    "not-an-object": (toy_bytes([GOOD]), "must be a JSON object"),
    "extra-top-level-key": (toy_bytes({"metadata": {}, "tensors": [GOOD], "more": 1}), "must be a JSON object"),
    "metadata-not-text": (toy_bytes({"metadata": {"a": 1}, "tensors": [GOOD]}), "map strings to strings"),
    "entry-missing-a-key": (toy_bytes({"metadata": {}, "tensors": [{k: v for k, v in GOOD.items() if k != "length"}]}),
                            "must be an object with exactly"),
    "unknown-dtype": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "dtype": "F128"}]}), "unknown dtype"),
    "bool-in-shape": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "shape": [True, 2]}]}), "shape is not"),
    "negative-dim": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "shape": [-2]}]}), "shape is not"),
    "float-offset": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "offset": 0.0}]}), "non-negative integers"),
    "huge-shape": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "shape": [2**62, 2**62]}]}), "does not fit"),
    "length-not-shape-times-size": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "length": 4}]}),
                                    "its length says 4"),
    "runs-past-the-data": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "offset": 4}]}), "does not fit"),
    "hole": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "offset": 4}]}, b"\0" * 12), "leaves a hole"),
    "overlap": (toy_bytes({"metadata": {}, "tensors": [GOOD, {**GOOD, "name": "v", "offset": 4}]}, b"\0" * 12),
                "overlaps the previous tensor"),
    "trailing-bytes": (toy_bytes({"metadata": {}, "tensors": [GOOD]}, b"\0" * 9), "tensors cover 8 bytes"),
    "name-twice": (toy_bytes({"metadata": {}, "tensors": [GOOD, {**GOOD, "offset": 8}]}, b"\0" * 16),
                   "listed twice"),
    "empty-name": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "name": ""}]}), "has no name"),
    "control-character-in-name": (toy_bytes({"metadata": {}, "tensors": [{**GOOD, "name": "w\x1b[2J"}]}),
                                  "holds the character U+001B"),
}


def test_a_valid_hand_made_file_opens(toy_format: str, tmp_path: Path) -> None:
    """The hand-made files below differ from this one by one defect each."""
    path = tmp_path / "ok.toy"
    path.write_bytes(toy_bytes({"metadata": {"a": "b"}, "tensors": [GOOD]}, np.array([1.5, -2], "<f4").tobytes()))
    with open_checkpoint(path) as reader:
        assert reader.metadata == {"a": "b"}
        assert reader.read("w").tolist() == [1.5, -2.0]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header_is_refused_in_one_line(case: str, toy_format: str, tmp_path: Path,
                                                 cli: Callable[..., Result]) -> None:
    data, problem = MALFORMED[case]
    path = tmp_path / f"{case}.toy"
    path.write_bytes(data)
    result = cli("inspect", path)
    assert result.code == 3, result.err
    assert result.line.startswith(f"ckpt: error: {path}: ")
    assert problem in result.line


def test_a_toy_file_whose_ninth_byte_is_a_brace_is_a_toy_file(toy_format: str, tmp_path: Path) -> None:
    body = json.dumps({"metadata": {}, "tensors": [{**GOOD, "dtype": "U8", "length": 2}]}).encode()
    body += b" " * (0x7B - len(body))
    path = tmp_path / "brace.toy"
    path.write_bytes(MAGIC + struct.pack("<I", len(body)) + body + b"\1\2")
    assert path.read_bytes()[8:9] == b"{"
    assert detect(path) == "toy"
    with open_checkpoint(path) as reader:
        assert reader.read("w").tolist() == [1, 2]
