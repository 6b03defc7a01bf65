"""The safetensors header: parsed strictly before any data is touched, and built for a writer.

The header is validated completely, at least as strictly as the reference parser: an 8-byte
little-endian length no larger than the file and than 100 MB, a UTF-8 JSON object (no duplicate
keys, no NaN/Infinity tokens), ``__metadata__`` mapping str to str, known dtypes, shapes of
non-negative integers, and data offsets that tile the data section exactly: contiguous, no
overlap, no hole, no trailing bytes, each range as long as shape x dtype says.
"""

from __future__ import annotations

import json
import operator
import re
import struct
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...tensors import DTYPES, TensorInfo, TensorSpec, default_layer, gc_paused, make_info, numel
from .._index import SURROGATE_ESCAPE, json_text, no_constants, strict_json

MAX_HEADER_BYTES = 100_000_000
ALIGN = 8
_KEYS = {"dtype", "shape", "data_offsets"}
_ITEMSIZE = {code: dtype.itemsize for code, dtype in DTYPES.items() if not dtype.is_block}  # safetensors has no block dtypes
_LOC = operator.attrgetter("loc")
_COLON_ESCAPE = re.compile(r"\\u003[aA]")  # a ':' written as an escape


@gc_paused
def parse_header(path: Path, header: bytes, data_len: int) -> tuple[dict[str, str], list[TensorInfo]]:
    """Validate a safetensors header; return its metadata and tensors in data-offset order.

    Each TensorInfo's ``loc`` is its ``(begin, end)`` within the data section.

    Duplicate keys are refused. Python's JSON parser builds its objects fastest without a hook that
    sees each key, so a header is parsed without one and its keys are counted instead: in JSON every
    ``:`` outside a string separates a key from its value. Once the document is validated, every
    string it holds is known (names, metadata, and dtype codes and fixed keys without a ``:``), so
    the text's ``:`` count equals the number of keys plus the ``:`` inside those strings exactly
    when no key was repeated (a repeated key drops a member, and so at least one ``:``). A text
    that writes a ``:`` as an escape (``\\u003a``), or holds a surrogate escape, is parsed with the
    per-key check instead; so is a header found faulty, so that a duplicate key is what is reported.
    """
    if not header.lstrip(b" ").startswith(b"{"):
        raise _bad(path, "the header does not start with '{'")
    doc, colons = _load(path, header)
    try:
        metadata, tensors = _validated(path, doc, data_len)
    except InputError:
        if colons is not None:
            _strict(path, header)  # a duplicate key, if there is one, is the fault to name
        raise
    if colons is not None and colons != _colons_in(doc, metadata, tensors):
        _strict(path, header)
        raise _bad(path, "duplicate keys")  # _strict names the key; this is a second line of defence
    return metadata, tensors


def _bad(path: Path, problem: str) -> InputError:
    return InputError(path, f"invalid safetensors header: {problem}")


def _load(path: Path, header: bytes) -> tuple[Any, int | None]:
    """The parsed header and its ``:`` count, or (parsed strictly, None) where the count cannot be used."""
    try:
        text = json_text(header, "the header")
    except ValueError as exc:
        raise _bad(path, f"not valid JSON ({exc})") from exc
    if SURROGATE_ESCAPE.search(text) or _COLON_ESCAPE.search(text):
        return _strict(path, header), None
    try:
        return json.loads(text, parse_constant=no_constants), text.count(":")
    except RecursionError as exc:
        raise _bad(path, "JSON nested too deeply") from exc
    except ValueError as exc:
        raise _bad(path, f"not valid JSON ({exc})") from exc


def _strict(path: Path, header: bytes) -> Any:
    try:
        return strict_json(header, "the header")
    except RecursionError as exc:
        raise _bad(path, "JSON nested too deeply") from exc
    except ValueError as exc:
        raise _bad(path, f"not valid JSON ({exc})") from exc


def _colons_in(doc: dict[str, Any], metadata: dict[str, str], tensors: list[TensorInfo]) -> int:
    """The ``:`` a text of this validated document holds: one per key, plus those inside its strings."""
    keys = len(doc) + len(_KEYS) * len(tensors) + len(metadata)  # doc still holds "__metadata__" if it was there
    inside = "".join(t.name for t in tensors).count(":")
    inside += "".join(metadata).count(":") + "".join(metadata.values()).count(":")
    return keys + inside


def _validated(path: Path, doc: Any, data_len: int) -> tuple[dict[str, str], list[TensorInfo]]:
    def bad(problem: str) -> InputError:
        return _bad(path, problem)

    if not isinstance(doc, dict):
        raise bad("not a JSON object")

    metadata: dict[str, str] = {}
    raw_meta = doc.get("__metadata__")
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise bad("__metadata__ must map strings to strings")
        metadata = raw_meta

    tensors: list[TensorInfo] = []
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise bad(f"tensor {name!r} is not an object")
        if entry.keys() != _KEYS:
            raise bad(f"tensor {name!r} must have exactly dtype, shape and data_offsets, has {sorted(entry)}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in _ITEMSIZE:
            raise bad(f"tensor {name!r} has unknown dtype {code!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"tensor {name!r} shape {shape!r} is not a list of non-negative integers")
        if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int
                and offsets[0] >= 0 and offsets[1] >= 0):
            raise bad(f"tensor {name!r} data_offsets {offsets!r} are not two non-negative integers")
        begin, end = offsets
        if end < begin:
            raise bad(f"tensor {name!r} data_offsets {offsets} end before they begin")
        if end > data_len:
            raise InputError(
                path, f"truncated or corrupt: tensor {name!r} ends at data offset {end} "
                f"but the data section holds only {data_len} bytes",
            )
        dims = tuple(shape)
        nbytes = numel(dims) * _ITEMSIZE[code]
        if end - begin != nbytes:
            raise bad(f"tensor {name!r} is {shape} {code} = {nbytes} bytes but its offsets span {end - begin}")
        tensors.append(make_info(name, dims, code, default_layer(name), (begin, end)))

    tensors.sort(key=_LOC)
    position = 0
    for t in tensors:
        begin, end = t.loc
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a hole of {begin - position} bytes"
            raise bad(f"tensor {t.name!r} at offset {begin} {what}")
        position = end
    if position != data_len:
        raise bad(f"tensors cover {position} bytes but the data section holds {data_len}")
    return metadata, tensors



def build_header(specs: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    """The header for tensors laid out in the given order, padded with spaces to 8-byte alignment."""
    doc: dict[str, Any] = {}
    if metadata:
        doc["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for s in specs:
        doc[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % ALIGN)
    return struct.pack("<Q", len(raw)) + raw


def pad_header(header: bytes, residue: int, window: int) -> bytes:
    """``header`` (as :func:`build_header` makes it) padded with spaces so the data starts at ≡ ``residue`` (mod ``window``)."""
    raw = header[8:] + b" " * ((residue - len(header)) % window)
    return struct.pack("<Q", len(raw)) + raw


