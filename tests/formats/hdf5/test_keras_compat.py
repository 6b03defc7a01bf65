"""Keras itself loads what the like-writer writes (skipped when Keras is not installed).

Run with Keras 3 on any backend; ``KERAS_BACKEND`` defaults to ``numpy`` here (no TensorFlow needed).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "numpy")
keras = pytest.importorskip("keras")

from ckptsurgeon import api  # noqa: E402
from ckptsurgeon.formats import open_checkpoint  # noqa: E402
from ckptsurgeon.formats.hdf5.archive import KerasZipWriter  # noqa: E402
from ckptsurgeon.formats.hdf5.writer import Writer  # noqa: E402
from ckptsurgeon.rules import Rules, apply_rules  # noqa: E402
from ckptsurgeon.tensors import TensorSpec  # noqa: E402

from ...conftest import CORPUS  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    # Keras' numpy backend calls np.array() on its variables the pre-numpy-2 way.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


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


# --- renamed layers ---------------------------------------------------------------------------

def build_legacy_cnn(conv_a: str = "conv_a") -> Any:
    """The model of the corpus' tf_keras cnn files, its first convolution named ``conv_a``."""
    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(6, 3, name=conv_a)(inp)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Activation("relu", name="act_a")(x)
    x = keras.layers.MaxPooling2D(name="pool_a")(x)
    x = keras.layers.Conv2D(12, 3, name="conv_b")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x))


def legacy_values(path: Path, prefix: str = "") -> dict[str, list[np.ndarray]]:
    """A legacy file's tensors by layer name, in weight_names order."""
    out: dict[str, list[np.ndarray]] = {}
    with open_checkpoint(path) as r:
        for t in r.tensors:
            if t.name.startswith(prefix) and t.layer != "optimizer":
                out.setdefault(t.layer, []).append(r.read(t.name))
    return out


def assert_layers_hold(model: Any, expected: dict[str, list[np.ndarray]], skip: tuple[str, ...] = ()) -> None:
    for layer in model.layers:
        if layer.weights and layer.name not in skip:
            got = values(layer.weights)
            assert [a.tobytes() for a in got] == [a.tobytes() for a in expected[layer.name]], layer.name


def rename_twice(src: Path, tmp_path: Path, suffix: str, rule: str, back: str) -> tuple[Path, Path]:
    """Rename by ``rule`` and back: with ``ckpt rename``, or for Keras 3 files (which it refuses) the like-writer."""
    mid, out = tmp_path / f"mid{suffix}", tmp_path / f"back{suffix}"
    for a, b, r in ((src, mid, rule), (mid, out, back)):
        with open_checkpoint(a) as like:
            keras3 = like.layout == "keras3-h5"
            renamed = apply_rules([t.name for t in like.tensors], Rules.from_options(rename=[r]))
            if keras3:
                w = (KerasZipWriter if suffix == ".keras" else Writer)(b, metadata=like.metadata, like=like)
                specs = [TensorSpec(renamed.mapping[t.name], t.shape, t.dtype) for t in like.tensors]
                w.begin(specs, origins={new: old for old, new in renamed.mapping.items() if old != new})
                for t, spec in zip(like.tensors, specs, strict=True):
                    w.write(spec.name, like.read(t.name))
                w.finish()
        if not keras3:
            api.rename(a, b, Rules.from_options(rename=[r]))
    return mid, out


@pytest.mark.parametrize("name", ["cnn_weights.h5", "cnn_full.h5"])
def test_legacy_renamed_layer_loads(tmp_path: Path, name: str) -> None:
    prefix = "model_weights/" if name == "cnn_full.h5" else ""
    mid, back = rename_twice(CORPUS / "tf_keras" / name, tmp_path, ".h5", r"conv_a/=>conv_x/", r"conv_x/=>conv_a/")
    original = legacy_values(CORPUS / "tf_keras" / name, prefix)

    model = build_legacy_cnn()  # renamed back: the original architecture loads it, by order and by name
    model.load_weights(back)
    assert_layers_hold(model, original)
    model = build_legacy_cnn()
    model.load_weights(back, by_name=True)
    assert_layers_hold(model, original)

    renamed = legacy_values(mid, prefix)  # the renamed file: its layer is conv_x now
    assert set(renamed) == set(original) - {"conv_a"} | {"conv_x"}
    model = build_legacy_cnn("conv_x")
    model.load_weights(mid, by_name=True)
    assert_layers_hold(model, renamed)
    assert [a.tobytes() for a in renamed["conv_x"]] == [a.tobytes() for a in original["conv_a"]]
    model = build_legacy_cnn()  # ... and no layer conv_a any more
    before = values(model.get_layer("conv_a").weights)
    model.load_weights(mid, by_name=True)
    assert_layers_hold(model, renamed, skip=("conv_a",))
    assert [a.tobytes() for a in values(model.get_layer("conv_a").weights)] == [a.tobytes() for a in before]
    if prefix:  # the full model: its configuration still names conv_a, its weights load by layer order
        for path in (mid, back):
            model = keras.models.load_model(path, compile=False)  # tf_keras' loss config is not Keras 3's
            assert_layers_hold(model, original)


