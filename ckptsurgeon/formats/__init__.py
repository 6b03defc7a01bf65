"""The format registry: which formats there are, which one a file is, and how to open or write it.

Every format lives in a package of its own (``formats/<name>/``) whose light ``__init__.py``
exports ``SPECS``, a tuple of :class:`~ckptsurgeon.formats.base.FormatSpec`. :data:`FORMATS`
gathers them from :data:`PACKAGES`; nothing else in ckptsurgeon names a format. A format is chosen
by content, never by the file name alone:

1. A :class:`~ckptsurgeon.formats._probe.Probe` is made once per path (size, first bytes; zip
   members, HDF5 signatures and JSON read lazily, polyglots refused there).
2. The specs are asked in order; the first whose ``sniff`` claims the file wins. A sharded index
   (a JSON file with a ``weight_map``) belongs to the spec whose ``shards_of`` is the format of
   its first shard; an index of shards no spec reads as a sharded checkpoint says so.
3. If none claims it, a spec whose ``sniff_damaged`` recognises a damaged file of its format
   takes it, so that its reader says what is wrong.
4. A file nothing claims is named by :func:`~ckptsurgeon.formats._probe.refuse`.

After a reader opens a file, its names and metadata are checked to be printable text
(:func:`check_text`): tensor names, layer names and metadata keys that are not valid Unicode (lone
surrogates) or hold control or bidirectional-override characters, and metadata values holding
control characters other than tab and newline, are refused: they cannot be written as UTF-8, or
would rewrite the terminal that shows them.

Output formats are chosen by name (``--format``) or by the output path's extension
(:func:`output_format`); :func:`writer_for` gives the writer class. Readers and writers are imported
only when a file is opened or written, so ``ckpt --help`` never pays for h5py or numpy.

Adding a format: see "Adding a format" in the README; the contract suite in
``tests/formats/test_contract.py`` says when it is done.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import CkptError, InputError, UnsafeInputError, UsageError
from . import _s3
from ._probe import Probe, refuse
from .base import FormatSpec, OpenOptions, Reader, Writer, reading

#: The format packages, in the order their specs are asked (HDF5 last: it may seek for a user block).
PACKAGES = ("safetensors", "npz", "torch", "mindspore", "tf", "gguf", "hdf5")


def _gather(packages: Iterable[str]) -> tuple[FormatSpec, ...]:
    specs: list[FormatSpec] = []
    for package in packages:
        specs.extend(importlib.import_module(f"{__name__}.{package}").SPECS)
    return tuple(specs)


FORMATS: tuple[FormatSpec, ...] = _gather(PACKAGES)

# Characters no tensor or layer name, and no metadata key, may hold: C0/C1 controls, lone surrogates,
# bidirectional embeddings, overrides and isolates. Metadata values may also hold tab and newline.
_BAD_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_BAD_VALUE = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def register(spec: FormatSpec) -> None:
    """Add a format defined outside ckptsurgeon's packages (asked after the built-in ones)."""
    global FORMATS
    if any(s.name == spec.name for s in FORMATS):
        raise ValueError(f"a format named {spec.name!r} is registered already")
    FORMATS = (*FORMATS, spec)


def unregister(name: str) -> None:
    global FORMATS
    FORMATS = tuple(s for s in FORMATS if s.name != name)


def spec(name: str) -> FormatSpec:
    """The spec of the format named ``name`` (a UsageError naming the choices for any other name)."""
    for s in FORMATS:
        if s.name == name:
            return s
    writable = ", ".join(s.name for s in FORMATS if s.writer is not None)
    raise UsageError(None, f"unknown format {name!r}; choose one of {writable}")


def family(reader: Reader) -> str:
    """The family of an opened checkpoint's format (what "write like it" means)."""
    return spec(reader.format).family


