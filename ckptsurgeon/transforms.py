"""Tensor transforms: frozen data with a metadata half (the planner's) and a value half (execute's).

A transform turns the values of one or more input tensors into one output tensor:

- :class:`Layout`: ``x.reshape(before).transpose(axes).reshape(after)``: a transpose, a framework
  layout (Keras HWIO -> PyTorch OIHW) or a depthwise kernel's regrouping.
- :class:`Slice`: one part of a split along an axis (one source to several targets).
- :class:`Concat`: several inputs joined along an axis (several sources to one target).
- :class:`Resize`: the overlap of a source copied into a tensor of another size of the same rank,
  the rest filled (``keep`` the target's own values, ``zero``, or the source's ``mean`` along the
  grown axes).

The metadata half (``output``, ``inverse``, ``byte_parts``, ``to_dict``) knows shapes only and is
what plans, dry runs, reports and saved plans use. The value half (``apply``, :func:`blocks`)
imports numpy, works on views of the inputs where it can (a memory-mapped input is never copied
whole for a slice or a transpose), and hands the output on in blocks of rows, so a transform holds
at most its input tensor and one block.

What the user writes is parsed here too: ``--transform GLOB=OP`` (:class:`LayoutOp`, resolved per
tensor pair by :meth:`LayoutOp.resolve`), ``--resize GLOB=MODE``, ``--split`` and ``--concat``
(:class:`SplitRule`, :class:`ConcatRule`), gathered in :class:`TransformRules`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import UsageError
from .text import format_shape, quote

if TYPE_CHECKING:
    import numpy as np

Shape = tuple[int, ...]
ResizeMode = Literal["keep", "zero", "mean"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("keep", "zero", "mean")


# --- the transforms ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """``x.reshape(before).transpose(axes).reshape(after)`` (``before`` / ``after`` None: no reshape).

    ``label`` is what the user asked for (``transpose``, ``hwio->oihw``, ``permute:3,2,0,1``).
    Reshapes are C-order, so a depthwise kernel (kh, kw, in, mult) permuted to (in, mult, kh, kw)
    and reshaped to (in*mult, 1, kh, kw) puts output channel ``i*mult + m`` where both frameworks do.
    """

    label: str
    axes: Shape
    before: Shape | None = None
    after: Shape | None = None

    op = "layout"

    def output(self, shape: Shape) -> Shape:
        inner = self.before if self.before is not None else shape
        permuted = tuple(inner[a] for a in self.axes)
        return self.after if self.after is not None else permuted

    def inverse(self, shape: Shape) -> Layout:
        """The layout that turns this one's output (of an input of ``shape``) back into ``shape``."""
        inner = self.before if self.before is not None else shape
        permuted = tuple(inner[a] for a in self.axes)
        back = tuple(sorted(range(len(self.axes)), key=lambda i: self.axes[i]))
        return Layout(f"inverse of {self.label}", back, permuted if self.after is not None else None,
                      shape if self.before is not None else None)

    @property
    def moves_axes(self) -> bool:
        return self.axes != tuple(range(len(self.axes)))

    def byte_parts(self, shapes: Sequence[Shape], itemsize: int) -> list[tuple[int, int, int]] | None:
        """A reshape alone keeps the bytes in order: the whole input, as it lies."""
        if self.moves_axes:
            return None
        return [(0, 0, math.prod(shapes[0]) * itemsize)]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        a = arrays[0]
        if self.before is not None:
            a = a.reshape(self.before)
        a = a.transpose(self.axes)
        return a.reshape(self.after) if self.after is not None else a  # a reshape of a moved view copies

    def text(self) -> str:
        return self.label

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "label": self.label, "axes": list(self.axes),
                "before": None if self.before is None else list(self.before),
                "after": None if self.after is None else list(self.after)}


