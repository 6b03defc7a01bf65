"""HDF5 checkpoints: plain HDF5, Keras weight files, ``.keras`` archives and sharded Keras 3 weights.

Three formats live here: ``hdf5`` (one HDF5 file), ``keras`` (a ``.keras`` archive, whose
``model.weights.h5`` member is read in place) and ``keras-sharded`` (a Keras 3 ``*.weights.json``
index with its HDF5 shards). Readers name every numeric dataset a tensor by its HDF5 path (without
the leading ``/``); ``layout`` tells the Keras convention inside: ``"keras-h5"`` (legacy tf-keras /
Keras 2), ``"keras3-h5"`` (Keras 3) or None (plain HDF5). Files are
checked, link by link and without following anything, before any tensor byte is read. Writers write
plain HDF5, a file like a given one (so that Keras still loads it, renames included), or a
``.keras`` archive.

One module per idea:

- :mod:`._h5`: safe h5py access, and the only module that imports h5py. HDF5 filter plugins are
  disabled there; files are opened read-only and checked; numeric types (including Keras 3's
  opaque bfloat16 / float8 convention) map to ckptsurgeon's dtype codes; h5py and OS errors become
  one-line input or output errors.
- :mod:`.keras`: Keras conventions: legacy ``layer_names`` / ``weight_names`` order, Keras 3
  ``layers/<name>/vars/<i>`` files, layer names, metadata.
- :mod:`.layout`: what a writer with ``like=`` copies of the like-file, and how renames move it.
- :mod:`.reader`: :class:`Reader` (one HDF5 file) and :class:`KerasShardedReader`.
- :mod:`.writer`: :class:`Writer`.
- :mod:`.archive`: ``.keras`` archives, :class:`KerasZipReader` and :class:`KerasZipWriter`.

This module imports the standard library only (and the registry's light base): importing it loads
neither h5py nor numpy, and it re-exports none of the classes above; import them from their modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import FormatSpec

if TYPE_CHECKING:
    from .._probe import Probe

KERAS_MEMBER = "model.weights.h5"  # what makes a zip archive a .keras model


def sniff_hdf5(probe: Probe) -> bool:
    """The HDF5 signature where HDF5 looks for it: at 0, or after a user block (512, 1024, ...)."""
    return bool(probe.hdf5_offsets)


def sniff_keras(probe: Probe) -> bool:
    """A zip archive holding ``model.weights.h5``."""
    return KERAS_MEMBER in (probe.zip_names or ())


HDF5 = FormatSpec(
    name="hdf5", family="hdf5", description="HDF5", sniff=sniff_hdf5,
    reader="ckptsurgeon.formats.hdf5.reader:Reader", writer="ckptsurgeon.formats.hdf5.writer:Writer",
    extensions=(".h5", ".hdf5"), folder_globs=("*.h5", "*.hdf5"),
)
KERAS = FormatSpec(
    name="keras", family="keras", description=".keras archive", sniff=sniff_keras,
    reader="ckptsurgeon.formats.hdf5.archive:KerasZipReader", writer="ckptsurgeon.formats.hdf5.archive:KerasZipWriter",
    extensions=(".keras",), folder_globs=("*.keras",),
)
KERAS_SHARDED = FormatSpec(
    name="keras-sharded", family="hdf5", description="sharded Keras weights",
    reader="ckptsurgeon.formats.hdf5.reader:KerasShardedReader", shards_of="hdf5", folder_globs=("*.weights.json",),
)

#: HDF5 last among the registry's packages: its sniff may seek far into a file for a user block.
SPECS = (KERAS, KERAS_SHARDED, HDF5)
