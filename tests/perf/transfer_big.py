"""Measure ``ckpt transfer`` between two large checkpoints, against a durable-copy floor.

    python tests/perf/transfer_big.py --size 2GiB [--dir DIR] [--repeat 3] [--io-method auto]

Writes (once, cached in DIR) a source checkpoint and a target of about the same size whose head has a
different shape and one of whose layers is renamed, so the plan has replaced and kept tensors. Then, as
child processes, each run with a fresh output that is removed afterwards:

* ``ckpt transfer SRC TGT -o OUT`` interleaved with the durable-copy floor ``cp TGT OUT && sync OUT``
  (same bytes written and fsynced, in the same directory), and their ratio;
* ``ckpt transfer SRC TGT --dry-run``;
* ``ckpt transfer SRC TGT -o OUT --count-changes``.

Then it counts the bytes each kind of run takes from the input files: with ``strace`` (read/pread,
copy_file_range, mmap calls on the inputs) when it is installed, else from ``/proc/self/io`` of a child
that runs the CLI in-process. A dry run must read headers only: a few KiB, never tensor data.

Targets: peak RSS of a transfer < 300 MiB; a dry run reads < 1 MiB from its inputs, none of it tensor data,
and maps or copies nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

TRANSFER_RSS_TARGET_MIB = 300.0
DRY_RUN_READ_TARGET = common.MIB


def prepare(directory: Path, size: int, dtype: str) -> tuple[Path, Path, common.Model, common.Model]:
    """The source and target checkpoints (written unless cached)."""
    source = common.model_for_size(size, dtype)
    target = common.target_model(source)
    tag = f"{common.fmt_bytes(size).replace(' ', '')}-{dtype}"
    paths = directory / f"transfer-{tag}-source.safetensors", directory / f"transfer-{tag}-target.safetensors"
    for role, path, model, seed in (("source", paths[0], source, 1), ("target", paths[1], target, 2)):
        print(f"{role}: {model.describe()}")
        started = time.perf_counter()
        if common.write_safetensors(path, model, seed=seed):
            print(f"  wrote {path} in {time.perf_counter() - started:.1f} s")
        else:
            print(f"  cached {path}")
    return paths[0], paths[1], source, target


def timed_runs(ckpt: list[str], src: Path, tgt: Path, work: Path, repeat: int,
               env: dict[str, str]) -> dict[str, common.Summary]:
    """Transfers interleaved with the copy floor, then dry runs, then --count-changes; outputs removed.

    One unmeasured dry run first compiles (and caches) ckptsurgeon's bytecode.
    """
    out = work / "out.safetensors"
    s, t, o = str(src), str(tgt), str(out)
    results = {name: common.Summary(name) for name in ("transfer", "copy", "dry-run", "count-changes")}

    def once(name: str, argv: list[str] | None) -> None:
        try:
            if argv is None:
                results[name].runs.append(common.durable_copy(tgt, out))
            else:
                results[name].runs.append(common.run_measured(argv, env=env).check())
        finally:
            out.unlink(missing_ok=True)

    common.run_measured([*ckpt, "transfer", s, t, "--dry-run"], env=env).check()
    for _ in range(repeat):
        once("copy", None)
        once("transfer", [*ckpt, "transfer", s, t, "-o", o])
    for _ in range(repeat):
        once("dry-run", [*ckpt, "transfer", s, t, "--dry-run"])
    for _ in range(repeat):
        once("count-changes", [*ckpt, "transfer", s, t, "-o", o, "--count-changes"])
    return results


def io_runs(ckpt: list[str], src: Path, tgt: Path, work: Path, method: str,
            env: dict[str, str]) -> dict[str, common.InputIO]:
    """Bytes taken from the inputs by a dry run, a transfer and a --count-changes transfer."""
    out = work / "out.safetensors"
    dry = ["transfer", str(src), str(tgt), "--dry-run"]
    cases = {
        "dry-run": dry,
        "transfer": ["transfer", str(src), str(tgt), "-o", str(out)],
        "count-changes": ["transfer", str(src), str(tgt), "-o", str(out), "--count-changes"],
    }
    starts = {src: common.header_size(src), tgt: common.header_size(tgt)}
    found = {}
    for name, args in cases.items():
        try:
            found[name] = common.input_io([*ckpt, *args], args, dry, starts, work, method, env)
        finally:
            out.unlink(missing_ok=True)
    return found


def dry_run_problems(rec: common.InputIO) -> list[str]:
    """Why a dry run's input I/O is more than reading headers (empty when it is not)."""
    problems = []
    if rec.read_bytes >= DRY_RUN_READ_TARGET:
        problems.append(f"read {common.fmt_bytes(rec.read_bytes)}")
    if rec.data_read_bytes:
        problems.append(f"{common.fmt_bytes(rec.data_read_bytes)} read from the tensor data")
    if rec.copied_bytes:
        problems.append(f"copied {common.fmt_bytes(rec.copied_bytes)}")
    if rec.mapped_bytes:
        problems.append(f"mapped {common.fmt_bytes(rec.mapped_bytes)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2GiB", help="size of the source and of the target (default 2GiB)")
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR, help="where checkpoints are cached")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument("--dtype", choices=sorted(common.ITEMSIZE), default="F32")
    parser.add_argument("--io-method", choices=("auto", "strace", "procio"), default="auto",
                        help="how input bytes are counted (auto: strace if installed, else /proc/self/io)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run ckpt with the environment as it is (default: keep compiled bytecode in DIR/pycache)")
    parser.add_argument("--clean", action="store_true", help="delete the checkpoints when done")
    args = parser.parse_args(argv)

    size = common.parse_size(args.size)
    src, tgt, source, target = prepare(args.dir, size, args.dtype)
    ckpt = common.ckpt_command()
    env = common.ckpt_env(None if args.no_bytecode_cache else args.dir / "pycache")
    print(f"ckpt: {' '.join(ckpt)}; {args.repeat} runs each; warm page cache; outputs in {args.dir}; "
          f"bytecode cache: {env.get('PYTHONPYCACHEPREFIX', 'as the environment says')}")
    print(common.machine_line() + "\n")

    work = Path(tempfile.mkdtemp(prefix="transfer-out-", dir=args.dir))
    try:
        results = timed_runs(ckpt, src, tgt, work, args.repeat, env)
        io = io_runs(ckpt, src, tgt, work, args.io_method, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    copy = results["copy"]
    rows = []
    ok = True
    for name, label in (
        ("copy", f"durable copy floor (cp + sync, {common.fmt_bytes(tgt.stat().st_size)})"),
        ("transfer", "transfer SRC TGT -o OUT"),
        ("dry-run", "transfer --dry-run"),
        ("count-changes", "transfer -o OUT --count-changes"),
    ):
        s = results[name]
        target_note = "-"
        if name == "transfer":
            hit = s.maxrss_mib < TRANSFER_RSS_TARGET_MIB
            ok &= hit
            target_note = "ok" if hit else "MISS: rss"
        rows.append([
            label, f"{s.wall_median:.3f}", f"{s.wall_min:.3f}",
            "-" if name == "copy" else f"{s.wall_median / copy.wall_median:.2f}", f"{s.cpu_median:.2f}",
            f"{s.maxrss_mib:.1f}", "-" if s.anon_mib is None else f"{s.anon_mib:.1f}", target_note,
        ])
    common.print_table(
        ["command", "wall median s", "wall min s", "x copy", "cpu median s", "peak RSS MiB", "peak anon MiB", "RSS target"],
        rows,
        title=f"ckpt transfer, {common.fmt_bytes(source.data_bytes)} source -> "
        f"{common.fmt_bytes(target.data_bytes)} target (transfer RSS target < {TRANSFER_RSS_TARGET_MIB:g} MiB)",
    )

    io_rows = []
    for name, rec in io.items():
        note = "-"
        if name == "dry-run":
            problems = dry_run_problems(rec)
            ok &= not problems
            note = "ok: headers only" if not problems else "MISS: " + "; ".join(problems)
        io_rows.append([
            name, f"{rec.read_bytes:,}",
            "-" if rec.data_read_bytes is None else f"{rec.data_read_bytes:,}",
            "-" if rec.copied_bytes is None else common.fmt_bytes(rec.copied_bytes),
            "-" if rec.mapped_bytes is None else common.fmt_bytes(rec.mapped_bytes),
            "-" if rec.opens is None else str(rec.opens), note,
        ])
    method = next(iter(io.values())).method
    common.print_table(
        ["run", "bytes read", "of them tensor data", "copy_file_range", "mmapped", "opens", "dry-run check"],
        io_rows,
        title=f"bytes taken from the two input files (method: {method}; headers: "
        f"{common.header_size(src):,} + {common.header_size(tgt):,} bytes)",
    )
    if method != "strace":
        print("note: /proc/self/io rchar is an upper bound (any file the run reads; copy_file_range included),"
              " and mmap reads do not appear in it\n")

    if args.clean:
        src.unlink(missing_ok=True)
        tgt.unlink(missing_ok=True)
        print(f"removed {src} and {tgt}")
    else:
        print(f"checkpoints kept in {args.dir} for the next run (--clean removes them)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
