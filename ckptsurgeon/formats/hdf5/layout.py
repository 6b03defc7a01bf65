"""The layout a writer with ``like=`` copies, and how renames move it.

:func:`read_template` reads what a like-writer reproduces from the like-file: its groups (with
their attributes and creation-order flags: ``layer_names``, ``weight_names``, ``keras_version``,
``model_config`` ...) and, for each tensor, the like-dataset's path, attributes, datatype, layout,
chunking and filters.

Renames (``begin(specs, origins={new: old})``, as ``ckpt rename`` passes them) are written where
the like-file had the old dataset: its storage, its slot in the group's order, under the new path
(:func:`relayout`). A group moves (with its attributes and creation-order flags, to the place of
the old one in the creation order) when all its written datasets are renamed into one other group
at the same level; empty groups inside it move along; groups left empty that hold no attributes
are dropped. The Keras bookkeeping follows:

- legacy files: a dataset is ``<layer group>/<weight name>`` (the layer group being as many parts
  below the root or ``model_weights`` as the layer name has). A rename that changes the layer part
  of all of a layer's weights renames the layer: new group, its ``layer_names`` entry replaced in
  place, its ``weight_names`` entries rewritten; a rename inside a layer (or inside
  ``optimizer_weights``) rewrites its ``weight_names`` entry. String lists keep their storage
  (variable or fixed length, widened when a name grows).
- Keras 3 files: a variable stays ``<layer>/vars/<i>``; a renamed layer path moves its groups, the
  ``vars`` group keeping its ``name`` attribute. Keras 3 looks a layer's variables up by the path
  its model derives from the layer's class and position (``layers/conv2d``), so such a file loads
  only into a model whose paths match it; renamed back, it loads as before. ``ckpt rename``
  therefore refuses to change the paths of a Keras 3 output (see :mod:`ckptsurgeon.commands.rename`).

Model configurations (``model_config``, a ``.keras`` archive's ``config.json``) are copied as they
are, so a full-model file still loads by layer order, not by the new names.

Renames the bookkeeping cannot express are not written half-way: a legacy weight moved out of its
layer group or list (into a group that is not a layer, onto another layer, out of
``model_weights`` or ``optimizer_weights``), a layer split between groups, two layers onto one
name, a Keras 3 variable outside ``<layer>/vars/<i>``, numbering that is no longer ``0..n-1`` or
a ``vars`` group no renamed layer group becomes. Then :func:`relayout` raises :class:`NoLayout`
and the whole file falls back to plain placement (:func:`plain_like`): every tensor at its own
name (the like-datasets' storage kept), no like-file groups or group attributes (so no
``layer_names`` / ``weight_names``, which Keras then refuses to load rather than loading wrong
weights), the metadata as root attributes; the writer's ``layout_fallback`` says why. Without
``origins`` nothing of this applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckptsurgeon.errors import InputError
from ckptsurgeon.formats.hdf5._h5 import (
    DIGITS,
    TRACK_ORDER,
    Source,
    h5py,
    h5s,
    h5t,
    input_errors,
    join_path,
    link_order_flags,
    parent_path,
    string_list,
)

# ------------------------------------------------------------------------------------------------
# the "like" template a writer copies
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    name: str
    value: Any
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        arr = np.asarray(self.value)
        if arr.dtype.kind == "O":
            return sum(len(str(v)) for v in arr.reshape(-1).tolist())
        return int(arr.nbytes)


@dataclass(frozen=True)
class LikeDataset:
    path: str
    code: str
    shape: tuple[int, ...]
    maxshape: tuple[int, ...] | None
    tid: Any  # a transient h5t.TypeID, the dataset's file type
    raw: bool
    dcpl: Any  # h5p.PropDCID copied from the dataset
    attrs: tuple[Attr, ...]


@dataclass
class LikeGroup:
    path: str
    attrs: list[Attr]
    order_flags: int  # link / attribute creation-order tracking


@dataclass
class Template:
    groups: dict[str, LikeGroup]  # in walk order, "" is the root
    datasets: dict[str, LikeDataset]


def _read_attrs(obj: Any, label: Path, path: str) -> list[Attr]:
    out = []
    for name in obj.attrs:
        dtype = obj.attrs.get_id(name).dtype
        if h5py.check_ref_dtype(dtype) is not None:
            raise InputError(label, f"attribute {name!r} of {path or '/'!r} holds object references, which cannot be copied")
        out.append(Attr(name, obj.attrs[name], dtype))
    return out


def read_template(sources: list[Source], order: list[tuple[int, str]]) -> Template:
    groups: dict[str, LikeGroup] = {}
    datasets: dict[str, LikeDataset] = {}
    for src in sources:
        f = src.h5
        with input_errors(src.label):
            for gpath in src.tree.groups:
                obj = f[gpath] if gpath else f
                group = groups.setdefault(gpath, LikeGroup(gpath, [], link_order_flags(obj)))
                have = {a.name for a in group.attrs}
                group.attrs.extend(a for a in _read_attrs(obj, src.label, gpath) if a.name not in have)
    for index, path in order:
        src = sources[index]
        ds = src.tree.datasets[path]
        with input_errors(src.label):
            dset = src.h5[path]
            dsid = dset.id
            attrs = _read_attrs(dset, src.label, path)
            if ds.raw and dsid.get_type().get_class() == h5t.OPAQUE:
                attrs = [a for a in attrs if a.name != "dtype"]  # restated from the dtype when written
            space = dsid.get_space()
            maxdims = space.get_simple_extent_dims(maxdims=True) if space.get_simple_extent_ndims() else ()
            maxshape = tuple(-1 if m == h5s.UNLIMITED else int(m) for m in maxdims) or None
            datasets[path] = LikeDataset(
                path, ds.code, ds.shape, maxshape, dsid.get_type().copy(), ds.raw,
                dsid.get_create_plist(), tuple(attrs),
            )
    return Template(groups, datasets)


# ------------------------------------------------------------------------------------------------
# renames in like mode: the like-file's layout with renamed datasets (and their groups) moved
# ------------------------------------------------------------------------------------------------


class NoLayout(Exception):
    """Renames that the like-file's Keras bookkeeping cannot follow; the message says why."""


