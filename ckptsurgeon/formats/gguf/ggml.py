"""GGUF's type tables: metadata value types and ggml tensor types (as gguf-py 0.19 numbers them)."""

from __future__ import annotations

import struct

from ...tensors import BLOCK_SIZES

#: metadata value type -> its name (gguf-py's ``GGUFValueType``)
VALUE_TYPES: dict[int, str] = {
    0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32", 7: "BOOL",
    8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64",
}
VALUE_CODES: dict[str, int] = {name: code for code, name in VALUE_TYPES.items()}
STRING, ARRAY, BOOL = 8, 9, 7
#: fixed-size value types -> struct format (little-endian)
SCALARS: dict[int, struct.Struct] = {
    code: struct.Struct("<" + fmt)
    for code, fmt in {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}.items()
}
INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}
FLOATS = {6, 12}

#: ggml tensor type number -> dtype code (ggml's own name for the quantized types)
GGML_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
    28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}
GGML_OF: dict[str, int] = {code: number for number, code in GGML_TYPES.items()}
assert set(BLOCK_SIZES) <= set(GGML_OF)

DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp's loader refuses more
MAX_NAME_BYTES = 63  # GGML_MAX_NAME is 64 with the terminating NUL
MAX_NESTING = 8  # arrays of arrays of ...: deeper is refused


def align(n: int, alignment: int) -> int:
    return n + (-n % alignment)


#: array typecodes for the fixed-size value types (compact arrays, not lists of Python numbers)
ARRAY_CODES: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}


class Value:
    """One typed metadata value: ``vtype`` (a value type number), for arrays ``elem`` (their element type)
    and ``value``: a number, a bool, a str; for an array an ``array.array`` of numbers, a list of str, or
    a list of :class:`Value` (an array of arrays)."""

    __slots__ = ("_text", "elem", "value", "vtype")

    def __init__(self, vtype: int, value: object, elem: int | None = None) -> None:
        self.vtype, self.value, self.elem = vtype, value, elem
        self._text: str | None = None

    @property
    def type_name(self) -> str:
        if self.vtype == ARRAY:
            assert self.elem is not None
            return f"ARRAY[{VALUE_TYPES[self.elem]}]"
        return VALUE_TYPES[self.vtype]

    def __len__(self) -> int:
        return len(self.value) if self.vtype == ARRAY else 1  # type: ignore[arg-type]

    def plain(self) -> object:
        """The value as JSON-ready Python data (arrays as lists; a non-finite float as its text)."""
        if self.vtype == ARRAY:
            if self.elem == ARRAY:
                return [v.plain() for v in self.value]  # type: ignore[attr-defined]
            if self.elem == BOOL:
                return [bool(b) for b in self.value]  # type: ignore[attr-defined]
            if self.elem in FLOATS:
                return [_json_float(f) for f in self.value]  # type: ignore[attr-defined]
            return list(self.value)  # type: ignore[call-overload]
        if self.vtype in FLOATS:
            return _json_float(self.value)  # type: ignore[arg-type]
        return self.value

    def typed(self) -> dict[str, object]:
        """``{"type": ..., "value": ...}``; an array of arrays holds each inner array typed."""
        if self.vtype == ARRAY and self.elem == ARRAY:
            return {"type": self.type_name, "value": [v.typed() for v in self.value]}  # type: ignore[attr-defined]
        return {"type": self.type_name, "value": self.plain()}

    def text(self) -> str:
        """The value as metadata text: strings as they are, numbers in decimal, booleans true/false, arrays as JSON."""
        if self._text is None:
            self._text = self._make_text()
        return self._text

    def _make_text(self) -> str:
        import json

        if self.vtype == STRING:
            return str(self.value)
        if self.vtype == BOOL:
            return "true" if self.value else "false"
        if self.vtype in FLOATS:
            return repr(self.value)
        if self.vtype == ARRAY:
            return json.dumps(self.plain())
        return str(self.value)


def _json_float(f: float) -> float | str:
    return f if f - f == 0 else repr(f)  # NaN and infinities are no JSON numbers


_INT_RANGES = {
    "UINT8": (0, 2**8), "INT8": (-(2**7), 2**7), "UINT16": (0, 2**16), "INT16": (-(2**15), 2**15),
    "UINT32": (0, 2**32), "INT32": (-(2**31), 2**31), "UINT64": (0, 2**64), "INT64": (-(2**63), 2**63),
}


def parse_scalar(type_name: str, text: str) -> Value:
    """A scalar value of type ``type_name`` (``UINT32``, ``FLOAT32``, ``BOOL``, ``STRING`` ...) from its text;
    ValueError when the text is not one."""
    if type_name == "STRING":
        return Value(STRING, text)
    if type_name == "BOOL":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a bool (true or false)")
        return Value(BOOL, text.lower() in ("true", "1"))
    if type_name in _INT_RANGES:
        low, high = _INT_RANGES[type_name]
        try:
            n = int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not low <= n < high:
            raise ValueError(f"{n} is outside the range of {type_name} ({low} to {high - 1})")
        return Value(VALUE_CODES[type_name], n)
    if type_name in ("FLOAT32", "FLOAT64"):
        try:
            f = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if type_name == "FLOAT32":
            try:
                (f,) = struct.unpack("<f", struct.pack("<f", f))  # the float32 nearest
            except OverflowError:
                raise ValueError(f"{text!r} is outside the range of FLOAT32") from None
        return Value(VALUE_CODES[type_name], f)
    raise ValueError(f"{type_name} is not a scalar GGUF type")
