"""The format contract: what every registered format must do, checked through the registry alone.

Parametrized over every spec in :data:`ckptsurgeon.formats.FORMATS` and the toy format of
``tests/formats/toy`` (registered by the ``toy_format`` fixture), so a new format is covered the
moment it is registered. For each format with a writer:

* a checkpoint of every kind of value (``sample_tensors``: F32, F16, BF16, F8_E4M3, I64, U8,
  BOOL, a 0-d scalar, an empty tensor) and metadata is written with ``make_checkpoint``;
* ``detect`` names the format, the output extension maps back to it, a directory holding only
  the checkpoint resolves to it; ``open_checkpoint`` lists names, shapes and dtypes exactly, in
  the order written;
* ``read``, ``iter_bytes`` (default and tiny chunks) and the file bytes at ``byte_range`` agree
  byte for byte, and equal the values written; readers that do not declare ``caps.byte_ranges``
  give no ranges;
* metadata round-trips (less the keys a format adds by itself, see ``ADDED_METADATA``);
* ``ckpt convert`` from every single-file format to every single-file format and back keeps
  values and metadata; sharded safetensors converts to each of them, and each to shards;
* misusing a writer raises ``WriterStateError`` at the offending call, and ``abort`` then leaves
  no file behind (beyond the output path the caller removes) and no file descriptor open;
* damaged copies (truncated at several points; single bytes flipped outside the tensor data)
  make ``ckpt inspect`` exit 3 with one stderr line naming the file (a flipped byte a format
  does not depend on may also be accepted), never a traceback, exit 70, crash or hang. These
  run in child processes (``run_isolated``): native code must not take the test run down.

Read-only formats are checked on a file of the corpus (``READ_ONLY_SAMPLES``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon import formats
from ckptsurgeon.formats import detect, open_checkpoint, output_format
from ckptsurgeon.formats.base import FormatSpec, Writer, WriterStateError
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ..support.checks import METADATA, assert_checkpoint, expected_listing, listing, sample_tensors
from ..support.cli import Result
from ..support.factory import SHARD_SIZE, checkpoint_name, make_checkpoint, open_writer
from ..support.isolated import run_isolated
from . import toy

TOY = toy.SPEC.name
TOY_REF = "tests.formats.toy:SPEC"
SPECS: dict[str, FormatSpec] = {s.name: s for s in formats.FORMATS if s.name != TOY} | {TOY: toy.SPEC}
FORMAT_NAMES = list(SPECS)
WRITABLE = [n for n, s in SPECS.items() if s.writer is not None]
SINGLE_FILE = [n for n in WRITABLE if SPECS[n].shards_of is None]
SHARDED = [n for n in WRITABLE if SPECS[n].shards_of is not None]

#: metadata keys a format writes by itself, beside the caller's
ADDED_METADATA: dict[str, set[str]] = {"safetensors-sharded": {"total_size"}, "torch-sharded": {"total_size"}}
#: a corpus checkpoint for each read-only format (no writer to make one)
READ_ONLY_SAMPLES: dict[str, str] = {
    "keras-sharded": "keras3/cnn_sharded/cnn.weights.json",
}

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
CUT_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4)
FLIPS_PER_CHECKPOINT = 160  # single-byte flips tried per checkpoint (spread over its files)
SIGNATURE_BYTES = 4  # a flip here breaks any format: magic, signature or header length
SECONDS_PER_CASE = 5  # inspecting one small damaged file takes milliseconds: longer is a hang


@pytest.fixture(params=FORMAT_NAMES)
def fmt(request: pytest.FixtureRequest) -> str:
    """Each format's name; the toy format is registered for its tests."""
    name: str = request.param
    if name == TOY:
        request.getfixturevalue("toy_format")
    return name


@pytest.fixture
def writable(fmt: str) -> str:
    if SPECS[fmt].writer is None:
        pytest.skip(f"{fmt} is read-only (no writer to make a checkpoint with); its reading is checked on "
                    f"the corpus file READ_ONLY_SAMPLES names")
    return fmt


@pytest.fixture
def written(writable: str, tmp_path: Path) -> Path:
    """The sample checkpoint in format ``writable``, alone in its directory."""
    return make_checkpoint(tmp_path / "ckpt" / checkpoint_name(writable), writable, sample_tensors(writable), METADATA)