@dataclass(frozen=True, slots=True)
class Slice:
    """Part ``index`` of ``parts`` of a split: elements ``start:stop`` along ``axis``."""

    axis: int
    start: int
    stop: int
    index: int = 0
    parts: int = 1

    op = "split"

    def output(self, shape: Shape) -> Shape:
        return (*shape[: self.axis], self.stop - self.start, *shape[self.axis + 1 :])

    def byte_parts(self, shapes: Sequence[Shape], itemsize: int) -> list[tuple[int, int, int]] | None:
        """Along the first axis that is not 1, a C-order slice is one byte range of the input."""
        shape = shapes[0]
        if math.prod(shape[: self.axis]) != 1:
            return None
        row = math.prod(shape[self.axis + 1 :]) * itemsize
        return [(0, self.start * row, (self.stop - self.start) * row)]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return arrays[0][(slice(None),) * self.axis + (slice(self.start, self.stop),)]

    def text(self) -> str:
        return f"split part {self.index + 1} of {self.parts} (axis {self.axis}, {self.start}:{self.stop})"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "axis": self.axis, "start": self.start, "stop": self.stop,
                "index": self.index, "parts": self.parts}


@dataclass(frozen=True, slots=True)
class Concat:
    """The inputs joined along ``axis``, in order."""

    axis: int

    op = "concat"

    def output_of(self, shapes: Sequence[Shape]) -> Shape:
        first = shapes[0]
        return (*first[: self.axis], sum(s[self.axis] for s in shapes), *first[self.axis + 1 :])

    def byte_parts(self, shapes: Sequence[Shape], itemsize: int) -> list[tuple[int, int, int]] | None:
        """Along the first axis that is not 1, the output is each input's bytes in turn."""
        if math.prod(shapes[0][: self.axis]) != 1:
            return None
        return [(i, 0, math.prod(s) * itemsize) for i, s in enumerate(shapes)]

    def apply(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        import numpy as np

        return np.concatenate(arrays, axis=self.axis)

    def text(self) -> str:
        return f"concat along axis {self.axis}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "axis": self.axis}


@dataclass(frozen=True, slots=True)
class Resize:
    """A source of ``source_shape`` copied into ``shape`` where they overlap; the rest by ``mode``.

    ``keep`` takes the target's own values (the target is a second input), ``zero`` zeros, ``mean``
    the mean of the source's values along every grown axis (new token embeddings start at the
    mean of the old ones). An axis that shrinks keeps the source's first elements.
    """

    mode: ResizeMode
    source_shape: Shape
    shape: Shape
    names: tuple[str, ...] = ()  # what each axis is called in the report (rows, in_channels, ...)

    op = "resize"

    def output(self, shape: Shape) -> Shape:
        return self.shape

    @property
    def overlap(self) -> Shape:
        return tuple(min(a, b) for a, b in zip(self.source_shape, self.shape, strict=True))

    @property
    def grows(self) -> bool:
        return any(b > a for a, b in zip(self.source_shape, self.shape, strict=True))

    @property
    def shrinks(self) -> bool:
        return any(b < a for a, b in zip(self.source_shape, self.shape, strict=True))

    @property
    def loaded(self) -> int:
        """How many of the output's values come from the source."""
        return math.prod(self.overlap)

    def partial(self) -> str:
        """Per changed axis, how much of it the source fills: ``rows 32000 of 32064``, ``rows 3 of 5 taken``."""
        parts = []
        for i, (a, b) in enumerate(zip(self.source_shape, self.shape, strict=True)):
            name = self.names[i] if i < len(self.names) else f"axis {i}"
            if b > a:
                parts.append(f"{name} {a} of {b}")
            elif b < a:
                parts.append(f"{name} {b} of {a} taken")
        return ", ".join(parts)

    def byte_parts(self, shapes: Sequence[Shape], itemsize: int) -> list[tuple[int, int, int]] | None:
        return None

    def text(self) -> str:
        fill = f", new values: {self.mode}" if self.grows else ""
        return f"resized {format_shape(self.source_shape)} -> {format_shape(self.shape)} ({self.partial()}{fill})"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "mode": self.mode, "source_shape": list(self.source_shape), "shape": list(self.shape),
                "partial": self.partial()}


Transform = Layout | Slice | Concat | Resize


