"""The ``data.pkl`` of a flat PyTorch state dict, emitted opcode by opcode (no pickle module involved).

What is written is what ``torch.save`` pickles for an ``OrderedDict`` of contiguous CPU tensors,
one storage each, at pickle protocol 2, byte for byte: Python's pickler memoizes every global,
string and non-empty tuple (``BINPUT``) and refers to a global or one of the constant strings
(``'storage'``, ``'cpu'``) again with ``BINGET``; the dict's items go in batches of 1000
(``MARK ... SETITEMS``, a batch of one as ``SETITEM``). Each tensor is::

    GLOBAL torch._utils _rebuild_tensor_v2          (v3 for the dtypes stored untyped, see below)
    ( ( 'storage' GLOBAL <storage type> '<key>' 'cpu' <numel> TUPLE BINPERSID
        <storage offset 0> <shape tuple> <stride tuple> False OrderedDict() [GLOBAL torch <dtype>]
      TUPLE REDUCE

Dtypes that have a legacy typed storage class (``FloatStorage`` ...) name it, and ``numel``
counts elements; the others (float8 types, unsigned 16/32/64-bit) name
``torch.storage.UntypedStorage``, count bytes, and are rebuilt by ``_rebuild_tensor_v3``, which
takes the dtype as a seventh argument. Only the opcodes torch's ``weights_only`` unpickler reads
are used (it refuses protocol 4's ``FRAME``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from ...tensors import DTYPES, TensorSpec

PROTOCOL = 2
BATCH = 1000  # pickle's _BATCHSIZE: dict items per SETITEMS

# code -> (storage type GLOBAL, the dtype GLOBAL for _rebuild_tensor_v3 or None for v2)
STORAGE_TYPES: dict[str, tuple[tuple[str, str], tuple[str, str] | None]] = {
    "F64": (("torch", "DoubleStorage"), None),
    "F32": (("torch", "FloatStorage"), None),
    "F16": (("torch", "HalfStorage"), None),
    "BF16": (("torch", "BFloat16Storage"), None),
    "I64": (("torch", "LongStorage"), None),
    "I32": (("torch", "IntStorage"), None),
    "I16": (("torch", "ShortStorage"), None),
    "I8": (("torch", "CharStorage"), None),
    "U8": (("torch", "ByteStorage"), None),
    "BOOL": (("torch", "BoolStorage"), None),
    "F8_E4M3": (("torch.storage", "UntypedStorage"), ("torch", "float8_e4m3fn")),
    "F8_E5M2": (("torch.storage", "UntypedStorage"), ("torch", "float8_e5m2")),
    "F8_E8M0": (("torch.storage", "UntypedStorage"), ("torch", "float8_e8m0fnu")),
    "U16": (("torch.storage", "UntypedStorage"), ("torch", "uint16")),
    "U32": (("torch.storage", "UntypedStorage"), ("torch", "uint32")),
    "U64": (("torch.storage", "UntypedStorage"), ("torch", "uint64")),
}

REBUILD_V2 = ("torch._utils", "_rebuild_tensor_v2")
REBUILD_V3 = ("torch._utils", "_rebuild_tensor_v3")
ORDERED_DICT = ("collections", "OrderedDict")

# opcodes (pickle protocol 2)
_PROTO, _STOP, _MARK = b"\x80", b".", b"("
_GLOBAL, _REDUCE, _BINPERSID = b"c", b"R", b"Q"
_BINUNICODE, _BININT1, _BININT2, _BININT, _LONG1 = b"X", b"K", b"M", b"J", b"\x8a"
_EMPTY_TUPLE, _TUPLE, _TUPLES = b")", b"t", {1: b"\x85", 2: b"\x86", 3: b"\x87"}
_NEWFALSE = b"\x89"
_SETITEM, _SETITEMS = b"s", b"u"
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = b"q", b"r", b"h", b"j"


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """C-order strides in elements, as torch gives them (a dimension of size 0 counts as 1)."""
    strides: list[int] = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def storage_numel(spec: TensorSpec) -> int:
    """The ``numel`` of a tensor's persistent id: elements of a typed storage, bytes of an untyped one."""
    untyped = STORAGE_TYPES[spec.dtype][1] is not None
    return spec.nbytes if untyped else spec.nbytes // DTYPES[spec.dtype].itemsize


