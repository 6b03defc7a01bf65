"""MindSpore's checkpoint encryption, block by block, with ``cryptography`` (imported only here).

``save_checkpoint(enc_key=..., enc_mode=...)`` cuts the plaintext (the protobuf messages) into
pieces of at most 64 MiB and writes each as one block, all fields little-endian::

    magic u32 | [AES-GCM: tag 16 B] | blk_len i32 | iv_len i32 (16) | iv | ct_len i32 | ciphertext
    blk_len = 4 + iv_len + 4 + ct_len

The key is used raw (AES: 16, 24 or 32 bytes; SM4: 16). AES-GCM has no associated data and
uses the first 12 bytes of the 16-byte IV field as its nonce (MindSpore 2.10); AES-CBC and SM4-CBC
pad with PKCS#7. ``save_checkpoint(crc_check=True)`` appends its ``crc_num`` trailer after the
blocks, holding 0 (no CRC is computed for an encrypted file): it is skipped, though MindSpore
2.10's own ``load_checkpoint`` cannot read such a file.

:class:`Plaintext` reads an encrypted file one block at a time: a block is decrypted into one
reused buffer and its tag (GCM) or padding (CBC) checked before any of its bytes are handed out;
:meth:`Plaintext.peek` reads headers before that check, which :meth:`Plaintext.check_all` settles
for the blocks not read so (the reader trusts nothing read before it has passed). :class:`Encrypter`
writes blocks. A wrong key, a tampered block or a truncated file is an InputError naming the block.

:class:`Secret` holds a key: its ``repr`` and ``str`` never show it, so no message, report or
traceback can.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ...errors import InputError, UsageError
from . import MAGICS

BLOCK_BYTES = 64 * 1024 * 1024  # MindSpore's ENCRYPT_BLOCK_SIZE * 1024: plaintext per block
IV_BYTES = 16
TAG_BYTES = 16
GCM_NONCE_BYTES = 12
PIECE = 1024 * 1024  # bytes decrypted at a time
SKIP_BYTES = 1024 * 1024  # a stream skips forward this far (the headers between tensors) rather than restart
MAGIC_OF = {mode: magic for magic, mode in MAGICS.items()}
CRC_TRAILER = b"crc_num"
TRAILER_BYTES = len(CRC_TRAILER) + 10
KEY_SIZES = {"AES-GCM": (16, 24, 32), "AES-CBC": (16, 24, 32), "SM4-CBC": (16,)}


class Secret:
    """A key's bytes, never shown: ``repr`` and ``str`` say only that a key is there and its size."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<key of {len(self._value)} bytes>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled, never copied into a plan
        raise TypeError("a key cannot be serialized")


class Encryption:
    """How to encrypt an output: a key and a mode (``repr`` shows the mode only)."""

    __slots__ = ("key", "mode")

    def __init__(self, key: Secret, mode: str) -> None:
        self.key, self.mode = key, mode

    def __repr__(self) -> str:
        return f"Encryption({self.mode}, {self.key!r})"


def _backend() -> Any:
    try:
        from cryptography.hazmat.primitives import ciphers, padding
    except ImportError as exc:  # pragma: no cover - a dependency; missing only in a broken install
        raise UsageError(None, f"encrypted MindSpore checkpoints need the 'cryptography' package ({exc})") from None
    return ciphers, padding


def check_key(path: Path | None, key: Secret, mode: str) -> None:
    """The key fits the mode: for a file to decrypt (``path``) a wrong key (exit 3), else a bad option (exit 2)."""
    sizes = KEY_SIZES[mode]
    if len(key) not in sizes:
        allowed = ", ".join(map(str, sizes))
        error = UsageError if path is None else InputError
        raise error(path, f"the key is {len(key)} bytes; {mode} takes a key of {allowed} bytes (a wrong key)")


