"""Writing a plan to an object in S3, the bytes staying in the store where they can.

:func:`write_remote` is :func:`ckptsurgeon.execute.write_checkpoint` for an ``s3://`` output (a
safetensors object): every tensor that keeps its bytes (same dtype, no transform) and lies in an
object of the store becomes a server-side copy of its byte range (consecutive ranges of one
object join into one copy); the header and every tensor whose bytes change, or that comes from a
local file, are sent, in the pieces the local executor makes (:func:`~ckptsurgeon.execute.value_blocks`,
``iter_bytes``). The value gates are checked after the last tensor and before the upload completes:
a failed one aborts it, and nothing appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .execute import GateFailed, Move, Outcome, Progress, ValueGates, plan_moves, value_blocks
from .formats._s3 import TRAFFIC, S3Url
from .formats.base import Reader
from .plan import Plan


def _remote_range(move: Move) -> tuple[S3Url, int, int] | None:
    """Where a move's bytes lie in the store, when they go over unchanged."""
    where = getattr(move.reader, "remote_range", None)
    if where is None or move.transforms or move.against is not None or move.reader[move.name].dtype != move.out.dtype:
        return None
    return where(move.name)


def _residue(moves: list[Move], window: int) -> int | None:
    """The data-section offset (mod ``window``) most copied bytes agree with: the local writer's choice."""
    votes: dict[int, int] = {}
    offset = 0
    for move in moves:
        where = _remote_range(move)
        if where is not None and where[2]:
            residue = (where[1] - offset) % window
            votes[residue] = votes.get(residue, 0) + where[2]
        offset += move.out.nbytes
    return max(votes, key=lambda r: votes[r]) if votes else None


def remote_writer(fmt: str) -> Any:
    """The class that writes format ``fmt`` as an object in S3."""
    from .formats import spec
    from .formats.base import _load

    found = spec(fmt).remote_writer
    assert found is not None
    return _load(found)


def remote_output(output: Any, fmt_name: str | None, like: Reader | None, *, no_clobber: bool,
                  unsupported: Mapping[str, bool]) -> tuple[S3Url, str]:
    """The S3 object ``output`` names and the format it is written in, checked before any work: a
    format written as one file (one with a remote writer, safetensors, keeps unchanged bytes in the
    store; any other is written here and uploaded), none of the options in ``unsupported`` that are
    set, and with ``no_clobber`` no object there yet (OutputError)."""
    from .errors import OutputError, UsageError
    from .formats import _s3, output_format, spec

    url = _s3.url_of(output)
    assert url is not None
    fmt = output_format(output, fmt_name, like=like)
    if spec(fmt).shards_of or spec(fmt).folder_pointer:
        raise UsageError(str(url), f"a {fmt} output of several files is written to a local folder, not to S3 (yet)")
    refused = [option for option, given in unsupported.items() if given]
    if refused:
        raise UsageError(str(url), f"{', '.join(refused)} with an s3:// output: not available yet (write locally)")
    if no_clobber and _s3.store().exists(url):
        raise OutputError(str(url), "exists (--no-clobber)")
    return url, fmt


def write_remote(dest: S3Url, fmt: str, plan: Plan, readers: Mapping[str, Reader], *, metadata: Mapping[str, str],
                 gates: ValueGates | None = None, progress: Progress | None = None, jobs: int = 4) -> tuple[dict[str, Outcome], dict[str, Any]]:
    """Write ``plan`` as a safetensors object at ``dest``; return each tensor's outcome and what moved
    (bytes fetched, sent and copied in the store; parts copied and sent)."""
    moves = plan_moves(plan, readers)
    before = TRAFFIC.to_dict()
    writer = remote_writer(fmt)(dest, [m.out for m in moves], dict(metadata), jobs=jobs)
    outcomes: dict[str, Outcome] = {}
    try:
        residue = _residue(moves, writer.align_window)
        if residue is not None:
            writer.align_data(residue)
        total, done = sum(m.out.nbytes for m in moves), 0
        for move in moves:
            outcome = outcomes[move.out.name] = Outcome()
            where = _remote_range(move)
            if where is not None and writer.copy_range(move.out.name, *where):
                outcome.byte_copy = True
            elif not move.transforms and move.reader[move.name].dtype == move.out.dtype:
                writer.write_chunks(move.out.name, move.reader.iter_bytes(move.name))
            else:
                overflow = [0]
                writer.write_chunks(move.out.name, (b.reshape(-1).view("u1").data for b in value_blocks(move, overflow)))
                outcome.overflow = overflow[0]
            done += move.out.nbytes
            if progress is not None:
                progress(done, total)
        failures = gates.failures(outcomes, {m.out.name: str(m.reader.path) for m in moves}) if gates is not None else []
        if failures:
            raise GateFailed(failures, outcomes)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    after = TRAFFIC.to_dict()
    moved = {k: after[k] - before[k] for k in after} | {"parts": writer.parts}
    return outcomes, moved


def upload_staged(dest: S3Url, write_local: Any, *, jobs: int = 4) -> tuple[Any, dict[str, Any]]:
    """An output of a format with no remote writer (or sharded): written by ``write_local(path)`` into a
    temporary directory here, then uploaded, each file as one multipart upload; a sharded output's
    shards first and its index last, so no reader sees an index naming missing shards. The
    temporary directory is removed whatever happens. Returns what ``write_local`` returned and what moved."""
    import shutil
    import tempfile
    from pathlib import Path

    from .formats._multipart import Upload
    from .formats._s3 import store

    before = TRAFFIC.to_dict()
    staging = Path(tempfile.mkdtemp(prefix="ckpt-s3-"))
    try:
        local = staging / dest.name
        result = write_local(local)
        files = [*sorted((p for p in staging.iterdir() if p.is_file() and p != local), key=lambda p: p.name), local]
        client = store()
        for path in files:
            with Upload(client, dest.sibling(path.name), jobs=jobs) as up, open(path, "rb") as f:
                while chunk := f.read(16 * 1024 * 1024):
                    up.send(chunk)
                up.complete()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    after = TRAFFIC.to_dict()
    return result, {k: after[k] - before[k] for k in after} | {"staged": [p.name for p in files]}
