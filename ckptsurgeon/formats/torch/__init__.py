"""PyTorch checkpoints: ``torch.save`` files (zip and legacy) and Hugging Face ``pytorch_model.bin`` shards.

Read without torch and without running the pickle: :mod:`.unpickle` is the one restricted
unpickler in ckptsurgeon (an allow-list of globals, each a local builder of a record; storages
are references, read later from the file), :mod:`.containers` chooses the state dict a
checkpoint's tensors are listed from, and :mod:`.reader` reads the zip and legacy layouts and
the sharded index. The file extension means nothing (``.pt .pth .bin .ckpt .tar`` all occur):

- a zip archive with a ``<folder>/data.pkl`` member is a ``torch.save`` zip;
- a file that starts with the pickle of torch's magic number ``0x1950A86A20F9469CFC6C`` (any
  pickle protocol) is a legacy ``torch.save`` file;
- any other pickle is refused by the probe as "a pickle that is not a PyTorch checkpoint".

:mod:`.writer` writes a flat state dict as ``torch.save``'s zip layout (``data.pkl`` emitted opcode
by opcode, never by the pickle module) and the Hugging Face ``pytorch_model-0000K-of-0000N.bin``
shards with their index. ``-o`` names the format by ``.pt``, ``.pth`` or ``.bin``; ``.ckpt`` is
left to ``--format torch``, since MindSpore and Lightning both use it.

This package holds only the format specs, so naming the format imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: where ckptsurgeon keeps metadata in a zip it writes (under the archive's folder); torch never reads it
METADATA_MEMBER = "extra/ckptsurgeon.json"
_MAGIC_BYTES = LEGACY_MAGIC.to_bytes(10, "little")
_LONG1_MAGIC = b"\x8a\x0a" + _MAGIC_BYTES  # LONG1, 10 bytes (protocol 2+)
_TEXT_MAGIC = b"L%dL\n" % LEGACY_MAGIC  # LONG as text (protocol 0 and 1)


def legacy_like(head: bytes) -> bool:
    """The first pickle is torch's magic number: ``PROTO n`` (then a ``FRAME``), or text opcodes."""
    if head.startswith(_TEXT_MAGIC):
        return True
    if head[:1] != b"\x80" or len(head) < 2:
        return False
    rest = head[2:]
    if rest[:1] == b"\x95":  # FRAME and its 8-byte length (protocol 4+)
        rest = rest[9:]
    return rest.startswith(_LONG1_MAGIC)


def zip_like(probe: Probe) -> bool:
    """A zip archive holding a ``data.pkl`` (the reader checks it is ``<folder>/data.pkl``, the only one)."""
    names = probe.zip_names
    return bool(names) and any(n == "data.pkl" or n.endswith("/data.pkl") for n in names or ())


def sniff(probe: Probe) -> bool:
    return legacy_like(probe.head) or zip_like(probe)


TORCH = FormatSpec(
    name="torch", family="torch", description="PyTorch", sniff=sniff,
    reader="ckptsurgeon.formats.torch.reader:Reader", writer="ckptsurgeon.formats.torch.writer:Writer",
    extensions=(".pt", ".pth", ".bin"), folder_globs=("*.pt", "*.pth", "pytorch_model.bin"), framework="pt",
)
TORCH_SHARDED = FormatSpec(
    name="torch-sharded", family="torch", description="sharded PyTorch .bin (Hugging Face index)",
    reader="ckptsurgeon.formats.torch.reader:ShardedReader", shards_of="torch",
    writer="ckptsurgeon.formats.torch.writer:ShardedWriter",
    folder_globs=("pytorch_model.bin.index.json",), framework="pt",
)

SPECS = (TORCH, TORCH_SHARDED)

__all__ = ["LEGACY_MAGIC", "METADATA_MEMBER", "SPECS", "TORCH", "TORCH_SHARDED", "legacy_like", "sniff", "zip_like"]