def _cipher(key: Secret, mode: str, iv: bytes, tag: bytes | None) -> Any:
    ciphers, _ = _backend()
    algorithm = ciphers.algorithms.SM4(key.reveal()) if mode == "SM4-CBC" else ciphers.algorithms.AES(key.reveal())
    if mode == "AES-GCM":
        return ciphers.Cipher(algorithm, ciphers.modes.GCM(iv[:GCM_NONCE_BYTES], tag))
    return ciphers.Cipher(algorithm, ciphers.modes.CBC(iv))


@dataclass(frozen=True)
class Block:
    """One block: where its cipher text lies, its IV and tag, and where its plaintext lies in the whole."""

    number: int
    offset: int  # of the block in the file
    data: int  # of its cipher text
    size: int  # of its cipher text
    iv: bytes
    tag: bytes | None
    plain_start: int
    plain_size: int

    @property
    def where(self) -> str:
        return f"block {self.number} (offset {self.offset})"


def blocks(path: Path, source: IO[bytes], size: int, key: Secret, mode: str) -> list[Block]:
    """Every block of ``source`` (``size`` bytes, a ``mode`` file), its header and lengths checked against
    the file and its mode against the first block's. A CBC block's plaintext length comes from its
    last cipher block, decrypted alone (its padding is checked again with the whole block)."""
    check_key(path, key, mode)
    pos = plain = 0
    found: list[Block] = []
    if size >= TRAILER_BYTES:
        source.seek(size - TRAILER_BYTES)
        if source.read(len(CRC_TRAILER)) == CRC_TRAILER:  # after the blocks, holding 0: skipped
            size -= TRAILER_BYTES
    while pos < size:
        where = f"block {len(found) + 1} (offset {pos})"
        head = _read(path, source, pos, 4 + (TAG_BYTES if mode == "AES-GCM" else 0) + 8, where)
        if MAGICS.get(int.from_bytes(head[:4], "little")) != mode:
            raise InputError(path, f"{where} does not start with the {mode} block magic; the file is damaged")
        tag = head[4 : 4 + TAG_BYTES] if mode == "AES-GCM" else None
        blk_len, iv_len = struct.unpack_from("<ii", head, len(head) - 8)
        if iv_len != IV_BYTES:
            raise InputError(path, f"{where}: an IV of {iv_len} bytes, not {IV_BYTES}")
        start = pos + len(head)
        iv = _read(path, source, start, IV_BYTES, where)
        (ct_len,) = struct.unpack("<i", _read(path, source, start + IV_BYTES, 4, where))
        if ct_len <= 0 or blk_len != 4 + IV_BYTES + 4 + ct_len:
            raise InputError(path, f"{where}: block length {blk_len} and cipher length {ct_len} disagree")
        if mode != "AES-GCM" and ct_len % 16:
            raise InputError(path, f"{where}: a CBC cipher text of {ct_len} bytes, not whole 16-byte blocks")
        data = start + IV_BYTES + 4
        if data + ct_len > size:
            raise InputError(path, f"{where}: {ct_len} bytes of cipher text declared, {size - data} left in the "
                             "file (truncated)")
        plain_size = ct_len
        if mode != "AES-GCM":
            previous = iv if ct_len == 16 else _read(path, source, data + ct_len - 32, 16, where)
            last = _cipher(key, mode, previous, None).decryptor().update(_read(path, source, data + ct_len - 16, 16, where))
            pad = last[-1]
            if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
                raise InputError(path, f"{where}: wrong key, or the file is damaged (the {mode} padding is invalid)")
            plain_size -= pad
        found.append(Block(len(found) + 1, pos, data, ct_len, iv, tag, plain, plain_size))
        plain += plain_size
        pos = data + ct_len
    return found


