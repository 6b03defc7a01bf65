"""Checks of TensorFlow checkpoints with the real TensorFlow library, run in a subprocess.

    python tf_check.py load PREFIX
        tf.train.load_checkpoint(PREFIX); for every key of get_variable_to_dtype_map(), sorted, prints
        {"ok": true, "tensors": [{"name", "dtype", "shape", "sha256"}...]} with dtype as a ckptsurgeon
        code (F16, BF16, F32, F64, I8..I64, U8..U64, BOOL; "STRING" for tf.string, "tf:<name>" for any
        other TF dtype) and sha256 over get_tensor(key)'s raw little-endian C-order bytes. bfloat16 comes
        back as an ml_dtypes array, so its bytes are the exact 2-byte patterns. For a STRING entry the
        sha256 is over its bytes (elements joined, C order): the object graph proto or the variable's value.
        A key get_tensor() refuses (TF 2.21: a *sliced* float16 tensor, "Dtype half not supported") is
        listed with "sha256": null and "error" instead of failing the command.
    python tf_check.py restore PREFIX MODEL
        rebuilds MODEL (below), tf.train.Checkpoint(**objects).restore(PREFIX), requires
        assert_existing_objects_matched() and assert_consumed() (both hold on every corpus file); prints
        {"ok": true, "variables": {variable.name: sha256 of the restored value's bytes}}.

MODEL names the corpus object-based checkpoint whose trackable structure is rebuilt:
    tf_checkpoint      Checkpoint(model=tf_keras Sequential Dense(8) on 12 inputs -> Dense(3),
                       step=int64 Variable).
    tf2_obj            Checkpoint(model=tf_keras Sequential Conv2D(4, 3x3, valid) -> BatchNormalization ->
                       ReLU -> Flatten -> Dense(6) on 8x8x1 inputs, optimizer=tf_keras legacy Adam); the
                       optimizer's slots and hyperparameters are created (_create_all_weights) before the
                       restore (so every key is consumed); Adam's iter, m/v slots and
                       hyperparameter variables (beta_1, beta_2, decay, learning_rate) are reported.
    tf2_mixed_dtypes   Checkpoint(mixed=tf.Module with w_f16 [12,4] f16, w_bf16 [3,5] bf16, step_i64 [] i64,
                       ids_i64 [4] i64, desc string).
    tf2_sharded_mixed  Checkpoint(mixed=tf.Module with w_f32 [16,8] f32, w_bf16 [10,6] bf16 (sliced across
                       the shards), counter_i64 [5] i64, flags_bool [7] bool, label string).
Every model also reports the Checkpoint's own save_counter. Model/module variables and Adam slots start
as zeros (strings empty), so those values come from the restore; Adam's hyperparameters start at their
defaults, which the corpus file also holds.

Prints one JSON line on stdout (anything TensorFlow writes to stdout is sent to stderr); exits 1 with
the reason on stderr. Uses tensorflow, tf_keras and numpy only, never ckptsurgeon. Run with the
TensorFlow interpreter, e.g. $CKPT_TF_PYTHON (tensorflow-cpu 2.21, tf_keras 2.21).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_OUT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # keep stdout for the one JSON line

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CODES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int8": "I8",
         "int16": "I16", "int32": "I32", "int64": "I64", "uint8": "U8", "uint16": "U16",
         "uint32": "U32", "uint64": "U64", "bool": "BOOL", "string": "STRING"}


def code(dtype: tf.DType) -> str:
    return CODES.get(dtype.name, "tf:" + dtype.name)


def sha(value) -> str:
    """sha256 of a value's raw bytes: bytes/str as is, string arrays joined, numbers little-endian C order."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    arr = np.asarray(value)
    if arr.dtype == object:
        return hashlib.sha256(b"".join(v if isinstance(v, bytes) else str(v).encode()
                                       for v in arr.ravel())).hexdigest()
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def load(prefix: str) -> dict:
    reader = tf.train.load_checkpoint(prefix)
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    tensors = []
    for name in sorted(dtypes):
        entry = {"name": name, "dtype": code(dtypes[name]), "shape": [int(d) for d in shapes[name]]}
        try:
            entry["sha256"] = sha(reader.get_tensor(name))
        except Exception as exc:  # TF 2.21: sliced float16 -> "Dtype half not supported"
            entry.update(sha256=None, error=f"{type(exc).__name__}: {exc}".strip())
        tensors.append(entry)
    return {"ok": True, "tensors": tensors}


def module(specs) -> tf.Module:
    """A tf.Module holding one zero-valued tf.Variable per (attribute, dtype, shape)."""
    mod = tf.Module()
    for attr, dtype, shape in specs:
        init = tf.constant("") if dtype == tf.string else tf.zeros(shape, dtype)
        setattr(mod, attr, tf.Variable(init, name=attr))
    return mod


def build(model: str):
    """Returns (Checkpoint objects, variables to report)."""
    if model in ("tf_checkpoint", "tf2_obj"):
        import tf_keras as keras
        L = keras.layers
        if model == "tf_checkpoint":
            net = keras.Sequential([keras.Input((12,)), L.Dense(8), L.Dense(3)])
            step = tf.Variable(tf.constant(0, tf.int64), name="step")
            objects, extra = {"model": net, "step": step}, [step]
        else:
            net = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3), L.BatchNormalization(),
                                    L.ReLU(), L.Flatten(), L.Dense(6)])
            opt = keras.optimizers.legacy.Adam()
            opt._create_all_weights(net.trainable_variables)  # slots + iter + hyperparameters
            hypers = [h for h in opt._hyper.values() if isinstance(h, tf.Variable)]
            objects, extra = {"model": net, "optimizer": opt}, opt.variables() + hypers
        for v in net.variables:
            v.assign(tf.zeros_like(v))
        return objects, list(net.variables) + list(extra)
    specs = {
        "tf2_mixed_dtypes": [("w_f16", tf.float16, [12, 4]), ("w_bf16", tf.bfloat16, [3, 5]),
                             ("step_i64", tf.int64, []), ("ids_i64", tf.int64, [4]),
                             ("desc", tf.string, [])],
        "tf2_sharded_mixed": [("w_f32", tf.float32, [16, 8]), ("w_bf16", tf.bfloat16, [10, 6]),
                              ("counter_i64", tf.int64, [5]), ("flags_bool", tf.bool, [7]),
                              ("label", tf.string, [])],
    }
    if model not in specs:
        raise ValueError(f"unknown MODEL {model!r}")
    mod = module(specs[model])
    return {"mixed": mod}, [getattr(mod, a) for a, _, _ in specs[model]]


def restore(prefix: str, model: str) -> dict:
    objects, variables = build(model)
    ckpt = tf.train.Checkpoint(**objects)
    status = ckpt.restore(prefix)
    status.assert_existing_objects_matched()
    status.assert_consumed()
    out = {}
    for v in [*variables, ckpt.save_counter]:
        if v.name in out:
            raise RuntimeError(f"two variables named {v.name}")
        out[v.name] = sha(v)
    return {"ok": True, "variables": out}


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "load":
            result = load(argv[1])
        elif len(argv) == 3 and argv[0] == "restore":
            result = restore(argv[1], argv[2])
        else:
            raise ValueError("usage: tf_check.py load PREFIX | restore PREFIX MODEL")
    except Exception as exc:
        print(f"tf_check: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        os._exit(1)  # skip TF's exit-time warnings, so the reason stays the last stderr line
    _OUT.write(json.dumps(result) + "\n")
    _OUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
