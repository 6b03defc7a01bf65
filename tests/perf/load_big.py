"""Measure ``ckptsurgeon.load`` on a large safetensors file when one tensor is touched.

    python tests/perf/load_big.py [--size 1GB] [--dir DIR] [--repeat 3]

Uses (or writes, cached in DIR) the 1 GB source checkpoint of ``bench.py``. Each run is a child
process that imports ckptsurgeon, opens the file with ``cs.load``, sums one tensor (every page of it
is read) and exits; its peak RSS (``wait4``, file-backed mapped pages included) is reported, beside
a child that loads the whole file with ``safetensors.numpy.load_file`` and sums the same tensor.

Target: the peak RSS of ``cs.load`` touching one tensor stays under 100 MiB.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import common

LOAD_RSS_TARGET_MIB = 100.0
TOUCH = """
import sys
import ckptsurgeon as cs
with cs.load(sys.argv[1]) as weights:
    w = weights[sys.argv[2]]
    print(float(w.sum()), w.nbytes)
"""
NAIVE = """
import sys
from safetensors.numpy import load_file
weights = load_file(sys.argv[1])
w = weights[sys.argv[2]]
print(float(w.sum()), w.nbytes)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    size = common.parse_size(args.size)
    model = common.model_for_size(size, "F32")
    source = args.dir / f"bench-{size / 1e9:g}GB-source.safetensors"
    if not source.exists():
        args.dir.mkdir(parents=True, exist_ok=True)
        common.write_safetensors(source, model)
    tensor = next(t for t in model.tensors() if len(t.shape) == 2 and ".0." in t.name)  # a weight of the first block
    nbytes = common.ITEMSIZE["F32"] * math.prod(tensor.shape)
    print(f"{source} ({source.stat().st_size / common.MIB:.0f} MiB); touching {tensor.name} "
          f"{list(tensor.shape)} ({nbytes / common.MIB:.1f} MiB)")
    env = common.ckpt_env(args.dir / "pycache")
    rows = []
    for label, script in (("cs.load, one tensor summed", TOUCH), ("safetensors load_file, same tensor", NAIVE)):
        runs = [common.run_measured([sys.executable, "-c", script, str(source), tensor.name], env=env).check()
                for _ in range(args.repeat)]
        rows.append((label, statistics.median(r.wall_s for r in runs), max(r.maxrss_mib for r in runs)))
    common.print_table(["run", "wall s (median)", "peak RSS MiB (max)"], [[a, f"{b:.3f}", f"{c:.0f}"] for a, b, c in rows],
                       title=f"{args.repeat} runs each")
    ok = rows[0][2] < LOAD_RSS_TARGET_MIB
    print(f"target: cs.load touching one tensor, peak RSS < {LOAD_RSS_TARGET_MIB:g} MiB: {rows[0][2]:.0f} "
          f"{'ok' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