def _ancestors(path: str) -> list[str]:
    """The groups a path runs through, nearest first, the root left out."""
    out = []
    parent = parent_path(path)
    while parent:
        out.append(parent)
        parent = parent_path(parent)
    return out


def _under(path: str, group: str) -> bool:
    return not group or path.startswith(group + "/")


def _align(old: list[str], new: list[str]) -> list[tuple[str, str]]:
    """Pair two chains of groups (nearest first) until they meet: the groups a move renames."""
    pairs = []
    for a, b in zip(old, new, strict=False):
        if a == b:
            break
        pairs.append((a, b))
    return pairs


def _group_list(group: LikeGroup, name: str) -> list[str]:
    """A Keras list attribute of a like-group (whole, or split into ``name0``, ``name1``, ...)."""
    attrs = {a.name: a for a in group.attrs}
    if name in attrs:
        return string_list(attrs[name].value)
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(string_list(attrs[f"{name}{i}"].value))
        i += 1
    return out


def _map_list_attrs(attrs: list[Attr], name: str, fn: Any) -> list[Attr]:
    """``attrs`` with the entries of the list attribute ``name`` (or its chunks) mapped by ``fn``; None drops one."""
    pattern = re.compile(re.escape(name) + r"\d*")
    out = []
    for attr in attrs:
        entries = string_list(attr.value) if pattern.fullmatch(attr.name) else []
        if entries:
            mapped = [fn(e) for e in entries]
            if mapped != entries:
                attr = _string_list_attr(attr, [m for m in mapped if m is not None])
        out.append(attr)
    return out


def _string_list_attr(attr: Attr, entries: list[str]) -> Attr:
    """A string-list attribute with new entries, stored as the original was (fixed or variable length)."""
    if not entries:  # what Keras writes for an empty list
        return Attr(attr.name, np.array([], dtype=np.float64), np.dtype(np.float64))
    arr = np.asarray(attr.value)
    if arr.dtype.kind == "S":
        encoded = [e.encode("utf-8") for e in entries]
        dtype = np.dtype(f"S{max(1, *(len(e) for e in encoded))}")
        return Attr(attr.name, np.array(encoded, dtype=dtype), dtype)
    as_bytes = isinstance(arr.reshape(-1)[0], (bytes, np.bytes_))
    values = [e.encode("utf-8") for e in entries] if as_bytes else entries
    return Attr(attr.name, np.array(values, dtype=object), attr.dtype)


def _keras_index(text: str) -> bool:
    return bool(DIGITS.fullmatch(text)) and str(int(text)) == text


