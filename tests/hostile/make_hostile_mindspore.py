"""Write the hostile MindSpore corpus: small ``.ckpt`` files that ckptsurgeon must refuse cleanly.

Run ``python tests/hostile/make_hostile_mindspore.py [DIR]`` (default: ``mindspore/`` beside this
script). The output is deterministic (fixed keys, fixed IVs, no randomness): the same script writes
the same bytes. ``CASES.json`` maps each file to ``{"key_hex", "mode", "message", "why"}``: the key
to open it with (hex, None for a plain file), the mode it is encrypted with, and a fragment of the
one-line message ``ckpt`` must give; every case exits 3. Sizes that would be hostile are only
declared (dims, lengths); no file is larger than a few hundred bytes.

Plain files (``Checkpoint{repeated Value value = 1}``; most open with a valid value, so that the
file is recognized as MindSpore and the damage is met while parsing):

- ``content_short.ckpt``: dims [2, 3] Float32 with 20 bytes of content, not 24;
- ``content_long.ckpt``: the same with 28 bytes;
- ``dims_overflow.ckpt``: dims [2**40, 2**40], whose byte count does not fit 64 bits;
- ``dims_overflow_int64.ckpt``: dims [2**31, 2**31, 2**31]: the product overflows int64 once multiplied;
- ``negative_dim.ckpt``: dims [-1, 2] (a ten-byte two's complement varint);
- ``too_many_dims.ckpt``: 65 dims of 1;
- ``packed_dims_many.ckpt``: a packed dims field of 700 varints (more than 64 dims, told from its
  length before any is read);
- ``truncated_value.ckpt``: a valid file cut inside its second value;
- ``truncated_content.ckpt``: a one-value file cut inside the tensor content (the first value's
  length runs past the end of the file, yet the file is recognized as MindSpore);
- ``varint_11_bytes.ckpt``: the second value's length is a varint of 11 bytes;
- ``varint_over_64_bits.ckpt``: a 10-byte varint whose value needs 70 bits;
- ``length_past_end.ckpt``: the second value declares 2**30 bytes; the file holds a few;
- ``content_length_past_tensor.ckpt``: tensor_content declares more bytes than its TensorProto holds;
- ``tag_not_utf8.ckpt``: the second value's tag is ``b"\\xff\\xfe\\xfd"``;
- ``tag_control_chars.ckpt``: a UTF-8 tag holding terminal escape sequences (ESC, BEL);
- ``slices_disagree.ckpt``: two consecutive values of one tag (the slices of a split tensor) with
  dims [2, 3] and [3, 2];
- ``duplicate_tag.ckpt``: one tag twice, apart;
- ``maptensor.ckpt``: a Value holding a MapTensorProto (field 3);
- ``int4.ckpt``: tensor_type ``Int4``;
- ``unknown_type.ckpt``: tensor_type ``Float128``;
- ``no_content.ckpt``: a TensorProto without tensor_content;
- ``group_wire_type.ckpt``: a field of wire type 3 (a group) inside a value;
- ``string_not_utf32.ckpt``: a ``str`` value of 5 bytes (not whole UTF-32 code points);
- ``bad_crc.ckpt``: a valid file with a ``crc_num`` trailer whose CRC-32 is wrong.

Encrypted files (blocks ``magic | [GCM tag] | blk_len | iv_len | iv | ct_len | cipher text``; the
plaintext is a small valid checkpoint, key A; each case says which key it is opened with):

- ``wrong_key_aes_gcm.ckpt``, ``wrong_key_aes_cbc.ckpt``, ``wrong_key_sm4_cbc.ckpt``: valid files
  encrypted with key A, opened with key B of the right size;
- ``gcm_tag_tampered.ckpt``: one bit of the GCM tag flipped;
- ``gcm_cipher_flipped.ckpt``: one bit of the GCM cipher text flipped;
- ``truncated_cipher.ckpt``: a two-block GCM file cut inside the second block's cipher text;
- ``truncated_header.ckpt``: a GCM file cut inside its second block's header;
- ``huge_ct_len.ckpt``: blk_len 2**31 - 1 and ct_len agreeing with it; the file holds a few bytes;
- ``blk_len_disagrees.ckpt``: blk_len one more than 4 + iv_len + 4 + ct_len;
- ``negative_ct_len.ckpt``: ct_len -16 (blk_len agreeing with it);
- ``iv_len_wrong.ckpt``: iv_len 12;
- ``cbc_ct_len_not_16.ckpt``: a CBC block of 20 bytes of cipher text;
- ``mixed_magics.ckpt``: an AES-GCM block followed by an AES-CBC block;
- ``decrypts_to_noise.ckpt``: a valid AES-GCM encryption of bytes that are not a checkpoint;
- ``decrypts_to_nothing.ckpt``: a valid AES-CBC encryption of zero bytes (one block of padding).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ckptsurgeon.formats._protobuf import key, length_delimited, varint  # noqa: E402
from ckptsurgeon.formats.mindspore.writer import value_header  # noqa: E402

KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))
IV = bytes(range(0xA0, 0xB0))
IV2 = bytes(range(0xB0, 0xC0))
MAGIC = {"AES-GCM": 0x7F3A5ED8, "AES-CBC": 0x7F3A5ED9, "SM4-CBC": 0x7F3A5EDA}
CASES_FILE = "CASES.json"

# name -> {"key_hex", "mode", "message", "why"}; filled by @case
CASES: dict[str, dict[str, object]] = {}
BUILDERS: list[tuple[str, Callable[[], bytes]]] = []


def case(name: str, message: str, why: str, *, key_: bytes | None = None, mode: str | None = None) -> Callable:
    """Register a builder returning the bytes of the file ``name``."""

    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        assert name not in CASES, name
        CASES[name] = {"key_hex": key_.hex() if key_ is not None else None, "mode": mode, "message": message,
                       "why": why}
        BUILDERS.append((name, build))
        return build

    return register


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
W = np.arange(6, dtype="<f4").tobytes()
B = np.arange(3, dtype="<f4").tobytes()


def value(tag: bytes, dims: list[int], type_name: str, content: bytes, declared: int | None = None) -> bytes:
    """One ``Checkpoint`` message (``declared``: the content length the header states, if not its own)."""
    return value_header(tag, dims, type_name, len(content) if declared is None else declared) + content


def raw_value(tag: bytes, tensor: bytes, field: int = 2) -> bytes:
    """A ``Checkpoint`` message around a hand-made tensor (field 2) or map tensor (field 3) payload."""
    return length_delimited(1, length_delimited(1, tag) + length_delimited(field, tensor))


def tensor(dims: list[int], type_name: str | None, content: bytes | None) -> bytes:
    out = b"".join(key(1, 0) + varint(d) for d in dims)
    if type_name is not None:
        out += length_delimited(2, type_name.encode())
    if content is not None:
        out += length_delimited(3, content)
    return out


def valid() -> bytes:
    """A small valid checkpoint: ``w`` [2, 3] and ``b`` [3], Float32."""
    return value(b"w", [2, 3], "Float32", W) + value(b"b", [3], "Float32", B)


def block(mode: str, plain: bytes, key_: bytes = KEY_A, iv: bytes = IV) -> bytes:
    """One encrypted block as MindSpore writes it (GCM: iv[:12] as the nonce; CBC: PKCS#7)."""
    algorithm = algorithms.SM4(key_) if mode == "SM4-CBC" else algorithms.AES(key_)
    if mode == "AES-GCM":
        enc = Cipher(algorithm, modes.GCM(iv[:12])).encryptor()
        ct = enc.update(plain) + enc.finalize()
        tag = enc.tag
    else:
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithm, modes.CBC(iv)).encryptor()
        ct = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
        tag = b""
    return frame(mode, tag, iv, ct)


