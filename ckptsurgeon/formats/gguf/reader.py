"""Reading GGUF: the header, metadata and tensor infos checked against the file, tensors from a memory map.

Every count, length and offset is checked against the bytes left in the file before anything is
made of it: a count of 2**40 tensors, a string running past the end, an array longer than the file
could hold, an offset past the end or off the alignment, an unknown value or tensor type, a tensor
whose last axis is not a whole number of blocks, two tensors with one name or overlapping bytes:
each is one :class:`~ckptsurgeon.errors.InputError` naming the file. Nothing is allocated for a
count before the bytes it needs are known to be there.
"""

from __future__ import annotations

import array
import mmap
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...files import open_input
from ...tensors import DTYPES, TensorInfo, block_problem, byte_size, default_layer, make_info
from .. import base
from .._io import MappedTensors
from . import ggml
from .ggml import ARRAY, STRING, Value

if TYPE_CHECKING:
    import numpy as np

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")
_MIN_KV = 8 + 4 + 1  # an empty key, a type, a one-byte value
_MIN_INFO = 8 + 4 + 4 + 8  # an empty name, no dimensions, a type, an offset
_MIN_ELEMENT = {STRING: 8, ARRAY: 12}  # a string's length; an array's type and count


class _Parser:
    """Reads the metadata and tensor infos from a map of the file, every length checked first."""

    def __init__(self, path: Path, buf: memoryview) -> None:
        self.path, self.buf, self.pos, self.size = path, buf, 0, len(buf)

    def fail(self, problem: str) -> InputError:
        return InputError(self.path, problem)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"truncated or corrupt: {what} at byte {self.pos} runs past the end of the {self.size}-byte file")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        self.need(n, f"{what} ({n} bytes)")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def strings(self, count: int, what: str) -> list[str]:
        """``count`` strings in a row (an array's elements): :meth:`string` in one tight loop."""
        buf, size, unpack = self.buf, self.size, _U64.unpack_from
        out: list[str] = []
        append = out.append
        start = pos = self.pos
        try:
            for _ in range(count):
                start = pos
                if size - pos < 8:
                    break
                (n,) = unpack(buf, pos)
                pos += 8
                if n > size - pos:
                    break
                append(str(buf[pos : pos + n], "utf-8"))
                pos += n
        except UnicodeDecodeError:
            pass
        if len(out) < count:  # read the failing element again: string() says what is wrong with it
            self.pos = start
            self.string(f"{what}[{len(out)}]")
            raise AssertionError("unreachable")  # pragma: no cover - string() raised
        self.pos = pos
        return out

    def value_type(self, what: str) -> int:
        vtype = self.u32(f"the value type of {what}")
        if vtype not in ggml.VALUE_TYPES:
            raise self.fail(f"{what} has unknown value type {vtype} (GGUF has 0 to 12)")
        return vtype

    def value(self, vtype: int, what: str, depth: int = 0) -> Value:
        if vtype == STRING:
            return Value(STRING, self.string(what))
        if vtype == ARRAY:
            return self.array(what, depth)
        fmt = ggml.SCALARS[vtype]
        self.need(fmt.size, what)
        (v,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        if vtype == ggml.BOOL:
            if v > 1:
                raise self.fail(f"{what} is a bool holding {v}, not 0 or 1")
            v = bool(v)
        return Value(vtype, v)

    def array(self, what: str, depth: int) -> Value:
        if depth >= ggml.MAX_NESTING:
            raise self.fail(f"{what}: arrays nested more than {ggml.MAX_NESTING} deep")
        elem = self.value_type(f"the elements of {what}")
        count = self.u64(f"the length of {what}")
        least = _MIN_ELEMENT.get(elem) or ggml.SCALARS[elem].size
        if count > (self.size - self.pos) // least:
            raise self.fail(f"{what}: an array of {count} values does not fit in the {self.size - self.pos} bytes "
                            "left in the file")
        if elem == STRING:
            return Value(ARRAY, self.strings(count, what), STRING)
        if elem == ARRAY:
            return Value(ARRAY, [self.array(f"{what}[{i}]", depth + 1) for i in range(count)], ARRAY)
        n = count * ggml.SCALARS[elem].size
        values = array.array(ggml.ARRAY_CODES[elem])
        values.frombytes(self.buf[self.pos : self.pos + n])
        if sys.byteorder == "big":  # pragma: no cover - GGUF is little-endian
            values.byteswap()
        self.pos += n
        if elem == ggml.BOOL and any(b > 1 for b in values):
            raise self.fail(f"{what} is an array of bools holding a value other than 0 or 1")
        return Value(ARRAY, values, elem)


class Reader(MappedTensors, base.Reader):
    """One GGUF file: header, metadata and tensor infos checked on open, tensors memory-mapped."""

    format = "gguf"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(path, options)
        self._mmap: mmap.mmap | None = None
        #: every metadata value, typed, in the file's order
        self.values: dict[str, Value] = {}
        try:
            with open_input(path, buffering=0) as f:
                size = f.seek(0, 2)
                if size < _HEADER.size:
                    raise InputError(path, f"truncated: {size} bytes, a GGUF header has {_HEADER.size}")
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
        try:
            self._parse(mapped)
        except BaseException:
            mapped.close()
            raise
        self._mmap = mapped

    def _parse(self, mapped: mmap.mmap) -> None:
        path = self.path
        view = memoryview(mapped)
        try:
            p = _Parser(path, view)
            _magic, version, n_tensors, n_kv = _HEADER.unpack_from(view, 0)
            p.pos = _HEADER.size
            if version not in (2, 3):
                swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
                if swapped in (2, 3):
                    raise InputError(path, "a big-endian GGUF file; ckptsurgeon reads little-endian GGUF only")
                raise InputError(path, f"GGUF version {version}; ckptsurgeon reads versions 2 and 3")
            if n_kv > (p.size - p.pos) // _MIN_KV:
                raise InputError(path, f"declares {n_kv} metadata entries, more than the {p.size}-byte file can hold")
            if n_tensors > (p.size - p.pos) // _MIN_INFO:
                raise InputError(path, f"declares {n_tensors} tensors, more than the {p.size}-byte file can hold")
            for i in range(n_kv):
                key = p.string(f"metadata key #{i}")
                vtype = p.value_type(f"metadata {key!r}")
                if key in self.values:
                    raise InputError(path, f"metadata {key!r} appears twice")
                self.values[key] = p.value(vtype, f"metadata {key!r}")
            alignment = self._alignment()
            infos = [self._info(p, i, alignment) for i in range(n_tensors)]
            self.data_start = ggml.align(p.pos, alignment)
            self.alignment = alignment
            self._place(infos, p.size)
        finally:
            view.release()
        self.metadata = {key: v.text() for key, v in self.values.items()}

    def _alignment(self) -> int:
        value = self.values.get(ggml.ALIGNMENT_KEY)
        if value is None:
            return ggml.DEFAULT_ALIGNMENT
        if value.vtype != ggml.VALUE_CODES["UINT32"]:
            raise InputError(self.path, f"metadata {ggml.ALIGNMENT_KEY!r} is {value.type_name}, not UINT32")
        n = int(value.value)  # type: ignore[call-overload]
        if n == 0 or n & (n - 1):
            raise InputError(self.path, f"metadata {ggml.ALIGNMENT_KEY!r} is {n}, not a power of two")
        return n

    def _info(self, p: _Parser, i: int, alignment: int) -> tuple[str, tuple[int, ...], str, int]:
        name = p.string(f"the name of tensor #{i}")
        n_dims = p.u32(f"the dimension count of tensor {name!r}")
        if n_dims > ggml.MAX_DIMS:
            raise InputError(self.path, f"tensor {name!r} has {n_dims} dimensions; ggml tensors have at most {ggml.MAX_DIMS}")
        ne = [p.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
        if any(d >= 1 << 63 for d in ne):
            raise InputError(self.path, f"tensor {name!r} has a dimension of {max(ne)}, beyond ggml's int64")
        number = p.u32(f"the type of tensor {name!r}")
        code = ggml.GGML_TYPES.get(number)
        if code is None:
            raise InputError(self.path, f"tensor {name!r} has unknown ggml type {number}")
        offset = p.u64(f"the offset of tensor {name!r}")
        if offset % alignment:
            raise InputError(self.path, f"tensor {name!r} is at data offset {offset}, not a multiple of the "
                             f"alignment {alignment}")
        shape = tuple(reversed(ne))
        problem = block_problem(code, shape)
        if problem is not None:
            raise InputError(self.path, f"tensor {name!r}: {problem}")
        return name, shape, code, offset

    def _place(self, infos: list[tuple[str, tuple[int, ...], str, int]], size: int) -> None:
        """Check the tensors' bytes lie inside the file, one name each, none overlapping another; make the infos."""
        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        room = size - self.data_start
        for name, shape, code, offset in infos:
            if name in seen:
                raise InputError(self.path, f"tensor {name!r} appears twice")
            seen.add(name)
            nbytes = byte_size(code, shape)
            if offset > room or nbytes > room - offset:
                raise InputError(self.path, f"truncated or corrupt: tensor {name!r} ({nbytes} bytes at data offset "
                                 f"{offset}) runs past the end of the file (the data section holds {max(room, 0)} bytes)")
            tensors.append(make_info(name, shape, code, default_layer(name), (offset, offset + nbytes)))
        end, last = 0, ""
        for t in sorted((t for t in tensors if t.nbytes), key=lambda t: t.loc):
            begin, stop = t.loc
            if begin < end:
                raise InputError(self.path, f"tensors {last!r} and {t.name!r} overlap in the data section")
            end, last = stop, t.name
        self.tensors = tensors

    # --- metadata ---------------------------------------------------------------------------
    def typed_metadata(self) -> dict[str, dict[str, Any]]:
        return {key: v.typed() for key, v in self.values.items()}

    # --- data -------------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        """The tensor's values; for a quantized tensor its raw blocks, as flat ``uint8``."""
        import numpy as np

        info = self.by_name[name]
        dt = DTYPES[info.dtype].numpy
        block = DTYPES[info.dtype].is_block
        shape = (info.nbytes,) if block else info.shape
        if info.nbytes == 0:
            return np.zeros(shape, dtype=dt)
        begin, _ = info.loc
        count = info.nbytes if block else info.numel
        return np.frombuffer(self._map(), dtype=dt, count=count, offset=self.data_start + begin).reshape(shape)