@pytest.fixture
def any_checkpoint(fmt: str, tmp_path: Path) -> Path:
    """A checkpoint of each format: written for writable formats, copied from the corpus for read-only ones."""
    if SPECS[fmt].writer is not None:
        return make_checkpoint(tmp_path / "ckpt" / checkpoint_name(fmt), fmt, sample_tensors(fmt), METADATA)
    sample = CORPUS / READ_ONLY_SAMPLES[fmt]
    shutil.copytree(sample.parent, tmp_path / "ckpt")
    return tmp_path / "ckpt" / sample.name


def in_order(tensors: dict[str, np.ndarray], *fmts: str) -> dict[str, np.ndarray]:
    """The tensors in the order a checkpoint passed through ``fmts`` keeps: sorted by name if one sorts them."""
    return dict(sorted(tensors.items())) if any(formats.spec(f).sorted_names for f in fmts) else tensors


def added(fmt: str) -> set[str]:
    return ADDED_METADATA.get(fmt, set())


def gained(src: str, dst: str) -> dict[str, str]:
    """Metadata a conversion adds: a PyTorch input written as safetensors records ``format: pt``."""
    framework = formats.spec(src).framework
    return {"format": framework} if framework and formats.writer_for(dst).caps.records_framework else {}


def register_refs(*names: str) -> list[str]:
    return [TOY_REF] if TOY in names else []


# --- detection and listing ------------------------------------------------------------------------


def test_every_read_only_format_has_a_sample() -> None:
    read_only = sorted(n for n, s in SPECS.items() if s.writer is None)
    assert sorted(READ_ONLY_SAMPLES) == read_only
    for fmt, rel in READ_ONLY_SAMPLES.items():
        assert detect(CORPUS / rel) == fmt


def test_detect_and_list(written: Path, writable: str) -> None:
    spec = SPECS[writable]
    assert detect(written) == writable
    if spec.shards_of is None and spec.extensions:  # (a format without one of its own is named by --format)
        assert output_format(written) == writable
        assert output_format("elsewhere" + spec.extensions[0], writable) == writable
    with open_checkpoint(written) as reader:
        assert reader.format == writable
        assert formats.family(reader) == spec.family
        assert listing(reader) == expected_listing(sample_tensors(writable), writable)
        assert all(p.is_file() for p in reader.files) and reader.files[0] == written
    with open_checkpoint(written.parent) as reader:  # a directory holding one checkpoint is that checkpoint
        assert reader.path == written
        assert listing(reader) == expected_listing(sample_tensors(writable), writable)


def test_values_round_trip(written: Path, writable: str) -> None:
    assert_checkpoint(written, sample_tensors(writable), fmt=writable)


def test_metadata_round_trips(written: Path, writable: str) -> None:
    with open_checkpoint(written) as reader:
        meta = dict(reader.metadata)
    assert set(meta) >= added(writable)
    assert {k: v for k, v in meta.items() if k not in added(writable)} == METADATA


def test_read_paths_agree(any_checkpoint: Path, fmt: str) -> None:
    """``read``, ``iter_bytes`` and ``byte_range`` give the same bytes for every tensor."""
    with open_checkpoint(any_checkpoint) as reader:
        assert reader.tensors, "no tensors to check"
        files = {p.resolve() for p in reader.files}
        for t in reader.tensors:
            arr = reader.read(t.name)
            assert arr.dtype == DTYPES[t.dtype].numpy and arr.shape == t.shape, t.name
            assert arr.flags.c_contiguous, t.name
            raw = arr.tobytes()
            assert len(raw) == t.nbytes
            assert b"".join(bytes(c) for c in reader.iter_bytes(t.name)) == raw, t.name
            # chunk_bytes is a hint: readers round it to whole items (npz) or rows (HDF5)
            assert b"".join(bytes(c) for c in reader.iter_bytes(t.name, 5)) == raw, t.name
            where = reader.byte_range(t.name)
            if where is not None:
                path, offset, length = where
                assert Path(path).resolve() in files, f"{t.name}: range in {path}, not a file of the checkpoint"
                assert length == t.nbytes, t.name
                with open(path, "rb") as f:
                    f.seek(offset)
                    assert f.read(length) == raw, f"{t.name}: the bytes at {where} are not the tensor's"


