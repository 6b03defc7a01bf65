"""ckptsurgeon: checkpoint surgery across safetensors, HDF5/Keras and npz, without loading a framework."""

from __future__ import annotations

__version__ = "0.1.0"