def relayout(tpl: Template, names: list[str], origins: Mapping[str, str]) -> Template:
    """The like-template as the output's: renamed datasets where their like-datasets were, groups moved along.

    ``names`` are the output tensors; ``origins`` maps an output name to the like-dataset it stands
    for. A like-group is moved (with its attributes and creation-order flags) when every written
    dataset below it is renamed into one other group at the matching level; groups left without
    their datasets and holding no attributes are dropped; empty groups inside a moved group move
    with it. Legacy Keras bookkeeping is rewritten in place (``layer_names`` entries of moved layer
    groups, ``weight_names`` entries of renamed weights); Keras 3 ``vars`` groups must stay
    ``<layer>/vars/0..n-1``. Raises :class:`NoLayout` when the renames cannot be expressed that way.
    """
    groups, like_ds = tpl.groups, tpl.datasets
    written: dict[str, str] = {}  # like-dataset -> the output name standing for it
    for name in names:
        old = origins.get(name, name)
        if old not in like_ds:
            continue
        if old in written:
            raise NoLayout(f"{written[old]!r} and {name!r} both stand for {old!r}")
        written[old] = name
    renamed = {old: new for old, new in written.items() if old != new}
    if not renamed:
        return tpl

    # Legacy Keras: the layer groups and which list attribute names each dataset.
    prefix: str | None = None
    if _group_list(groups[""], "layer_names"):
        prefix = ""
    elif "model_weights" in groups and _group_list(groups["model_weights"], "layer_names"):
        prefix = "model_weights/"
    holder = prefix.rstrip("/") if prefix is not None else None
    layer_depth: dict[str, int] = {}
    if holder is not None and prefix is not None:
        for layer in _group_list(groups[holder], "layer_names"):
            if prefix + layer in groups:
                layer_depth[prefix + layer] = layer.count("/") + 1
    listed: dict[str, str] = {}  # dataset -> the group whose weight_names lists it
    for gpath, group in groups.items():
        for entry in _group_list(group, "weight_names"):
            listed.setdefault(join_path(gpath, entry), gpath)

    # Which like-group becomes which output group, as each rename says.
    pairs: dict[str, list[tuple[str, str]]] = {}
    for old, new in renamed.items():
        owner = listed.get(old)
        if owner is None or prefix is None:
            pairs[old] = _align(_ancestors(old), _ancestors(new))
            continue
        if owner in layer_depth:  # a layer's weight: the layer group is the first parts below the root
            parts = new[len(prefix):].split("/") if new.startswith(prefix) else []
            k = layer_depth[owner]
            target = prefix + "/".join(parts[:k]) if len(parts) > k else None
        else:  # optimizer_weights and other lists stay where they are
            target = owner if _under(new, owner) else None
        if target is None:
            pairs[old] = []
            continue
        inner = _align([a for a in _ancestors(old) if _under(a, owner)], [a for a in _ancestors(new) if _under(a, target)])
        pairs[old] = inner + ([(owner, target)] if owner != target else [])

    held: dict[str, int] = {}  # like-group -> written datasets below it
    left: dict[str, int] = {}  # like-group -> written datasets that leave it
    for old, new in written.items():
        for a in _ancestors(old):
            held[a] = held.get(a, 0) + 1
            if not _under(new, a):
                left[a] = left.get(a, 0) + 1
    votes: dict[str, dict[str, int]] = {}
    for ps in pairs.values():
        for o, n in ps:
            votes.setdefault(o, {})
            votes[o][n] = votes[o].get(n, 0) + 1
    moved = {
        o: n for o, ns in votes.items() for n in ns
        if len(ns) == 1 and ns[n] == held.get(o, 0) and not _under(n, o) and not _under(o, n)
    }
    vacated = {g for g in groups if g and held.get(g) and held.get(g) == left.get(g)}
    while True:  # a move onto a group that stays, or two moves onto one path, is no move
        count: dict[str, int] = {}
        for n in moved.values():
            count[n] = count.get(n, 0) + 1
        bad = [o for o, n in moved.items() if count[n] > 1 or (
            n in groups and n not in moved and not (n in vacated and not groups[n].attrs))]
        if not bad:
            break
        for o in bad:
            del moved[o]

    place: dict[str, str | None] = {"": ""}
    for g in groups:
        if not g:
            continue
        outer = next((a for a in _ancestors(g) if a in moved), None)
        if g in moved:
            place[g] = moved[g]
        elif not held.get(g) and outer is not None:
            place[g] = moved[outer] + g[len(outer):]
        elif g in vacated and not groups[g].attrs:
            place[g] = None
        else:
            place[g] = g
    taken = {p for p in place.values() if p}
    for path in sorted(taken):  # a dropped group still needed as a parent stays
        for a in _ancestors(path):
            if a in place and place[a] is None and a not in taken:
                place[a] = a
    placed = [p for p in place.values() if p is not None]
    if len(set(placed)) != len(placed):
        dup = sorted({p for p in placed if placed.count(p) > 1})
        raise NoLayout(f"two groups would move to {dup[0]!r}")

    def entry_of(gpath: str, out_group: str) -> Any:
        def fn(entry: str) -> str | None:
            dpath = join_path(gpath, entry)
            if dpath not in like_ds:
                return entry
            out = written.get(dpath)
            if out is None:
                return None  # not written: weight_names must name only datasets that exist
            if not _under(out, out_group):
                raise NoLayout(f"{out!r} is no longer inside {out_group!r}, whose weight_names lists it as {entry!r}")
            return out[len(out_group) + 1:] if out_group else out
        return fn

    def layer_of(layer: str) -> str:
        assert prefix is not None
        out = place.get(prefix + layer)
        if out is None or out == prefix + layer:
            return layer
        new_layer = out[len(prefix):] if out.startswith(prefix) else ""
        if not new_layer or new_layer.count("/") != layer.count("/"):
            raise NoLayout(f"layer group {prefix + layer!r} would move to {out!r}, which is not a layer group")
        return new_layer

    out_groups: dict[str, LikeGroup] = {}
    for gpath, group in groups.items():
        out_path = place[gpath]
        if out_path is None:
            continue
        attrs = _map_list_attrs(group.attrs, "weight_names", entry_of(gpath, out_path))
        if gpath == holder:
            attrs = _map_list_attrs(attrs, "layer_names", layer_of)
            layers = _group_list(LikeGroup(out_path, attrs, 0), "layer_names")
            if len(set(layers)) != len(layers):
                raise NoLayout(f"two layers would be named {sorted(x for x in layers if layers.count(x) > 1)[0]!r}")
        out_groups[out_path] = LikeGroup(out_path, attrs, group.order_flags)

    if prefix is None and any(_is_vars_group(g, groups[g]) for g in groups):
        _check_keras3_vars(renamed, place, names, set(out_groups))
    return Template(out_groups, {out: like_ds[old] for old, out in written.items()})