def test_byte_ranges_only_where_declared(any_checkpoint: Path, fmt: str) -> None:
    """A reader gives byte ranges exactly when its caps say it can (caps are declared, never probed)."""
    with open_checkpoint(any_checkpoint) as reader:
        given = [t.name for t in reader.tensors if t.nbytes and reader.byte_range(t.name) is not None]
        if not reader.caps.byte_ranges:
            assert given == [], f"{fmt}: caps.byte_ranges is False, yet byte_range() locates {given}"


# --- conversions through the CLI --------------------------------------------------------------------


def convert(cli: Callable[..., Result], src: Path, out: Path, *extra: str) -> None:
    result = cli("convert", src, "-o", out, *extra)
    assert result.code == 0, result.err
    assert result.err == ""


@pytest.mark.parametrize(("src", "dst"), [(a, b) for a in SINGLE_FILE for b in SINGLE_FILE],
                         ids=[f"{a}-to-{b}" for a in SINGLE_FILE for b in SINGLE_FILE])
def test_convert_round_trip(src: str, dst: str, tmp_path: Path, cli: Callable[..., Result],
                            request: pytest.FixtureRequest) -> None:
    if TOY in (src, dst):
        request.getfixturevalue("toy_format")
    tensors = in_order(sample_tensors(src, dst), src, dst)
    first = make_checkpoint(tmp_path / checkpoint_name(src, "first"), src, tensors, METADATA)
    there = tmp_path / checkpoint_name(dst, "there")
    convert(cli, first, there, "--format", dst)
    assert_checkpoint(there, tensors, fmt=dst, metadata=METADATA | gained(src, dst), added=added(dst))
    back = tmp_path / checkpoint_name(src, "back")
    convert(cli, there, back, "--format", src)
    assert_checkpoint(back, tensors, fmt=src, metadata=METADATA | gained(src, dst) | gained(dst, src), added=added(src))


@pytest.mark.parametrize("sharded", SHARDED)
@pytest.mark.parametrize("dst", SINGLE_FILE)
def test_convert_from_sharded(sharded: str, dst: str, tmp_path: Path, cli: Callable[..., Result],
                              request: pytest.FixtureRequest) -> None:
    if dst == TOY:
        request.getfixturevalue("toy_format")
    tensors = in_order(sample_tensors(sharded, dst), sharded, dst)
    index = make_checkpoint(tmp_path / "shards" / checkpoint_name(sharded), sharded, tensors, METADATA)
    with open_checkpoint(index) as reader:
        assert len(reader.files) > 2, "the sample should span several shards"
    out = tmp_path / checkpoint_name(dst, "joined")
    convert(cli, index, out, "--format", dst)
    assert_checkpoint(out, tensors, fmt=dst, metadata=METADATA | gained(sharded, dst), added=added(dst))


@pytest.mark.parametrize("src", SINGLE_FILE)
def test_convert_to_shards_and_back(src: str, tmp_path: Path, cli: Callable[..., Result],
                                    request: pytest.FixtureRequest) -> None:
    if src == TOY:
        request.getfixturevalue("toy_format")
    tensors = in_order(sample_tensors(src), src)
    first = make_checkpoint(tmp_path / checkpoint_name(src, "first"), src, tensors, METADATA)
    index = tmp_path / "shards" / "model.safetensors.index.json"
    convert(cli, first, index, "--shard-size", str(SHARD_SIZE))
    assert_checkpoint(index, tensors, fmt="safetensors-sharded", metadata=METADATA | gained(src, "safetensors-sharded"),
                      added=added("safetensors-sharded"))
    back = tmp_path / checkpoint_name(src, "back")
    convert(cli, index, back, "--format", src)
    assert_checkpoint(back, tensors, fmt=src, metadata=METADATA | gained(src, "safetensors-sharded"), added=added(src))


# --- writer misuse ----------------------------------------------------------------------------------

A = np.arange(6, dtype="<f4").reshape(2, 3)
B = np.arange(4, dtype="<i8")
DECLARED = [TensorSpec("a", (2, 3), "F32"), TensorSpec("b", (4,), "I64")]


def _begun(w: Writer) -> None:
    w.begin(DECLARED)


def _one_written(w: Writer) -> None:
    w.begin(DECLARED)
    w.write("a", A)


