"""TensorFlow checkpoints: a tensor bundle, ``PREFIX.index`` (an SSTable) and ``PREFIX.data-K-of-N`` shards.

A checkpoint is named by its prefix (``model.ckpt-2``, which is no file), by its ``.index`` file,
or by its directory, whose ``checkpoint`` file names the latest prefix. ``open_checkpoint`` turns a
prefix into its ``.index``; detection is by content: the table footer's magic number at the end
of the ``.index``, or a ``checkpoint`` file's ``model_checkpoint_path:`` line.

This package holds only the format spec, so naming the format imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
POINTER = "checkpoint"
POINTER_KEY = b"model_checkpoint_path:"


def index_like(probe: Probe) -> bool:
    return probe.size >= 48 and probe.tail.endswith(TABLE_MAGIC)


def pointer_like(probe: Probe) -> bool:
    return probe.path.name == POINTER and probe.head.lstrip().startswith(POINTER_KEY)


def sniff(probe: Probe) -> bool:
    return index_like(probe) or pointer_like(probe)


def damaged_index(probe: Probe) -> bool:
    """A ``PREFIX.index`` beside its ``PREFIX.data-00000-of-N``, whose footer is damaged or cut."""
    name = probe.path.name
    if not name.endswith(".index"):
        return False
    import glob

    return any(probe.path.parent.glob(f"{glob.escape(name[: -len('.index')])}.data-00000-of-*"))


TF = FormatSpec(
    name="tf", family="tf", description="TensorFlow checkpoint", sniff=sniff,
    reader="ckptsurgeon.formats.tf.reader:Reader", writer="ckptsurgeon.formats.tf.writer:Writer",
    folder_globs=("*.index",), folder_pointer=POINTER, framework="tf",
    sorted_names=True, sniff_damaged=damaged_index,
)

SPECS = (TF,)

__all__ = ["POINTER", "SPECS", "TABLE_MAGIC", "TF", "index_like", "pointer_like", "sniff"]
