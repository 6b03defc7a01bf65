"""Read every tensor of a checkpoint once: sha256 of its raw bytes, NaN / Inf counts, hash-file checks.

``verify(path)`` opens a checkpoint (which validates its structure), streams each selected tensor
in element-aligned chunks, hashes the raw little-endian C-order bytes and counts NaN and Inf
values of float tensors. With a hash file (schema ``ckptsurgeon/hashes/1``, written by
:func:`write_hashes`) it also reports every tensor whose sha256, shape or dtype changed, every
recorded tensor that is missing and every tensor the file does not record.

A hash file recorded before a rename holds the old names. The rename rules (``Rules``: renames,
strip/add prefixes, a map) then apply to the hash file's names, as ``ckpt rename`` applied them to
its input's: each recorded entry is expected under its new name, and the renamed checkpoint is read
under its own. A rule that matches no recorded name fails (CheckFailed) unless unused rules are
allowed. Include/exclude globs see the recorded names as stored (as in a rename); a tensor of the
checkpoint that no recorded name becomes is matched against them by its own name.

Plain data only; the CLI decides the exit code from :attr:`Verification.ok`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import atomic_path, check_output
from ..errors import InputError, UsageError
from ..files import check_input, read_input
from ..formats import open_checkpoint
from ..formats.base import CHUNK_BYTES, OpenOptions, Reader
from ..rules import Renamed, Rules, apply_rules, listing
from ..tensors import DTYPES, TensorInfo, byte_size, numel
from ..text import plural
from ..values import element_chunks

HASHES_SCHEMA = "ckptsurgeon/hashes/1"
VERIFY_SCHEMA = "ckptsurgeon/verify/1"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_HASH_FILE_BYTES = 200_000_000


def is_float(dtype_code: str) -> bool:
    return DTYPES[dtype_code].kind == "float"


# --- one tensor ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorCheck:
    """What reading one tensor found. ``nan`` and ``inf`` are None for tensors that are not float."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer: str
    sha256: str
    nan: int | None
    inf: int | None

    @property
    def nonfinite(self) -> int:
        return (self.nan or 0) + (self.inf or 0)

    @property
    def numel(self) -> int:
        return numel(self.shape)

    @property
    def nbytes(self) -> int:
        return byte_size(self.dtype, self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layer": self.layer,
            "sha256": self.sha256, "nan": self.nan, "inf": self.inf,
        }


def check_tensor(reader: Reader, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> TensorCheck:
    """Read one tensor once, chunk by chunk: its sha256 and, for a float tensor, its NaN and Inf counts."""
    digest = hashlib.sha256()
    counting = is_float(info.dtype)
    np_dtype = DTYPES[info.dtype].numpy
    nan = inf = 0
    elements = max(1, chunk_bytes // DTYPES[info.dtype].itemsize)
    for piece in element_chunks(reader, info.name, elements):
        digest.update(piece)
        if counting:
            values = np.frombuffer(piece, dtype=np_dtype)
            nan += int(np.count_nonzero(np.isnan(values)))
            inf += int(np.count_nonzero(np.isinf(values)))
            del values  # the piece may view a memory map: let it go before the next one
    return TensorCheck(
        name=info.name, shape=info.shape, dtype=info.dtype, layer=info.layer, sha256=digest.hexdigest(),
        nan=nan if counting else None, inf=inf if counting else None,
    )


# --- hash files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashEntry:
    """One tensor of a hash file: the sha256 of its raw bytes, its shape and dtype."""

    sha256: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class HashFile:
    """A ``ckptsurgeon/hashes/1`` document: which checkpoint it describes and one entry per tensor."""

    path: str
    format: str
    tensors: dict[str, HashEntry]
    source: str | None = field(default=None, compare=False)  # the file it was loaded from

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": HASHES_SCHEMA,
            "path": self.path,
            "format": self.format,
            "tensors": {name: entry.to_dict() for name, entry in self.tensors.items()},
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str | Path) -> HashFile:
        """Validate a parsed hash file; every problem is an InputError naming ``source``."""

        def bad(problem: str) -> InputError:
            return InputError(source, f"not a ckptsurgeon hash file: {problem}",
                              hint="write one with `ckpt verify CHECKPOINT --write-hashes FILE.json`")

        if not isinstance(doc, dict):
            raise bad("the document is not a JSON object")
        if doc.get("schema") != HASHES_SCHEMA:
            raise bad(f"\"schema\" is {doc.get('schema')!r}, expected {HASHES_SCHEMA!r}")
        path, fmt, tensors = doc.get("path"), doc.get("format"), doc.get("tensors")
        if not isinstance(path, str) or not isinstance(fmt, str):
            raise bad("\"path\" and \"format\" must be strings")
        if not isinstance(tensors, dict):
            raise bad("\"tensors\" must be an object of tensor names")
        entries: dict[str, HashEntry] = {}
        for name, entry in tensors.items():
            if not isinstance(entry, dict):
                raise bad(f"tensor {name!r}: the entry is not an object")
            sha, shape, dtype = entry.get("sha256"), entry.get("shape"), entry.get("dtype")
            if not isinstance(sha, str) or not _SHA256.match(sha):
                raise bad(f"tensor {name!r}: \"sha256\" is not 64 lowercase hex digits")
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                      for d in shape):
                raise bad(f"tensor {name!r}: \"shape\" is not a list of non-negative integers")
            if dtype not in DTYPES:
                raise bad(f"tensor {name!r}: unknown dtype {dtype!r}")
            entries[name] = HashEntry(sha, tuple(shape), dtype)
        return cls(path, fmt, entries, source=str(source))

    @classmethod
    def load(cls, path: str | Path) -> HashFile:
        """Read and validate a hash file written by :func:`write_hashes`."""
        path = Path(path)
        try:
            size = check_input(path).st_size  # a regular file: a FIFO or a device is refused, never read
            if size > MAX_HASH_FILE_BYTES:
                raise InputError(path, f"a {size} byte file is too large for a hash file")
            text = read_input(path).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(path, "is not UTF-8 text; a hash file is JSON") from None
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
        return cls.from_dict(doc, path)


