"""Keras itself loads what the like-writer writes (skipped when Keras is not installed).

Run with Keras 3 on any backend; ``KERAS_BACKEND`` defaults to ``numpy`` here (no TensorFlow needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "numpy")
keras = pytest.importorskip("keras")

from ckptsurgeon.formats import open_checkpoint  # noqa: E402
from ckptsurgeon.formats.hdf5 import KerasZipWriter, Writer  # noqa: E402
from ckptsurgeon.tensors import TensorSpec  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    # Keras' numpy backend calls np.array() on its variables the pre-numpy-2 way.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]
CORPUS = Path(__file__).parent / "data" / "corpus"


def rewrite(src: Path, out: Path, cls: type = Writer, seed: int = 1) -> dict[str, np.ndarray]:
    """Write ``out`` like ``src`` with new random values; return them by tensor name."""
    rng = np.random.default_rng(seed)
    with open_checkpoint(src) as like:
        new = {}
        for t in like.tensors:
            old = like.read(t.name)
            if old.dtype.kind in "iub":
                new[t.name] = old  # counters (optimizer iterations) keep their value
            else:
                new[t.name] = rng.standard_normal(t.shape).astype(np.float32).astype(old.dtype)
        w = cls(out, metadata=like.metadata, like=like)
        w.begin([TensorSpec(t.name, t.shape, t.dtype) for t in like.tensors])
        for t in like.tensors:
            w.write(t.name, new[t.name])
        w.finish()
    return new


def values(weights: list[Any]) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(w.value)) for w in weights]


def build_keras3(bf16: bool = False) -> Any:
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="hidden"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="head", dtype="bfloat16" if bf16 else None),
        ]
    )
    model(np.zeros((1, 6), np.float32))
    return model


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bfloat16"])
def test_keras3_weights_h5_loads_new_values(tmp_path: Path, bf16: bool) -> None:
    original = build_keras3(bf16)
    original.save_weights(tmp_path / "orig.weights.h5")
    new = rewrite(tmp_path / "orig.weights.h5", tmp_path / "new.weights.h5")
    fresh = build_keras3(bf16)
    fresh.load_weights(tmp_path / "new.weights.h5")
    with open_checkpoint(tmp_path / "new.weights.h5") as r:
        assert r["layers/dense/vars/0"].layer == "hidden"
        assert r["layers/dense_1/vars/0"].dtype == ("BF16" if bf16 else "F32")
    # model.weights order: hidden kernel/bias, bn gamma/beta/moving mean/variance, head kernel/bias
    paths = [f"layers/dense/vars/{i}" for i in range(2)] + [f"layers/batch_normalization/vars/{i}" for i in range(4)] \
        + [f"layers/dense_1/vars/{i}" for i in range(2)]
    got = values(fresh.weights)
    assert [(str(a.dtype), a.tobytes()) for a in got] == [(str(new[p].dtype), new[p].tobytes()) for p in paths]
    assert not any(np.array_equal(a, b) for a, b in zip(got, values(original.weights), strict=True))


def build_legacy_mlp() -> Any:
    """The model of the corpus' tf_keras mlp files: Sequential MLP 20-32-16-4."""
    return keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(32), keras.layers.Dense(16), keras.layers.Dense(4)]
    )


@pytest.mark.parametrize("name", ["mlp_weights.h5", "mlp_full.h5"])
def test_legacy_h5_loads_new_values(tmp_path: Path, name: str) -> None:
    new = rewrite(CORPUS / "tf_keras" / name, tmp_path / name)
    model = build_legacy_mlp()
    model.load_weights(tmp_path / name)
    prefix = "model_weights/" if name == "mlp_full.h5" else ""
    expected = [new[f"{prefix}{layer}/{layer}/{w}:0"] for layer in ("dense", "dense_1", "dense_2") for w in ("kernel", "bias")]
    got = values(model.weights)
    assert [a.tobytes() for a in got] == [a.tobytes() for a in expected]


def test_keras_zip_loads_with_load_model(tmp_path: Path) -> None:
    new = rewrite(CORPUS / "keras3/mlp.keras", tmp_path / "mlp.keras", cls=KerasZipWriter)
    model = keras.models.load_model(tmp_path / "mlp.keras")
    expected = [new[f"layers/{layer}/vars/{i}"] for layer in ("dense", "dense_1", "dense_2") for i in (0, 1)]
    assert [a.tobytes() for a in values(model.weights)] == [a.tobytes() for a in expected]
