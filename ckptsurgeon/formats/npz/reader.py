"""Reading npz archives lazily: the archive checked and every ``.npy`` header parsed when opened, tensor
bytes on demand (see :mod:`ckptsurgeon.formats.npz`)."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.files import check_input
from ckptsurgeon.formats import base
from ckptsurgeon.formats._zip import ZipArchive, ZipMember, zip_errors
from ckptsurgeon.formats.npz.npy import (
    MAX_HEADER_BYTES,
    MEMBER_SUFFIX,
    VOID_DEFAULT,
    NpyHeader,
    PickledMember,
    is_big_endian,
    parse_comment,
    read_npy_header,
    suffix_problem,
)
from ckptsurgeon.tensors import DTYPES, TensorInfo, code_of, default_layer

MAX_DIMS = 64  # numpy's limit
MAX_HEADER_PREFIX = 12 + MAX_HEADER_BYTES  # magic, version, a 4-byte length and the header text


@dataclass(frozen=True)
class Member:
    """Where one tensor lives in the archive and how its stored bytes map to the tensor."""

    zip: ZipMember
    header_length: int  # bytes of .npy header before the array data
    file_dtype: np.dtype[Any]  # the tensor's dtype in the byte order of the file
    fortran_order: bool
    c_layout: bool  # the stored bytes are already in C order

    @property
    def stored(self) -> bool:
        return self.zip.stored

    @property
    def start(self) -> int:
        """Archive offset of the member's data (the .npy magic); meaningful when stored."""
        return self.zip.data_offset

    @property
    def data_offset(self) -> int:
        return self.start + self.header_length

    @property
    def swapped(self) -> bool:
        return is_big_endian(self.file_dtype)


