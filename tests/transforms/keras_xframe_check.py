"""Load a ``.weights.h5`` into the Keras model of ``tests/data/xframe/make_keras.py`` and compare its output with PyTorch's.

    KERAS_BACKEND=jax python keras_xframe_check.py WEIGHTS.weights.h5 [IO.npz]

Run in an interpreter that has Keras 3 (the tests run it in a subprocess, as ``CKPT_KERAS_PYTHON``).
``model.load_weights`` into ``make_keras.cnn``, which must warn of nothing (Keras only warns of
variables it could not load), then an inference-mode forward pass on the ``image`` (NHWC) and
``tokens`` of IO.npz (default: ``torch_io.npz``, the PyTorch model's inputs and eval output). Prints
one JSON line: ``{"ok": ..., "max_abs_diff": ..., "tolerance": 1e-05, "variables": N}``, ``ok`` when
every output value is within the tolerance. Exits 1 with the reason on stderr when the weights do
not load. Uses Keras and numpy only, never ckptsurgeon.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")  # before make_keras imports keras

DATA = Path(__file__).resolve().parents[1] / "data" / "xframe"
TOLERANCE = 1e-5


def generator() -> ModuleType:
    """``make_keras.py``, whose ``cnn`` is the model (one definition for the files and this check)."""
    spec = importlib.util.spec_from_file_location("xframe_make_keras", DATA / "make_keras.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    make = generator()
    io = np.load(argv[1] if len(argv) == 2 else DATA / "torch_io.npz")
    model = make.cnn(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.load_weights(argv[0])
    except Exception as exc:  # Keras raises ValueError for shapes, a warning turned error for anything not loaded
        print(f"load_weights failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    output = np.asarray(model([io["image"], io["tokens"]], training=False), dtype=np.float64)
    diff = float(np.max(np.abs(output - io["output"].astype(np.float64))))
    print(json.dumps({"ok": bool(diff <= TOLERANCE), "max_abs_diff": diff, "tolerance": TOLERANCE,
                      "variables": len(model.weights)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
