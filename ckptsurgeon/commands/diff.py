"""Compare two checkpoints tensor by tensor: names, shapes, dtypes and values, in bounded memory.

``diff(a, b)`` pairs A's tensors with B's by name after the rules (which apply to A's names only,
so two naming conventions can be compared), then reads each pair once, in element-aligned chunks
of both files side by side. A chunk whose bytes are identical counts no differences without any
arithmetic; other chunks are compared by value in float64 (integers exactly), NaN equal to NaN:
an element differs when ``|a - b| > atol + rtol * |b|`` (numpy.isclose's test).

Tensors whose shapes differ are reported and not compared. Two numeric tensors whose dtypes differ
are compared across dtypes: each chunk of both sides is cast to the dtype :func:`compared_as`
names (numpy's / ml_dtypes' ``astype``) and then compared as a same-dtype pair is, with the same
tolerances. Such a pair is equal when its values are (exactly, or within ``--atol`` / ``--rtol``),
whatever the dtypes; ``DiffOptions.strict_dtypes`` makes a dtype change a difference of its own.
A BOOL tensor paired with another dtype is always a dtype change (its values are still compared,
True as 1). Metadata differences are always collected; they make the checkpoints differ only when
``DiffOptions.metadata`` is set.

Two Keras 3 files (each with ``match_names``) are paired by the names Keras gives their variables
(``proj/kernel``), not by their stored paths: Keras 3 stores a layer under a path derived from its
class and position (``layers/dense_1``), so two models with a layer inserted have the same paths
for different layers. The rules then apply to A's Keras names, as in ``ckpt transfer``; tensors
without a Keras name (optimizer state) keep their stored names. Any other pair of inputs is paired
by stored name.

Which tensors of B take part, when ``--include`` / ``--exclude`` are given: a tensor of B is
left out when the tensor of A that the rules would name like it is left out; a tensor of B that
no tensor of A would be named like is matched against the globs by its own name.

Plain data only; the CLI renders :class:`DiffResult` and exits 1 unless :attr:`DiffResult.equal`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UsageError
from ..formats import open_checkpoint
from ..formats.base import OpenOptions, Reader
from ..match import auto_prefix, model_prefixes
from ..rules import Renamed, Rules, apply_rules
from ..tensors import DTYPES, TensorInfo, numel
from ..text import plural
from ..values import pieces

DIFF_SCHEMA = "ckptsurgeon/diff/1"
CHUNK_ELEMENTS = 1 << 20  # elements per compared chunk: a few float64 temporaries of 8 MB each

Status = Literal["equal", "values", "dtype", "shape"]


@dataclass(frozen=True)
class DiffOptions:
    """How to compare. ``rules`` rename and filter A's names before they are paired with B's."""

    rules: Rules = field(default_factory=Rules)
    atol: float = 0.0
    rtol: float = 0.0
    metadata: bool = False
    allow_unused_rules: bool = False
    chunk_elements: int = CHUNK_ELEMENTS
    strict_dtypes: bool = False  # a dtype change is a difference even where the values agree

    def __post_init__(self) -> None:
        for option, value in (("--atol", self.atol), ("--rtol", self.rtol)):
            if not math.isfinite(value) or value < 0:
                raise UsageError(None, f"{option} must be a finite number >= 0, not {value}")
        if self.chunk_elements < 1:
            raise UsageError(None, f"chunk_elements must be at least 1, not {self.chunk_elements}")


# --- comparing values ----------------------------------------------------------------------------------

# Floats a cross-dtype pair may be widened to beyond its own two dtypes, narrowest first.
_WIDER_FLOATS = ("F16", "BF16", "F32", "F64")


# Each float dtype's mantissa bits, largest exponent (finfo's maxexp), exponent of its smallest
# subnormal (minexp - nmant) and whether it has ±Inf: ml_dtypes.finfo's figures, written out so that
# comparing F32 with F16 does not import ml_dtypes (tests check them against it).
FLOAT_RANGES: dict[str, tuple[int, int, int, bool]] = {
    "F64": (52, 1024, -1074, True),
    "F32": (23, 128, -149, True),
    "F16": (10, 16, -24, True),
    "BF16": (7, 128, -133, True),
    "F8_E4M3": (3, 9, -9, False),
    "F8_E5M2": (2, 16, -16, True),
    "F8_E8M0": (0, 128, -127, False),
}


def _holds(wide: str, narrow: str) -> bool:
    """Whether every value of float dtype ``narrow`` (NaN and ±Inf too) is a value of float dtype ``wide``."""
    mant_w, max_w, tiny_w, inf_w = FLOAT_RANGES[wide]
    mant_n, max_n, tiny_n, inf_n = FLOAT_RANGES[narrow]
    return mant_w >= mant_n and max_w >= max_n and tiny_w <= tiny_n and (inf_w or not inf_n)


def _common_int(a: str, b: str) -> str:
    """The narrowest integer dtype holding every value of integer dtypes ``a`` and ``b``; F64 for a signed one with U64."""
    da, db = DTYPES[a], DTYPES[b]
    if da.kind == db.kind:
        return a if da.itemsize >= db.itemsize else b
    signed, unsigned = (da, db) if da.kind == "int" else (db, da)
    size = max(signed.itemsize, 2 * unsigned.itemsize)
    return f"I{8 * size}" if size <= 8 else "F64"


def compared_as(a: str, b: str) -> str | None:
    """The dtype both sides of a pair of dtypes ``a`` and ``b`` are cast to before their values are compared.

    None when the pair is not compared across dtypes: the same dtype, or BOOL with another dtype.

    * two floats: the first of the two dtypes (narrower first), F16, BF16, F32, F64 that holds every
      value of both exactly, NaN and ±Inf included. F16, BF16 or an F8 with F32 -> F32; any float
      with F64 -> F64; F16 with BF16 -> F32; F8_E4M3 or F8_E5M2 with F16 -> F16 and with BF16 ->
      BF16; F8_E4M3 with F8_E5M2 -> F16; F8_E8M0 with BF16 or another F8 -> BF16, with F16 -> F32.
      These casts are exact: the stored values themselves are compared.
    * two integers: the narrower widened to the wider of the same signedness; a signed with an
      unsigned one to the narrowest signed dtype holding both (I8 with U8 -> I16, I32 with U32 -> I64);
      a signed one with U64 -> F64, as numpy promotes them (exact up to 2**53 in magnitude).
    * an integer with a float: F64 (integers exact up to 2**53 in magnitude; larger ones round).
    """
    if a == b:
        return None
    ka, kb = DTYPES[a].kind, DTYPES[b].kind
    if "bool" in (ka, kb):
        return None
    if ka == "float" and kb == "float":
        own = sorted((a, b), key=lambda code: DTYPES[code].itemsize)
        for code in (*own, *_WIDER_FLOATS):
            if _holds(code, a) and _holds(code, b):
                return code
        raise AssertionError(f"no float holds {a} and {b}")  # pragma: no cover - F64 holds every float
    if ka != "float" and kb != "float":
        return _common_int(a, b)
    return "F64"


@dataclass(frozen=True)
class ValueDiff:
    """How the values of two same-shape tensors compare.

    ``differing``: elements outside the tolerance. ``max_abs_diff``: the largest finite ``|a - b|``
    over all elements (also those within the tolerance). ``nonfinite``: differing elements where a
    side is NaN or ±Inf and the other is not the same (their difference has no finite size).
    ``byte_identical``: the raw bytes are the same (which requires the same dtype).
    """

    differing: int = 0
    max_abs_diff: float = 0.0
    nonfinite: int = 0
    byte_identical: bool = True

    def __add__(self, other: ValueDiff) -> ValueDiff:
        return ValueDiff(
            self.differing + other.differing,
            max(self.max_abs_diff, other.max_abs_diff),
            self.nonfinite + other.nonfinite,
            self.byte_identical and other.byte_identical,
        )


def compare_values(a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> ValueDiff:
    """Compare two flat arrays of the same length element by element (see the module docstring).

    Floats (bfloat16 and float8 too) are widened exactly to float64; when neither side is a float
    the equality test is exact in the arrays' own integer types and float64 only measures distance.
    """
    if a.shape != b.shape:
        raise ValueError(f"compare_values needs arrays of one shape, got {a.shape} and {b.shape}")
    floats = a.dtype.kind not in "biu" or b.dtype.kind not in "biu"
    af = a.astype(np.float64, copy=False)  # only read below: a float64 input is not copied
    bf = b.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        if floats:
            same = af == bf
            same |= np.isnan(af) & np.isnan(bf)
        else:
            same = a == b
        dist = np.abs(af - bf)
        finite = np.isfinite(dist)
        # As numpy.isclose: the tolerance applies to finite pairs; Inf only equals itself.
        close = same | (finite & (dist <= atol + rtol * np.abs(bf))) if atol or rtol else same
    differs = ~close
    moved = ~same & finite
    return ValueDiff(
        differing=int(np.count_nonzero(differs)),
        max_abs_diff=float(dist[moved].max()) if moved.any() else 0.0,
        nonfinite=int(np.count_nonzero(differs & ~finite)),
        byte_identical=False,
    )


def compare_tensors(
    a: Reader, a_info: TensorInfo, b: Reader, b_info: TensorInfo,
    *, atol: float = 0.0, rtol: float = 0.0, chunk_elements: int = CHUNK_ELEMENTS,
) -> ValueDiff:
    """Read two same-shape tensors side by side, one chunk of each at a time, and compare them.

    Tensors of two numeric dtypes are compared as :func:`compared_as`'s dtype; only one chunk of
    each side (and its casts) is in memory at a time. Two integer chunks are cast to that dtype
    first. Where a float takes part, :func:`compare_values` widens both chunks to float64 anyway,
    which gives the same values: float64 is the dtype of an integer with a float, and two floats'
    dtype holds both exactly.
    """
    if a_info.shape != b_info.shape:
        raise ValueError(f"{a_info.name!r} and {b_info.name!r} have different shapes")
    same_dtype = a_info.dtype == b_info.dtype
    widen = compared_as(a_info.dtype, b_info.dtype)
    ints = DTYPES[a_info.dtype].kind != "float" and DTYPES[b_info.dtype].kind != "float"
    wide = DTYPES[widen].numpy if widen is not None and ints else None
    total = ValueDiff(byte_identical=same_dtype)
    pairs = zip(pieces(a, a_info.name, chunk_elements), pieces(b, b_info.name, chunk_elements), strict=True)
    for piece_a, piece_b in pairs:
        if same_dtype and np.array_equal(piece_a.view(np.uint8), piece_b.view(np.uint8)):
            continue  # identical bytes: no differences, no arithmetic
        if wide is not None:
            piece_a, piece_b = piece_a.astype(wide, copy=False), piece_b.astype(wide, copy=False)
        total += compare_values(piece_a, piece_b, atol, rtol)
    return total


# --- results ------------------------------------------------------------------------------------------


def _shape_list(shape: tuple[int, ...]) -> list[int]:
    return list(shape)


@dataclass(frozen=True)
class TensorDiff:
    """One tensor present on both sides: ``name`` is B's name (A's name after the rules).

    Paired by Keras 3 names, ``name`` is B's Keras name and ``b_name`` B's stored path; ``a_name``
    is always A's stored name.
    """

    name: str
    a_name: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    a_dtype: str
    b_dtype: str
    values: ValueDiff | None  # None when the shapes differ: values are not compared
    b_stored: str | None = None  # B's stored name where it is not ``name`` (paired by Keras names)
    strict_dtypes: bool = False  # a dtype change is a difference even where the values agree

    @property
    def compared_as(self) -> str | None:
        """The dtype both sides' values were cast to, for two numeric dtypes compared by value; else None."""
        return compared_as(self.a_dtype, self.b_dtype) if self.values is not None else None

    @property
    def b_name(self) -> str:
        """B's stored name."""
        return self.b_stored if self.b_stored is not None else self.name

    @property
    def status(self) -> Status:
        if self.a_shape != self.b_shape:
            return "shape"
        if self.a_dtype != self.b_dtype and (self.strict_dtypes or self.compared_as is None):
            return "dtype"
        if self.values is not None and self.values.differing:
            return "values"
        return "equal"

    @property
    def equal(self) -> bool:
        return self.status == "equal"

    @property
    def numel(self) -> int:
        return numel(self.b_shape)

    def to_dict(self) -> dict[str, Any]:
        v = self.values
        return {
            "name": self.name,
            "a_name": self.a_name,
            "b_name": self.b_name,
            "status": self.status,
            "a_shape": _shape_list(self.a_shape),
            "b_shape": _shape_list(self.b_shape),
            "a_dtype": self.a_dtype,
            "b_dtype": self.b_dtype,
            "elements": self.numel if v is not None else None,
            "differing": v.differing if v is not None else None,
            "max_abs_diff": _finite_or_none(v.max_abs_diff) if v is not None else None,
            "nonfinite_differing": v.nonfinite if v is not None else None,
            "byte_identical": v.byte_identical if v is not None else False,
            "compared_as": self.compared_as,
        }


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class MetadataDiff:
    """Metadata keys only in A, only in B, and keys whose values differ (A's value, B's value)."""

    only_a: dict[str, str] = field(default_factory=dict)
    only_b: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, a: dict[str, str], b: dict[str, str]) -> MetadataDiff:
        return cls(
            only_a={k: v for k, v in a.items() if k not in b},
            only_b={k: v for k, v in b.items() if k not in a},
            changed={k: (v, b[k]) for k, v in a.items() if k in b and b[k] != v},
        )

    @property
    def count(self) -> int:
        return len(self.only_a) + len(self.only_b) + len(self.changed)