def transform_from_dict(doc: object) -> Transform:
    """A transform from its ``to_dict`` form (a saved plan); ValueError on anything else."""
    if not isinstance(doc, dict):
        raise ValueError("a transform is not an object")

    def shape(key: str, optional: bool = False) -> Shape | None:
        value = doc.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ValueError(f"transform field {key!r} is not a list of sizes")
        return tuple(value)

    def number(key: str) -> int:
        value = doc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"transform field {key!r} is not a count")
        return value

    op = doc.get("op")
    if op == "layout":
        axes = shape("axes")
        assert axes is not None
        if sorted(axes) != list(range(len(axes))):
            raise ValueError(f"layout axes {list(axes)} are not a permutation")
        return Layout(str(doc.get("label", "layout")), axes, shape("before", True), shape("after", True))
    if op == "split":
        return Slice(number("axis"), number("start"), number("stop"), number("index"), number("parts"))
    if op == "concat":
        return Concat(number("axis"))
    if op == "resize":
        mode = doc.get("mode")
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
        src, out = shape("source_shape"), shape("shape")
        assert src is not None and out is not None
        return Resize(mode, src, out, axis_names(out, ""))
    raise ValueError(f"unknown transform {op!r}")


def axis_names(shape: Shape, name: str) -> tuple[str, ...]:
    """What a tensor's axes are called in a report: rows and columns, or a kernel's channels."""
    rank = len(shape)
    if rank == 1:
        return ("elements",)
    if rank == 2:
        return ("rows", "columns")
    names = [f"axis {i}" for i in range(rank)]
    leaf = re.split(r"[./]", name)[-1].split(":")[0]
    if leaf == "weight":  # PyTorch / MindSpore kernels: (out, in, *spatial)
        names[0], names[1] = "out_channels", "in_channels"
    elif leaf == "kernel":  # Keras / TF kernels: (*spatial, in, out)
        names[-1], names[-2] = "out_channels", "in_channels"
    return tuple(names)


# --- the value half ------------------------------------------------------------------------------

# Bytes of output per block: large enough that per-block overhead is small, small enough that a
# block and its cast stay far below the memory a tensor takes.
BLOCK_BYTES = 8 * 1024 * 1024


def blocks(transforms: Sequence[Transform], arrays: Sequence[np.ndarray], out_code: str,
           overflow: list[int]) -> Iterator[np.ndarray]:
    """The output of ``transforms`` applied in turn to ``arrays`` (the step's inputs: views of the
    files where the format allows), cast to dtype ``out_code``, as C-order blocks of whole rows.

    A :class:`Resize` may only come last; its second input (``keep``) is the target's tensor.
    Overflowing values of the cast are added to ``overflow[0]``.
    """
    from .tensors import DTYPES
    from .values import cast_array

    want = DTYPES[out_code].numpy
    current = list(arrays)
    for t in transforms:
        if isinstance(t, Resize):
            yield from _resize_blocks(t, current[0], current[1] if len(current) > 1 else None, out_code, overflow)
            return
        current = [t.apply(current), *current[len(_inputs_of(t, current)):]]
    a = current[0]
    rows = _rows_per_block(a.shape, want.itemsize)
    if a.ndim == 0:
        a = a.reshape(1)
    for r0 in range(0, max(1, a.shape[0]), rows):
        block, over = cast_array(_contiguous(a[r0 : r0 + rows]), out_code)
        overflow[0] += over
        yield block if block.flags.c_contiguous and block.dtype == want else block.astype(want, order="C")


# Bytes of the input read per tile when a moved view is copied: a tile's rows are contiguous in the
# input (sequential reads of a mapped file), and its strided writes stay inside one output block.
TILE_BYTES = 1024 * 1024


