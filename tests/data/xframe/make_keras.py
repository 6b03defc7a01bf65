"""Write the Keras 3 files of this folder with real Keras (3.15, JAX backend), and their entries in EXPECTED.json.

    KERAS_BACKEND=jax /work/venv-keras/bin/python tests/data/xframe/make_keras.py

Run it before ``make_torch.py``, which takes its inputs from ``keras_io.npz``. Written:

- ``keras_cnn.weights.h5``: :func:`cnn` (two inputs, channels_last) trained for a few SGD steps on
  random data with a fixed seed, so that the BatchNormalization moving statistics are not their
  initial zeros and ones; saved from an uncompiled copy, so the file holds the layers' variables only
  (no ``optimizer`` group). Keras 3 names DepthwiseConv2D's kernel ``dw/kernel`` (tf-keras:
  ``depthwise_kernel``), shape (kh, kw, in, multiplier).
- ``keras_io.npz``: ``image`` (N, 8, 8, 3) float32 (NHWC), ``tokens`` (N, 5) int32, and ``output``
  (N, 3) float32, the trained model's inference-mode output on them.
- ``keras_cnn_init.weights.h5``: the same architecture, untrained (another seed).
- ``keras_dense16.weights.h5``: :func:`dense16`, a single Dense(16 -> 16) named ``fc``: a square kernel.

The layers are named like the PyTorch modules of ``make_torch.py`` (``conv1``, ``bn1``, ``dw``,
``bn2``, ``emb``, ``proj``, ``ln``, ``fc``), so that ``conv1/kernel`` and ``conv1.weight`` differ only
in the variable's name and layout. The checks in ``tests/transforms`` import :func:`cnn`,
:func:`dense16` and :data:`HERE` from this module (importing it writes nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

import keras  # noqa: E402

HERE = Path(__file__).resolve().parent
IMAGE = (8, 8, 3)  # H, W, C (channels_last)
TOKENS = 5
VOCAB = 20
EMBED = 6
CONV = 4  # conv1's filters
MULT = 2  # dw's depth multiplier: bn2 has CONV * MULT channels
HIDDEN = 8  # proj's units
CLASSES = 3
EPS = 1e-3  # Keras's default epsilon of BatchNormalization and LayerNormalization
MOMENTUM = 0.5  # moving = MOMENTUM * moving + (1 - MOMENTUM) * batch: moves well away from 0 and 1
BATCH = 4  # the rows of keras_io.npz


def cnn(seed: int) -> keras.Model:
    """Image branch: conv1 (Conv2D 3x3 valid) -> bn1 -> ReLU -> dw (DepthwiseConv2D 3x3 valid, x2) -> bn2 ->
    global average; token branch: emb (Embedding 20 x 6) -> mean over tokens -> proj (Dense 8) -> ln;
    concatenated (image first) -> fc (Dense 3)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(IMAGE, name="image")
    x = keras.layers.Conv2D(CONV, 3, padding="valid", name="conv1")(image)
    x = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS, name="bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=MULT, name="dw")(x)
    x = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS, name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    tokens = keras.Input((TOKENS,), dtype="int32", name="tokens")
    t = keras.layers.Embedding(VOCAB, EMBED, name="emb")(tokens)
    t = keras.layers.GlobalAveragePooling1D(name="token_mean")(t)
    t = keras.layers.Dense(HIDDEN, name="proj")(t)
    t = keras.layers.LayerNormalization(epsilon=EPS, name="ln")(t)
    both = keras.layers.Concatenate(name="cat")([x, t])
    out = keras.layers.Dense(CLASSES, name="fc")(both)
    return keras.Model([image, tokens], out, name="xnet")