class Plaintext:
    """The plaintext of an encrypted file: :meth:`peek` reads headers before any check, :meth:`chunks`
    streams a range (each block read in order decrypted in 1 MiB pieces, its tag or padding checked at
    its end; a block read out of order decrypted whole into one buffer and checked first), and
    :meth:`check_all` checks the blocks not checked so. Memory: a few MiB, and the largest block only
    when a block is read out of order.
    """

    def __init__(self, path: Path, source: IO[bytes], size: int, key: Secret, mode: str) -> None:
        self.path, self.source, self.key, self.mode = path, source, key, mode
        self.blocks = blocks(path, source, size, key, mode)
        self.size = sum(b.plain_size for b in self.blocks)
        self._starts = [b.plain_start for b in self.blocks]
        self._size_of_buffer = max((b.size for b in self.blocks), default=0) + 16
        self._buffer_bytes: bytearray | None = None  # a whole block, made when a block is read out of order
        self._piece = bytearray(PIECE)
        self._out = bytearray(PIECE + 16)
        self._fd = source.fileno()
        self._stream: _BlockStream | None = None
        self._current: Block | None = None
        #: blocks whose tag or padding has passed (by :meth:`_load` or :meth:`check_all`)
        self.verified: set[int] = set()

    def __len__(self) -> int:
        return self.size

    # --- reading before the tags are checked: the headers, while every block is checked beside ---------
    def peek(self, offset: int, length: int) -> bytes:
        """Plaintext bytes decrypted without checking their block's tag or padding (CTR for GCM, a CBC
        window from the cipher block before it): for reading headers before :meth:`check_all` has run.
        Nothing read so may be trusted until that check has passed."""
        out = bytearray()
        end = min(offset + length, self.size)
        while offset < end:
            block = self._block_at(offset)
            start = offset - block.plain_start
            stop = min(end - block.plain_start, block.plain_size)
            first, last = start // 16, (stop + 15) // 16
            self.source.seek(block.data + first * 16)
            cipher = self.source.read((last - first) * 16)
            if self.mode == "AES-GCM":
                counter = block.iv[:GCM_NONCE_BYTES] + ((2 + first) & 0xFFFFFFFF).to_bytes(4, "big")
                plain = self._raw(_ctr(counter)).update(cipher)
            else:
                if first:
                    self.source.seek(block.data + (first - 1) * 16)
                    previous = self.source.read(16)
                else:
                    previous = block.iv
                plain = self._raw(_cbc(previous)).update(cipher)
            out += plain[start - first * 16 : stop - first * 16]
            offset += stop - start
        return bytes(out)

    def _raw(self, mode: Any) -> Any:
        ciphers, _ = _backend()
        algorithm = ciphers.algorithms.SM4(self.key.reveal()) if self.mode == "SM4-CBC" else \
            ciphers.algorithms.AES(self.key.reveal())
        return ciphers.Cipher(algorithm, mode).decryptor()

    def check_all(self, fd: int) -> None:
        """Decrypt every block not checked yet (reading ``fd``, a descriptor of its own) only to check its
        tag or padding; InputError naming the first block that fails."""
        from cryptography.exceptions import InvalidTag

        piece, out = bytearray(PIECE), bytearray(PIECE + 16)
        for block in self.blocks:
            if block.number in self.verified:
                continue
            decryptor = _cipher(self.key, self.mode, block.iv, block.tag).decryptor()
            done = written = 0
            last = b""
            while done < block.size:
                data = os.pread(fd, min(PIECE, block.size - done), block.data + done)
                if not data:
                    raise InputError(self.path, f"{block.where}: the file ends inside the cipher text (truncated)")
                piece[: len(data)] = data
                n = decryptor.update_into(memoryview(piece)[: len(data)], out)
                written += n
                last = bytes(out[max(0, n - 16) : n]) if n else last
                done += len(data)
            try:
                tail = decryptor.finalize()
            except InvalidTag:
                raise InputError(self.path, f"{block.where}: wrong key, or the file was tampered with (the AES-GCM "
                                 "tag does not match)") from None
            last = (last + tail)[-16:]
            if self.mode != "AES-GCM":
                pad = last[-1] if last else 0
                if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
                    raise InputError(self.path, f"{block.where}: wrong key, or the file is damaged (the {self.mode} "
                                     "padding is invalid)")
            self.verified.add(block.number)

    def _block_at(self, offset: int) -> Block:
        import bisect

        return self.blocks[bisect.bisect_right(self._starts, offset) - 1]

    @property
    def _buffer(self) -> bytearray:
        if self._buffer_bytes is None:
            self._buffer_bytes = bytearray(self._size_of_buffer)
        return self._buffer_bytes

    def _load(self, block: Block) -> memoryview:
        """The block's plaintext (a view of the buffer), decrypted and checked."""
        if self._current is not block:
            from cryptography.exceptions import InvalidTag

            self._current = None
            decryptor = _cipher(self.key, self.mode, block.iv, block.tag).decryptor()
            out, piece = memoryview(self._buffer), memoryview(self._piece)
            self.source.seek(block.data)
            done = written = 0
            while done < block.size:
                n = self.source.readinto(piece[: min(PIECE, block.size - done)])  # type: ignore[attr-defined]
                if not n:
                    raise InputError(self.path, f"{block.where}: the file ends inside the cipher text (truncated)")
                written += decryptor.update_into(piece[:n], out[written:])
                done += n
            try:
                tail = decryptor.finalize()
                out[written : written + len(tail)] = tail
            except InvalidTag:
                raise InputError(self.path, f"{block.where}: wrong key, or the file was tampered with (the AES-GCM "
                                 "tag does not match)") from None
            if self.mode != "AES-GCM":
                pad = self._buffer[block.size - 1]
                if not 1 <= pad <= 16 or self._buffer[block.size - pad : block.size] != bytes([pad]) * pad:
                    raise InputError(self.path, f"{block.where}: wrong key, or the file is damaged (the {self.mode} "
                                     "padding is invalid)")
            self._current = block
            self.verified.add(block.number)
        return memoryview(self._buffer)[: block.plain_size]

    def chunks(self, offset: int, length: int) -> Iterator[memoryview]:
        """``length`` plaintext bytes from ``offset``, as views valid until the next is asked for.

        Read in the file's order (a copy of every tensor), a block is decrypted as a stream, one piece at
        a time, and its tag or padding checked when the stream reaches its end: bytes are handed out
        before that check, which is settled before anything is reported or committed (the reader's
        owed check, :meth:`check_all`). Read out of order, a block is decrypted whole and checked first.
        """
        end = offset + length
        while offset < end:
            block = self._block_at(offset)
            start = offset - block.plain_start
            stop = min(end - block.plain_start, block.plain_size)
            if self._current is not block and self._streamable(block, start):
                yield from self._stream_to(block, start, stop)
            else:
                yield self._load(block)[start:stop]
            offset += stop - start

    def _streamable(self, block: Block, start: int) -> bool:
        stream = self._stream
        if stream is not None and stream.block is block and stream.lo <= start <= stream.pos + SKIP_BYTES:
            return True
        return start <= SKIP_BYTES

    def _stream_to(self, block: Block, start: int, stop: int) -> Iterator[memoryview]:
        """Plaintext ``[start, stop)`` of ``block`` from its stream (begun at the block's start if needed)."""
        stream = self._stream
        if stream is None or stream.block is not block or stream.lo > start:
            stream = self._stream = _BlockStream(block, _cipher(self.key, self.mode, block.iv, block.tag).decryptor())
        out = memoryview(self._out)
        if start < stream.pos:  # inside the piece produced last, still in the buffer
            yield out[start - stream.lo : min(stop, stream.pos, block.plain_size) - stream.lo]
            start = min(stop, stream.pos)
        while stream.pos < stop:
            want = min(PIECE, block.size - stream.done)
            data = os.pread(self._fd, want, block.data + stream.done) if want else b""
            if want and not data:
                raise InputError(self.path, f"{block.where}: the file ends inside the cipher text (truncated)")
            n = stream.decryptor.update_into(data, out) if data else 0
            stream.done += len(data)
            if n:
                stream.last = (stream.last + bytes(out[max(0, n - 16) : n]))[-16:]
            lo, hi = stream.pos, min(stream.pos + n, block.plain_size)
            stream.lo = lo
            if stream.done == block.size:
                self._finish_stream(stream)
            stream.pos += n
            if hi > start:
                yield out[max(start, lo) - lo : min(stop, hi) - lo]

    def _finish_stream(self, stream: _BlockStream) -> None:
        from cryptography.exceptions import InvalidTag

        block = stream.block
        try:
            stream.decryptor.finalize()
        except InvalidTag:
            raise InputError(self.path, f"{block.where}: wrong key, or the file was tampered with (the AES-GCM "
                             "tag does not match)") from None
        if self.mode != "AES-GCM":
            last = stream.last
            pad = last[-1] if last else 0
            if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
                raise InputError(self.path, f"{block.where}: wrong key, or the file is damaged (the {self.mode} "
                                 "padding is invalid)")
        self.verified.add(block.number)


