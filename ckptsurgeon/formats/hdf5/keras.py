"""Keras conventions in HDF5 weight files: which file is which, the order of its tensors, their layers.

Legacy Keras (tf-keras / Keras 2) files have a root attribute ``layer_names`` and a
``weight_names`` attribute per layer group, or the same under ``model_weights`` in a full-model
file (whose ``optimizer_weights`` group is listed too); Keras splits a long list attribute into
``name0``, ``name1``, ..., read here as one list. Their tensors come in ``layer_names`` /
``weight_names`` order, then optimizer weights, then anything else. Keras 3 ``.weights.h5`` files
hold ``layers/<auto name>/vars/<i>``: a ``vars`` group with a ``name`` attribute per layer.

A tensor's layer is the Keras layer name: the ``layer_names`` entry in legacy files; the ``name``
attribute of the ``vars`` group in Keras 3 files, joined with ``/`` to the names of the enclosing
layers for nested layers (``encoder/dense``); the model's own name for the model's top-level
``vars``. Optimizer state (``optimizer_weights/...``, ``optimizer/...``) always has the layer
``"optimizer"``.

A Keras 3 layer variable also has the name Keras gives it (:func:`keras3_variable_names`): the
layer name and, where the layer's class is known, the variable's own name (``proj/kernel``,
``stem_bn/moving_mean``), else its index (``proj/vars/0``). Keras 3 names a layer's group after
its class and position (``layers/dense_2``), so that path says which class the layer is (for
Keras' own layers) but not which layer: two models with a layer inserted have the same paths
for different layers. The class comes from the ``.keras`` archive's ``config.json`` where there
is one (which also says ``use_bias``, ``center``, ``scale``), else from the group name, and is
trusted only when the number, shapes and dtypes of the saved variables fit it.

A file's metadata is its scalar string and number root attributes; Keras model and training
configurations (``model_config``, ``training_config``) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckptsurgeon.formats.hdf5._h5 import (
    DIGITS,
    DatasetInfo,
    Tree,
    h5py,
    is_utf8,
    join_path,
    parent_path,
    scalar_text,
    string_list,
)

# Root attributes that are Keras model / training configurations, not metadata about the weights.
CONFIG_ATTRS = frozenset({"model_config", "training_config"})
MAX_METADATA_CHARS = 65536
OPTIMIZER_LAYER = "optimizer"
WEIGHT_NAMES = re.compile(r"weight_names\d*")


def _list_attr(obj: Any, name: str) -> list[str]:
    """A Keras list attribute, also when Keras split it into ``name0``, ``name1``, ... chunks."""
    attrs = obj.attrs
    if name in attrs:
        return string_list(attrs[name])
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(string_list(attrs[f"{name}{i}"]))
        i += 1
    return out


def _has_list_attr(obj: Any, name: str) -> bool:
    return name in obj.attrs or f"{name}0" in obj.attrs


def legacy_root(f: h5py.File, tree: Tree) -> str | None:
    """The group prefix of a legacy Keras weights tree ("" or "model_weights/"), or None."""
    if _has_list_attr(f, "layer_names"):
        return ""
    if "model_weights" in tree.groups and _has_list_attr(f["model_weights"], "layer_names"):
        return "model_weights/"
    return None


def is_keras3(tree: Tree) -> bool:
    return "vars" in tree.vars_names or any(
        g.startswith("layers/") and g.endswith("/vars") for g in tree.groups
    )


def keras3_layer(path: str, vars_names: Mapping[str, str]) -> str:
    group = parent_path(path)
    if path.startswith("optimizer/"):
        return OPTIMIZER_LAYER
    if group == "vars":
        return vars_names.get("vars", "")
    if not group.endswith("/vars"):
        return group
    owner = group[: -len("/vars")]
    parts = owner.split("/")
    names = [vars_names[p + "/vars"] for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p + "/vars" in vars_names]
    names.append(vars_names.get(group, parts[-1]))
    return "/".join(names)


# Keras 3's own layers: the variables ``save_own_variables`` writes, in order (trainable ones in
# build() order, then the others), for each choice of the flags that add or drop some. Read from
# keras/src/layers (Keras 3.15): Dense and the convolutions save kernel then bias (when use_bias);
# BatchNormalization gamma (scale), beta (center), moving_mean, moving_variance;
# LayerNormalization gamma (scale), beta (center); Embedding embeddings.
_KERNEL_BIAS = (("kernel", "bias"), ("kernel",))
_SEPARABLE = (("depthwise_kernel", "pointwise_kernel", "bias"), ("depthwise_kernel", "pointwise_kernel"))
KERAS3_VARIABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "dense": _KERNEL_BIAS,
    **{f"conv{n}d": _KERNEL_BIAS for n in (1, 2, 3)},
    **{f"conv{n}d_transpose": _KERNEL_BIAS for n in (1, 2, 3)},
    **{f"depthwise_conv{n}d": _KERNEL_BIAS for n in (1, 2)},
    **{f"separable_conv{n}d": _SEPARABLE for n in (1, 2)},
    "batch_normalization": (
        ("gamma", "beta", "moving_mean", "moving_variance"), ("gamma", "moving_mean", "moving_variance"),
        ("beta", "moving_mean", "moving_variance"), ("moving_mean", "moving_variance"),
    ),
    "layer_normalization": (("gamma", "beta"), ("gamma",), ("beta",)),
    "embedding": (("embeddings",),),
}
_FLOAT_CODES = frozenset({"F16", "BF16", "F32", "F64"})
_COUNTER = re.compile(r"(.+?)(?:_\d+)?")


@dataclass(frozen=True)
class LayerConfig:
    """What a ``.keras`` archive's config.json says of one layer: its class (snake case) and flags."""

    kind: str
    use_bias: bool = True
    center: bool = True
    scale: bool = True