def write_hashes(hashes: HashFile, dest: str | Path, inputs: Iterable[str | Path] = (), *,
                 no_clobber: bool = False) -> Path:
    """Write a hash file atomically; ``inputs`` (the checkpoint's files) are never overwritten, nor,
    with ``no_clobber``, any existing file."""
    dest = check_output(dest, inputs, no_clobber=no_clobber)
    with atomic_path(dest, no_clobber=no_clobber) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(json.dumps(hashes.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return dest


Problem = Literal["changed", "missing", "extra"]


@dataclass(frozen=True)
class Mismatch:
    """A tensor that does not agree with the hash file.

    ``changed``: present in both, but its sha256, shape or dtype differs; ``missing``: recorded in
    the hash file, absent from the checkpoint; ``extra``: in the checkpoint, not in the hash file.
    """

    name: str
    problem: Problem
    expected: HashEntry | None
    actual: HashEntry | None
    recorded_name: str | None = None  # the hash file's name for ``name``, where the rules renamed it

    @property
    def detail(self) -> str:
        recorded = f" (recorded as {self.recorded_name!r})" if self.recorded_name is not None else ""
        if self.problem == "missing":
            return "missing from the checkpoint" + recorded
        if self.problem == "extra":
            return "not in the hash file"
        return self._changes() + recorded

    def _changes(self) -> str:
        assert self.expected is not None and self.actual is not None
        parts = []
        if self.expected.shape != self.actual.shape:
            parts.append(f"shape {list(self.expected.shape)} -> {list(self.actual.shape)}")
        if self.expected.dtype != self.actual.dtype:
            parts.append(f"dtype {self.expected.dtype} -> {self.actual.dtype}")
        if self.expected.sha256 != self.actual.sha256:
            parts.append("sha256 differs")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "problem": self.problem,
            "detail": self.detail,
            "recorded_name": self.recorded_name,
            "expected": self.expected.to_dict() if self.expected else None,
            "actual": self.actual.to_dict() if self.actual else None,
        }


def compare_hashes(found: Mapping[str, HashEntry], recorded: Mapping[str, HashEntry],
                   recorded_names: Mapping[str, str] | None = None) -> list[Mismatch]:
    """Every disagreement between a checkpoint's tensors and a hash file's, in the checkpoint's order.

    ``recorded`` is keyed by the names the checkpoint should have; ``recorded_names`` maps such a
    name to the hash file's own name where the rules renamed it.
    """
    origin = recorded_names or {}
    out: list[Mismatch] = []
    for name, actual in found.items():
        expected = recorded.get(name)
        if expected is None:
            out.append(Mismatch(name, "extra", None, actual))
        elif expected != actual:
            out.append(Mismatch(name, "changed", expected, actual, origin.get(name)))
    out += [Mismatch(name, "missing", entry, None, origin.get(name))
            for name, entry in recorded.items() if name not in found]
    return out


# --- the whole checkpoint ----------------------------------------------------------------------------


@dataclass
class Verification:
    """What ``ckpt verify`` found: every selected tensor's sha256 and NaN/Inf counts, hash-file mismatches."""

    path: str
    format: str
    files: list[str]
    tensors: list[TensorCheck]
    filters: Renamed | None = None
    hashes_path: str | None = None
    recorded: int = 0  # tensors of the hash file that were checked (after --include / --exclude)
    mismatches: list[Mismatch] = field(default_factory=list)
    fail_on_nonfinite: bool = False
    rules: Rules = field(default_factory=Rules)  # the rename rules applied to the hash file's names
    renamed: Renamed | None = None  # what they did (None without rename rules)

    # --- totals --------------------------------------------------------------------------------
    @property
    def nonfinite_tensors(self) -> list[TensorCheck]:
        return [t for t in self.tensors if t.nonfinite]

    @property
    def nan_total(self) -> int:
        return sum(t.nan or 0 for t in self.tensors)

    @property
    def inf_total(self) -> int:
        return sum(t.inf or 0 for t in self.tensors)

    @property
    def failures(self) -> list[str]:
        """Why the verification failed, one sentence each; empty when it passed."""
        out: list[str] = []
        if self.mismatches:
            by_problem: dict[str, list[str]] = {}
            for m in self.mismatches:
                by_problem.setdefault(m.problem, []).append(m.name)
            words = {"changed": "changed", "missing": "missing", "extra": "not in the hash file"}
            parts = [f"{plural(len(names), 'tensor')} {words[p]} ({listing(names)})" for p, names in by_problem.items()]
            out.append(f"{self.hashes_path}: " + "; ".join(parts))
        if self.fail_on_nonfinite and self.nonfinite_tensors:
            names = [t.name for t in self.nonfinite_tensors]
            out.append(f"{plural(len(names), 'tensor')} hold NaN or Inf ({listing(names)})")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "tensors": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "bytes": sum(t.nbytes for t in self.tensors),
            "float_tensors": sum(1 for t in self.tensors if t.nan is not None),
            "nonfinite_tensors": len(self.nonfinite_tensors),
            "nan": self.nan_total,
            "inf": self.inf_total,
            "hash_mismatches": len(self.mismatches),
        }

    @property
    def verdict(self) -> str:
        """The one-line summary."""
        s = self.summary
        read = f"{plural(s['tensors'], 'tensor')} read ({s['parameters']:,} parameters)"
        if s["nonfinite_tensors"]:
            nonfinite = (f"{plural(s['nonfinite_tensors'], 'tensor')} with NaN/Inf "
                         f"({s['nan']:,} NaN, {s['inf']:,} Inf)")
        else:
            nonfinite = "no NaN/Inf"
        parts = [read, nonfinite]
        if self.hashes_path is not None:
            matched = self.recorded - sum(1 for m in self.mismatches if m.problem != "extra")
            renamed = ""
            if self.renamed is not None:
                count = sum(1 for old, new in self.renamed.mapping.items() if old != new)
                renamed = f" ({plural(count, 'recorded name')} renamed by the rules)"
            parts.append(f"{matched:,} of {self.recorded:,} recorded hashes match{renamed}"
                         + (f", {plural(len(self.mismatches), 'mismatch', 'mismatches')}" if self.mismatches else ""))
        return ("ok: " if self.ok else "FAILED: ") + "; ".join(parts)

    def hash_file(self) -> HashFile:
        """The hash file that records this checkpoint's tensors as read."""
        return HashFile(self.path, self.format, {t.name: HashEntry(t.sha256, t.shape, t.dtype) for t in self.tensors})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VERIFY_SCHEMA,
            "path": self.path,
            "format": self.format,
            "files": self.files,
            "tensors": [t.to_dict() for t in self.tensors],
            "filters": [] if self.filters is None
            else [{"rule": text, "matches": n} for text, n in self.filters.glob_counts],
            "rules": [] if self.renamed is None else [{"rule": r.text, "matches": n} for r, n in self.renamed.rule_counts],
            "map": None if self.renamed is None or not self.rules.name_map
            else {"entries": len(self.rules.name_map), "used": self.renamed.map_used},
            "hashes": None if self.hashes_path is None else {
                "path": self.hashes_path,
                "recorded": self.recorded,
                "mismatches": [m.to_dict() for m in self.mismatches],
            },
            "fail_on_nonfinite": self.fail_on_nonfinite,
            "summary": self.summary,
            "ok": self.ok,
            "failures": self.failures,
            "verdict": self.verdict,
        }





