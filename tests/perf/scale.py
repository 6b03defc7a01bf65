"""Measure how ``ckpt``'s cost grows with the number of tensors (not bytes).

    python tests/perf/scale.py [--dir DIR] [--quick] [--only TEXT] [--skip-huge]

The inputs are many tiny tensors (``[1]`` and ``[2, 2]`` F32) with a real model's names: N repeated
blocks ``model.layers.{i}.self_attn.q_proj.weight`` ... plus some flat names, so the grouping of
layers and the collapsing of repeated blocks are exercised at scale. They are written with plain
Python (safetensors) and h5py (HDF5), never with ckptsurgeon, and cached in DIR.

Each command runs once as a child process (``common.run_measured``: wall time, peak RSS from
``wait4``); the tables give the growth curve of ``inspect`` and every other command at 200k tensors,
then PASS/FAIL per target. ``--quick`` runs 10k/50k only (no targets checked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

BLOCK = ("input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
         "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
         "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
SHORT = ("ln_1", "q", "k", "v", "o", "ln_2", "fc", "gate", "proj")
FLAT = 50  # flat names besides the blocks


def tensor_names(n: int, variant: int = 0) -> list[tuple[str, list[int]]]:
    """About ``n`` (name, shape) pairs: blocks of 9 tensors plus flat names; ``variant`` 1 differs a little."""
    if variant == 2:  # Keras-style names (dense_12.kernel): no numeric component, so nothing collapses
        return [(f"dense_{i // 2}.{'bias' if i % 2 else 'kernel'}", [1] if i % 2 else [2, 2]) for i in range(n)]
    if variant == 3:  # GPT-2-style short names, all [1]: 1.3M tensors in a header under the 100 MB limit
        return [(f"h.{i // 9}.{SHORT[i % 9]}", [1]) for i in range(n)]
    out: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [2, 2])]
    blocks = max(1, (n - FLAT - 3) // len(BLOCK))
    for i in range(blocks):
        for j, suffix in enumerate(BLOCK):
            if variant and i % 1000 == 7 and "self_attn" in suffix:
                suffix = suffix.replace("self_attn", "attention")  # renamed in the target
            shape = [1] if "norm" in suffix else [2, 2]
            if variant and i % 500 == 3 and j == 8:
                shape = [2, 3]  # shape mismatch in the target
            out.append((f"model.layers.{i}.{suffix}", shape))
    out += [(f"extra.scale_{k}", [1]) for k in range(FLAT)]
    out += [("model.norm.weight", [1]), ("lm_head.weight", [2, 2])]
    return out


def write_safetensors(path: Path, n: int, variant: int = 0) -> bool:
    """Write (unless cached) a safetensors file of about ``n`` tiny F32 tensors; True if written.

    The header is built in a child process: a child started with ``posix_spawn`` starts its
    ``ru_maxrss`` from its parent's resident size, so the parent must stay small.
    """
    if path.exists():
        return False
    code = "import sys, scale; scale._write_safetensors(scale.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))"
    subprocess.run([sys.executable, "-c", code, str(path), str(n), str(variant)], check=True,
                   cwd=Path(__file__).parent)
    return True


def _write_safetensors(path: Path, n: int, variant: int) -> None:
    doc: dict[str, object] = {}
    offset = 0
    for name, shape in tensor_names(n, variant):
        size = 4
        for d in shape:
            size *= d
        doc[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        pool = struct.pack("<f", 0.5 + variant) * 4096
        left = offset
        while left:
            chunk = pool[: min(left, len(pool))]
            f.write(chunk)
            left -= len(chunk)
    os.replace(tmp, path)


_H5_WRITER = r"""
import sys, h5py, numpy as np
path, n = sys.argv[1], int(sys.argv[2])
blocks = (n - 3) // 9
with h5py.File(path + ".tmp", "w") as f:
    f.create_dataset("model/embed_tokens/weight", data=np.ones((2, 2), np.float32))
    suffixes = ("input_layernorm", "self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "self_attn/o_proj",
                "post_attention_layernorm", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
    one, four = np.ones((1,), np.float32), np.ones((2, 2), np.float32)
    for i in range(blocks):
        g = f.create_group(f"model/layers/{i}")
        for s in suffixes:
            g.create_dataset(s + "/weight", data=one if "norm" in s else four)
    f.create_dataset("model/norm/weight", data=one)
    f.create_dataset("lm_head/weight", data=four)
import os
os.replace(path + ".tmp", path)
"""


def write_h5(path: Path, n: int) -> bool:
    if path.exists():
        return False
    subprocess.run([sys.executable, "-c", _H5_WRITER, str(path), str(n)], check=True)
    return True


def label(n: int) -> str:
    return f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}M"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=common.DEFAULT_DIR / "scale", help="where inputs are cached")
    parser.add_argument("--quick", action="store_true", help="10k and 50k tensors only, no targets")
    parser.add_argument("--skip-huge", action="store_true", help="leave out the 1.3M-tensor file")
    parser.add_argument("--only", default="", help="run only the cases whose label contains TEXT")
    parser.add_argument("--timeout", type=int, default=0,
                        help="stop a run after this many seconds (coreutils timeout; the row says so)")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)

    sizes = [10_000, 50_000] if args.quick else [10_000, 100_000, 200_000] + ([] if args.skip_huge else [1_300_000])
    big = 50_000 if args.quick else 200_000
    h5n = 20_000 if args.quick else 100_000
    files: dict[int, Path] = {}
    for n in sorted({*sizes, big}):
        huge = n > 1_000_000
        files[n] = args.dir / f"scale-{label(n)}{'-short' if huge else ''}.safetensors"
        started = time.perf_counter()
        if write_safetensors(files[n], n, variant=3 if huge else 0):
            print(f"wrote {files[n]} in {time.perf_counter() - started:.1f} s")
    flat = args.dir / f"scale-{label(big)}-flat.safetensors"
    write_safetensors(flat, big, variant=2)
    target = args.dir / f"scale-{label(big)}-target.safetensors"
    write_safetensors(target, big, variant=1)
    h5 = args.dir / f"scale-{label(h5n)}.h5"
    started = time.perf_counter()
    if write_h5(h5, h5n):
        print(f"wrote {h5} in {time.perf_counter() - started:.1f} s")

    ckpt = common.ckpt_command()
    if args.timeout:
        ckpt = ["timeout", "-s", "KILL", str(args.timeout), *ckpt]
    env = common.ckpt_env(args.dir / "pycache")
    print(f"ckpt: {' '.join(ckpt)}")
    print(common.machine_line() + "\n")
    out = Path(tempfile.mkdtemp(prefix="scale-out-", dir=args.dir))
    src = files[big]
    B = label(big)
    cases: list[tuple[str, list[str], tuple[float, float] | None]] = []
    for n in sizes:
        t = (3.0, 300.0) if n == 200_000 else (20.0, 2048.0) if n == 1_300_000 else None
        cases.append((f"inspect {label(n)}", ["inspect", str(files[n])], t))
    cases += [
        (f"inspect {B} flat names", ["inspect", str(flat)], (3.0, 300.0) if big == 200_000 else None),
        (f"diff {B} flat names", ["diff", str(flat), str(src)], None),
        (f"inspect --json --hash {B}", ["inspect", str(src), "--json", "--hash"], None),
        (f"inspect h5 {label(h5n)}", ["inspect", str(h5)], (15.0, 1e9) if h5n == 100_000 else None),
        (f"transfer --dry-run {B}", ["transfer", str(src), str(target), "--dry-run"],
         (5.0, 1e9) if big == 200_000 else None),
        (f"transfer {B}", ["transfer", str(src), str(target), "-o", str(out / "t.safetensors")], None),
        (f"convert {B} -> safetensors", ["convert", str(src), "-o", str(out / "c.safetensors")], None),
        (f"convert {B} -> npz", ["convert", str(src), "-o", str(out / "c.npz")], None),
        (f"convert {B} -> h5", ["convert", str(src), "-o", str(out / "c.h5")], None),
        (f"diff {B}", ["diff", str(src), str(target)], None),
        (f"verify {B}", ["verify", str(src)], None),
        (f"rename {B}", ["rename", str(src), "-o", str(out / "r.safetensors"), "--rename", r"^model\.=>net."], None),
    ]
    rows = []
    failed = False
    try:
        for name, cmd, tgt in cases:
            if args.only and args.only not in name:
                continue
            for p in out.iterdir():
                p.unlink()
            m = common.run_measured([*ckpt, *cmd], stdout=out / "stdout", env=env)
            verdict = "-"
            if args.timeout and m.exit_code in (-9, 137):
                verdict = f"TIMEOUT (> {args.timeout} s)"
                failed = True
            elif m.exit_code not in (0, 1):
                verdict = f"exit {m.exit_code}"
                failed = True
                print(m.stderr[-1000:], file=sys.stderr)
            elif tgt:
                ok = m.wall_s < tgt[0] and m.maxrss_mib < tgt[1]
                failed |= not ok
                rss = "" if tgt[1] >= 1e9 else f", < {tgt[1]:g} MB"
                verdict = f"{'PASS' if ok else 'FAIL'} (< {tgt[0]:g} s{rss})"
            rows.append([name, f"{m.wall_s:.2f}", f"{m.maxrss_mib:.0f}", f"{m.cpu_s:.2f}", verdict])
            print(f"  {name}: {m.wall_s:.2f} s, {m.maxrss_mib:.0f} MB", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    common.print_table(["command", "wall s", "peak RSS MiB", "cpu s", "target"], rows,
                       title="ckpt by tensor count (one run each)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