def _detect(probe: Probe, *, indexes: bool = True) -> FormatSpec:
    for s in FORMATS:
        if s.shards_of is None:
            if s.sniff is not None and s.sniff(probe):
                return s
        elif indexes and probe.index is not None and _shard_format(probe) == s.shards_of:
            return s
    for s in FORMATS:
        if s.sniff_damaged is not None and s.sniff_damaged(probe):
            return s
    if indexes and probe.index is not None:
        found = _shard_format(probe)
        sharded = ", ".join(s.shards_of for s in FORMATS if s.shards_of)
        raise InputError(probe.path, f"an index of {found} shards; ckptsurgeon reads sharded {sharded} checkpoints")
    raise refuse(probe)


def _shard_format(probe: Probe) -> str:
    """The format of an index's first shard (each reader checks the other shards as it opens them)."""
    index = probe.index
    assert index is not None
    if probe.shard_format is not None:
        return probe.shard_format
    key, shard = index.first_shard()
    path = index.shard_path(shard, missing=f"shard {shard!r} (holding {key!r}) does not exist")
    try:
        found = _detect(Probe(path), indexes=False).name
    except CkptError as exc:
        raise type(exc)(probe.path, f"shard {shard!r}: {exc.problem}", hint=exc.hint) from exc
    probe.shard_format = found
    return found


def detect(path: str | Path) -> str:
    """The name of a checkpoint file's format, by content."""
    return _detect(Probe(Path(path))).name


def what_is(path: Path) -> str:
    """A few words on what a file is, for messages about a file in the wrong place."""
    try:
        found = _detect(Probe(path), indexes=False)
    except CkptError as exc:
        return exc.problem
    return f"a {found.description} file"


#: The weight files transformers' ``from_pretrained`` looks for in a model folder, in the order it
#: looks (transformers 5, ``modeling_utils``: the safetensors file, its index, then PyTorch's).
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_folder(path: Path) -> Path:
    """The checkpoint a directory (a model folder) holds: the one ``from_pretrained`` would load.

    1. The first of :data:`HF_WEIGHTS` that is a file in the folder, in transformers' order:
       ``model.safetensors``, ``model.safetensors.index.json``, ``pytorch_model.bin``,
       ``pytorch_model.bin.index.json``. A folder holding a safetensors and a ``.bin`` copy is read
       from the safetensors one; a training folder's ``optimizer.pt``, ``scheduler.pt``,
       ``rng_state.pth`` and ``training_args.bin`` beside ``model.safetensors`` are not checkpoints
       of the model.
    2. Only when none of those is there: the file a pointer names (TensorFlow's ``checkpoint``),
       else the folder's one sharded index, else its one single-file checkpoint; two candidates of
       one kind are refused (name the file).
    """
    for name in HF_WEIGHTS:
        if (path / name).is_file():
            return path / name
    pointers = [path / s.folder_pointer for s in FORMATS if s.folder_pointer and (path / s.folder_pointer).is_file()]
    if len(pointers) == 1:
        return pointers[0]
    indexes = [s for s in FORMATS if s.shards_of]
    singles = [s for s in FORMATS if not s.shards_of]
    for group in (indexes, singles):
        found = sorted({p for s in group for g in s.folder_globs for p in path.glob(g)})
        if len(found) == 1:
            return found[0]
        if found:
            break
    raise InputError(path, "is a directory; name the checkpoint file (or the index of a sharded checkpoint)")


def open_checkpoint(path: str | Path, options: OpenOptions | None = None) -> Reader:
    """Open any supported checkpoint lazily (headers only). A path that is no file but names a
    TensorFlow prefix (``model.ckpt-2``, beside ``model.ckpt-2.index``) opens that checkpoint."""
    if _s3.is_remote(path):  # an object in S3: safetensors files and indexes, read by ranged GETs
        from .safetensors.remote import open_remote

        return open_remote(path, options)
    path = Path(path)
    if path.is_dir():
        path = resolve_folder(path)
    elif not path.exists() and path.with_name(path.name + ".index").is_file():
        path = path.with_name(path.name + ".index")
    with reading(path):
        found = _detect(Probe(path))
    reader = found.reader_class()(path, options)
    try:
        check_text(reader)
    except BaseException:
        reader.close()
        raise
    return reader