def _contiguous(view: np.ndarray) -> np.ndarray:
    """A C-order copy of a view whose axes were moved, made tile by tile along the axis that walks the
    input's outermost dimension (a plain copy of a transposed view reads one element per cache line
    and touches every page of the input for every row it writes: several times slower)."""
    import numpy as np

    if view.flags.c_contiguous or view.ndim < 2 or not view.size:
        return view
    out = np.empty(view.shape, dtype=view.dtype)
    axis = int(np.argmax(view.strides))
    n = view.shape[axis]
    step = max(1, TILE_BYTES // max(1, view.nbytes // n))
    for i in range(0, n, step):
        where = (slice(None),) * axis + (slice(i, i + step),)
        out[where] = view[where]
    return out


def _inputs_of(t: Transform, current: Sequence[Any]) -> Sequence[Any]:
    return current if isinstance(t, Concat) else current[:1]


def _rows_per_block(shape: Shape, itemsize: int) -> int:
    row = math.prod(shape[1:]) * itemsize if shape else itemsize
    return max(1, BLOCK_BYTES // max(1, row))


def _resize_blocks(t: Resize, src: np.ndarray, tgt: np.ndarray | None, out_code: str,
                   overflow: list[int]) -> Iterator[np.ndarray]:
    import numpy as np

    from .tensors import DTYPES
    from .values import cast_array

    want = DTYPES[out_code].numpy
    shape, overlap = t.shape, t.overlap
    grown = tuple(i for i, (a, b) in enumerate(zip(t.source_shape, shape, strict=True)) if b > a)
    crop = src[tuple(slice(0, n) for n in overlap)] if grown else src
    fill = None
    if t.mode == "mean" and grown:
        mean = np.asarray(np.mean(crop, axis=grown, keepdims=True, dtype=np.float64))
        fill, over = cast_array(mean, out_code)
        overflow[0] += over
    rows = _rows_per_block(shape, want.itemsize)
    inner = tuple(slice(0, n) for n in overlap[1:])
    for r0 in range(0, shape[0], rows):
        r1 = min(r0 + rows, shape[0])
        if t.mode == "keep" and tgt is not None:
            block, _ = cast_array(np.array(tgt[r0:r1]), out_code)
            block = np.array(block, dtype=want, order="C")
        elif fill is not None:
            part = fill if fill.shape[0] == 1 else fill[r0:r1]
            block = np.array(np.broadcast_to(part, (r1 - r0, *shape[1:])), dtype=want, order="C")
        else:
            block = np.zeros((r1 - r0, *shape[1:]), dtype=want)
        o1 = min(r1, overlap[0])
        if r0 < o1:
            read, put = (slice(r0, o1), *inner), (slice(0, o1 - r0), *inner)
            piece, over = cast_array(src[read], out_code)
            overflow[0] += over
            block[put] = piece
        yield block


# --- what the user writes ------------------------------------------------------------------------

# Layout ops with a fixed permutation of a fixed rank.
_FIXED: dict[str, Shape] = {
    "transpose": (1, 0),
    "dense-keras->torch": (1, 0),
    "dense-torch->keras": (1, 0),
    "wio->oiw": (2, 1, 0),
    "oiw->wio": (2, 1, 0),
    "hwio->oihw": (3, 2, 0, 1),
    "oihw->hwio": (2, 3, 1, 0),
    "dhwio->oidhw": (4, 3, 0, 1, 2),
    "oidhw->dhwio": (2, 3, 4, 1, 0),
}
# Framework ops: the permutation follows the tensor's rank (a Dense, Conv1D, Conv2D or Conv3D kernel);
# a rank not listed (a bias, a BatchNorm vector) is left as it is.
_BY_RANK: dict[str, dict[int, Shape]] = {
    "keras->torch": {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1), 5: (4, 3, 0, 1, 2)},
    "torch->keras": {2: (1, 0), 3: (2, 1, 0), 4: (2, 3, 1, 0), 5: (2, 3, 4, 1, 0)},
}
_DEPTHWISE = ("depthwise-keras->torch", "depthwise-torch->keras")
LAYOUT_OPS: tuple[str, ...] = (*_FIXED, *_BY_RANK, *_DEPTHWISE, "permute:A,B,...")


@dataclass(frozen=True)
class LayoutOp:
    """A layout operation as the user named it, resolved for each tensor pair by :meth:`resolve`."""

    name: str
    axes: Shape | None = None  # permute:...

    def resolve(self, shape: Shape, target: Shape | None) -> Layout | str | None:
        """The :class:`Layout` for a tensor of ``shape`` paired with a target of shape ``target`` (None:
        no target, as in ``rename``); None when the op leaves a tensor of this rank alone; a
        sentence saying why it does not apply otherwise."""
        rank = len(shape)
        if self.axes is not None:
            if rank != len(self.axes):
                return f"permute:{','.join(map(str, self.axes))} needs a rank-{len(self.axes)} tensor, not {format_shape(shape)}"
            return Layout(self.name, self.axes)
        if self.name in _FIXED:
            axes = _FIXED[self.name]
            if rank != len(axes):
                return f"{self.name} needs a rank-{len(axes)} tensor, not {format_shape(shape)}"
            return Layout(self.name, axes)
        if self.name in _BY_RANK:
            table = _BY_RANK[self.name]
            if rank not in table:
                return None
            plain = Layout(self.name, table[rank])
            if rank == 4 and target is not None and plain.output(shape) != target:
                # Keras 3 names a DepthwiseConv2D kernel "kernel" too: the target's shape tells it apart
                other = LayoutOp("depthwise-" + self.name).resolve(shape, target)
                if isinstance(other, Layout) and other.output(shape) == target:
                    return other
            return plain
        if rank != 4:
            return f"{self.name} needs a rank-4 depthwise kernel, not {format_shape(shape)}"
        if self.name == "depthwise-keras->torch":  # (kh, kw, in, mult) -> (in*mult, 1, kh, kw)
            kh, kw, cin, mult = shape
            return Layout(self.name, (2, 3, 0, 1), None, (cin * mult, 1, kh, kw))
        out, one, kh, kw = shape  # (in*mult, 1, kh, kw) -> (kh, kw, in, mult)
        if one != 1:
            return f"{self.name} needs a (in*mult, 1, kh, kw) kernel, not {format_shape(shape)}"
        cin, mult = out, 1
        if target is not None and len(target) == 4 and target[2] * target[3] == out:
            cin, mult = target[2], target[3]
        return Layout(self.name, (2, 3, 0, 1), (cin, mult, kh, kw), None)


def parse_layout_op(text: str, option: str = "--transform") -> LayoutOp:
    """``transpose``, ``permute:3,2,0,1`` or a named layout (:data:`LAYOUT_OPS`); UsageError otherwise."""
    op = text.strip()
    if op.startswith("permute:"):
        try:
            axes = tuple(int(a) for a in op.removeprefix("permute:").split(","))
        except ValueError:
            axes = ()
        if not axes or sorted(axes) != list(range(len(axes))):
            raise UsageError(None, f"{option}: {quote(op)} is not a permutation of the axes 0..N-1",
                             hint="write it as permute:3,2,0,1")
        return LayoutOp(op, axes)
    if op in _FIXED or op in _BY_RANK or op in _DEPTHWISE:
        return LayoutOp(op)
    raise UsageError(None, f"{option}: unknown layout {quote(op)}; choose transpose, permute:A,B,..., or one of "
                     f"{', '.join(n for n in LAYOUT_OPS if n not in ('transpose', 'permute:A,B,...'))}")


@dataclass(frozen=True)
class GlobRule:
    """``GLOB=VALUE`` of ``--transform`` / ``--resize``: the glob picks tensor pairs by the source's
    name (as stored) or the target's name."""

    glob: str
    value: str
    text: str  # how the user wrote it, for reports
    optional: bool = False  # a preset's rule: not reported when it matches nothing
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(fnmatch.translate(self.glob)))

    def hits(self, *names: str | None) -> bool:
        return any(n is not None and self._regex.match(n) is not None for n in names)