def _select(names: Sequence[str], include: Sequence[str], exclude: Sequence[str],
            allow_unused_rules: bool, file: str | None = None) -> tuple[set[str], Renamed | None]:
    if not include and not exclude:
        return set(names), None
    renamed = apply_rules(names, Rules(include=tuple(include), exclude=tuple(exclude)))
    renamed.check_unused(allow_unused_rules, file)
    return set(renamed.mapping), renamed


def _expected(recorded: HashFile, names: list[str], rules: Rules, allow_unused_rules: bool,
              path: str) -> tuple[set[str], dict[str, HashEntry], dict[str, str], Renamed | None]:
    """The checkpoint's names to read, the recorded entries under the names they should have now,
    those names' recorded names where the rules changed them, and what the rules did."""
    from .diff import scope_other

    renaming = bool(rules.renames or rules.name_map)
    renamed = apply_rules(list(recorded.tensors), rules)  # the rules apply to the names the hash file recorded
    keep, _, renamed = scope_other(names, renamed, rules)
    # An unused rename rule is about the hash file's names; an unused glob, as ever, about the checkpoint's.
    renamed.check_unused(allow_unused_rules, (recorded.source or "the hash file") if renaming else path)
    wanted = {new: recorded.tensors[old] for old, new in renamed.mapping.items()}
    origin = {new: old for old, new in renamed.mapping.items() if old != new}
    return set(keep), wanted, origin, renamed if (rules.include or rules.exclude or renaming) else None


