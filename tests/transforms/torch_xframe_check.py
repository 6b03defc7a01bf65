"""Load a state dict into the PyTorch model of ``tests/data/xframe/make_torch.py`` and compare its output with Keras's.

    python torch_xframe_check.py STATE.pt [IO.npz]

Run in an interpreter that has torch (the tests run it in a subprocess, as ``CKPT_TORCH_PYTHON``).
``torch.load(weights_only=True)`` of STATE.pt, ``load_state_dict(strict=True)`` into ``XNet``, eval
mode, then a forward pass on the ``image`` (NHWC, transposed to NCHW) and ``tokens`` of IO.npz
(default: ``keras_io.npz``, the Keras model's inputs and inference output). Prints one JSON line:
``{"ok": ..., "max_abs_diff": ..., "tolerance": 1e-05, "tensors": N}``, ``ok`` when every output
value is within the tolerance. Exits 1 with the reason on stderr when the state dict does not load.
Uses torch and numpy only, never ckptsurgeon.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "data" / "xframe"
TOLERANCE = 1e-5


def generator() -> ModuleType:
    """``make_torch.py``, whose ``XNet`` is the model (one definition for the files and this check)."""
    spec = importlib.util.spec_from_file_location("xframe_make_torch", DATA / "make_torch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    make = generator()
    io = np.load(argv[1] if len(argv) == 2 else DATA / "keras_io.npz")
    state = torch.load(argv[0], weights_only=True, map_location="cpu")
    model = make.XNet()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        print(f"load_state_dict(strict=True) failed: {exc}", file=sys.stderr)
        return 1
    output = make.run_eval(model, io["image"], io["tokens"])
    diff = float(np.max(np.abs(output.astype(np.float64) - io["output"].astype(np.float64))))
    print(json.dumps({"ok": bool(diff <= TOLERANCE), "max_abs_diff": diff, "tolerance": TOLERANCE, "tensors": len(state)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