def _snake(name: str) -> str:
    """Keras' ``to_snake_case`` of a class name (``Conv2DTranspose`` -> ``conv2d_transpose``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name if name[:1] != "_" else "private" + name


def layer_configs(config: Any) -> dict[str, LayerConfig]:
    """Layer name -> :class:`LayerConfig` for Keras' own layers in a parsed config.json.

    Custom classes are left out (their variables are not known), and so is a name that two layers
    of nested models share (which of them a weights group is cannot be told by the name).
    """
    found: dict[str, LayerConfig | None] = {}
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        cfg, cls = node.get("config"), node.get("class_name")
        if isinstance(cfg, dict) and isinstance(cls, str) and isinstance(cfg.get("name"), str):
            own = node.get("module") in ("keras.layers", None) and node.get("registered_name") in (None, cls)
            entry = LayerConfig(_snake(cls), *(cfg.get(k) is not False for k in ("use_bias", "center", "scale")))
            name = cfg["name"]
            found[name] = None if name in found else (entry if own else LayerConfig(""))
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return {name: entry for name, entry in found.items() if entry is not None}


def _configured(entry: LayerConfig) -> tuple[tuple[str, ...], ...]:
    """The one variable list a configured layer saves, or none for a class not known here."""
    choices = KERAS3_VARIABLES.get(entry.kind, ())
    if entry.kind in ("batch_normalization", "layer_normalization"):
        return tuple(c for c in choices if ("gamma" in c) == entry.scale and ("beta" in c) == entry.center)
    if choices and "bias" in choices[0]:
        return tuple(c for c in choices if ("bias" in c) == entry.use_bias)
    return choices[:1]


def _fits(kind: str, names: tuple[str, ...], infos: list[DatasetInfo]) -> bool:
    """Whether the saved variables' shapes and dtypes are those of ``names`` for a layer of ``kind``."""
    if any(d.code not in _FLOAT_CODES for d in infos):
        return False
    shapes = dict(zip(names, (d.shape for d in infos), strict=True))
    for name, shape in shapes.items():
        if len(shape) < 2 if name.endswith("kernel") else len(shape) != (2 if name == "embeddings" else 1):
            return False
    if "bias" in shapes and (kind == "dense" or re.fullmatch(r"conv\dd", kind)):
        return shapes["bias"] == shapes["kernel"][-1:]
    if kind in ("batch_normalization", "layer_normalization"):
        return len(set(shapes.values())) == 1
    return True