def _is_vars_group(path: str, group: LikeGroup) -> bool:
    """A Keras 3 ``vars`` group, as :func:`~ckptsurgeon.formats.hdf5.keras.is_keras3` tells Keras 3 files."""
    if path == "vars":
        return any(a.name == "name" for a in group.attrs)
    return path.startswith("layers/") and path.endswith("/vars")


def _check_keras3_vars(renamed: Mapping[str, str], place: Mapping[str, str | None], names: list[str],
                       out_groups: set[str]) -> None:
    """Keras 3 loads a layer's variables from ``vars/0``, ``vars/1``, ...: renames must keep that."""
    members: dict[str, set[str]] = {}
    for name in names:
        members.setdefault(parent_path(name), set()).add(name.rpartition("/")[2])
    touched = set()
    for old, new in renamed.items():
        old_group, new_group = parent_path(old), parent_path(new)
        if old_group.rpartition("/")[2] != "vars":
            continue
        if new_group.rpartition("/")[2] != "vars" or not _keras_index(new.rpartition("/")[2]):
            raise NoLayout(f"{old!r} is a Keras 3 layer variable; {new!r} is not <layer>/vars/<index>")
        if new_group not in out_groups:
            raise NoLayout(f"{new!r} would be in a vars group that no renamed layer group becomes")
        touched.add(new_group)
        if place.get(old_group):
            touched.add(str(place[old_group]))
    for group in sorted(touched):
        have = members.get(group, set())
        if have != {str(i) for i in range(len(have))}:
            raise NoLayout(f"the variables of {group!r} would be numbered {sorted(have)}, not 0..{len(have) - 1}")


def plain_like(tpl: Template, names: list[str], origins: Mapping[str, str]) -> Template:
    """Plain placement (every tensor at its name, no like-groups or group attributes), like-datasets' storage kept."""
    datasets = {}
    for name in names:
        old = origins.get(name, name)
        if old in tpl.datasets:
            datasets[name] = tpl.datasets[old]
    return Template({"": LikeGroup("", [], TRACK_ORDER)}, datasets)
