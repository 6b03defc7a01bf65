"""The planner's use of transforms, on metadata alone: which source tensors a split or a
concatenation turns into which names, which layout or resize a tensor pair takes, and the
warnings and hints about layouts nobody asked for.

:func:`derive` runs before matching. It gives every source key the tensor(s) its value is read
from and the transforms on the way (a :class:`Derived`), and the shape it is matched with: a
split's parts and a concatenation's whole are new keys with their own shapes, and a layout whose
glob hits the source's name is applied here (with the target of the same key, where there is one,
to settle a depthwise kernel's grouping). :func:`pair` runs for each pair found by name: a layout
whose glob hits the target's name, then a resize when the shapes still differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import UsageError
from .tensors import DTYPES, TensorInfo
from .text import format_shape
from .transforms import Concat, Layout, LayoutOp, Resize, Slice, Transform, TransformRules, axis_names


@dataclass(frozen=True)
class Derived:
    """A source key's value: read from ``inputs`` (stored tensors) through ``transforms``."""

    inputs: tuple[TensorInfo, ...]
    transforms: tuple[Transform, ...] = ()
    shape: tuple[int, ...] = ()
    note: str = ""  # why a layout rule that hit this tensor does not apply

    @property
    def has_layout(self) -> bool:
        return any(isinstance(t, Layout) for t in self.transforms)


@dataclass
class Derivation:
    """What :func:`derive` found: key -> value, and each split / concat rule's count of hits."""

    keyed: dict[str, TensorInfo]  # key -> the record matched (the shape after the transforms)
    derived: dict[str, Derived]
    counts: dict[str, int] = field(default_factory=dict)  # rule text -> tensors it matched
    layout_counts: dict[str, int] = field(default_factory=dict)


