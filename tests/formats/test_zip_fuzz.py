"""Property test: zip structures mutated, a real npz and a real ``.keras`` archive read consistently or refused.

Mutations aim at the zip structures of real archives (numpy's ``savez``, Keras 3's ``.keras``): the
end-of-central-directory record, every central directory record and every local header, by byte
flips and by overwriting their 2- and 4-byte fields with edge values (0, 1, 0xFFFF, 0xFFFFFFFF,
the value plus or minus one, a random value). For each mutant:

- opening it raises :class:`~ckptsurgeon.errors.CkptError` (one line, naming the file), or
- it is accepted, and then it lists exactly as many members as its end record counts, each member's
  local header (parsed here, independently) names it and places its data where ckptsurgeon reads it,
  every member's bytes match its CRC, and the format's reader reads every tensor.

The default profile (``zip-fuzz-short``) is derandomized and bounded to run in a few seconds; a long,
random run is ``HYPOTHESIS_PROFILE=long python -m pytest tests/formats/test_zip_fuzz.py``.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from ckptsurgeon.errors import CkptError
from ckptsurgeon.formats import open_checkpoint
from ckptsurgeon.formats._zip import ZipArchive

from ..conftest import CORPUS
from ..support.fuzzing import fuzz_settings

FUZZ = fuzz_settings("zip-fuzz-short", 100)

# Field offsets (and widths) inside each structure: the end record, a central record, a local header.
END_FIELDS = [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]
CENTRAL_FIELDS = [(4, 2), (6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (34, 2), (42, 4)]
LOCAL_FIELDS = [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)]


def structures(data: bytes) -> dict[str, list[tuple[int, int, list[tuple[int, int]]]]]:
    """Where the end record, each central record and each local header lie: (offset, length, fields)."""
    end = len(data) - 22
    count, _, cd = struct.unpack_from("<HLL", data, end + 10)
    central, local, pos = [], [], cd
    for _ in range(count):
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        central.append((pos, 46 + n + m + k, CENTRAL_FIELDS))
        at = struct.unpack_from("<L", data, pos + 42)[0]
        ln, lm = struct.unpack_from("<2H", data, at + 26)
        local.append((at, 30 + ln + lm, LOCAL_FIELDS))
        pos += 46 + n + m + k
    return {"end": [(end, 22, END_FIELDS)], "central": central, "local": local}


def savez_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(6.0).reshape(2, 3), y=np.ones(4, np.float32), z=np.zeros(3, np.int64))  # type: ignore[arg-type]
    return buffer.getvalue()


BASES = {
    "savez.npz": savez_bytes(),
    "weights.npz": (CORPUS / "npz/weights.npz").read_bytes(),
    "mlp.keras": (CORPUS / "keras3/mlp.keras").read_bytes(),
}


EDGE = st.sampled_from(["0", "1", "max", "+1", "-1", "random", "flip"])


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> list[tuple[int, int, str, int]]:
    """One to three edits: (offset, width, how, random value), each aimed at a field or byte of a zip structure."""
    where = structures(data)
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["end", "central", "local"]))
        start, length, fields = draw(st.sampled_from(where[kind]))
        how = draw(EDGE)
        if how == "flip":
            offset, width = start + draw(st.integers(0, length - 1)), 1
        else:
            field, width = draw(st.sampled_from(fields))
            offset = start + field
        edits.append((offset, width, how, draw(st.integers(0, 2**32 - 1))))
    return edits


def apply(data: bytes, edits: list[tuple[int, int, str, int]]) -> bytes:
    out = bytearray(data)
    for offset, width, how, value in edits:
        if how == "flip":
            out[offset] ^= 1 << (value % 8)
            continue
        fmt, top = ("<H", 0xFFFF) if width == 2 else ("<L", 0xFFFFFFFF)
        (old,) = struct.unpack_from(fmt, out, offset)
        new = {"0": 0, "1": 1, "max": top, "+1": old + 1, "-1": old - 1, "random": value}[how] & top
        struct.pack_into(fmt, out, offset, new)
    return bytes(out)


def check_accepted(path: Path, data: bytes) -> None:
    """An accepted mutant: the end record's count of members, each where its local header says, CRCs matching."""
    (count,) = struct.unpack_from("<H", data, len(data) - 12)
    with ZipArchive(path) as archive:
        assert len(archive) == count
        for m in archive:
            signature, n, extra = data[m.header_offset : m.header_offset + 4], *struct.unpack_from("<2H", data, m.header_offset + 26)
            assert signature == b"PK\x03\x04"
            assert data[m.header_offset + 30 : m.header_offset + 30 + n].decode("utf-8", "replace") == m.name
            assert m.data_offset == m.header_offset + 30 + n + extra
            body = b"".join(archive.chunks(m))
            assert zlib.crc32(body) == m.crc and len(body) == m.size
    with open_checkpoint(path) as reader:
        for t in reader.tensors:
            assert reader.read(t.name).shape == t.shape


@FUZZ
@given(case=st.sampled_from(sorted(BASES)).flatmap(lambda base: st.tuples(st.just(base), mutations(BASES[base]))))
def test_mutated_zip_structures_are_read_consistently_or_refused(tmp_path: Path, case: tuple[str, list[tuple[int, int, str, int]]]) -> None:
    base, edits = case
    path = tmp_path / base
    mutant = apply(BASES[base], edits)
    path.write_bytes(mutant)
    try:
        check_accepted(path, mutant)
        event("accepted")
    except CkptError as exc:
        event("refused")
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text, text
        assert re.search(r"(?<![\w.'])-\d", text.split(": ", 1)[1]) is None, text  # offsets are real file offsets