def dense16(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((16,), name="x")
    return keras.Model(x, keras.layers.Dense(16, name="fc")(x), name="dense16")


def io_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The fixed inputs of keras_io.npz (make_torch.py reads them from there)."""
    rng = np.random.default_rng(20)
    image = rng.standard_normal((BATCH, *IMAGE)).astype(np.float32)
    tokens = rng.integers(0, VOCAB, (BATCH, TOKENS)).astype(np.int32)
    return image, tokens


def train(model: keras.Model, seed: int, steps: int = 6, batch: int = 8) -> None:
    rng = np.random.default_rng(seed)
    n = steps * batch
    image = rng.standard_normal((n, *IMAGE)).astype(np.float32) * 2 + 0.5
    tokens = rng.integers(0, VOCAB, (n, TOKENS)).astype(np.int32)
    target = rng.standard_normal((n, CLASSES)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit([image, tokens], target, batch_size=batch, epochs=1, shuffle=False, verbose=0)


def variables_in_file_order(layer: keras.layers.Layer) -> list[keras.Variable]:
    """A layer's variables in the order Keras stores them (``vars/0``, ``vars/1``, ...)."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def expected_entry(model: keras.Model, path: Path) -> dict[str, object]:
    """Each tensor of ``path`` (as stored: ``layers/<group>/vars/<i>``) with the Keras path of its variable;
    the values are Keras's, checked against what h5py reads from the file."""
    import hashlib

    import h5py

    by_layer = {layer.name: variables_in_file_order(layer) for layer in model.layers}
    tensors: list[dict[str, object]] = []
    with h5py.File(path, "r") as f:
        for group in sorted(f["layers"]):
            vars_ = f["layers"][group]["vars"]
            variables = by_layer[vars_.attrs["name"]]
            assert len(vars_) == len(variables), (group, len(vars_), len(variables))
            for i, v in enumerate(variables):
                value = np.ascontiguousarray(keras.ops.convert_to_numpy(v.value))
                stored = vars_[str(i)][()]
                assert stored.shape == value.shape and stored.tobytes() == value.tobytes(), (group, i, v.path)
                tensors.append({"name": f"layers/{group}/vars/{i}", "keras": v.path, "shape": list(value.shape),
                                "dtype": str(value.dtype), "sha256": hashlib.sha256(value.tobytes()).hexdigest()})
    return {"writer": "keras.Model.save_weights", "tensors": tensors}


def main() -> None:
    import sys

    import h5py
    import jax

    files: dict[str, dict[str, object]] = {}

    trained = cnn(seed=1)
    train(trained, seed=2)
    model = cnn(seed=1)  # not compiled: save_weights of a compiled model also stores the optimizer's variables
    model.set_weights(trained.get_weights())
    model.save_weights(HERE / "keras_cnn.weights.h5")
    files["keras_cnn.weights.h5"] = expected_entry(model, HERE / "keras_cnn.weights.h5")
    image, tokens = io_inputs()
    output = np.asarray(model([image, tokens], training=False), dtype=np.float32)
    np.savez(HERE / "keras_io.npz", image=image, tokens=tokens, output=output)

    init = cnn(seed=3)
    init.save_weights(HERE / "keras_cnn_init.weights.h5")
    files["keras_cnn_init.weights.h5"] = expected_entry(init, HERE / "keras_cnn_init.weights.h5")

    square = dense16(seed=4)
    square.save_weights(HERE / "keras_dense16.weights.h5")
    files["keras_dense16.weights.h5"] = expected_entry(square, HERE / "keras_dense16.weights.h5")

    versions = {"python": sys.version.split()[0], "keras": keras.__version__, "keras_backend": keras.backend.backend(),
                "jax": jax.__version__, "numpy": np.__version__, "h5py": h5py.__version__}
    update_expected(files, {"keras": versions})


def update_expected(files: dict[str, dict[str, object]], versions: dict[str, dict[str, str]]) -> None:
    """Merge this generator's files and library versions into EXPECTED.json (the other generator keeps its own)."""
    import json

    path = HERE / "EXPECTED.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["about"] = ("Ground truth of the files here, from the libraries that wrote them: each tensor's name as "
                    "stored, shape, dtype and the sha256 of its C-order bytes; 'keras' is a Keras variable's path. "
                    "Written by make_keras.py and make_torch.py.")
    doc.setdefault("versions", {}).update(versions)
    doc.setdefault("files", {}).update(files)
    doc["files"] = dict(sorted(doc["files"].items()))
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