def frame(mode: str, tag: bytes, iv: bytes, ct: bytes, *, blk_len: int | None = None, iv_len: int | None = None,
          ct_len: int | None = None) -> bytes:
    """A block's bytes, with any length field overridden."""
    ct_len = len(ct) if ct_len is None else ct_len
    blk_len = 4 + len(iv) + 4 + ct_len if blk_len is None else blk_len
    iv_len = len(iv) if iv_len is None else iv_len
    return struct.pack("<I", MAGIC[mode]) + tag + struct.pack("<ii", blk_len, iv_len) + iv + struct.pack("<i", ct_len) + ct


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --------------------------------------------------------------------------------------------------
# plain files
# --------------------------------------------------------------------------------------------------
@case("content_short.ckpt", "20 bytes of content", "content shorter than dims imply")
def content_short() -> bytes:
    return value(b"w", [2, 3], "Float32", W[:20])


@case("content_long.ckpt", "28 bytes of content", "content longer than dims imply")
def content_long() -> bytes:
    return value(b"w", [2, 3], "Float32", W + W[:4])


@case("dims_overflow.ckpt", "overflow", "dims whose product does not fit 64 bits")
def dims_overflow() -> bytes:
    return value(b"w", [1 << 40, 1 << 40], "Float32", W[:4])


@case("dims_overflow_int64.ckpt", "overflow", "dims each below 2**62 whose product times the item size overflows")
def dims_overflow_int64() -> bytes:
    return value(b"w", [1 << 31, 1 << 31, 1 << 31], "Float32", W[:4])


@case("negative_dim.ckpt", "negative dim", "a dim of -1")
def negative_dim() -> bytes:
    return value(b"w", [-1, 2], "Float32", W[:8])


