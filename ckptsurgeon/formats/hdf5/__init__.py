"""HDF5 checkpoints: plain HDF5, Keras weight files, ``.keras`` archives and sharded Keras 3 weights.

Readers name every numeric dataset a tensor by its HDF5 path (without the leading ``/``) and tell
the kind of file by ``format``: ``"hdf5"``, ``"keras-h5"`` (legacy tf-keras / Keras 2),
``"keras3-h5"`` (Keras 3 ``.weights.h5``), ``"keras-zip"`` (the ``model.weights.h5`` of a
``.keras`` archive) or ``"keras3-sharded"`` (a ``*.weights.json`` index with its shards). Files are
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

This module imports the standard library only: importing it loads neither h5py nor numpy, and it
re-exports none of the classes above; import them from their modules.
"""
