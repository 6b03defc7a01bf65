"""Reading PyTorch checkpoints (``torch.save`` zip and legacy files, Hugging Face ``.bin`` shards) without torch.

The object pickle is read by :mod:`.unpickle` (nothing in it runs); the tensors listed are chosen
by :mod:`.containers`; each tensor is a view (dtype, storage offset, shape, stride) of a storage
whose bytes lie in the file:

- **zip** (``torch.save`` since 1.6): ``<folder>/data.pkl``, ``<folder>/data/<key>`` (one record
  per storage, STORED), ``<folder>/byteorder`` (``little`` when absent). The archive is opened and
  checked by :class:`~ckptsurgeon.formats._zip.ZipArchive`; every member must lie in the one folder.
- **legacy** (``_use_new_zipfile_serialization=False``): five pickles back to back (magic number,
  protocol 1001, system info, the object, the storage keys), then each storage as an 8-byte
  element count and its raw bytes.

Before any data is read, every storage's record must exist and hold exactly its declared bytes, and
every view must lie inside its storage. A view that is C-contiguous in a little-endian record in
place in the file (a STORED member, a legacy file) is a :meth:`Reader.byte_range`; any other view
(an offset into a shared storage, a transposed or expanded view, big-endian data, a DEFLATED member)
is gathered with numpy as torch would index it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.files import check_input
from ckptsurgeon.formats import _index, base
from ckptsurgeon.formats._io import drop_pages
from ckptsurgeon.formats._probe import Probe
from ckptsurgeon.formats._zip import ZipArchive, ZipMember, zip_errors
from ckptsurgeon.formats.torch import LEGACY_MAGIC, METADATA_MEMBER, legacy_like, zip_like
from ckptsurgeon.formats.torch.containers import choose
from ckptsurgeon.formats.torch.unpickle import MAX_PICKLE_BYTES, Storage, TensorRecord, Unpickler
from ckptsurgeon.tensors import DTYPES, default_layer, make_info

MAX_METADATA_BYTES = 64 << 20

LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class Loc:
    """Where one tensor's bytes are: its record and, for the storage, a member or a file offset."""

    record: TensorRecord
    member: ZipMember | None  # zip: the storage's member
    file_offset: int  # legacy: where the storage's bytes start in the file

    @property
    def itemsize(self) -> int:
        return DTYPES[self.record.dtype].itemsize

    @property
    def contiguous(self) -> bool:
        """The view is the C-order run of ``numel`` elements from its offset."""
        want = 1
        for size, stride in zip(reversed(self.record.shape), reversed(self.record.stride), strict=True):
            if size != 1 and stride != want:
                return False
            want *= size
        return True


def _span(record: TensorRecord) -> int:
    """Bytes of the storage the view reaches (0 for an empty tensor)."""
    if any(d == 0 for d in record.shape):
        return 0
    last = record.offset + sum((d - 1) * s for d, s in zip(record.shape, record.stride, strict=True))
    return (last + 1) * DTYPES[record.dtype].itemsize