def _variable_list(kind: str, config: LayerConfig | None, infos: list[DatasetInfo]) -> tuple[str, ...] | None:
    if config is not None:
        kind = config.kind
        choices = _configured(config)
    else:
        choices = KERAS3_VARIABLES.get(kind, ())
    fitting = [c for c in choices if len(c) == len(infos) and _fits(kind, c, infos)]
    return fitting[0] if len(fitting) == 1 else None


def keras3_variable_names(tree: Tree, configs: Mapping[str, LayerConfig] | None = None) -> dict[str, str]:
    """Dataset path -> the Keras name of each layer variable of a Keras 3 file (``proj/kernel``).

    A variable of a layer whose class is not known (or whose saved variables do not fit its
    class) is named by its index (``proj/vars/0``). Optimizer state and datasets outside
    ``vars`` groups get no name here. ``configs`` are the layers of the model's config.json.
    """
    groups: dict[str, list[str]] = {}
    for path in tree.datasets:
        group, _, index = path.rpartition("/")
        if (group == "vars" or group.endswith("/vars")) and not path.startswith("optimizer/") and DIGITS.fullmatch(index):
            groups.setdefault(group, []).append(path)
    out: dict[str, str] = {}
    for group, paths in groups.items():
        layer = keras3_layer(paths[0], tree.vars_names)
        indices = sorted(int(p.rpartition("/")[2]) for p in paths)
        names = None
        if indices == list(range(len(paths))):
            by_index = sorted(paths, key=lambda p: int(p.rpartition("/")[2]))
            owner = group[: -len("/vars")].rpartition("/")[2] if group != "vars" else ""
            match = _COUNTER.fullmatch(owner)
            kind = match.group(1) if match else ""
            config = (configs or {}).get(tree.vars_names.get(group, ""))
            names = _variable_list(kind, config, [tree.datasets[p] for p in by_index])
        for path in paths:
            index = path.rpartition("/")[2]
            own = names[int(index)] if names is not None else f"vars/{index}"
            out[path] = f"{layer}/{own}" if layer else own
    return out


def legacy_order(f: h5py.File, tree: Tree, prefix: str) -> tuple[list[str], dict[str, str]]:
    """Dataset paths in layer_names / weight_names order, and the layer of each."""
    order: list[str] = []
    layers: dict[str, str] = {}
    groups = set(tree.groups)
    root = f[prefix.rstrip("/")] if prefix else f
    for layer in _list_attr(root, "layer_names"):
        gpath = prefix + layer
        if gpath not in groups:
            continue
        for weight in _list_attr(f[gpath], "weight_names"):
            path = join_path(gpath, weight)
            if path in tree.datasets and path not in layers:
                order.append(path)
                layers[path] = layer
    if "optimizer_weights" in groups:
        for weight in _list_attr(f["optimizer_weights"], "weight_names"):
            path = join_path("optimizer_weights", weight)
            if path in tree.datasets and path not in layers:
                order.append(path)
                layers[path] = OPTIMIZER_LAYER
    layer_groups = {prefix + name for name in _list_attr(root, "layer_names")}
    for path in tree.datasets:
        if path in layers:
            continue
        order.append(path)
        if path.startswith("optimizer_weights/"):
            layers[path] = OPTIMIZER_LAYER
        else:
            top = path[len(prefix):].partition("/")[0] if path.startswith(prefix) else ""
            layers[path] = top if prefix + top in layer_groups and "/" in path[len(prefix):] else parent_path(path)
    return order, layers


def root_metadata(f: h5py.File) -> dict[str, str]:
    """Root attributes that are scalar strings or numbers, as str; Keras configurations left out.

    Values that are not text (bytes that are not UTF-8, which h5py hands out with surrogate escapes)
    are left out like any other non-scalar attribute.
    """
    out: dict[str, str] = {}
    for key in f.attrs:
        if key in CONFIG_ATTRS:
            continue
        try:
            value = f.attrs[key]
        except (OSError, TypeError, ValueError):
            continue
        text = scalar_text(value)
        if text is not None and len(text) <= MAX_METADATA_CHARS and is_utf8(key) and is_utf8(text):
            out[key] = text
    return out