def _split_sizes(rule_sizes: tuple[int, ...] | None, parts: Sequence[str], shape: tuple[int, ...], axis: int,
                 targets: Mapping[str, TensorInfo], text: str, name: str) -> tuple[int, ...]:
    length = shape[axis]
    if rule_sizes is not None:
        sizes = rule_sizes
    else:
        found = [targets.get(p) for p in parts]
        if all(t is not None and len(t.shape) == len(shape) for t in found):
            sizes = tuple(t.shape[axis] for t in found if t is not None)
        elif length % len(parts) == 0:
            sizes = (length // len(parts),) * len(parts)
        else:
            raise UsageError(None, f"{text}: {name!r} has {length} along axis {axis}, which does not split into "
                             f"{len(parts)} equal parts; give the sizes (@{axis}:A,B,...)")
    if sum(sizes) != length:
        raise UsageError(None, f"{text}: sizes {', '.join(map(str, sizes))} add up to {sum(sizes)}, "
                         f"but {name!r} has {length} along axis {axis}")
    return sizes


def derive(keyed: Mapping[str, TensorInfo], stored_key: Mapping[str, str], rules: TransformRules,
           targets: Mapping[str, TensorInfo], aliases: Mapping[str, str] | None = None) -> Derivation:
    """Apply splits, concatenations and source-named layouts to the keyed source tensors.

    ``keyed``: key (the name after the rules) -> source record; ``stored_key``: stored name -> key;
    ``targets``: target key -> record (empty for a rename); ``aliases``: a name -> the path it is
    stored under, where the two differ (a Keras 3 file's ``conv1/kernel`` is ``layers/conv2d/vars/0``):
    layout globs match either. Splits and concatenations match the
    source's stored names and give their parts' names outright; the parts take the place of the
    first tensor they read in the order of keys.
    """
    by_stored = {info.name: info for info in keyed.values()}
    counts: dict[str, int] = {}
    replaced: dict[str, list[tuple[str, Derived]]] = {}  # key taken over -> the new keys in its place
    consumed: set[str] = set()
    for rule in rules.splits:
        counts[rule.text] = 0
        for name, info in by_stored.items():
            parts = rule.targets(name)
            if parts is None or name in consumed:
                continue
            if rule.axis >= len(info.shape):
                raise UsageError(None, f"{rule.text}: {name!r} {format_shape(info.shape)} has no axis {rule.axis}")
            counts[rule.text] += 1
            consumed.add(name)
            sizes = _split_sizes(rule.sizes, parts, info.shape, rule.axis, targets, rule.text, name)
            start, new = 0, []
            for i, (part, size) in enumerate(zip(parts, sizes, strict=True)):
                cut = Slice(rule.axis, start, start + size, i, len(parts))
                new.append((part, Derived((info,), (cut,), cut.output(info.shape))))
                start += size
            replaced[stored_key[name]] = new
    for crule in rules.concats:
        counts[crule.text] = 0
        first, *others = crule.parts
        for name, info in by_stored.items():
            m = first.fullmatch(name)
            if m is None or name in consumed:
                continue
            group = [info]
            for regex in others:
                partner = next((i for n, i in by_stored.items() if n not in consumed and (pm := regex.fullmatch(n))
                                and pm.groups() == m.groups()), None)
                if partner is None:
                    break
                group.append(partner)
            if len(group) != len(crule.parts):
                continue
            shapes = [g.shape for g in group]
            ranks = {len(s) for s in shapes}
            dtypes = {g.dtype for g in group}
            rest = {s[: crule.axis] + s[crule.axis + 1 :] for s in shapes}
            if len(ranks) != 1 or crule.axis >= len(shapes[0]) or len(rest) != 1 or len(dtypes) != 1:
                raise UsageError(None, f"{crule.text}: {', '.join(repr(g.name) for g in group)} "
                                 f"({', '.join(format_shape(s) for s in shapes)}, {', '.join(sorted(dtypes))}) "
                                 f"do not join along axis {crule.axis}")
            counts[crule.text] += 1
            consumed.update(g.name for g in group)
            join = Concat(crule.axis)
            replaced[stored_key[group[0].name]] = [(m.expand(crule.template), Derived(tuple(group), (join,),
                                                                                      join.output_of(shapes)))]
            for g in group[1:]:
                replaced[stored_key[g.name]] = []

    out_keyed: dict[str, TensorInfo] = {}
    derived: dict[str, Derived] = {}
    for key, info in keyed.items():
        for new_key, d in replaced.get(key, [(key, Derived((info,), (), info.shape))]):
            if new_key in out_keyed:
                raise UsageError(None, f"two source tensors become {new_key!r} (a split, a concatenation or a rename gives it twice)")
            derived[new_key] = d
            out_keyed[new_key] = info
    layout_counts: dict[str, int] = {r.text: 0 for r, _ in rules.layouts}
    for key, d in derived.items():
        target = targets.get(key)
        names = [i.name for i in d.inputs] + ([target.name] if target is not None else [])
        hit = rules.layout_for(*names, *((aliases or {}).get(n) for n in names))
        if hit is None:
            continue
        layout, op = hit
        layout_counts[layout.text] += 1
        derived[key] = _with_layout(d, op, layout.text, target.shape if target is not None else None)
    keyed_out = {k: TensorInfo(out_keyed[k].name, d.shape, out_keyed[k].dtype, out_keyed[k].layer) for k, d in derived.items()}
    return Derivation(keyed_out, derived, counts, layout_counts)


def _with_layout(d: Derived, op: LayoutOp, text: str, target: tuple[int, ...] | None) -> Derived:
    resolved = op.resolve(d.shape, target)
    if resolved is None:
        return d
    if isinstance(resolved, str):
        return Derived(d.inputs, d.transforms, d.shape, f"{text} does not apply: {resolved}")
    return Derived(d.inputs, (*d.transforms, resolved), resolved.output(d.shape))


@dataclass(frozen=True)
class Paired:
    """A pair's transforms and the shape they give (``resize``: the resize added to reach the target)."""

    transforms: tuple[Transform, ...]
    shape: tuple[int, ...]
    resize: Resize | None = None
    note: str = ""


def pair(d: Derived, target: TensorInfo, rules: TransformRules, counts: dict[str, int],
         aliases: Mapping[str, str] | None = None) -> Paired:
    """The transforms for source value ``d`` paired with ``target``: a layout named by the target's name
    (when the source's name took none), then a resize if a ``--resize`` glob allows it."""
    transforms, shape, note = d.transforms, d.shape, d.note
    if not d.has_layout and not note:
        hit = rules.layout_for(target.name, (aliases or {}).get(target.name))
        if hit is not None:
            rule, op = hit
            counts[rule.text] = counts.get(rule.text, 0) + 1
            moved = _with_layout(d, op, rule.text, target.shape)
            transforms, shape, note = moved.transforms, moved.shape, moved.note
    if shape == target.shape:
        return Paired(transforms, shape, note=note)
    grow = rules.resize_for(d.inputs[0].name, target.name)
    if grow is None or len(shape) != len(target.shape) or not shape:
        return Paired(transforms, shape, note=note)
    counts[grow.text] = counts.get(grow.text, 0) + 1
    if grow.value == "mean" and DTYPES[d.inputs[0].dtype].kind != "float":
        return Paired(transforms, shape, note=f"{grow.text}: the mean of a {d.inputs[0].dtype} tensor is not taken")
    resize = Resize(grow.value, shape, target.shape, axis_names(target.shape, target.name))  # type: ignore[arg-type]
    return Paired((*transforms, resize), target.shape, resize, note)


# --- layouts nobody asked for --------------------------------------------------------------------

_KERAS_KERNELS = {"kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel"}


def _leaf(name: str) -> str:
    return re.split(r"[./]", name)[-1].split(":")[0]


def framework_trap(source: str, target: str, shape: tuple[int, ...], transforms: Sequence[Transform]) -> str | None:
    """The preset a pair needs when its names look like two frameworks' layouts and no layout was asked
    for: a Keras / TF kernel into a PyTorch-style ``weight`` (``keras->torch``) or the other way."""
    if len(shape) < 2 or any(isinstance(t, Layout) for t in transforms):
        return None
    src, tgt = _leaf(source), _leaf(target)
    if src in _KERAS_KERNELS and tgt == "weight":
        return "keras->torch"
    if src == "weight" and tgt in _KERAS_KERNELS:
        return "torch->keras"
    return None


_NAMED_PERMUTATIONS = {(1, 0): "transpose", (3, 2, 0, 1): "hwio->oihw", (2, 3, 1, 0): "oihw->hwio",
                       (4, 3, 0, 1, 2): "dhwio->oidhw", (2, 3, 4, 1, 0): "oidhw->dhwio"}


def permutation_hint(source: tuple[int, ...], target: tuple[int, ...]) -> str | None:
    """``transpose`` / ``hwio->oihw`` / ``permute:...`` when ``target`` is a permutation of ``source``'s axes."""
    if source == target or sorted(source) != sorted(target) or len(source) < 2:
        return None
    for axes, name in _NAMED_PERMUTATIONS.items():
        if len(axes) == len(source) and tuple(source[a] for a in axes) == target:
            return name
    free = list(range(len(source)))
    axes_found = []
    for size in target:
        a = next(i for i in free if source[i] == size)
        free.remove(a)
        axes_found.append(a)
    return "permute:" + ",".join(map(str, axes_found))


def loaded_values(transforms: Sequence[Transform], numel: int) -> int:
    """How many of an output tensor's values come from the source (fewer than all for a resize)."""
    for t in transforms:
        if isinstance(t, Resize):
            return t.loaded
    return numel


def describe(transforms: Sequence[Transform]) -> str:
    return ", then ".join(t.text() for t in transforms)