def _all_written(w: Writer) -> None:
    _one_written(w)
    w.write("b", B)


def _finished(w: Writer) -> None:
    _all_written(w)
    w.finish()


@dataclass(frozen=True)
class Misuse:
    """``setup`` drives a new writer correctly; ``wrong`` must then raise WriterStateError."""

    setup: Callable[[Writer], None]
    wrong: Callable[[Writer], object]
    finished: bool = False  # the output was completed before the wrong call


MISUSES: dict[str, Misuse] = {
    "write-before-begin": Misuse(lambda w: None, lambda w: w.write("a", A)),
    "chunks-before-begin": Misuse(lambda w: None, lambda w: w.write_chunks("a", [A.tobytes()])),
    "finish-before-begin": Misuse(lambda w: None, lambda w: w.finish()),
    "begin-twice": Misuse(_begun, lambda w: w.begin(DECLARED)),
    "names-declared-twice": Misuse(lambda w: None, lambda w: w.begin([DECLARED[0], DECLARED[1], DECLARED[0]])),
    "wrong-name-order": Misuse(_begun, lambda w: w.write("b", B)),
    "undeclared-name": Misuse(_begun, lambda w: w.write("c", A)),
    "wrong-shape": Misuse(_begun, lambda w: w.write("a", A.reshape(3, 2))),
    "wrong-dtype": Misuse(_begun, lambda w: w.write("a", A.astype("<f8"))),
    "chunks-too-short": Misuse(_begun, lambda w: w.write_chunks("a", [A.tobytes()[:-1]])),
    "chunks-too-long": Misuse(_begun, lambda w: w.write_chunks("a", [A.tobytes(), b"\0"])),
    "chunks-wrong-name": Misuse(_begun, lambda w: w.write_chunks("b", [B.tobytes()])),
    "write-past-the-last": Misuse(_all_written, lambda w: w.write("a", A)),
    "finish-with-tensors-missing": Misuse(_one_written, lambda w: w.finish()),
    "write-after-finish": Misuse(_finished, lambda w: w.write("a", A), finished=True),
    "finish-twice": Misuse(_finished, lambda w: w.finish(), finished=True),
}


def open_fds() -> set[str] | None:
    fd_dir = Path("/proc/self/fd")
    return set(os.listdir(fd_dir)) if fd_dir.is_dir() else None


@pytest.mark.parametrize("case", list(MISUSES))
def test_writer_misuse_raises_at_the_call(case: str, writable: str, tmp_path: Path) -> None:
    misuse = MISUSES[case]
    make_checkpoint(tmp_path / "warm" / checkpoint_name(writable), writable, {"w": A})  # imports done, caches warm
    out_dir = tmp_path / "out"
    path = out_dir / checkpoint_name(writable)
    before = open_fds()
    writer = open_writer(path, writable, {"k": "v"})
    misuse.setup(writer)
    with pytest.raises(WriterStateError):
        misuse.wrong(writer)
    writer.abort()
    if before is not None:
        assert open_fds() == before, "file descriptors left open after abort"
    if not misuse.finished:
        left = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
        allowed = [] if writer.caps.sharded or writer.caps.commits else [path.name]  # else the caller removes it
        assert set(left) <= set(allowed), f"abort left {left}"


# --- damaged files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    """One damaged copy of a checkpoint: ``target`` (a file of it) cut at ``cut`` or with byte ``flip`` inverted."""

    target: Path
    cut: int | None = None
    flip: int | None = None

    def __str__(self) -> str:
        how = f"cut to {self.cut} bytes" if self.cut is not None else f"byte {self.flip} flipped"
        return f"{self.target.name} {how}"


def data_bytes(reader: formats.Reader) -> dict[Path, set[int]]:
    """The positions of tensor data in each file, where the reader can say (``stored_ranges``)."""
    found: dict[Path, set[int]] = {}
    for t in reader.tensors:
        for path, offset, length in reader.stored_ranges(t.name) or ():
            found.setdefault(Path(path).resolve(), set()).update(range(offset, offset + length))
    return found