class Reader(base.Reader):
    """A PyTorch checkpoint, zip or legacy: the pickle read when opened, tensor bytes on demand.

    ``layout`` says which kind of file it is and which state dict was listed (``zip; dict
    'state_dict'``); ``options.dict_path`` chooses a sub-dict, ``options.all_dicts`` lists all.
    For a writer that rebuilds the file like this one: ``container`` is the whole unpickled object
    (plain values, :class:`~.unpickle.StateDict` with the ``state`` BUILD gave it, and
    :class:`~.unpickle.TensorRecord`), ``dict_path`` the dotted path of the listed state dict (None:
    the whole object), each tensor's ``loc.record`` its record, ``records`` every tensor record of
    the whole object by its full dotted path, ``storages`` every storage by key, ``kind`` ``zip``
    or ``legacy``, ``big_endian`` the byte order of the storages; :attr:`archive` and
    :meth:`storage_bytes` give the zip's members and a storage's bytes.
    """

    format = "torch"
    caps = base.ReaderCaps(byte_ranges=True, release=True)

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(Path(path), options)
        self._archive: ZipArchive | None = None
        self._map: mmap.mmap | None = None
        self._big = False
        self.prefix = ""
        self.kind = ""
        self.container: Any = None
        self.dict_path: str | None = None
        self.records: dict[str, TensorRecord] = {}
        self.container_metadata: dict[str, str] = {}
        self.storages: dict[str, Storage] = {}
        self._places: dict[str, tuple[ZipMember | None, int]] = {}
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------------
    def _open(self) -> None:
        check_input(self.path)
        probe = Probe(self.path)
        if zip_like(probe):
            kind, root, places = "zip", *self._open_zip()
        elif legacy_like(probe.head):
            kind, root, places = "legacy", *self._open_legacy(probe.size)
        else:
            raise InputError(self.path, "not a PyTorch checkpoint (neither a torch.save zip nor a legacy torch.save file)")
        choice = choose(self.path, root, dict_path=self.options.dict_path, all_dicts=self.options.all_dicts)
        self.layout = f"{kind}{'-big-endian' if self._big else ''}; {choice.note}"
        self.kind, self.container, self.dict_path, self.records = kind, root, choice.where, choice.everything
        self._places = places
        self.container_metadata = choice.metadata  # the object's own non-tensor entries, as text
        self.metadata = choice.metadata | self._stored_metadata()
        for name, record in choice.tensors.items():
            member, offset = places[record.storage.key]
            self._check_view(name, record)
            self.tensors.append(make_info(name, record.shape, record.dtype, default_layer(name),
                                          Loc(record, member, offset)))

    def _stored_metadata(self) -> dict[str, str]:
        """The metadata ckptsurgeon's writer keeps in ``PREFIX/extra/ckptsurgeon.json`` (a member torch never reads)."""
        archive = self._archive
        name = f"{self.prefix}{METADATA_MEMBER}"
        if archive is None or name not in archive:
            return {}
        member = archive[name]
        if member.size > MAX_METADATA_BYTES:
            raise InputError(self.path, f"member {name!r} is {member.size} bytes, more than {MAX_METADATA_BYTES}")
        with zip_errors(self.path, f"member {name!r}"):
            raw = archive.peek(member, member.size)
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(self.path, f"member {name!r} is not UTF-8 JSON ({exc})") from None
        meta = doc.get("metadata") if isinstance(doc, dict) and doc.get("ckptsurgeon") == 1 else None
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise InputError(self.path, f"member {name!r} is not {{\"ckptsurgeon\": 1, \"metadata\": {{text: text}}}}")
        return meta

    def _check_view(self, name: str, record: TensorRecord) -> None:
        if record.dtype not in DTYPES:
            raise InputError(self.path, f"tensor {name!r} has dtype {record.dtype}, which ckptsurgeon does not read")
        span, have = _span(record), record.storage.nbytes
        if span > have:
            raise UnsafeInputError(
                self.path, f"tensor {name!r}: its view (offset {record.offset}, shape {list(record.shape)}, stride "
                f"{list(record.stride)}) reaches {span} bytes of storage {record.storage.key!r}, which holds {have}",
            )
        if math.prod(record.shape) * DTYPES[record.dtype].itemsize >= 2**63:
            raise InputError(self.path, f"tensor {name!r}: shape {list(record.shape)} is too large for any array")

    def _open_zip(self) -> tuple[Any, dict[str, tuple[ZipMember | None, int]]]:
        archive = self._archive = ZipArchive(self.path, what="PyTorch zip checkpoint")
        pickles = [m.name for m in archive if m.name == "data.pkl" or m.name.endswith("/data.pkl")]
        folders = {m.name.split("/")[0] for m in archive}
        if len(pickles) != 1 or "/" not in pickles[0] or pickles[0].count("/") != 1:
            raise InputError(self.path, f"a zip archive with {len(pickles)} '<folder>/data.pkl' members; a torch.save "
                             "zip has exactly one, in its one folder")
        self.prefix = pickles[0][: -len("data.pkl")]
        outside = [m.name for m in archive if not m.name.startswith(self.prefix)]
        if outside or len(folders) != 1:
            raise InputError(self.path, f"member {outside[0]!r} lies outside the archive's folder {self.prefix!r}")
        order = archive.peek(archive[self.prefix + "byteorder"], 16) if self.prefix + "byteorder" in archive else b"little"
        if order not in (b"little", b"big"):
            raise InputError(self.path, f"the byteorder record says {order[:16]!r}, not 'little' or 'big'")
        self._big = order == b"big"
        member = archive[pickles[0]]
        if member.size > MAX_PICKLE_BYTES:
            raise InputError(self.path, f"data.pkl is {member.size} bytes, more than {MAX_PICKLE_BYTES} (no state "
                             "dict's pickle is that large); refusing it")
        with zip_errors(self.path, f"member {member.name!r}"):
            raw = archive.peek(member, member.size)
        if len(raw) != member.size:
            raise InputError(self.path, f"member {member.name!r} is shorter than declared")
        unpickler = Unpickler(self.path, io.BytesIO(raw), where="the pickle data.pkl")
        root = unpickler.load()
        self.storages = unpickler.storages
        places: dict[str, tuple[ZipMember | None, int]] = {}
        for key, storage in unpickler.storages.items():
            name = f"{self.prefix}data/{key}"
            if name not in archive:
                raise InputError(self.path, f"storage {key!r} has no record {name!r} in the archive")
            record = archive[name]
            if record.size != storage.nbytes:
                raise InputError(self.path, f"record {name!r} holds {record.size} bytes; storage {key!r} declares "
                                 f"{storage.numel} x {storage.type.itemsize} = {storage.nbytes}")
            places[key] = (record, 0)
        return root, places

    def _open_legacy(self, size: int) -> tuple[Any, dict[str, tuple[ZipMember | None, int]]]:
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if self._map is None:
            raise InputError(self.path, "empty")
        stream = self._map  # read in place: mmap reads never go past the end of the file
        storages: dict[str, Storage] = {}
        magic, protocol, info, root, keys = (
            Unpickler(self.path, stream, where=f"the {what}", storages=storages).load()
            for what in ("magic number pickle", "protocol pickle", "system info pickle", "object pickle", "storage list pickle")
        )
        if magic != LEGACY_MAGIC:
            raise InputError(self.path, "invalid magic number; not a legacy torch.save file")
        if protocol != LEGACY_PROTOCOL:
            raise InputError(self.path, f"legacy torch.save protocol {protocol!r}; only {LEGACY_PROTOCOL} is read")
        if not isinstance(info, dict) or not isinstance(info.get("little_endian"), bool):
            raise InputError(self.path, "the system info pickle does not say the byte order")
        self._big = not info["little_endian"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise InputError(self.path, "the storage list pickle is not a list of distinct keys")
        if set(keys) != set(storages):
            missing = sorted(set(storages) - set(keys)) or sorted(set(keys) - set(storages))
            raise InputError(self.path, f"the storage list and the object's storages differ (storage {missing[0]!r})")
        self.storages = storages
        pos, end = stream.tell(), size
        places: dict[str, tuple[ZipMember | None, int]] = {}
        for key in keys:
            storage = storages[key]
            if pos + 8 > end:
                raise InputError(self.path, f"storage {key!r}: the file ends before its record (truncated)")
            count = int.from_bytes(self._map[pos : pos + 8], "big" if self._big else "little")
            if count != storage.numel:
                raise InputError(self.path, f"storage {key!r}: its record holds {count} elements, the object declares {storage.numel}")
            pos += 8
            if pos + storage.nbytes > end:
                raise InputError(self.path, f"storage {key!r}: {storage.nbytes} bytes declared, the file ends {end - pos} "
                                 "bytes later (truncated)")
            places[key] = (None, pos)
            pos += storage.nbytes
        if pos != end:
            raise InputError(self.path, f"{end - pos} bytes follow the last storage record; refusing an ambiguous file")
        return root, places

    # --- the file as it is, for a writer that updates it -------------------------------------------
    @property
    def big_endian(self) -> bool:
        return self._big

    @property
    def archive(self) -> ZipArchive | None:
        """The zip archive (None for a legacy file); member names carry :attr:`prefix`."""
        return self._archive

    def shared_storages(self) -> list[list[str]]:
        """The listed tensors that share a storage with another (tied weights, views), grouped by storage."""
        groups: dict[str, list[str]] = {}
        for t in self.tensors:
            assert isinstance(t.loc, Loc)
            groups.setdefault(t.loc.record.storage.key, []).append(t.name)
        return [g for g in groups.values() if len(g) > 1]

    def storage_bytes(self, key: str) -> memoryview | bytes:
        """All the bytes of storage ``key`` in the file's byte order (a STORED member checked against its CRC)."""
        if key not in self._places:
            raise KeyError(key)
        member, offset = self._places[key]
        return self._storage_bytes(Loc(TensorRecord(self.storages[key], "U8", 0, (), ()), member, offset))

    # --- data -------------------------------------------------------------------------------------
    def _loc(self, name: str) -> Loc:
        loc = self[name].loc
        assert isinstance(loc, Loc)
        if self._archive is None and self._map is None:
            raise InputError(self.path, "the checkpoint is closed")
        return loc

    def _storage_bytes(self, loc: Loc) -> memoryview | bytes:
        """The whole storage's bytes: a view of the map in place (CRC-checked), or inflated."""
        if loc.member is None:
            assert self._map is not None
            return memoryview(self._map)[loc.file_offset : loc.file_offset + loc.record.storage.nbytes]
        assert self._archive is not None
        if loc.member.stored:
            return self._archive.view(loc.member)
        with self._archive.open(loc.member) as stream:
            data = stream.read(loc.member.size + 1)
        if len(data) != loc.member.size:
            raise InputError(self.path, f"member {loc.member.name!r} inflates to {len(data)} bytes, not {loc.member.size}")
        return data

    def read(self, name: str) -> np.ndarray:
        info = self[name]
        loc = self._loc(name)
        rec, size = loc.record, loc.itemsize
        raw = np.dtype(f"{'>' if self._big else '<'}u{size}") if size > 1 else np.dtype(np.uint8)
        data = self._storage_bytes(loc)
        if _span(rec) == 0:
            arr = np.zeros(rec.shape, dtype=raw)
        else:
            flat = np.frombuffer(data, dtype=raw, count=len(data) // size)
            arr = np.lib.stride_tricks.as_strided(
                flat[rec.offset :], shape=rec.shape, strides=tuple(s * size for s in rec.stride), writeable=False
            )
        if not (arr.flags.c_contiguous and not self._big):
            arr = np.ascontiguousarray(arr).astype(raw.newbyteorder("<"), copy=False)
        return self._check_array(info, arr.view(DTYPES[rec.dtype].numpy))

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        info = self[name]
        loc = self._loc(name)
        if self._big or not loc.contiguous:
            return None
        start = loc.record.offset * loc.itemsize
        if loc.member is None:
            return self.path, loc.file_offset + start, info.nbytes
        assert self._archive is not None
        if self._archive.data_range(loc.member) is None:  # DEFLATED; data_range checks a STORED one's CRC
            return None
        return self.path, loc.member.data_offset + start, info.nbytes

    def iter_bytes(self, name: str, chunk_bytes: int = base.CHUNK_BYTES) -> Iterator[memoryview]:
        """The tensor's little-endian C-order bytes in chunks, without holding the tensor.

        A C-order view of a record in place is streamed from the file, each chunk's pages dropped
        from the process once used: a whole STORED member is CRC-checked after its last chunk (a
        part of one is checked first); any other view is gathered by :meth:`read`.
        """
        info = self[name]
        loc = self._loc(name)
        if self._big or not loc.contiguous or (loc.member is not None and not loc.member.stored):
            yield from super().iter_bytes(name, chunk_bytes)
            return
        start, nbytes = loc.record.offset * loc.itemsize, info.nbytes
        if loc.member is None:
            assert self._map is not None
            view = memoryview(self._map)
            begin = loc.file_offset + start
            for pos in range(begin, begin + nbytes, chunk_bytes):
                end = min(pos + chunk_bytes, begin + nbytes)
                yield view[pos:end]
                drop_pages(self._map, pos, end)
            return
        assert self._archive is not None
        if start or nbytes != loc.member.size:
            self._archive.verify(loc.member)  # a part of the record: check the whole record first
        left = nbytes
        for chunk in self._archive.chunks(loc.member, start, chunk_bytes):
            if left <= 0:
                if start or nbytes != loc.member.size:
                    break
                continue
            piece = chunk[:left]
            left -= len(piece)
            yield piece

    def checks_beside(self) -> contextlib.AbstractContextManager[None]:
        """CRCs of the zip members handed out as byte ranges are checked beside the copy (see the base class)."""
        return self._archive.checks_beside() if self._archive is not None else contextlib.nullcontext()

    def release(self, name: str) -> None:
        loc = self._loc(name)
        if loc.member is not None and self._archive is not None:
            self._archive.release(loc.member)
        elif loc.member is None and self._map is not None:
            drop_pages(self._map, loc.file_offset, loc.file_offset + loc.record.storage.nbytes)

    def close(self) -> None:
        archive, self._archive = self._archive, None
        if archive is not None:
            archive.close()
        mapped, self._map = self._map, None
        if mapped is not None:
            with contextlib.suppress(BufferError):  # arrays read from it still hold views: unmapped when they go
                mapped.close()


class ShardedReader(_index.ShardedReader):
    """Hugging Face ``pytorch_model.bin.index.json`` and its ``.bin`` shards, checked against each other both ways."""

    format = "torch-sharded"
    shard_kind = "a PyTorch checkpoint"

    def __init__(self, path: Path, options: base.OpenOptions | None = None) -> None:
        super().__init__(path, options)
        self.layout = "sharded " + ", ".join(sorted({r.layout or "" for r in self.shards.values()}))

    def is_shard(self, probe: Probe) -> bool:
        return zip_like(probe) or legacy_like(probe.head)

    def open_shard(self, path: Path) -> Reader:
        return Reader(path, self.options)


__all__ = ["Loc", "Reader", "ShardedReader"]