@dataclass
class _BlockStream:
    """A block being decrypted in order: cipher bytes consumed, plaintext bytes produced, the last 16."""

    block: Block
    decryptor: Any
    done: int = 0
    pos: int = 0  # plaintext produced so far
    lo: int = 0  # where the piece produced last (still in the buffer) starts
    last: bytes = b""


def _ctr(counter: bytes) -> Any:
    ciphers, _ = _backend()
    return ciphers.modes.CTR(counter)


def _cbc(iv: bytes) -> Any:
    ciphers, _ = _backend()
    return ciphers.modes.CBC(iv)


def _read(path: Path, source: IO[bytes], offset: int, n: int, where: str) -> bytes:
    source.seek(offset)
    data = source.read(n)
    if len(data) != n:
        raise InputError(path, f"{where}: the file ends inside the block header (truncated)")
    return data


class Encrypter:
    """Writes plaintext into ``fd`` as ``mode`` blocks of at most :data:`BLOCK_BYTES`, each with a fresh IV.

    A block's header is written once its cipher text is done (its tag is known then), in the space
    left for it: the cipher text streams straight to the file.
    """

    def __init__(self, fd: int, key: Secret, mode: str, *, block_bytes: int = BLOCK_BYTES) -> None:
        check_key(None, key, mode)
        _, padding = _backend()
        self.fd, self.key, self.mode, self.block_bytes = fd, key, mode, block_bytes
        self._padding = padding
        self._header = 4 + (TAG_BYTES if mode == "AES-GCM" else 0) + 8 + IV_BYTES + 4
        self._block_start: int | None = None
        self._plain = 0  # plaintext bytes in the open block
        self._cipher_bytes = 0
        self._encryptor: Any = None
        self._padder: Any = None
        self._iv = b""
        self.position = os.lseek(fd, 0, os.SEEK_CUR)

    def _emit(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.position += n
            self._cipher_bytes += n

    def _open(self) -> None:
        self._block_start = self.position
        os.write(self.fd, bytes(self._header))  # filled in by _close
        self.position += self._header
        self._iv = os.urandom(IV_BYTES)
        self._encryptor = _cipher(self.key, self.mode, self._iv, None).encryptor()
        self._padder = self._padding.PKCS7(128).padder() if self.mode != "AES-GCM" else None
        self._plain = self._cipher_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._block_start is None:
                self._open()
            room = self.block_bytes - self._plain
            piece, view = view[:room], view[room:]
            chunk = bytes(piece)
            if self._padder is not None:
                chunk = self._padder.update(chunk)
            self._emit(self._encryptor.update(chunk))
            self._plain += len(piece)
            if self._plain == self.block_bytes:
                self._close()

    def _close(self) -> None:
        assert self._block_start is not None
        tail = b""
        if self._padder is not None:
            tail = self._encryptor.update(self._padder.finalize())
        self._emit(tail + self._encryptor.finalize())
        ct_len = self._cipher_bytes
        magic = struct.pack("<I", MAGIC_OF[self.mode])
        tag = self._encryptor.tag if self.mode == "AES-GCM" else b""
        header = magic + tag + struct.pack("<ii", 4 + IV_BYTES + 4 + ct_len, IV_BYTES) + self._iv + struct.pack("<i", ct_len)
        os.pwrite(self.fd, header, self._block_start)
        self._block_start = None

    def finish(self) -> None:
        if self._block_start is not None:
            self._close()


__all__ = ["BLOCK_BYTES", "Block", "Encrypter", "Encryption", "Plaintext", "Secret", "blocks", "check_key"]
