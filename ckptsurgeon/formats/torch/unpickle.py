"""The one restricted unpickler: a PyTorch pickle read as data, never run.

This is the only module of ckptsurgeon that touches pickle machinery, and it never calls
:mod:`pickle`'s unpickler. The stream is decoded opcode by opcode with :func:`pickletools.genops`
(which only parses) and interpreted here, on a stack of plain Python values:

- **Globals** (``GLOBAL``, ``STACK_GLOBAL``) are looked up, by their raw ``module.name`` strings, in
  :data:`ALLOWED` below; nothing is imported. Each allowed global is a local builder that returns
  a record: a :class:`TensorRecord` (storage, dtype, storage offset, shape, stride), a dict, a
  tuple, or a marker (a storage type, a dtype). Any other global is refused by name.
- **Calls** (``REDUCE``, ``NEWOBJ``) call only those builders, with their arguments checked.
  ``BUILD`` sets state only on dicts and tensors (and keeps it as data).
- **Persistent ids** (``BINPERSID``, ``PERSID``) must be ``('storage', <storage type>, key,
  location, numel[, None])``; they become a :class:`Storage` reference. No storage is read here.
- **Opcodes** that build class instances or read out-of-band data (``INST``, ``OBJ``,
  ``NEWOBJ_EX``, ``EXT1/2/4``, ``NEXT_BUFFER``, ``READONLY_BUFFER``) are refused.

Bounds, so that a hostile pickle cannot exhaust memory or time: the pickle is at most
:data:`MAX_PICKLE_BYTES` bytes; every length-prefixed argument must lie inside it (checked by the
parser before anything is allocated); at most :data:`MAX_OBJECTS` values are made and memoised;
the MARK stack is at most :data:`MAX_MARKS` deep; shapes have at most :data:`MAX_DIMS`
dimensions. Errors are :class:`~ckptsurgeon.errors.UnsafeInputError` (a global, call or opcode
that is not allowed) or :class:`~ckptsurgeon.errors.InputError` (a malformed pickle), one line each.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...errors import InputError, UnsafeInputError

MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle is ~150 bytes per tensor
MAX_OBJECTS = 4_000_000  # opcodes run: each makes, stores or moves at most one value (~20 per tensor)
MAX_MARKS = 10_000
MAX_DIMS = 64


# --- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageType:
    """A storage class named by a persistent id (``torch.FloatStorage``); ``code`` None: untyped (bytes)."""

    name: str
    code: str | None
    itemsize: int


@dataclass(frozen=True)
class DType:
    """A ``torch.<dtype>`` global (the dtype argument of ``_rebuild_tensor_v3``)."""

    name: str
    code: str


@dataclass(eq=False)
class Storage:
    """A storage a persistent id refers to: its key (``data/<key>``), type and size. Never read here."""

    key: str
    type: StorageType
    numel: int  # in elements of ``type`` (bytes when untyped)
    location: str

    @property
    def nbytes(self) -> int:
        return self.numel * self.type.itemsize


@dataclass(eq=False)
class TensorRecord:
    """A tensor as a view of a storage: dtype code, offset and strides in elements, shape."""

    storage: Storage
    dtype: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    state: Any = field(default=None, repr=False)


class StateDict(dict[Any, Any]):
    """A dict or OrderedDict; ``state`` is what ``BUILD`` gave it (a state dict's ``_metadata``)."""

    state: Any = None


@dataclass(frozen=True)
class Builder:
    """An allowed global that may be called (``REDUCE``/``NEWOBJ``)."""

    name: str
    call: Callable[..., Any] = field(repr=False)


# --- builders --------------------------------------------------------------------------------------
class _Bad(Exception):
    """A builder's arguments are not what the global takes: a malformed pickle."""


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _Bad(f"{what} is {type(value).__name__}, not an integer")
    return value


def _dims(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise _Bad(f"{what} is {type(value).__name__}, not a tuple")
    if len(value) > MAX_DIMS:
        raise _Bad(f"{what} has {len(value)} dimensions (at most {MAX_DIMS})")
    dims = tuple(_int(v, what) for v in value)
    if any(d < 0 or d >= 1 << 62 for d in dims):
        raise _Bad(f"{what} {list(dims)} has a negative or impossibly large entry")
    return dims


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: str | None = None) -> TensorRecord:
    if not isinstance(storage, Storage):
        raise _Bad(f"the storage argument is {type(storage).__name__}, not a storage reference")
    offset = _int(offset, "the storage offset")
    if offset < 0 or offset >= 1 << 62:
        raise _Bad(f"the storage offset {offset} is out of range")
    shape, strides = _dims(size, "the size"), _dims(stride, "the stride")
    if len(shape) != len(strides):
        raise _Bad(f"size {list(shape)} and stride {list(strides)} differ in length")
    code = dtype if dtype is not None else (storage.type.code or "U8")
    return TensorRecord(storage, code, offset, shape, strides)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRecord:
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       hooks: Any = None, metadata: Any = None) -> TensorRecord:
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any, metadata: Any = None) -> TensorRecord:
    if not isinstance(dtype, DType) or not dtype.code:
        raise _Bad(f"the dtype argument is {type(dtype).__name__}, not a torch dtype")
    return _tensor(storage, offset, size, stride, dtype.code)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> TensorRecord:
    if not isinstance(data, TensorRecord):
        raise _Bad(f"a parameter of {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if not isinstance(func, Builder) or func.name not in _TENSOR_BUILDERS:
        raise _Bad(f"_rebuild_from_type_v2 of {getattr(func, 'name', type(func).__name__)}, not a tensor builder")
    if new_type not in (_TENSOR_CLASS, _PARAMETER_CLASS):
        raise _Bad("_rebuild_from_type_v2 of a tensor subclass")
    if not isinstance(args, tuple):
        raise _Bad("_rebuild_from_type_v2 arguments are not a tuple")
    return func.call(*args)


def _ordered_dict(items: Any = ()) -> StateDict:
    if not isinstance(items, (list, tuple)):
        raise _Bad(f"an OrderedDict of {type(items).__name__}, not a list of pairs")
    out = StateDict()
    for pair in items:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise _Bad("OrderedDict items are not pairs")
        out[pair[0]] = pair[1]
    return out


def _size(dims: Any = ()) -> tuple[int, ...]:
    return _dims(dims, "a torch.Size")


def _device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str):
        raise _Bad("torch.device of a non-string")
    return kind if index is None else f"{kind}:{_int(index, 'a device index')}"


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise _Bad("_codecs.encode of something other than text in latin1 or utf-8")
    return text.encode(encoding)


