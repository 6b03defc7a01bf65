"""Specs of the npz and HDF5 formats (moving into their packages)."""

from __future__ import annotations

from ._probe import Probe
from .base import FormatSpec


def _npz(probe: Probe) -> bool:
    names = probe.zip_names
    return bool(names) and all(n.endswith(".npy") for n in names or ())


def _keras(probe: Probe) -> bool:
    return "model.weights.h5" in (probe.zip_names or ())


def _hdf5(probe: Probe) -> bool:
    return bool(probe.hdf5_offsets)


A = "ckptsurgeon.formats._interim_adapters:"
SPECS = (
    FormatSpec(name="npz", family="npz", description="npz", sniff=_npz, reader=A + "npz_reader",
               writer=A + "NpzWriter", extensions=(".npz",), folder_globs=("*.npz",)),
    FormatSpec(name="keras", family="keras", description=".keras archive", sniff=_keras, reader=A + "keras_reader",
               writer=A + "KerasZipWriter", extensions=(".keras",), folder_globs=("*.keras",)),
    FormatSpec(name="keras-sharded", family="hdf5", description="sharded Keras weights", reader=A + "keras_sharded",
               shards_of="hdf5", folder_globs=("*.weights.json",)),
    FormatSpec(name="hdf5", family="hdf5", description="HDF5", sniff=_hdf5, reader=A + "hdf5_reader",
               writer=A + "Hdf5Writer", extensions=(".h5", ".hdf5"), folder_globs=("*.h5", "*.hdf5")),
)
