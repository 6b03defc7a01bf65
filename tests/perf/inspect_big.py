"""Measure ``ckpt inspect`` on a large single-file checkpoint and on a 30-shard checkpoint of the same size.

    python tests/perf/inspect_big.py --size 2GiB [--dir DIR] [--repeat 5] [--shards 30] [--dtype F32]

The checkpoints are written once and cached in DIR (default: ``$TMPDIR/ckptsurgeon-perf``); ``--clean``
removes them at the end. Each command runs as a child process ``--repeat`` times; the table gives the
median and minimum wall time, the peak RSS (``ru_maxrss`` from ``wait4``) and the sampled peak of
anonymous RSS. ``ckpt --version`` is measured too: it is the start-up cost every command pays.

Targets: ``inspect`` reads headers only, so wall time well under 1 s and peak RSS under 150 MiB,
whatever the checkpoint's size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

WALL_TARGET_S = 1.0
RSS_TARGET_MIB = 150.0


def prepare(directory: Path, size: int, dtype: str, shards: int) -> tuple[Path, Path, common.Model]:
    """The single-file and the sharded checkpoint (written unless cached)."""
    model = common.model_for_size(size, dtype)
    tag = f"{common.fmt_bytes(size).replace(' ', '')}-{dtype}"
    single = directory / f"inspect-{tag}.safetensors"
    print(f"model: {model.describe()}")
    started = time.perf_counter()
    if common.write_safetensors(single, model, seed=1):
        print(f"  wrote {single} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"  cached {single}")
    started = time.perf_counter()
    index, written = common.write_sharded(directory / f"inspect-{tag}-{shards}-shards", model, shards, seed=1)
    print(f"  {'wrote' if written else 'cached'} {index} ({shards} shards)"
          + (f" in {time.perf_counter() - started:.1f} s" if written else ""))
    return single, index, model


def data_starts(files: list[Path]) -> dict[Path, int]:
    """Where tensor data begins in each file (a JSON index is all metadata)."""
    return {f: f.stat().st_size if f.suffix == ".json" else common.header_size(f) for f in files}


def check_json_output(path: Path, model: common.Model) -> None:
    """The ``--json`` output is complete: every tensor listed (guards against measuring a failure)."""
    doc = json.loads(path.read_text())
    if doc["totals"]["tensors"] != len(model.tensors()) or doc["totals"]["bytes"] != model.data_bytes:
        raise RuntimeError(f"unexpected inspect --json totals: {doc['totals']}")


def verdict(summary: common.Summary, with_targets: bool) -> str:
    if not with_targets:
        return "(start-up)"
    wall_ok = summary.wall_median < WALL_TARGET_S
    rss_ok = summary.maxrss_mib < RSS_TARGET_MIB
    return "ok" if wall_ok and rss_ok else "MISS: " + ", ".join(
        what for what, ok in (("wall", wall_ok), ("rss", rss_ok)) if not ok
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2GiB", help="checkpoint size (default 2GiB)")
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR, help="where checkpoints are cached")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--shards", type=int, default=30, help="shards of the sharded checkpoint (default 30)")
    parser.add_argument("--dtype", choices=sorted(common.ITEMSIZE), default="F32")
    parser.add_argument("--io-method", choices=("auto", "strace", "procio"), default="auto",
                        help="how input bytes are counted (auto: strace if installed, else /proc/self/io)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run ckpt with the environment as it is (default: keep compiled bytecode in DIR/pycache)")
    parser.add_argument("--clean", action="store_true", help="delete the checkpoints when done")
    args = parser.parse_args(argv)

    size = common.parse_size(args.size)
    single, index, model = prepare(args.dir, size, args.dtype, args.shards)
    ckpt = common.ckpt_command()
    env = common.ckpt_env(None if args.no_bytecode_cache else args.dir / "pycache")
    print(f"ckpt: {' '.join(ckpt)}; {args.repeat} runs each after a warm-up run; warm page cache; "
          f"bytecode cache: {env.get('PYTHONPYCACHEPREFIX', 'as the environment says')}")
    print(common.machine_line() + "\n")

    out = Path(tempfile.mkdtemp(prefix="inspect-out-", dir=args.dir))
    try:
        cases = [
            ("ckpt --version", [*ckpt, "--version"], False),
            ("inspect FILE", [*ckpt, "inspect", str(single)], True),
            ("inspect FILE --json", [*ckpt, "inspect", str(single), "--json"], True),
            (f"inspect INDEX ({args.shards} shards)", [*ckpt, "inspect", str(index)], True),
            (f"inspect INDEX --json ({args.shards} shards)", [*ckpt, "inspect", str(index), "--json"], True),
        ]
        rows = []
        for label, cmd, with_targets in cases:
            stdout = out / "stdout"
            summary = common.repeat(label, cmd, args.repeat, stdout=stdout, env=env)
            if "--json" in cmd:
                check_json_output(stdout, model)
            rows.append([
                label,
                f"{summary.wall_median:.3f}",
                f"{summary.wall_min:.3f}",
                f"{summary.cpu_median:.3f}",
                f"{summary.maxrss_mib:.1f}",
                "-" if summary.anon_mib is None else f"{summary.anon_mib:.1f}",
                verdict(summary, with_targets),
            ])
        io = {
            "inspect FILE": common.input_io([*ckpt, "inspect", str(single)], ["inspect", str(single)],
                                            ["inspect", str(single)], data_starts([single]), out,
                                            args.io_method, env),
            f"inspect INDEX ({args.shards} shards)": common.input_io(
                [*ckpt, "inspect", str(index)], ["inspect", str(index)], ["inspect", str(index)],
                data_starts(common.sharded_files(index)), out, args.io_method, env),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)

    common.print_table(
        ["command", "wall median s", "wall min s", "cpu median s", "peak RSS MiB", "peak anon MiB", "targets"],
        rows,
        title=f"ckpt inspect, {common.fmt_bytes(model.data_bytes)} checkpoint "
        f"(targets: wall < {WALL_TARGET_S:g} s, peak RSS < {RSS_TARGET_MIB:g} MiB)",
    )

    common.print_table(
        ["run", "bytes read", "in tensor data", "mmapped", "opens"],
        [[name, common.fmt_bytes(rec.read_bytes),
          "-" if rec.data_read_bytes is None else common.fmt_bytes(rec.data_read_bytes),
          "-" if rec.mapped_bytes is None else common.fmt_bytes(rec.mapped_bytes),
          "-" if rec.opens is None else str(rec.opens)] for name, rec in io.items()],
        title=f"bytes taken from the checkpoint files (method: {next(iter(io.values())).method})",
    )

    if args.clean:
        single.unlink(missing_ok=True)
        shutil.rmtree(index.parent, ignore_errors=True)
        print(f"removed {single} and {index.parent}")
    else:
        print(f"checkpoints kept in {args.dir} for the next run (--clean removes them)")
    return 0 if all(r[-1] in ("ok", "(start-up)") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