def spread(positions: list[int], budget: int) -> list[int]:
    """The first ``SIGNATURE_BYTES`` and then ``budget`` positions evenly spaced over the rest."""
    head, rest = positions[:SIGNATURE_BYTES], positions[SIGNATURE_BYTES:]
    if len(rest) > budget:
        rest = [rest[(i * len(rest)) // budget] for i in range(budget)]
    return head + rest


def damages(checkpoint: Path) -> Iterator[Damage]:
    with open_checkpoint(checkpoint) as reader:
        files = [p.resolve() for p in reader.files]
        data = data_bytes(reader)
    budget = max(32, FLIPS_PER_CHECKPOINT // len(files))
    for path in files:
        size = path.stat().st_size
        cuts = {0, 1, SIGNATURE_BYTES, 8, 12, size - 1, *(int(size * f) for f in CUT_FRACTIONS)}
        for cut in sorted(c for c in cuts if 0 <= c < size):
            yield Damage(path, cut=cut)
        outside = [i for i in range(size) if i not in data.get(path, ())]
        for i in spread(outside, budget):
            yield Damage(path, flip=i)


def message_ends(path: Path) -> set[int]:
    """Where each top-level protobuf message of a plain MindSpore checkpoint ends."""
    from ckptsurgeon.formats._protobuf import fields

    data = path.read_bytes()
    return {end for _, _, (_, end) in fields(data, 0, len(data))}  # type: ignore[misc]


def damaged_copy(checkpoint: Path, damage: Damage, where: Path) -> tuple[Path, Path]:
    """A copy of the checkpoint's directory in ``where`` with ``damage`` done; (checkpoint, damaged file) there."""
    shutil.copytree(checkpoint.parent, where)
    target = where / damage.target.relative_to(checkpoint.parent.resolve())
    data = bytearray(target.read_bytes())
    if damage.cut is not None:
        del data[damage.cut :]
    else:
        assert damage.flip is not None
        data[damage.flip] ^= 0xFF
    target.write_bytes(bytes(data))
    return where / checkpoint.name, target


def check_refused(result: Result, checkpoint: Path, damaged: Path, *, may_accept: bool) -> str | None:
    """What is wrong with ``ckpt inspect``'s answer to a damaged file (None: nothing)."""
    if result.code == 0 and may_accept:  # a byte the format does not depend on
        return None if result.err == "" else f"accepted, but wrote to stderr: {result.err[-300:]!r}"
    if result.code != 3:
        return f"exit {result.code}: {result.err[:1500]}"
    lines = result.err.splitlines()
    if "Traceback" in result.err or len(lines) != 1:
        return f"exit 3 but {len(lines)} lines on stderr: {result.err[-1500:]}"
    if str(checkpoint) not in lines[0] and str(damaged) not in lines[0]:
        return f"the error does not name the file: {lines[0]}"
    return None


def test_damaged_files_are_refused_in_one_line(any_checkpoint: Path, fmt: str, tmp_path: Path) -> None:
    """Truncated copies and copies with a byte flipped outside the tensor data: exit 3 and one line naming
    the file, never a traceback, exit 70, crash or hang. A flipped byte may be one the format does not
    depend on (zip local-header fields, HDF5 free space): then the file may be accepted, except in its
    first bytes (magic, signature or header length), which every format depends on."""
    cases: list[tuple[Damage, Path, Path]] = []
    for k, damage in enumerate(damages(any_checkpoint)):
        copy, damaged = damaged_copy(any_checkpoint, damage, tmp_path / f"damaged{k}")
        cases.append((damage, copy, damaged))
    results = run_isolated([["inspect", copy] for _, copy, _ in cases], register=register_refs(fmt),
                           seconds_per_case=SECONDS_PER_CASE)
    problems = []
    for (damage, copy, damaged), result in zip(cases, results, strict=True):
        if damage.flip is not None:
            may_accept = damage.flip >= SIGNATURE_BYTES
        else:  # cutting off trailing whitespace (a JSON index's last newline) leaves the same document
            may_accept = damage.target.read_bytes()[damage.cut :].strip() == b""
            # a MindSpore file cut between two values is a smaller checkpoint (no count, no end marker)
            may_accept |= fmt == "mindspore" and damage.cut in message_ends(damage.target)
        problem = check_refused(result, copy, damaged, may_accept=may_accept)
        if problem is not None:
            problems.append(f"{damage}: {problem}")
    assert not problems, f"{len(problems)} of {len(cases)} damaged copies mishandled:\n" + "\n\n".join(problems)