def _set(items: Any = ()) -> set[Any]:
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise _Bad("a set of a non-sequence")
    return set(items)


def _bytearray(data: Any = b"") -> bytes:
    if not isinstance(data, (bytes, list)):
        raise _Bad("a bytearray of something other than bytes")
    return bytes(data)


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise _Bad("a complex of non-numbers")
    return complex(real, imag)


# --- the allow-list --------------------------------------------------------------------------------
_TENSOR_BUILDERS = ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3")
_TENSOR_CLASS = DType("torch.Tensor", "")  # markers: accepted only as _rebuild_from_type_v2's type argument
_PARAMETER_CLASS = DType("torch.nn.parameter.Parameter", "")

#: ``torch.<X>Storage`` -> ckptsurgeon dtype code (the element type and size of a typed storage).
STORAGE_TYPES: dict[str, str] = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
#: ``torch.<name>`` dtype globals -> dtype code (torch's own names and aliases).
DTYPE_NAMES: dict[str, str] = {
    "float64": "F64", "double": "F64", "float32": "F32", "float": "F32", "float16": "F16", "half": "F16",
    "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "int64": "I64", "long": "I64", "int32": "I32", "int": "I32", "int16": "I16", "short": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
             "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _table() -> dict[str, Any]:
    table: dict[str, Any] = {
        "collections.OrderedDict": Builder("collections.OrderedDict", _ordered_dict),
        "collections.Counter": Builder("collections.Counter", _ordered_dict),
        "torch._utils._rebuild_tensor": Builder("torch._utils._rebuild_tensor", _rebuild_tensor),
        "torch._utils._rebuild_tensor_v2": Builder("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
        "torch._utils._rebuild_tensor_v3": Builder("torch._utils._rebuild_tensor_v3", _rebuild_tensor_v3),
        "torch._utils._rebuild_parameter": Builder("torch._utils._rebuild_parameter", _rebuild_parameter),
        "torch._utils._rebuild_parameter_with_state": Builder("torch._utils._rebuild_parameter_with_state",
                                                              _rebuild_parameter),
        "torch._tensor._rebuild_from_type_v2": Builder("torch._tensor._rebuild_from_type_v2", _rebuild_from_type_v2),
        "torch.Tensor": _TENSOR_CLASS,
        "torch.nn.parameter.Parameter": _PARAMETER_CLASS,
        "torch.Size": Builder("torch.Size", _size),
        "torch.device": Builder("torch.device", _device),
        "torch.storage.UntypedStorage": StorageType("UntypedStorage", None, 1),
        "_codecs.encode": Builder("_codecs.encode", _encode),
    }
    for module in ("builtins", "__builtin__"):  # raw names as protocol-2 pickles spell them; no mapping applied
        table[f"{module}.set"] = Builder(f"{module}.set", _set)
        table[f"{module}.frozenset"] = Builder(f"{module}.frozenset", _set)
        table[f"{module}.bytearray"] = Builder(f"{module}.bytearray", _bytearray)
        table[f"{module}.complex"] = Builder(f"{module}.complex", _complex)
    for name, code in STORAGE_TYPES.items():
        table[f"torch.{name}"] = StorageType(name, code, _ITEMSIZE[code])
    for name, code in DTYPE_NAMES.items():
        table[f"torch.{name}"] = DType(name, code)
    return table


#: Every global a pickle may name, by its raw ``module.name``; nothing else is ever resolved.
ALLOWED: dict[str, Any] = _table()

#: The opcodes interpreted; any other is refused by name.
_REFUSED_OPCODES = {"INST", "OBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}


# --- the interpreter -------------------------------------------------------------------------------
class Stream(Protocol):
    """What the unpickler reads from: a file, a BytesIO or an mmap (read, seek, tell)."""

    def read(self, n: int = -1, /) -> bytes: ...
    def seek(self, pos: int, /) -> Any: ...
    def tell(self) -> int: ...


class Unpickler:
    """Read one pickle from ``stream`` (at most :data:`MAX_PICKLE_BYTES`) into plain values and records.

    ``storages`` collects every storage the persistent ids name, by key, across the pickles of one
    file (a legacy file's storages are listed by a later pickle). ``path`` names the file in errors.
    """

    def __init__(self, path: Path, stream: Stream, *, where: str = "the pickle",
                 storages: dict[str, Storage] | None = None) -> None:
        self.path = path
        self.stream = stream
        self.where = where
        self.storages: dict[str, Storage] = {} if storages is None else storages
        self.start = stream.tell()

    # the two hooks of a pickle unpickler, answered from the table and as references
    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get(f"{module}.{name}")
        if found is None:
            raise UnsafeInputError(
                self.path, f"{self.where} names the global {module}.{name}, which is not allowed in a tensor "
                "checkpoint; refusing it (nothing was run)",
            )
        return found

    def persistent_load(self, pid: Any) -> Storage:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise InputError(self.path, f"{self.where} has a persistent id that is not a storage reference")
        kind, key, location, numel = pid[1:5]
        if not isinstance(kind, StorageType):
            raise UnsafeInputError(self.path, f"{self.where}: a storage of type {type(kind).__name__}, not a storage class")
        if len(pid) == 6 and pid[5] is not None:
            raise InputError(self.path, f"{self.where}: storage {key!r} is a view of another storage "
                             "(a torch < 0.4 file); not read")
        if not isinstance(key, str) or not key or not (key.isascii() and key.replace("_", "").isalnum()):
            raise UnsafeInputError(self.path, f"{self.where}: storage key {str(key)[:40]!r} is not a plain name")
        if not isinstance(location, str) or type(numel) is not int or not 0 <= numel < 1 << 62:
            raise InputError(self.path, f"{self.where}: storage {key!r} has a malformed location or size")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = Storage(key, kind, numel, location)
        elif known.type != kind or known.numel != numel:
            raise InputError(self.path, f"{self.where}: storage {key!r} is declared twice with different types or sizes")
        return known

    # --- the loop ----------------------------------------------------------------------------------
    def _ops(self) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]]:
        try:
            yield from pickletools.genops(_Bounded(self.stream, self.start + MAX_PICKLE_BYTES))  # type: ignore[arg-type]
        except (ValueError, OverflowError, UnicodeDecodeError, EOFError) as exc:
            raise InputError(self.path, f"{self.where} is malformed or truncated ({_short(exc)})") from exc

    def load(self) -> Any:
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        for made, (op, arg, _pos) in enumerate(self._ops(), 1):
            name = op.name
            if made > MAX_OBJECTS:
                raise InputError(self.path, f"{self.where} runs more than {MAX_OBJECTS} opcodes; refusing a pickle bomb")
            try:
                if name == "STOP":
                    if len(stack) != 1 or marks:
                        raise InputError(self.path, f"{self.where} ends with {len(stack)} values on its stack")
                    return stack[0]
                self._step(name, arg, stack, marks, memo)
            except _Bad as exc:
                raise InputError(self.path, f"{self.where}: {exc}") from None
            except (IndexError, KeyError, ValueError) as exc:
                raise InputError(self.path, f"{self.where} is malformed at opcode {name} ({_short(exc)})") from None
            except TypeError as exc:  # an unhashable key, a call with the wrong number of arguments
                raise InputError(self.path, f"{self.where}: {name}: {_short(exc)}") from None
        raise InputError(self.path, f"{self.where} ends without a STOP opcode (truncated)")

    def _pop_mark(self, stack: list[Any], marks: list[int]) -> list[Any]:
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    def _step(self, name: str, arg: Any, stack: list[Any], marks: list[int], memo: dict[int, Any]) -> None:
        push = stack.append
        if name in _SIMPLE:
            push(_SIMPLE[name](arg))
        elif name == "MARK":
            if len(marks) >= MAX_MARKS:
                raise InputError(self.path, f"{self.where} nests more than {MAX_MARKS} MARKs; refusing a pickle bomb")
            marks.append(len(stack))
        elif name in ("PROTO", "FRAME"):
            pass
        elif name == "POP":
            if marks and marks[-1] == len(stack):  # POP of a MARK pops the mark (as pickle does)
                marks.pop()
            else:
                stack.pop()
        elif name == "POP_MARK":
            self._pop_mark(stack, marks)
        elif name == "DUP":
            push(stack[-1])
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
            items = self._pop_mark(stack, marks)
            if name == "TUPLE":
                push(tuple(items))
            elif name == "LIST":
                push(items)
            elif name == "DICT":
                d = StateDict()
                for k, v in zip(items[::2], items[1::2], strict=True):
                    d[k] = v
                push(d)
            else:
                push(set(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            if len(items) != n:
                raise IndexError("stack underflow")
            del stack[-n:]
            push(tuple(items))
        elif name == "APPEND":
            value = stack.pop()
            self._list(stack[-1]).append(value)
        elif name == "APPENDS":
            items = self._pop_mark(stack, marks)
            self._list(stack[-1]).extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self._dict(stack[-1])[key] = value
        elif name == "SETITEMS":
            items = self._pop_mark(stack, marks)
            target = self._dict(stack[-1])
            if len(items) % 2:
                raise _Bad("SETITEMS of an odd number of values")
            for k, v in zip(items[::2], items[1::2], strict=True):
                target[k] = v
        elif name == "ADDITEMS":
            items = self._pop_mark(stack, marks)
            target = stack[-1]
            if not isinstance(target, set):
                raise _Bad("ADDITEMS to something other than a set")
            target.update(items)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise _Bad(f"{name} of memo entry {arg}, which was never stored")
            push(memo[arg])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[_int(arg, "a memo index")] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            push(self.find_class(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            if not isinstance(module, str) or not isinstance(attr, str):
                raise _Bad("STACK_GLOBAL of non-strings")
            push(self.find_class(module, attr))
        elif name in ("REDUCE", "NEWOBJ"):
            args, func = stack.pop(), stack.pop()
            push(self._call(func, args))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if not isinstance(target, (StateDict, TensorRecord)):
                raise UnsafeInputError(self.path, f"{self.where}: BUILD on {_what(target)}, which only dicts and "
                                       "tensors allow; refusing it")
            target.state = state
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            push(self.persistent_load(pid))
        elif name in _REFUSED_OPCODES:
            raise UnsafeInputError(self.path, f"{self.where} uses the opcode {name}, which builds objects or reads "
                                   "data a tensor checkpoint never needs; refusing it (nothing was run)")
        else:
            raise UnsafeInputError(self.path, f"{self.where} uses the opcode {name}, which is not read")

    def _call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, Builder):
            raise UnsafeInputError(self.path, f"{self.where} calls {_what(func)}, which is not callable here; refusing it")
        if not isinstance(args, tuple):
            raise _Bad(f"{func.name} called with {type(args).__name__} arguments, not a tuple")
        try:
            return func.call(*args)
        except TypeError as exc:
            raise _Bad(f"{func.name} called with {len(args)} arguments") from exc

    def _list(self, target: Any) -> list[Any]:
        if not isinstance(target, list):
            raise _Bad(f"APPEND to {_what(target)}, not a list")
        return target

    def _dict(self, target: Any) -> dict[Any, Any]:
        if not isinstance(target, dict):
            raise _Bad(f"SETITEM on {_what(target)}, not a dict")
        return target


def _what(value: Any) -> str:
    if isinstance(value, (Builder, StorageType, DType)):
        return value.name
    return type(value).__name__


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _pickle_string(arg: Any) -> Any:  # STRING/BINSTRING: Python 2 str, read as latin-1 text as pickle does
    return arg.decode("latin-1") if isinstance(arg, bytes) else arg


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                     "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES",
                     "BINBYTES8"), lambda a: a),
    **dict.fromkeys(("STRING", "BINSTRING", "SHORT_BINSTRING"), _pickle_string),
    "BYTEARRAY8": bytes,
    "NONE": lambda a: None,
    "NEWTRUE": lambda a: True,
    "NEWFALSE": lambda a: False,
    "EMPTY_LIST": lambda a: [],
    "EMPTY_TUPLE": lambda a: (),
    "EMPTY_DICT": lambda a: StateDict(),
    "EMPTY_SET": lambda a: set(),
}


class _Bounded:
    """A read-only view of a stream that never reads past ``end`` (so a declared length cannot allocate)."""

    def __init__(self, stream: Stream, end: int) -> None:
        self._stream = stream
        self._end = end

    def _left(self) -> int:
        return max(0, self._end - self._stream.tell())

    def read(self, n: int = -1) -> bytes:
        left = self._left()
        if n < 0 or n > left:
            if left == 0 and n != 0:
                raise ValueError(f"the pickle is longer than {MAX_PICKLE_BYTES} bytes, or truncated")
            n = left
        return self._stream.read(n)

    def readline(self) -> bytes:
        """One line of at most 1 MiB (a text opcode's argument); found by reading ahead, then seeking back."""
        start, limit = self._stream.tell(), min(self._left(), 1 << 20)
        size = 256
        while True:
            self._stream.seek(start)
            chunk = self._stream.read(min(size, limit))
            end = chunk.find(b"\n")
            if end >= 0 or len(chunk) >= limit or len(chunk) < min(size, limit):
                line = chunk if end < 0 else chunk[: end + 1]
                self._stream.seek(start + len(line))
                return line
            size *= 4

    def tell(self) -> int:
        return self._stream.tell()


def loads_all(path: Path, stream: Stream, count: int, *, what: str = "the pickle") -> list[Any]:
    """``count`` pickles read one after the other from ``stream`` (a legacy torch file's header pickles)."""
    storages: dict[str, Storage] = {}
    return [Unpickler(path, stream, where=f"{what} {i + 1}", storages=storages).load() for i in range(count)]


__all__ = [
    "ALLOWED",
    "MAX_DIMS",
    "MAX_MARKS",
    "MAX_OBJECTS",
    "MAX_PICKLE_BYTES",
    "DType",
    "Storage",
    "StorageType",
    "TensorRecord",
    "Unpickler",
]