@dataclass
class DiffResult:
    """Everything ``ckpt diff`` found, as plain data."""

    a: dict[str, Any]
    b: dict[str, Any]
    options: DiffOptions
    renamed: Renamed
    only_a: list[tuple[TensorInfo, str]]  # A's tensor and its name after the rules
    only_b: list[TensorInfo]
    tensors: list[TensorDiff]  # every tensor on both sides, in A's order
    metadata: MetadataDiff
    excluded_b: list[str] = field(default_factory=list)  # B's tensors left out by --include / --exclude
    hint: str | None = None  # a rule that would pair tensors only in A with tensors only in B
    # stored name -> Keras 3 name of each side's tensors, when the two were paired by Keras names
    a_match_names: dict[str, str] = field(default_factory=dict)
    b_match_names: dict[str, str] = field(default_factory=dict)

    @property
    def paired_by(self) -> str:
        """``"keras_names"`` when two Keras 3 files were paired by their variables' Keras names, else ``"names"``."""
        return "keras_names" if self.a_match_names or self.b_match_names else "names"

    @property
    def changed(self) -> list[TensorDiff]:
        return [t for t in self.tensors if not t.equal]

    def count(self, status: Status) -> int:
        return sum(1 for t in self.tensors if t.status == status)

    @property
    def cross_dtype(self) -> list[TensorDiff]:
        """Tensors whose values were compared across two numeric dtypes (see :func:`compared_as`)."""
        return [t for t in self.tensors if t.compared_as is not None]

    @property
    def within_tolerance(self) -> int:
        """Equal tensors whose values are not all exactly equal (only with --atol / --rtol)."""
        return sum(1 for t in self.tensors if t.equal and t.values is not None and t.values.max_abs_diff > 0)

    @property
    def metadata_differs(self) -> bool:
        return self.options.metadata and self.metadata.count > 0

    @property
    def equal(self) -> bool:
        return not (self.only_a or self.only_b or self.changed or self.metadata_differs)

    @property
    def ok(self) -> bool:
        """The check a diff makes: the two checkpoints are equal (within the tolerances)."""
        return self.equal

    @property
    def summary(self) -> dict[str, Any]:
        compared = [t.values for t in self.tensors if t.values is not None]
        maxima = [v.max_abs_diff for v in compared]
        return {
            "compared": len(self.tensors),
            "equal": self.count("equal"),
            "within_tolerance": self.within_tolerance,
            "values_differ": self.count("values"),
            "dtype_changed": self.count("dtype"),
            "shape_changed": self.count("shape"),
            "only_in_a": len(self.only_a),
            "only_in_b": len(self.only_b),
            "differing_elements": sum(v.differing for v in compared),
            "compared_elements": sum(t.numel for t in self.tensors if t.values is not None),
            "max_abs_diff": _finite_or_none(max(maxima)) if maxima else None,
            "metadata_differences": self.metadata.count,
            "cross_dtype": len(self.cross_dtype),
        }

    @property
    def cross_dtype_note(self) -> str:
        """``"; 14 compared across dtypes (F32 vs BF16 as F32)"``, or nothing when no pair was."""
        kinds: dict[tuple[str, str, str | None], int] = {}
        for t in self.cross_dtype:
            key = (t.a_dtype, t.b_dtype, t.compared_as)
            kinds[key] = kinds.get(key, 0) + 1
        if not kinds:
            return ""
        shown = [f"{a} vs {b} as {wide}" + (f": {n:,}" if len(kinds) > 1 else "")
                 for (a, b, wide), n in list(kinds.items())[:3]]
        more = f", {len(kinds) - 3} more pairs of dtypes" if len(kinds) > 3 else ""
        return f"; {len(self.cross_dtype):,} compared across dtypes ({', '.join(shown)}{more})"

    @property
    def verdict(self) -> str:
        """The one-line summary."""
        s = self.summary
        tolerance = f" within atol={self.options.atol:g}, rtol={self.options.rtol:g}" \
            if self.options.atol or self.options.rtol else ""
        meta_note = ""
        if self.metadata.count and not self.options.metadata:
            meta_note = f"; {_differ(self.metadata.count, 'metadata key')} (not compared without --metadata)"
        cross = self.cross_dtype_note
        if self.equal:
            text = f"equal{tolerance}: {plural(s['compared'], 'tensor')} compared"
            # equal tensors: the same values in one dtype, the same values across dtypes, within the tolerance
            exact_cross = sum(1 for t in self.cross_dtype if t.values is not None and t.values.max_abs_diff == 0)
            identical = s["equal"] - s["within_tolerance"] - exact_cross
            if s["within_tolerance"] or exact_cross:
                text += f", {identical:,} identical"
                if exact_cross:
                    text += f", {exact_cross:,} equal after widening"
                if s["within_tolerance"]:
                    text += f", {s['within_tolerance']:,} within tolerance (max |a-b| {_num(s['max_abs_diff'])})"
            elif s["compared"]:
                text += ", all identical"
            return text + cross + meta_note
        parts = []
        for key, words in (("only_in_a", "only in A"), ("only_in_b", "only in B"), ("shape_changed", "shape changed"),
                           ("dtype_changed", "dtype changed"), ("values_differ", "with different values")):
            if s[key]:
                parts.append(f"{s[key]:,} {words}")
        if s["differing_elements"]:
            parts.append(f"{s['differing_elements']:,} of {s['compared_elements']:,} compared elements differ"
                         f"{tolerance} (max |a-b| {_num(s['max_abs_diff'])})")
        if self.metadata_differs:
            parts.append(_differ(self.metadata.count, "metadata key"))
        common = (f"{s['equal']:,} of {plural(s['compared'], 'common tensor')} equal" if s["compared"]
                  else "no tensor in common")
        return f"different: {', '.join(parts)}; {common}{cross}{meta_note}"

    def _match_name(self, names: dict[str, str], stored: str) -> dict[str, str]:
        """``{"match_name": ...}`` for a tensor of a Keras 3 pair that has a Keras name, else nothing."""
        return {"match_name": names[stored]} if stored in names else {}

    def to_dict(self) -> dict[str, Any]:
        rules = self.options.rules
        return {
            "schema": DIFF_SCHEMA,
            "a": self.a,
            "b": self.b,
            "options": {"atol": self.options.atol, "rtol": self.options.rtol, "metadata": self.options.metadata,
                        "strict_dtypes": self.options.strict_dtypes},
            "rules": [{"rule": r.text, "matches": n} for r, n in self.renamed.rule_counts]
            + [{"rule": text, "matches": n} for text, n in self.renamed.glob_counts],
            "map": None if not rules.name_map else {"entries": len(rules.name_map), "used": self.renamed.map_used},
            "equal": self.equal,
            "paired_by": self.paired_by,
            "only_in_a": [
                {"name": t.name, **self._match_name(self.a_match_names, t.name), "renamed": new,
                 "shape": _shape_list(t.shape), "dtype": t.dtype}
                for t, new in self.only_a
            ],
            "only_in_b": [{"name": t.name, **self._match_name(self.b_match_names, t.name), "shape": _shape_list(t.shape),
                           "dtype": t.dtype} for t in self.only_b],
            "tensors": [t.to_dict() for t in self.tensors],
            "excluded": {
                "a": [{"name": n, "reason": r} for n, r in self.renamed.excluded.items()],
                "b": list(self.excluded_b),
            },
            "metadata": {
                "compared": self.options.metadata,
                "only_in_a": self.metadata.only_a,
                "only_in_b": self.metadata.only_b,
                "changed": {k: {"a": va, "b": vb} for k, (va, vb) in self.metadata.changed.items()},
            },
            "summary": self.summary,
            "hint": self.hint,
            "ok": self.ok,
            "verdict": self.verdict,
        }