@case("too_many_dims.ckpt", "more than 64 dims", "65 dims")
def too_many_dims() -> bytes:
    return value(b"w", [1] * 65, "Float32", W[:4])


@case("packed_dims_many.ckpt", "more than 64 dims", "a packed dims field of 700 varints")
def packed_dims_many() -> bytes:
    return raw_value(b"w", length_delimited(1, b"\x01" * 700) + tensor([], "Float32", W[:4]))


@case("truncated_value.ckpt", "declares 30 bytes", "a valid file cut inside its second value")
def truncated_value() -> bytes:
    data = valid()
    return data[: len(data) - 5]


@case("truncated_content.ckpt", "its message holds", "a one-value file cut inside the tensor content")
def truncated_content() -> bytes:
    return value(b"w", [2, 3], "Float32", W)[:-10]


@case("varint_11_bytes.ckpt", "longer than 10 bytes", "a length varint of 11 bytes")
def varint_11_bytes() -> bytes:
    return value(b"w", [2, 3], "Float32", W) + b"\x0a" + b"\xff" * 10 + b"\x01" + b"\x00" * 8


@case("varint_over_64_bits.ckpt", "does not fit 64 bits", "a 10-byte varint with bits past the 64th")
def varint_over_64_bits() -> bytes:
    return value(b"w", [2, 3], "Float32", W) + b"\x0a" + b"\xff" * 9 + b"\x7f" + b"\x00" * 8


@case("length_past_end.ckpt", "declares 1073741824 bytes", "a value declaring 2**30 bytes in a small file")
def length_past_end() -> bytes:
    return value(b"w", [2, 3], "Float32", W) + b"\x0a" + varint(1 << 30) + b"\x0a\x01b"


@case("content_length_past_tensor.ckpt", "its message holds", "tensor_content longer than its TensorProto")
def content_length_past_tensor() -> bytes:
    body = tensor([2, 3], "Float32", None) + key(3, 2) + varint(1 << 20) + W
    return valid() + raw_value(b"c", body)


@case("tag_not_utf8.ckpt", "is not UTF-8", "a tag that is not UTF-8")
def tag_not_utf8() -> bytes:
    return valid() + value(b"\xff\xfe\xfd", [3], "Float32", B)


@case("tag_control_chars.ckpt", "U+001B", "a UTF-8 tag holding terminal escape sequences")
def tag_control_chars() -> bytes:
    return valid() + value(b"x\x1b[31mRED\x1b]0;title\x07", [3], "Float32", B)


@case("slices_disagree.ckpt", "slices disagree", "two slices of one tag with different dims")
def slices_disagree() -> bytes:
    return value(b"w", [2, 3], "Float32", W[:12]) + value(b"w", [3, 2], "Float32", W[12:])


@case("duplicate_tag.ckpt", "appears twice", "one tag twice, with another between")
def duplicate_tag() -> bytes:
    return valid() + value(b"w", [2, 3], "Float32", W)


@case("maptensor.ckpt", "MapTensorProto", "a MapParameter value")
def maptensor() -> bytes:
    keys = length_delimited(1, tensor([2], "Int64", np.arange(2, dtype="<i8").tobytes()))
    return raw_value(b"m", keys, field=3)


@case("int4.ckpt", "4-bit integers", "tensor_type Int4 (qint4x2)")
def int4() -> bytes:
    return value(b"w", [2, 3], "Int4", W[:3])


@case("unknown_type.ckpt", "tensor_type 'Float128'", "a tensor_type ckptsurgeon does not know")
def unknown_type() -> bytes:
    return value(b"w", [2], "Float128", W[:32] + W[:8])


@case("no_content.ckpt", "has no tensor_content", "a TensorProto without tensor_content")
def no_content() -> bytes:
    return raw_value(b"w", tensor([2, 3], "Float32", None))


@case("group_wire_type.ckpt", "wire type 3", "a group (wire type 3) inside a value")
def group_wire_type() -> bytes:
    return valid() + length_delimited(1, length_delimited(1, b"g") + key(5, 3) + b"\x00" * 4)


@case("string_not_utf32.ckpt", "not whole UTF-32", "a str value of 5 bytes")
def string_not_utf32() -> bytes:
    return valid() + value(b"note", [0], "str", b"abcde")


@case("bad_crc.ckpt", "crc_num trailer", "a crc_num trailer whose CRC-32 is wrong")
def bad_crc() -> bytes:
    data = valid()
    crc = zlib.crc32(data) ^ 1
    return data + b"crc_num" + crc.to_bytes(10, "big")


# --------------------------------------------------------------------------------------------------
# encrypted files
# --------------------------------------------------------------------------------------------------
@case("wrong_key_aes_gcm.ckpt", "tag does not match", "valid AES-GCM file, opened with another key",
      key_=KEY_B, mode="AES-GCM")
