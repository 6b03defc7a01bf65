"""npz archives: a zip of ``.npy`` members, one tensor each (``numpy.savez``, Flax/JAX exports).

Reading never unpickles and never hands the archive to ``numpy.load``: the archive is opened and
checked by :class:`~ckptsurgeon.formats._zip.ZipArchive` (member names, flags, methods, local
headers, overlaps, deflate ratios, polyglots), each member's ``.npy`` header is read with numpy's
bounded header parser, and every size is checked against the archive before anything is allocated.
STORED members are read zero-copy from a memory map of the archive (and expose
:meth:`~ckptsurgeon.formats.npz.reader.Reader.byte_range`), each checked against its CRC before its
bytes are first used; pages a chunked read has gone past, and those of a tensor released with
``Reader.release``, are dropped from the process (the page cache keeps them). DEFLATED members are
inflated as a stream of exactly the declared number of bytes, CRC-checked by :mod:`zipfile`.

Tensor name = member name without ``.npy``. A member is refused when its name is not a plain
relative name ending in ``.npy`` (absolute, ``..``, drive letter, backslash, NUL), appears twice, is
encrypted, uses a compression other than STORED/DEFLATED, overlaps another member, claims to inflate
more than deflate can (``_zip.MAX_DEFLATE_RATIO``), or holds object (pickled), structured or
subarray values. Fortran-ordered and big-endian members are read as C-ordered little-endian arrays.

Dtypes numpy itself cannot name
-------------------------------
``numpy.save`` writes ml_dtypes' types as raw bytes: ``bfloat16`` as ``<V2`` (this is how JAX/Flax
parameters end up in npz files), the 1-byte float8 types as ``<V1`` or ``|V1``, except
``float8_e5m2``, which is written as ``<f1`` (a descr ``numpy.load`` itself rejects). Hence:

* a 2-byte void member (``<V2``/``|V2``) is read as BF16;
* an ``f1`` member is read as F8_E5M2 (no other type is written that way);
* a 1-byte void member is ambiguous (F8_E4M3, F8_E5M2, F8_E8M0 ...): its dtype is taken from the
  archive comment written by the ``Writer``, or from ``Reader(..., float8=CODE)``; otherwise the
  archive is refused with a message saying so.

The archive comment
-------------------
The ``Writer`` writes BF16 as ``<V2`` and every float8 type as ``|V1``, so ``numpy.load`` reads
the output (as void arrays for those dtypes). When a dtype needs naming or metadata is given, the zip
comment holds ``{"ckptsurgeon": 1, "dtypes": {tensor: code}, "metadata": {key: value}}`` (compact
JSON, UTF-8). A zip comment is limited to 65535 bytes: a writer whose comment would exceed that
raises :class:`~ckptsurgeon.errors.OutputError` in ``begin``, before any file is created; metadata
is never dropped silently.

Output layout
-------------
Members are written in the declared order with fixed timestamps (1980-01-01 00:00:00, as numpy
does) and attributes, so the same input gives a byte-identical file. Each member is a ``.npy`` v1.0
header (v2.0 if the header outgrows v1.0; v3.0 is never needed since our headers are ASCII) and the
raw C-order little-endian bytes. STORED is the default (``compress=True`` gives DEFLATED; left
unset it follows ``like`` when that is an npz reader). STORED members carry a zip extra field
padding their data to a 64-byte boundary of the archive (the Android ``zipalign`` field, 0xD935),
so memory-mapped reads are aligned. ZIP64 records are written only where a member needs them.

Modules
-------
This package holds only its format spec, so naming the format loads nothing else: :mod:`.npy` (``.npy`` headers,
dtype descrs, the archive comment), :mod:`.reader` (``Reader``) and :mod:`.writer`
(``Writer``) import numpy when they are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe


def sniff(probe: Probe) -> bool:
    """A zip archive whose members are all ``.npy`` arrays (an empty one named ``.npz``: ``np.savez()`` of nothing)."""
    names = probe.zip_names
    if not names:
        return names is not None and probe.path.suffix.lower() == ".npz"
    return all(n.endswith(".npy") for n in names)


NPZ = FormatSpec(
    name="npz", family="npz", description="npz", sniff=sniff,
    reader="ckptsurgeon.formats.npz.reader:Reader", writer="ckptsurgeon.formats.npz.writer:Writer",
    extensions=(".npz",), folder_globs=("*.npz",),
)

SPECS = (NPZ,)