def _differ(n: int, word: str) -> str:
    return f"{plural(n, word)} {'differs' if n == 1 else 'differ'}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


# --- pairing names ------------------------------------------------------------------------------------


def _rule_name(name: str, rules: Rules) -> str:
    """The name the rules give ``name`` when the filters are left aside (no counting)."""
    mapped = dict(rules.name_map).get(name)
    if mapped is not None:
        return mapped
    for rule in rules.renames:
        changed = rule.apply(name)
        if changed is not None:
            name = changed
    return name


def scope_other(b_names: list[str], renamed: Renamed, rules: Rules) -> tuple[list[str], list[str], Renamed]:
    """The other side's names that take part and those the filters leave out, when ``renamed`` is what
    ``rules`` made of one side's names (A's in a diff, a hash file's in ``verify``).

    A name of the other side is left out when the name the rules would give it comes from a name the
    filters left out; one that no name of the first side would become is matched against the globs
    itself. The glob counts returned include the other side's own matches.
    """
    if not (rules.include or rules.exclude):
        return b_names, [], renamed
    taken = set(renamed.original)
    dropped = {_rule_name(n, rules) for n in renamed.excluded} - taken
    unclaimed = [n for n in b_names if n not in taken and n not in dropped]
    own = apply_rules(unclaimed, Rules(include=rules.include, exclude=rules.exclude))
    kept = [n for n in b_names if n in taken or (n not in dropped and n in own.mapping)]
    left_out = [n for n in b_names if n in dropped or n in own.excluded]
    counts = dict(own.glob_counts)
    merged = tuple((text, n + counts.get(text, 0)) for text, n in renamed.glob_counts)
    return kept, left_out, dataclasses.replace(renamed, glob_counts=merged)