class Reader(base.Reader):
    """An npz archive opened lazily: central directory and ``.npy`` headers now, bytes on demand.

    ``float8`` names the dtype of 1-byte void members the archive does not name itself
    (e.g. ``"F8_E4M3"`` for a float8 file saved by ``numpy.savez``).
    """

    format = "npz"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: str | Path, options: base.OpenOptions | None = None, *, float8: str | None = None) -> None:
        super().__init__(Path(path), options)
        float8 = float8 if float8 is not None else self.options.float8
        if float8 is not None and (float8 not in DTYPES or DTYPES[float8].itemsize != 1):
            raise ValueError(f"float8 must be a 1-byte dtype code, not {float8!r}")
        self._float8 = float8
        self._archive: ZipArchive | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _open(self) -> None:
        check_input(self.path)  # a regular file: a FIFO or a device is refused before the archive is opened
        archive = self._archive = ZipArchive(self.path, what="npz archive")
        dtypes, self.metadata = parse_comment(self.path, archive.comment)
        for zm in archive.members:
            problem = suffix_problem(zm.name)
            if problem is not None:
                raise InputError(self.path, f"member {zm.name!r} {problem}")
        for zm in archive.members:
            name = zm.name[: -len(MEMBER_SUFFIX)]
            member, shape, code = self._member(archive, zm, name, dtypes)
            self.tensors.append(TensorInfo(name, shape, code, default_layer(name), loc=member))

    def _member(
        self, archive: ZipArchive, zm: ZipMember, name: str, dtypes: Mapping[str, str]
    ) -> tuple[Member, tuple[int, ...], str]:
        member_name = zm.name
        with zip_errors(self.path, f"member {member_name!r}"):
            try:
                if zm.stored:
                    header = read_npy_header(io.BytesIO(archive.peek(zm, MAX_HEADER_PREFIX)))
                else:  # only the header's bytes are inflated
                    with archive.open(zm) as stream:
                        header = read_npy_header(stream)
            except PickledMember as exc:
                raise UnsafeInputError(self.path, f"member {member_name!r} is {exc}") from exc
        code = self._code(member_name, name, header, dtypes)
        shape = header.shape
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise InputError(self.path, f"member {member_name!r}: invalid shape {shape[:MAX_DIMS + 1]}")
        itemsize = DTYPES[code].itemsize
        nbytes = math.prod(shape) * itemsize  # Python ints: no overflow
        if math.prod(d for d in shape if d) * itemsize >= 2**63:
            raise InputError(self.path, f"member {member_name!r}: shape {shape} is too large for any array")
        if header.length + nbytes != zm.size:
            raise InputError(
                self.path,
                f"member {member_name!r}: header declares {code}{list(shape)} = {nbytes} bytes, "
                f"but the member holds {zm.size - header.length} bytes of data",
            )
        want = DTYPES[code].numpy
        big = is_big_endian(header.dtype) and itemsize > 1
        member = Member(
            zip=zm,
            header_length=header.length,
            file_dtype=want.newbyteorder(">") if big else want,
            fortran_order=header.fortran_order,
            c_layout=not header.fortran_order or sum(d > 1 for d in shape) <= 1,
        )
        return member, shape, code

    def _code(self, member_name: str, name: str, header: NpyHeader, dtypes: Mapping[str, str]) -> str:
        """The dtype code of a member, refusing what is not plain tensor data."""
        dt = header.dtype
        where = f"member {member_name!r}"
        if dt.hasobject:
            raise UnsafeInputError(self.path, f"{where} holds Python objects (pickled data); pickles are never loaded")
        if dt.names is not None:
            raise InputError(self.path, f"{where} has a structured dtype {dt.descr!r:.80}, not a tensor dtype")
        if dt.subdtype is not None:
            raise InputError(self.path, f"{where} has a subarray dtype {dt.str}, not a tensor dtype")
        if header.f1:
            return "F8_E5M2"
        if dt.kind == "V":
            code = dtypes.get(name) or (self._float8 if dt.itemsize == 1 else None) or VOID_DEFAULT.get(dt.itemsize)
            if code is None and dt.itemsize == 1:
                raise InputError(
                    self.path,
                    f"{where} holds 1-byte void values (a float8 type saved by numpy) and the archive does not say which",
                    hint="pass float8='F8_E4M3' (or another 1-byte code) to the npz Reader, or re-save the file with ckptsurgeon",
                )
            if code is None:
                raise InputError(self.path, f"{where} holds raw {dt.itemsize}-byte void values, not a tensor dtype")
            if DTYPES[code].itemsize != dt.itemsize:
                raise InputError(self.path, f"{where} is named {code} but holds {dt.itemsize}-byte values")
            return code
        code = code_of(dt)
        if code is None:
            named = dt.str if str(dt) == dt.str else f"{dt.str} ({dt})"
            raise InputError(self.path, f"{where} has dtype {named}, which is not a tensor dtype ckptsurgeon reads")
        return code

    # --- data -------------------------------------------------------------------------------------
    def _member_of(self, name: str) -> tuple[TensorInfo, Member, ZipArchive]:
        info = self[name]
        member = info.loc
        assert isinstance(member, Member)
        if self._archive is None or self._archive.closed:
            raise InputError(self.path, "the archive is closed")
        return info, member, self._archive

    def read(self, name: str) -> np.ndarray:
        info, member, archive = self._member_of(name)
        if member.stored:  # a view of the map, after the member's CRC check
            flat = np.frombuffer(archive.view(member.zip), dtype=member.file_dtype, count=info.numel, offset=member.header_length)
        else:
            flat = self._inflate(archive, member, info.nbytes).view(member.file_dtype)
        arr = flat.reshape(info.shape, order="F" if member.fortran_order else "C")
        if member.swapped:
            arr = arr.astype(DTYPES[info.dtype].numpy, order="C")
        return self._check_array(info, arr)

    def _inflate(self, archive: ZipArchive, member: Member, nbytes: int) -> np.ndarray:
        """A DEFLATED member's array bytes, read as a stream of exactly ``nbytes``."""
        out = np.empty(nbytes, dtype=np.uint8)
        view = out.data
        pos = 0
        for chunk in archive.chunks(member.zip, member.header_length, base.CHUNK_BYTES):
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        return out

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's little-endian C-order bytes in chunks, without holding the whole tensor.

        STORED members are checked against their CRC (an InputError after the last chunk on a mismatch).
        """
        info, member, archive = self._member_of(name)
        if not member.c_layout:
            yield from super().iter_bytes(name, chunk_bytes)
            return
        itemsize = DTYPES[info.dtype].itemsize
        step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
        want = DTYPES[info.dtype].numpy
        for chunk in archive.chunks(member.zip, member.header_length, step):
            if member.swapped:
                yield np.frombuffer(chunk, dtype=member.file_dtype).astype(want).view(np.uint8).data
            else:
                yield chunk

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        info, member, archive = self._member_of(name)
        if member.stored and member.c_layout and not member.swapped:
            archive.data_range(member.zip)  # checks the CRC before the bytes are copied
            return self.path, member.data_offset, info.nbytes
        return None

    def checks_beside(self) -> contextlib.AbstractContextManager[None]:
        """CRCs of the zip members handed out as byte ranges are checked beside the copy (see the base class)."""
        return self._archive.checks_beside() if self._archive is not None else contextlib.nullcontext()

    def release(self, name: str) -> None:
        """Drop the process's pages of a STORED member's bytes (arrays read from it stay valid)."""
        _, member, archive = self._member_of(name)
        archive.release(member.zip)

    def close(self) -> None:
        """Release the archive. Arrays already read from the map keep it alive until they are freed."""
        archive, self._archive = self._archive, None
        if archive is not None:
            archive.close()


__all__ = ["MAX_DIMS", "Member", "Reader"]