def verify(
    path: str | Path,
    *,
    hashes: HashFile | str | Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    allow_unused_rules: bool = False,
    fail_on_nonfinite: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
    open_options: OpenOptions | None = None,
    rules: Rules | None = None,
) -> Verification:
    """Open ``path``, read every selected tensor once and check it (against ``hashes`` when given).

    ``include`` / ``exclude`` globs (``fnmatchcase``, as in the rules) select tensors of the
    checkpoint and of the hash file alike; a glob that matches neither raises CheckFailed unless
    ``allow_unused_rules``. ``rules`` (renames, prefixes, a name map, and more globs) rename the
    hash file's recorded names before they are compared with the checkpoint's, for a checkpoint
    renamed since the hash file was written: they need ``hashes``, and one that matches no recorded
    name raises CheckFailed unless ``allow_unused_rules``. An unreadable or malformed checkpoint
    raises InputError. A failed check does not raise: see :attr:`Verification.ok` and
    :attr:`Verification.failures`.
    """
    rules = rules or Rules()
    rules = dataclasses.replace(rules, include=(*rules.include, *include), exclude=(*rules.exclude, *exclude))
    renaming = bool(rules.renames or rules.name_map)
    if renaming and hashes is None:
        raise UsageError(None, "rename rules apply to the names of a hash file: give the hash file (hashes)")
    recorded = HashFile.load(hashes) if isinstance(hashes, (str, Path)) else hashes
    with open_checkpoint(path, open_options) as reader:
        names = [t.name for t in reader.tensors]
        wanted: dict[str, HashEntry] = {}
        origin: dict[str, str] = {}
        renamed = None
        if recorded is None:
            keep, filters = _select(names, rules.include, rules.exclude, allow_unused_rules, str(path))
        else:
            keep, wanted, origin, filters = _expected(recorded, names, rules, allow_unused_rules, str(path))
            renamed = filters if renaming else None
        checks = [check_tensor(reader, t, chunk_bytes) for t in reader.tensors if t.name in keep]
        result = Verification(
            path=str(path), format=reader.format, files=[str(p) for p in reader.files], tensors=checks,
            filters=filters if rules.include or rules.exclude else None, fail_on_nonfinite=fail_on_nonfinite,
            rules=rules, renamed=renamed,
        )
    if recorded is not None:
        found = {t.name: HashEntry(t.sha256, t.shape, t.dtype) for t in checks}
        result.hashes_path = recorded.source or "the hash file"
        result.recorded = len(wanted)
        result.mismatches = compare_hashes(found, wanted, origin)
    return result