def _describe(reader: Reader) -> dict[str, Any]:
    return {"path": str(reader.path), "format": reader.format, "tensors": len(reader.tensors)}


def _keys(reader: Reader, by_match_name: bool) -> dict[str, str]:
    """Stored name -> the name it is paired by, in the reader's order."""
    names = reader.match_names if by_match_name else {}
    return {t.name: names.get(t.name, t.name) for t in reader.tensors}


def diff_readers(a: Reader, b: Reader, options: DiffOptions | None = None) -> DiffResult:
    """Compare two opened checkpoints (see :func:`diff`)."""
    options = options or DiffOptions()
    keras = bool(a.match_names) and bool(b.match_names)
    a_keys, b_keys = _keys(a, keras), _keys(b, keras)
    b_stored = {key: stored for stored, key in b_keys.items()}
    renamed = apply_rules(list(a_keys.values()), options.rules)
    b_names, excluded_b, renamed = scope_other(list(b_keys.values()), renamed, options.rules)
    renamed.check_unused(options.allow_unused_rules, a.path)  # the rules apply to A's names

    in_b = set(b_names)
    only_a: list[tuple[TensorInfo, str]] = []
    tensors: list[TensorDiff] = []
    for info in a.tensors:
        new = renamed.renamed(a_keys[info.name])
        if new is None:
            continue
        if new not in in_b:
            only_a.append((info, new))
            continue
        other = b[b_stored[new]]
        values = None
        if info.shape == other.shape:
            values = compare_tensors(a, info, b, other, atol=options.atol, rtol=options.rtol,
                                     chunk_elements=options.chunk_elements)
        tensors.append(TensorDiff(new, info.name, info.shape, other.shape, info.dtype, other.dtype, values,
                                  b_stored=other.name if other.name != new else None,
                                  strict_dtypes=options.strict_dtypes))
    taken = set(renamed.original)
    only_b = [b[b_stored[n]] for n in b_names if n not in taken]
    return DiffResult(
        a=_describe(a), b=_describe(b), options=options, renamed=renamed, only_a=only_a, only_b=only_b,
        tensors=tensors, metadata=MetadataDiff.of(dict(a.metadata), dict(b.metadata)),
        excluded_b=excluded_b, hint=_prefix_hint(only_a, only_b, b_keys),
        a_match_names=dict(a.match_names) if keras else {}, b_match_names=dict(b.match_names) if keras else {},
    )