def _glob_rule(option: str, spec: str, optional: bool = False, text: str | None = None) -> GlobRule:
    glob, eq, value = spec.rpartition("=")
    if not eq or not glob or not value:
        raise UsageError(None, f"{option} {quote(spec)}: write it as 'GLOB={'MODE' if option == '--resize' else 'OP'}'")
    return GlobRule(glob, value.strip(), text or f"{option} {quote(spec)}", optional)


_BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def _brace_list(text: str) -> tuple[re.Match[str], tuple[str, ...]] | None:
    """The one ``{a,b,c}`` list of words in ``text`` (a regex quantifier like ``{1,3}`` is not one)."""
    found = [m for m in _BRACES.finditer(text) if not re.fullmatch(r"\s*\d*\s*,\s*\d*\s*", m.group(1))]
    if len(found) != 1:
        return None
    parts = tuple(p.strip() for p in found[0].group(1).split(","))
    return (found[0], parts) if all(parts) and len(set(parts)) == len(parts) else None


def _axis_suffix(spec: str, option: str, sizes_allowed: bool) -> tuple[str, int, tuple[int, ...] | None]:
    """``BODY@AXIS[:SIZES]`` into (body, axis, sizes); no suffix: axis 0."""
    m = re.fullmatch(r"(.*)@(\d+)(?::([\d,\s]+))?", spec, flags=re.S)
    if m is None:
        return spec, 0, None
    sizes = None
    if m.group(3) is not None:
        if not sizes_allowed:
            raise UsageError(None, f"{option} {quote(spec)}: sizes are given to --split only")
        try:
            sizes = tuple(int(s) for s in m.group(3).split(","))
        except ValueError:
            raise UsageError(None, f"{option} {quote(spec)}: the sizes after ':' are not whole numbers") from None
    return m.group(1), int(m.group(2)), sizes