class Emitter:
    """Pickle opcodes into a buffer, with the memo as Python's pickler keeps it."""

    def __init__(self) -> None:
        self.out = bytearray(_PROTO + bytes([PROTOCOL]))
        self._memo: dict[object, int] = {}  # what is referred to again: globals and constant strings
        self._next = 0

    def _put(self, key: object | None = None) -> None:
        """Memoize the object just written (``key``: it will be referred to again)."""
        n = self._next
        self._next += 1
        self.out += _BINPUT + bytes([n]) if n < 256 else _LONG_BINPUT + struct.pack("<I", n)
        if key is not None:
            self._memo[key] = n

    def _get(self, key: object) -> bool:
        n = self._memo.get(key)
        if n is None:
            return False
        self.out += _BINGET + bytes([n]) if n < 256 else _LONG_BINGET + struct.pack("<I", n)
        return True

    def global_(self, module: str, name: str) -> None:
        if not self._get(("global", module, name)):
            self.out += _GLOBAL + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n"
            self._put(("global", module, name))

    def text(self, value: str, *, constant: bool = False) -> None:
        """A str (``constant``: the same object each time, so later uses are ``BINGET``)."""
        if constant and self._get(("str", value)):
            return
        data = value.encode("utf-8", "surrogatepass")
        self.out += _BINUNICODE + struct.pack("<I", len(data)) + data
        self._put(("str", value) if constant else None)

    def integer(self, value: int) -> None:
        if 0 <= value <= 0xFF:
            self.out += _BININT1 + bytes([value])
        elif 0 <= value <= 0xFFFF:
            self.out += _BININT2 + struct.pack("<H", value)
        elif -0x80000000 <= value <= 0x7FFFFFFF:
            self.out += _BININT + struct.pack("<i", value)
        else:
            data = value.to_bytes((value.bit_length() >> 3) + 1, "little", signed=True)
            self.out += _LONG1 + bytes([len(data)]) + data

    def int_tuple(self, values: Sequence[int]) -> None:
        if not values:
            self.out += _EMPTY_TUPLE
            return
        if len(values) > 3:
            self.out += _MARK
        for v in values:
            self.integer(v)
        self.out += _TUPLES.get(len(values), _TUPLE)
        self._put()

    def empty_ordered_dict(self) -> None:
        self.global_(*ORDERED_DICT)
        self.out += _EMPTY_TUPLE + _REDUCE
        self._put()

    def tensor(self, spec: TensorSpec, key: str) -> None:
        """``spec`` as a contiguous tensor over the whole of storage ``key`` (offset 0)."""
        storage_type, dtype = STORAGE_TYPES[spec.dtype]
        self.global_(*(REBUILD_V2 if dtype is None else REBUILD_V3))
        self.out += _MARK + _MARK
        self.text("storage", constant=True)
        self.global_(*storage_type)
        self.text(key)
        self.text("cpu", constant=True)
        self.integer(storage_numel(spec))
        self.out += _TUPLE
        self._put()
        self.out += _BINPERSID
        self.integer(0)
        self.int_tuple(spec.shape)
        self.int_tuple(contiguous_strides(spec.shape))
        self.out += _NEWFALSE
        self.empty_ordered_dict()
        if dtype is not None:
            self.global_(*dtype)
        self.out += _TUPLE
        self._put()
        self.out += _REDUCE
        self._put()


def state_dict_pickle(items: Iterable[tuple[TensorSpec, str]]) -> bytes:
    """``data.pkl`` for an ``OrderedDict`` of the given tensors, each ``(spec, storage key)``, in order."""
    e = Emitter()
    e.global_(*ORDERED_DICT)
    e.out += _EMPTY_TUPLE + _REDUCE
    e._put()
    pending = list(items)
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        if len(batch) > 1:
            e.out += _MARK
        for spec, key in batch:
            e.text(spec.name)
            e.tensor(spec, key)
        e.out += _SETITEMS if len(batch) > 1 else _SETITEM
    e.out += _STOP
    return bytes(e.out)


__all__ = ["STORAGE_TYPES", "contiguous_strides", "state_dict_pickle", "storage_numel"]
