"""Write the Keras 3 files of this folder with real Keras (run with a Python that has Keras 3).

    KERAS_BACKEND=numpy python tests/data/keras3_names/make.py

Model a: enc, proj, head (Dense 32, 32, 10). Model c: enc, adapter_new, proj, head (Dense 32, 32,
32, 4): a layer inserted before proj, and a head for another class count. Keras 3 names the
weight-file groups by class and position (``layers/dense``, ``layers/dense_1``, ...), so a's proj
is ``layers/dense_1`` and c's proj ``layers/dense_2``; the layer names live in the ``vars``
groups' ``name`` attributes only. Written: ``a.weights.h5``, ``c.weights.h5``, ``c.keras``, and
``stem.weights.h5`` (Embedding, LayerNormalization, Conv2D, BatchNormalization, a Dense without
bias) for the names derived from the class of each group.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "numpy")

import keras  # noqa: E402

HERE = Path(__file__).resolve().parent
INPUT_DIM = 6


def mlp(layers: list[tuple[str, int]], seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((INPUT_DIM,), name="x")
    for name, units in layers:
        x = keras.layers.Dense(units, name=name)(x)
    return keras.Model(inputs, x, name="model")


def stem(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    e = keras.layers.Embedding(11, 4, name="emb")(tokens)
    e = keras.layers.LayerNormalization(name="ln")(e)
    image = keras.Input((6, 6, 1), name="image")
    y = keras.layers.Conv2D(3, 3, name="stem_conv")(image)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.Flatten()(y)
    z = keras.layers.Concatenate()([y, keras.layers.Flatten()(e)])
    out = keras.layers.Dense(2, name="out", use_bias=False)(z)
    return keras.Model([tokens, image], out, name="stem")


def main() -> None:
    a = mlp([("enc", 32), ("proj", 32), ("head", 10)], seed=1)
    c = mlp([("enc", 32), ("adapter_new", 32), ("proj", 32), ("head", 4)], seed=2)
    a.save_weights(HERE / "a.weights.h5")
    c.save_weights(HERE / "c.weights.h5")
    c.save(HERE / "c.keras")
    stem(seed=3).save_weights(HERE / "stem.weights.h5")


if __name__ == "__main__":
    main()
