"""Shared by the tests on the real files of ``tests/data/xframe`` (see ``make_keras.py`` and ``make_torch.py`` there).

- :func:`tensors` reads a checkpoint with ckptsurgeon's own readers, by the names transfer pairs
  (a Keras 3 variable by its Keras path, ``conv1/kernel``; anything else by its stored name);
- :func:`keras_to_torch` / :func:`torch_to_keras`: the layouts each framework expects, by hand with
  numpy (Dense (in, out) <-> (out, in); Conv2D HWIO <-> OIHW; DepthwiseConv2D (kh, kw, in, mult) <->
  (in * mult, 1, kh, kw); BatchNormalization, LayerNormalization and Embedding values as they are);
- :func:`torch_check` / :func:`keras_check` run ``torch_xframe_check.py`` / ``keras_xframe_check.py``
  in the interpreter ``CKPT_TORCH_PYTHON`` / ``CKPT_KERAS_PYTHON`` names (or this one, if it has
  the framework); without one the test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon.formats import open_checkpoint

from ..conftest import DATA as ALL_DATA

DATA = ALL_DATA / "xframe"
HERE = Path(__file__).resolve().parent
TORCH_CHECK = HERE / "torch_xframe_check.py"
KERAS_CHECK = HERE / "keras_xframe_check.py"
NORMS = ("bn1", "bn2")
DENSE = ("proj", "fc")


def tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``path`` in stored order, keyed by the name transfer matches it by."""
    with open_checkpoint(path) as r:
        return {r.match_names.get(t.name, t.name): r.read(t.name) for t in r.tensors}


def match_names(path: Path) -> dict[str, str]:
    """Stored name -> the name transfer matches by (a Keras 3 variable's Keras path), for every renamed tensor."""
    with open_checkpoint(path) as r:
        return dict(r.match_names)


def depthwise_to_torch(kernel: np.ndarray) -> np.ndarray:
    kh, kw, cin, mult = kernel.shape
    return kernel.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]


def depthwise_to_keras(weight: np.ndarray, cin: int) -> np.ndarray:
    out, _, kh, kw = weight.shape
    return weight[:, 0].transpose(1, 2, 0).reshape(kh, kw, cin, out // cin)


def keras_to_torch(k: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch state dict (without ``num_batches_tracked``) holding the Keras model's values."""
    t = {"conv1.weight": k["conv1/kernel"].transpose(3, 2, 0, 1), "conv1.bias": k["conv1/bias"],
         "dw.weight": depthwise_to_torch(k["dw/kernel"]), "dw.bias": k["dw/bias"],
         "emb.weight": k["emb/embeddings"], "ln.weight": k["ln/gamma"], "ln.bias": k["ln/beta"]}
    for bn in NORMS:
        t |= {f"{bn}.weight": k[f"{bn}/gamma"], f"{bn}.bias": k[f"{bn}/beta"],
              f"{bn}.running_mean": k[f"{bn}/moving_mean"], f"{bn}.running_var": k[f"{bn}/moving_variance"]}
    for d in DENSE:
        t |= {f"{d}.weight": k[f"{d}/kernel"].T, f"{d}.bias": k[f"{d}/bias"]}
    return t


def torch_to_keras(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Keras variables (by Keras path) holding the PyTorch model's values."""
    k = {"conv1/kernel": t["conv1.weight"].transpose(2, 3, 1, 0), "conv1/bias": t["conv1.bias"],
         "dw/kernel": depthwise_to_keras(t["dw.weight"], cin=t["conv1.weight"].shape[0]), "dw/bias": t["dw.bias"],
         "emb/embeddings": t["emb.weight"], "ln/gamma": t["ln.weight"], "ln/beta": t["ln.bias"]}
    for bn in NORMS:
        k |= {f"{bn}/gamma": t[f"{bn}.weight"], f"{bn}/beta": t[f"{bn}.bias"],
              f"{bn}/moving_mean": t[f"{bn}.running_mean"], f"{bn}/moving_variance": t[f"{bn}.running_var"]}
    for d in DENSE:
        k |= {f"{d}/kernel": t[f"{d}.weight"].T, f"{d}/bias": t[f"{d}.bias"]}
    return k


def framework_python(module: str, variable: str) -> str:
    """An interpreter that has ``module``: this one, or the one ``variable`` names; else the test is skipped."""
    if importlib.util.find_spec(module) is not None:
        return sys.executable
    other = os.environ.get(variable)
    if other and Path(other).is_file():
        return other
    pytest.skip(f"{module} is not installed here (set {variable} to an interpreter that has {module})")


def _run(python: str, script: Path, *args: Path, **env: str) -> dict[str, object]:
    done = subprocess.run([python, str(script), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **env))
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def torch_python() -> str:
    return framework_python("torch", "CKPT_TORCH_PYTHON")


def keras_python() -> str:
    return framework_python("keras", "CKPT_KERAS_PYTHON")


def torch_check(python: str, state: Path, io: Path = DATA / "keras_io.npz") -> dict[str, object]:
    """``load_state_dict(strict=True)`` of ``state`` into the PyTorch model; its output against ``io``'s."""
    return _run(python, TORCH_CHECK, state, io)


def keras_check(python: str, weights: Path, io: Path = DATA / "torch_io.npz") -> dict[str, object]:
    """``load_weights`` of ``weights`` into the Keras model (JAX backend); its output against ``io``'s."""
    return _run(python, KERAS_CHECK, weights, io, KERAS_BACKEND="jax")