def _prefix_hint(only_a: list[tuple[TensorInfo, str]], only_b: list[TensorInfo], b_keys: dict[str, str]) -> str | None:
    """Suggest the wrapper-prefix rule (``module.``, ``_orig_mod.`` ...) that pairs the most unpaired names."""
    if not only_a or not only_b:
        return None
    fix = auto_prefix([new for _, new in only_a], [b_keys[t.name] for t in only_b])
    if fix is None:
        found = model_prefixes({new: t.shape for t, new in only_a}, {b_keys[t.name]: t.shape for t in only_b}, most=1)
        fix = found[0] if found else None
    if fix is None:
        return None
    return f"{fix.rule} would pair {fix.after - fix.before:,} more tensors"


def diff(a: str | Path, b: str | Path, options: DiffOptions | None = None,
         open_options: OpenOptions | None = None) -> DiffResult:
    """Compare checkpoint ``a`` with checkpoint ``b`` (any formats ckptsurgeon reads).

    Raises InputError for an unreadable input and CheckFailed for a rule that matched nothing
    (unless ``options.allow_unused_rules``) or two of A's tensors renamed onto one name. Differences
    do not raise: see :attr:`DiffResult.equal`.
    """
    with open_checkpoint(a, open_options) as reader_a, open_checkpoint(b, open_options) as reader_b:
        return diff_readers(reader_a, reader_b, options)