# auto path of each layer's vars in the corpus' Keras 3 cnn files
KERAS3_CNN_PATHS = {"conv1": "conv2d", "bn1": "batch_normalization", "conv2": "conv2d_1", "classifier": "dense"}


def keras3_expected(path: Path) -> dict[str, list[np.ndarray]]:
    with open_checkpoint(path) as r:
        return {layer: [r.read(n) for n in sorted((t.name for t in r.tensors if t.name.startswith(f"layers/{auto}/vars/")),
                                                    key=lambda n: int(n.rpartition("/")[2]))]
                for layer, auto in KERAS3_CNN_PATHS.items()}


def test_keras3_weights_renamed_back_load(tmp_path: Path) -> None:
    mid, back = rename_twice(CORPUS / "keras3/cnn.weights.h5", tmp_path, ".weights.h5",
                             r"^layers/conv2d/=>layers/conv_x/", r"^layers/conv_x/=>layers/conv2d/")
    with open_checkpoint(mid) as r:
        assert r["layers/conv_x/vars/0"].layer == "conv1"
    model = keras.models.load_model(CORPUS / "keras3/cnn.keras")
    with warnings.catch_warnings(), pytest.raises(ValueError, match="conv1"):  # why ckpt rename refuses it
        warnings.simplefilter("ignore")  # Keras also warns of the group it does not find
        model.load_weights(mid)
    model = keras.models.load_model(CORPUS / "keras3/cnn.keras")
    model.load_weights(back)
    assert_layers_hold(model, keras3_expected(CORPUS / "keras3/cnn.weights.h5"))


def test_keras_zip_renamed_back_loads_with_load_model(tmp_path: Path) -> None:
    _, back = rename_twice(CORPUS / "keras3/cnn.keras", tmp_path, ".keras",
                           r"^layers/conv2d/=>layers/conv_x/", r"^layers/conv_x/=>layers/conv2d/")
    model = keras.models.load_model(back)
    assert_layers_hold(model, keras3_expected(CORPUS / "keras3/cnn.keras"))


# --- transfers into Keras files ---------------------------------------------------------------

def build_transfer_target() -> Any:
    """The model of tf_keras/transfer_cnn_target.h5, its layers and shapes as that file lists them."""
    inp = keras.Input((28, 28, 1), name="input_1")
    x = keras.layers.Conv2D(8, 3, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, name="conv2_ft")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(32, name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(5, name="classifier")(x))


def test_tf_keras_transfer_pair_loads(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    report = api.transfer(CORPUS / "tf_keras/transfer_cnn_pretrained.h5", CORPUS / "tf_keras/transfer_cnn_target.h5", out)
    assert report.summary["replaced_tensors"] == 8
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    pair = next(p for p in manifest["transfer_pairs"] if p["name"] == "transfer_cnn")
    with open_checkpoint(out) as r:
        for outcome in pair["target_outcome"]:
            layer = outcome["target_tensor"].partition("/")[0]
            assert r.sha256(f"{layer}/{outcome['target_tensor']}") == outcome["result_sha256"]
    expected = legacy_values(out)
    for by_name in (False, True):
        model = build_transfer_target()
        model.load_weights(out, by_name=by_name)
        assert_layers_hold(model, expected)


def test_transfer_into_a_keras_archive_loads_with_load_model(tmp_path: Path) -> None:
    source = tmp_path / "source.weights.h5"
    new = rewrite(CORPUS / "keras3/cnn.weights.h5", source, seed=7)
    out = tmp_path / "out.keras"
    report = api.transfer(source, CORPUS / "keras3/cnn.keras", out)
    assert report.summary["replaced_tensors"] == len(new)
    model = keras.models.load_model(out)
    expected = {layer: [new[f"layers/{auto}/vars/{i}"] for i in range(len(model.get_layer(layer).weights))]
                for layer, auto in KERAS3_CNN_PATHS.items()}
    assert_layers_hold(model, expected)
    original = keras.models.load_model(CORPUS / "keras3/cnn.keras")
    assert not np.array_equal(values(model.get_layer("conv1").weights)[0], values(original.get_layer("conv1").weights)[0])