@dataclass(frozen=True)
class SplitRule:
    """``--split 'REGEX=>TEMPLATE{a,b,c}[@AXIS[:SIZES]]'``: a source tensor whose name matches REGEX
    (as stored, whole name) becomes one tensor per part of the brace list, cut along AXIS."""

    regex: re.Pattern[str]
    templates: tuple[str, ...]
    axis: int
    sizes: tuple[int, ...] | None
    text: str

    def targets(self, name: str) -> tuple[str, ...] | None:
        m = self.regex.fullmatch(name)
        return None if m is None else tuple(m.expand(t) for t in self.templates)


@dataclass(frozen=True)
class ConcatRule:
    """``--concat 'REGEX{a,b,c}=>TEMPLATE[@AXIS]'``: the source tensors whose names match REGEX with
    each part of the brace list in turn (and the same groups) become one tensor, joined along AXIS."""

    parts: tuple[re.Pattern[str], ...]
    template: str
    axis: int
    text: str


def _parts_rule(spec: str, option: str, braces_in: Literal["regex", "template"], example: str
                ) -> tuple[str, int, tuple[int, ...] | None, str, str, re.Match[str], tuple[str, ...]]:
    """``REGEX=>TEMPLATE[@AXIS[:SIZES]]`` with one brace list of parts in ``braces_in``: the text the
    report shows, the axis, the sizes, the regex, the template, where the list lies and its parts."""
    text = f"{option} {quote(spec)}"
    body, axis, sizes = _axis_suffix(spec, option, option == "--split")
    pattern, arrow, template = body.partition("=>")
    found = _brace_list(pattern if braces_in == "regex" else template) if arrow else None
    if not arrow or not pattern or not template or found is None:
        raise UsageError(None, f"{text}: write it as 'REGEX=>TEMPLATE' with one brace list in the {braces_in}",
                         hint=f"e.g. {option} '{example}'")
    m, parts = found
    if sizes is not None and len(sizes) != len(parts):
        raise UsageError(None, f"{text}: {len(sizes)} sizes for {len(parts)} parts")
    return text, axis, sizes, pattern, template, m, parts


def parse_split(spec: str) -> SplitRule:
    text, axis, sizes, pattern, template, m, parts = _parts_rule(spec, "--split", "template", r"(.*)\.qkv\.(.*)=>\1.{q,k,v}.\2@0")
    try:
        regex = re.compile(pattern)
        templates = tuple(template[: m.start()] + p + template[m.end() :] for p in parts)
        for t in templates:
            regex.sub(t, "")  # compiles the template: a group it names must exist
    except (re.error, IndexError) as exc:
        raise UsageError(None, f"{text}: {exc}") from None
    return SplitRule(regex, templates, axis, sizes, text)


def parse_concat(spec: str) -> ConcatRule:
    text, axis, _, pattern, template, m, parts = _parts_rule(spec, "--concat", "regex", r"(.*)\.{q,k,v}\.(.*)=>\1.qkv.\2")
    try:
        regexes = tuple(re.compile(pattern[: m.start()] + re.escape(p) + pattern[m.end() :]) for p in parts)
        regexes[0].sub(template, "")
    except (re.error, IndexError) as exc:
        raise UsageError(None, f"{text}: {exc}") from None
    return ConcatRule(regexes, template, axis, text)


