"""Make a small sharded Keras 3 weights checkpoint and its expected.json.

Run by hand (it is not run by the test suite), with Keras 3.15.1 and its
numpy backend (which also needs scipy and jax installed), h5py and numpy:

    KERAS_BACKEND=numpy python make_keras_sharded_str.py OUTDIR

It writes into OUTDIR:

* ``model.weights.json`` and ``model_00000.weights.h5`` ...
  ``model_00002.weights.h5``, made by
  ``model.save_weights("model.weights.json", max_shard_size=MAX_SHARD_SIZE_GB)``.
  Keras's ``ShardedH5IOStore.__setitem__`` (keras/src/saving/saving_lib.py)
  records a layer's vars group in ``weight_map`` as a plain string when the
  layer's first variable is stored, and turns it into a list when a further
  variable of the same layer is stored.  So the single-variable layers
  (Conv2D and the last Dense, both without bias) are mapped to a string,
  the BatchNormalization layer (split across two shards) to a list of two
  shard names, and the first Dense layer to a list of one shard name.
* ``expected.json``: the Keras version and backend, every dataset in every
  shard as read by h5py (shard file name, dataset path, shape, dtype, and the
  sha256 of its raw little-endian C-order bytes), and the result of loading
  the checkpoint back into a freshly built model with ``model.load_weights``
  and comparing every weight with ``np.array_equal``.

Weights are drawn from a seeded numpy generator, so the tensor data (and hence
expected.json) is the same on every run.
"""

import glob
import hashlib
import json
import os
import sys

import h5py
import numpy as np

import keras

BASE = "model"
# In GB, as Keras takes it: 4.4e-7 GB is about 472 bytes per shard.
MAX_SHARD_SIZE_GB = 4.4e-7
SEED = 20240601


def build_model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(16, activation="relu", name="dense"),
            keras.layers.Dense(3, use_bias=False, name="head"),
        ]
    )


def le_bytes(arr):
    arr = np.asarray(arr)
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    for old in glob.glob(os.path.join(outdir, BASE + "*.weights.*")):
        os.remove(old)

    keras.utils.set_random_seed(SEED)
    model = build_model()
    rng = np.random.default_rng(SEED)
    values = []
    for v in model.weights:
        a = rng.standard_normal(tuple(v.shape)).astype("float32")
        if v.path.endswith("moving_variance"):
            a = np.abs(a) + np.float32(0.5)
        values.append(a)
    model.set_weights(values)

    index_path = os.path.join(outdir, BASE + ".weights.json")
    model.save_weights(index_path, max_shard_size=MAX_SHARD_SIZE_GB)

    with open(index_path) as f:
        index = json.load(f)
    kinds = {k: type(v).__name__ for k, v in index["weight_map"].items()}
    if "str" not in kinds.values() or "list" not in kinds.values():
        raise SystemExit(f"weight_map lacks a str or a list value: {kinds}")

    # Load back into a freshly built model with different initial weights.
    keras.utils.set_random_seed(SEED + 1)
    model2 = build_model()
    model2.load_weights(index_path)
    compared = []
    all_equal = True
    for saved, loaded in zip(model.weights, model2.weights):
        eq = bool(np.array_equal(np.asarray(saved.numpy()), np.asarray(loaded.numpy())))
        all_equal = all_equal and eq
        compared.append({"variable": saved.path, "equal": eq})
    all_equal = all_equal and len(model.weights) == len(model2.weights)

    datasets = []
    shard_files = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(outdir, BASE + "_*.weights.h5"))
    )
    for shard in shard_files:
        with h5py.File(os.path.join(outdir, shard), "r") as h5:
            def visit(name, obj, shard=shard):
                if isinstance(obj, h5py.Dataset):
                    arr = obj[()]
                    datasets.append(
                        {
                            "shard": shard,
                            "path": "/" + name,
                            "shape": list(arr.shape),
                            "dtype": arr.dtype.newbyteorder("<").str,
                            "sha256": hashlib.sha256(le_bytes(arr)).hexdigest(),
                        }
                    )

            h5.visititems(visit)

    expected = {
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "h5py_version": h5py.__version__,
        "index": os.path.basename(index_path),
        "max_shard_size_gb": MAX_SHARD_SIZE_GB,
        "shards": shard_files,
        "weight_map_value_types": kinds,
        "datasets": datasets,
        "load_back": {
            "ok": all_equal,
            "weights_compared": len(compared),
            "variables": compared,
        },
    }
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    print("OK" if all_equal else "MISMATCH")
    return 0 if all_equal else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_keras_sharded_str.py OUTDIR")
    sys.exit(main(sys.argv[1]))
