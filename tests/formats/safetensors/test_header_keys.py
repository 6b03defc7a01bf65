"""Duplicate keys in a safetensors header are refused wherever they are, however the keys are spelled.

The header parser counts ``:`` instead of checking every key as it is parsed (see
``parse_header``), so these properties build header texts by hand: names and metadata with ``:``
written plainly and as ``\\u003a`` escapes, and one key repeated in the top level, in a tensor's
fields, or in the metadata. A text with a repeated key must be refused naming the duplicate; the
same text without the repeat must be read, with exactly its names and metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats.safetensors.header import parse_header

# Characters a name or metadata value may hold here: ':' and quotes, plain or escaped.
_PIECES = st.sampled_from(["a", "b", "1", ".", ":", "\\u003a", "\\u003A", "\\\"", "\\\\", " ", "é"])
_TEXT = st.lists(_PIECES, min_size=1, max_size=6).map("".join)  # a JSON string's body, escapes and all


def _decoded(body: str) -> str:
    return str(json.loads(f'"{body}"'))


def _entry(begin: int, fields: list[str]) -> str:
    values = {"dtype": '"U8"', "shape": "[1]", "data_offsets": f"[{begin},{begin + 1}]"}
    return "{" + ",".join(f'"{key}":{values[key]}' for key in fields) + "}"


@st.composite
def _headers(draw: st.DrawFn) -> tuple[bytes, int, dict[str, str], list[str], str | None]:
    """(header, data length, metadata, tensor names, where a key repeats or None)."""
    bodies = draw(st.lists(_TEXT, max_size=6, unique_by=_decoded))
    meta_bodies = draw(st.lists(_TEXT, max_size=3, unique_by=_decoded))
    meta_values = [draw(_TEXT) for _ in meta_bodies]
    repeat = draw(st.sampled_from([None, "name", "field", "metadata", "__metadata__"]))
    if (repeat in ("name", "field") and not bodies) or (repeat == "metadata" and not meta_bodies):
        repeat = None
    fields = ["dtype", "shape", "data_offsets"]
    members = [f'"{body}":{_entry(i, fields)}' for i, body in enumerate(bodies)]
    if repeat == "field":
        doubled = draw(st.sampled_from(fields))
        members[0] = f'"{bodies[0]}":{_entry(0, [*fields, doubled])}'
    if repeat == "name":
        # the same name again, spelled with the other escape where it has one (same key once decoded)
        i = draw(st.integers(0, len(bodies) - 1))
        again = bodies[i].replace("\\u003a", ":") if "\\u003a" in bodies[i] else bodies[i].replace(":", "\\u003a")
        members.insert(draw(st.integers(0, len(members))), f'"{again}":{_entry(i, fields)}')
    meta = [f'"{key}":"{value}"' for key, value in zip(meta_bodies, meta_values, strict=True)]
    if repeat == "metadata":
        meta.append(f'"{meta_bodies[-1]}":"{meta_values[0]}"')
    if meta or repeat == "__metadata__":
        members.insert(draw(st.integers(0, len(members))), '"__metadata__":{' + ",".join(meta) + "}")
    if repeat == "__metadata__":
        members.append('"__metadata__":{}')
    text = "{" + ", ".join(members) + "}"
    metadata = {_decoded(k): _decoded(v) for k, v in zip(meta_bodies, meta_values, strict=True)}
    return text.encode("utf-8"), len(bodies), metadata, [_decoded(b) for b in bodies], repeat


@settings(max_examples=300, derandomize=True, deadline=None)
@given(_headers())
def test_a_repeated_key_is_refused_and_a_header_without_one_is_read(case: tuple) -> None:
    header, data_len, metadata, names, repeat = case
    path = Path("model.safetensors")
    if repeat is not None:
        with pytest.raises(InputError, match="duplicate key"):
            parse_header(path, header, data_len)
        return
    got_metadata, tensors = parse_header(path, header, data_len)
    assert got_metadata == metadata
    assert [t.name for t in tensors] == names
