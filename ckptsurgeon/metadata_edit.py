"""``--set-metadata KEY[:TYPE]=VALUE`` and ``--drop-metadata KEY`` on ``rename`` and ``convert``.

Metadata is text (``str -> str``) in every format but GGUF, whose values are typed. A value is
given as text; its type, for a GGUF output, is given after the key: ``KEY:u32=7``. The types are
``str``, ``bool``, ``u8``, ``i8``, ``u16``, ``i16``, ``u32``, ``i32``, ``u64``, ``i64``, ``f32``
and ``f64`` (GGUF's scalar types; arrays cannot be set). Without a type, a key the GGUF input
already holds keeps its type (the new text must be one), and a new key is a string. A typed value
is checked (an integer in range, a number, true/false) and written in its canonical text (``07``
as ``7``; an ``f32`` as the float32 nearest): outputs that hold text get that text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import UsageError

#: the type names a user gives -> GGUF's value type names
TYPES: dict[str, str] = {
    "str": "STRING", "bool": "BOOL", "u8": "UINT8", "i8": "INT8", "u16": "UINT16", "i16": "INT16",
    "u32": "UINT32", "i32": "INT32", "u64": "UINT64", "i64": "INT64", "f32": "FLOAT32", "f64": "FLOAT64",
}


@dataclass(frozen=True)
class MetadataEdits:
    """Keys to drop, then keys to set: ``(key, text, GGUF type name or None)`` in the order given."""

    set: tuple[tuple[str, str, str | None], ...] = ()
    drop: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, set_metadata: Sequence[str] | None = None,
                     drop_metadata: Sequence[str] | None = None) -> MetadataEdits | None:
        """The edits of ``--set-metadata`` and ``--drop-metadata`` (None when there are none)."""
        if not set_metadata and not drop_metadata:
            return None
        return cls(tuple(parse_set(s) for s in set_metadata or ()), tuple(drop_metadata or ()))

    @property
    def types(self) -> dict[str, str]:
        """Key -> GGUF type name, for the keys set with a type."""
        return {key: kind for key, _, kind in self.set if kind is not None}

    def apply(self, metadata: Mapping[str, str]) -> dict[str, str]:
        """``metadata`` with the keys dropped and set (a dropped key must be there)."""
        out = dict(metadata)
        for key in self.drop:
            if key not in out:
                known = ", ".join(list(out)[:8]) or "none"
                raise UsageError(None, f"--drop-metadata {key}: the input has no such metadata (it has: {known})")
            del out[key]
        for key, text, _ in self.set:
            out[key] = text
        return out


def parse_set(spec: str) -> tuple[str, str, str | None]:
    """``KEY=VALUE`` or ``KEY:TYPE=VALUE`` -> ``(key, canonical text, GGUF type name or None)``."""
    key, sep, text = spec.partition("=")
    if not sep or not key:
        raise UsageError(None, f"--set-metadata {spec!r}: give KEY=VALUE, or KEY:TYPE=VALUE with TYPE one of "
                               f"{', '.join(TYPES)}")
    kind = None
    head, colon, suffix = key.rpartition(":")
    if colon and suffix in TYPES and head:
        key, kind = head, TYPES[suffix]
        from .formats.gguf.ggml import parse_scalar

        try:
            text = parse_scalar(kind, text).text()
        except ValueError as exc:
            raise UsageError(None, f"--set-metadata {spec!r}: {exc}") from None
    return key, text, kind


def metadata_options(edits: MetadataEdits | None, fmt: str) -> dict[str, object] | None:
    """The writer options carrying the types given (for a writer that writes typed values: GGUF)."""
    if edits is None or not edits.types:
        return None
    from .formats import writer_for

    return {"metadata_types": edits.types} if writer_for(fmt).caps.typed_metadata else None