def _bad_char(text: str, pattern: re.Pattern[str]) -> str | None:
    found = pattern.search(text)
    return None if found is None else f"U+{ord(found.group()[0]):04X}"


def check_text(reader: Reader) -> None:
    """Refuse names and metadata that are not printable Unicode text (see the module docstring)."""
    tensors = reader.tensors
    # One search over all names (joined by a character the pattern allows) finds the common case,
    # no bad character, without a search per name; the loop below names the first bad one.
    if not _BAD_NAME.search(" ".join(t.name for t in tensors)) and not _BAD_NAME.search(" ".join(t.layer for t in tensors)):
        tensors = []
    for t in tensors:
        for what, text in (("tensor name", t.name), ("layer name", t.layer)):
            bad = _bad_char(text, _BAD_NAME)
            if bad is not None:
                raise UnsafeInputError(
                    reader.path, f"{what} {text[:200]!r} holds the character {bad} (a control, bidirectional "
                    "or unpaired surrogate character); refusing a name that cannot be shown or written safely",
                )
    for key, value in reader.metadata.items():
        bad = _bad_char(key, _BAD_NAME)
        if bad is None and isinstance(value, str):
            bad = _bad_char(value, _BAD_VALUE)
        if bad is not None:
            raise UnsafeInputError(
                reader.path, f"metadata {key[:200]!r} holds the character {bad} (a control, bidirectional or "
                "unpaired surrogate character); refusing text that cannot be shown or written safely",
            )


def output_format(dest: str | Path, explicit: str | None = None, *, like: Reader | None = None) -> str:
    """The output format named explicitly or by the destination's extension.

    With ``like`` (a transfer's target), an extension that is ``like``'s own or names no format means
    ``like``'s format, when that format can be written: a ``.ckpt`` target (Lightning or MindSpore)
    written to ``-o out.ckpt`` keeps its format, and a TensorFlow target written to ``-o PREFIX``.
    """
    if explicit:
        found = spec(explicit)
        if found.writer is None or found.shards_of:
            writable = ", ".join(s.name for s in FORMATS if s.writer is not None and not s.shards_of)
            raise UsageError(None, f"unknown output format {explicit!r}; choose one of {writable}")
        return found.name
    suffix = Path(dest).suffix.lower()
    named = next((s.name for s in FORMATS if s.writer is not None and suffix in s.extensions), None)
    if like is not None and (named is None or like.path.suffix.lower() == suffix):
        own = spec(like.format)
        if own.writer is not None and not own.shards_of:
            return own.name
    if named is not None:
        return named
    extensions = ", ".join(e for s in FORMATS if s.writer is not None for e in s.extensions)
    unnamed = ", ".join(s.name for s in FORMATS if s.writer is not None and not s.extensions and not s.shards_of)
    raise UsageError(dest, f"cannot tell the output format from the extension {suffix or '(none)'!r}",
                     hint=f"use one of {extensions}, or --format NAME ({unnamed} have no extension of their own)")


#: What --shard-size writes when neither --format nor the output's extension names a format.
DEFAULT_SHARDED_OF = "safetensors"


def sharded_format(single: str) -> str | None:
    """The writable sharded format whose shards are of format ``single`` (None if there is none)."""
    return next((s.name for s in FORMATS if s.shards_of == single and s.writer is not None), None)


def writer_for(name: str) -> type[Writer]:
    """The writer class of the format named ``name``."""
    return spec(name).writer_class()


def writes_like(reader: Reader, output: str) -> bool:
    """Whether a writer of format ``output`` can lay its file out like ``reader``'s (``like=reader``)."""
    return family(reader) in writer_for(output).caps.like


__all__ = [
    "FORMATS",
    "FormatSpec",
    "OpenOptions",
    "Reader",
    "Writer",
    "check_text",
    "detect",
    "family",
    "open_checkpoint",
    "output_format",
    "register",
    "spec",
    "what_is",
    "writer_for",
    "writes_like",
]
