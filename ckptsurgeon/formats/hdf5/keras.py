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

A file's metadata is its scalar string and number root attributes; Keras model and training
configurations (``model_config``, ``training_config``) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ckptsurgeon.formats.hdf5._h5 import Tree, h5py, is_utf8, join_path, parent_path, scalar_text, string_list

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