@dataclass(frozen=True)
class TransformRules:
    """Every transform option of one command: layouts, resizes, splits and concatenations."""

    layouts: tuple[tuple[GlobRule, LayoutOp], ...] = ()
    resizes: tuple[GlobRule, ...] = ()
    splits: tuple[SplitRule, ...] = ()
    concats: tuple[ConcatRule, ...] = ()
    presets: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, transform: Sequence[str] | None = (), resize: Sequence[str] | None = (),
                     split: Sequence[str] | None = (), concat: Sequence[str] | None = (),
                     preset_layouts: Sequence[tuple[str, str, str]] = (), presets: Sequence[str] = ()) -> TransformRules:
        """Parse option values (UsageError on a bad one). ``preset_layouts`` are (glob, op, text) of
        a preset's layout rules: they come after the user's and are not reported when unused."""
        layouts = []
        for spec in transform or ():
            rule = _glob_rule("--transform", spec)
            layouts.append((rule, parse_layout_op(rule.value)))
        for glob, op, text in preset_layouts:
            layouts.append((GlobRule(glob, op, text, True), parse_layout_op(op, text)))
        resizes = []
        for spec in resize or ():
            rule = _glob_rule("--resize", spec)
            if rule.value not in RESIZE_MODES:
                raise UsageError(None, f"{rule.text}: unknown mode {quote(rule.value)}; choose {', '.join(RESIZE_MODES)}")
            resizes.append(rule)
        return cls(tuple(layouts), tuple(resizes), tuple(parse_split(s) for s in split or ()),
                   tuple(parse_concat(s) for s in concat or ()), tuple(presets))

    @property
    def empty(self) -> bool:
        return not (self.layouts or self.resizes or self.splits or self.concats)

    def layout_for(self, *names: str | None) -> tuple[GlobRule, LayoutOp] | None:
        """The first layout rule whose glob matches one of ``names``."""
        return next(((r, op) for r, op in self.layouts if r.hits(*names)), None)

    def resize_for(self, *names: str | None) -> GlobRule | None:
        return next((r for r in self.resizes if r.hits(*names)), None)

    def texts(self) -> list[str]:
        """The user's transform options as written (a preset as ``--preset NAME``)."""
        return ([f"--preset {p}" for p in self.presets] + [r.text for r, _ in self.layouts if not r.optional]
                + [r.text for r in self.resizes] + [s.text for s in self.splits] + [c.text for c in self.concats])


def chain_shape(transforms: Sequence[Transform], shapes: Sequence[Shape]) -> Shape:
    """The output shape of ``transforms`` applied in turn to inputs of ``shapes``; ValueError when the
    chain does not fit them (a saved plan's transforms are checked this way before anything is read)."""
    if not shapes:
        raise ValueError("a transform without an input")
    current = list(shapes)
    for i, t in enumerate(transforms):
        shape = current[0]
        if isinstance(t, Concat):
            rest = {s[: t.axis] + s[t.axis + 1 :] for s in current}
            if len({len(s) for s in current}) != 1 or t.axis >= len(shape) or len(rest) != 1:
                raise ValueError(f"a concatenation along axis {t.axis} of {', '.join(map(format_shape, current))}")
            current = [t.output_of(current)]
            continue
        if isinstance(t, Layout):
            inner = t.before if t.before is not None else shape
            if math.prod(inner) != math.prod(shape) or sorted(t.axes) != list(range(len(inner))) \
                    or (t.after is not None and math.prod(t.after) != math.prod(shape)):
                raise ValueError(f"layout {t.label!r} does not fit {format_shape(shape)}")
        elif isinstance(t, Slice):
            if t.axis >= len(shape) or not 0 <= t.start <= t.stop <= shape[t.axis]:
                raise ValueError(f"split {t.start}:{t.stop} along axis {t.axis} does not fit {format_shape(shape)}")
        elif isinstance(t, Resize) and (i != len(transforms) - 1 or t.source_shape != shape or len(t.shape) != len(shape)):
            raise ValueError(f"a resize from {format_shape(t.source_shape)} does not fit {format_shape(shape)}")
        current = [t.output(shape), *current[1:]]
    if len(current) > 1 and not (transforms and isinstance(transforms[-1], Resize) and len(current) == 2):
        raise ValueError("more inputs than the transforms use")
    return current[0]