def wrong_key_gcm() -> bytes:
    return block("AES-GCM", valid())


@case("wrong_key_aes_cbc.ckpt", "wrong key", "valid AES-CBC file, opened with another key", key_=KEY_B,
      mode="AES-CBC")
def wrong_key_cbc() -> bytes:
    return block("AES-CBC", valid())


@case("wrong_key_sm4_cbc.ckpt", "wrong key", "valid SM4-CBC file, opened with another key", key_=KEY_B,
      mode="SM4-CBC")
def wrong_key_sm4() -> bytes:
    return block("SM4-CBC", valid())


@case("gcm_tag_tampered.ckpt", "tag does not match", "one bit of the GCM tag flipped", key_=KEY_A, mode="AES-GCM")
def gcm_tag_tampered() -> bytes:
    return flip(block("AES-GCM", valid()), 4)


@case("gcm_cipher_flipped.ckpt", "tag does not match", "one bit of the GCM cipher text flipped", key_=KEY_A,
      mode="AES-GCM")
def gcm_cipher_flipped() -> bytes:
    data = block("AES-GCM", valid())
    return flip(data, len(data) - 7)


def two_blocks() -> bytes:
    data = valid()
    return block("AES-GCM", data[:40]) + block("AES-GCM", data[40:], iv=IV2)


@case("truncated_cipher.ckpt", "(truncated)", "a two-block file cut inside the second cipher text", key_=KEY_A,
      mode="AES-GCM")
def truncated_cipher() -> bytes:
    return two_blocks()[:-9]


@case("truncated_header.ckpt", "inside the block header", "a two-block file cut inside the second header",
      key_=KEY_A, mode="AES-GCM")
def truncated_header() -> bytes:
    first = block("AES-GCM", valid()[:40])
    return first + block("AES-GCM", valid()[40:], iv=IV2)[:30]


@case("huge_ct_len.ckpt", "(truncated)", "blk_len 2**31 - 1 and ct_len agreeing with it, in a small file",
      key_=KEY_A, mode="AES-GCM")
def huge_ct_len() -> bytes:
    good = block("AES-GCM", valid())
    tag, ct = good[4:20], good[48:]
    return frame("AES-GCM", tag, IV, ct, ct_len=(1 << 31) - 1 - 24)  # blk_len: 2**31 - 1


@case("blk_len_disagrees.ckpt", "disagree", "blk_len one more than the block holds", key_=KEY_A, mode="AES-GCM")
def blk_len_disagrees() -> bytes:
    good = block("AES-GCM", valid())
    return frame("AES-GCM", good[4:20], IV, good[48:], blk_len=4 + 16 + 4 + len(good) - 48 + 1)


@case("negative_ct_len.ckpt", "disagree", "a ct_len of -16 with a blk_len agreeing with it", key_=KEY_A,
      mode="AES-CBC")
def negative_ct_len() -> bytes:
    good = block("AES-CBC", valid())
    return frame("AES-CBC", b"", IV, good[32:], ct_len=-16)


@case("iv_len_wrong.ckpt", "an IV of 12 bytes", "iv_len 12", key_=KEY_A, mode="AES-GCM")
def iv_len_wrong() -> bytes:
    good = block("AES-GCM", valid())
    return frame("AES-GCM", good[4:20], IV, good[48:], iv_len=12)


@case("cbc_ct_len_not_16.ckpt", "not whole 16-byte blocks", "a CBC block of 20 bytes of cipher text", key_=KEY_A,
      mode="AES-CBC")
def cbc_ct_len_not_16() -> bytes:
    good = block("AES-CBC", valid())
    return frame("AES-CBC", b"", IV, good[32:52])


@case("mixed_magics.ckpt", "does not start with the AES-GCM block magic", "an AES-GCM block, then an AES-CBC one",
      key_=KEY_A, mode="AES-GCM")
def mixed_magics() -> bytes:
    data = valid()
    return block("AES-GCM", data[:40]) + block("AES-CBC", data[40:], iv=IV2)


@case("decrypts_to_noise.ckpt", "not a well-formed MindSpore checkpoint", "a valid encryption of bytes that are "
      "not a checkpoint", key_=KEY_A, mode="AES-GCM")
def decrypts_to_noise() -> bytes:
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(4))
    return block("AES-GCM", noise)


@case("decrypts_to_nothing.ckpt", "empty after decryption", "a valid AES-CBC encryption of zero bytes", key_=KEY_A,
      mode="AES-CBC")
def decrypts_to_nothing() -> bytes:
    return block("AES-CBC", b"")


# --------------------------------------------------------------------------------------------------
def build(out: Path) -> None:
    """Write every case and ``CASES.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, make in BUILDERS:
        (out / name).write_bytes(make())
    (out / CASES_FILE).write_text(json.dumps(CASES, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "mindspore")
