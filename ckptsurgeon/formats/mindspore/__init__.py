"""MindSpore checkpoints (``.ckpt``): protobuf ``Checkpoint`` messages, plain or encrypted block by block.

A plain file is a run of serialized ``Checkpoint`` messages (``save_checkpoint`` writes one per
parameter; concatenated, they read as one message with a repeated ``value``)::

    message Checkpoint  { message Value { required string tag = 1;
                                          oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
                          repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

An encrypted file is a run of blocks, each starting with a 4-byte magic that names the mode
(:data:`MAGICS`). ``.ckpt`` is also what Lightning calls a PyTorch checkpoint: an input is told
apart by content (a zip is PyTorch; a protobuf ``Value`` or a block magic is MindSpore); an output
named ``….ckpt`` takes the format of a ``.ckpt`` transfer target, and otherwise needs ``--format``.

This package holds only the format spec, so naming the format imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

#: block magic (little-endian u32) -> MindSpore's name of the encryption mode
MAGICS = {0x7F3A5ED8: "AES-GCM", 0x7F3A5ED9: "AES-CBC", 0x7F3A5EDA: "SM4-CBC"}
MODES = tuple(MAGICS.values())


def encrypted_mode(head: bytes) -> str | None:
    """The encryption mode a file's first block names, or None."""
    return MAGICS.get(int.from_bytes(head[:4], "little")) if len(head) >= 4 else None


def _varint(head: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    for i in range(10):
        if pos + i >= len(head):
            return None
        byte = head[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    return None


def plain_like(probe: Probe) -> bool:
    """The file starts as a ``Checkpoint.value`` whose ``Value`` starts with a UTF-8 ``tag`` and then a tensor."""
    head = probe.head
    if head[:1] != b"\x0a":
        return False
    outer = _varint(head, 1)
    if outer is None:
        return False
    pos = outer[1]
    cut = outer[0] > probe.size - pos  # a file cut inside its first value: recognized if its tag is whole
    if head[pos : pos + 1] != b"\x0a":
        return False
    tag = _varint(head, pos + 1)
    if tag is None or tag[0] == 0 or tag[0] > outer[0]:
        return False
    start, end = tag[1], tag[1] + tag[0]
    if (end < len(head) or cut) and head[end : end + 1] not in (b"\x12", b"\x1a"):
        return False
    try:
        head[start : min(end, len(head))].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < min(end, len(head)) - start - 3:  # a code point cut by the probe's end is fine
            return False
    return True


def sniff(probe: Probe) -> bool:
    return encrypted_mode(probe.head) is not None or plain_like(probe)


MINDSPORE = FormatSpec(
    name="mindspore", family="mindspore", description="MindSpore checkpoint", sniff=sniff,
    reader="ckptsurgeon.formats.mindspore.reader:Reader", writer="ckptsurgeon.formats.mindspore.writer:Writer",
    folder_globs=("*.ckpt",), framework="ms",
)

SPECS = (MINDSPORE,)

__all__ = ["MAGICS", "MINDSPORE", "MODES", "SPECS", "encrypted_mode", "plain_like", "sniff"]
