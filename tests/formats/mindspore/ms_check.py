"""Checks of MindSpore checkpoints with the real MindSpore library, run in a subprocess.

    python ms_check.py load PATH [--dec-key-file KEYFILE --dec-mode MODE]
        mindspore.load_checkpoint(PATH, dec_key=<raw bytes of KEYFILE>, dec_mode=MODE), MODE one of
        "AES-GCM" (MindSpore's default), "AES-CBC", "SM4-CBC"; prints, in load_checkpoint's order,
        {"ok": true, "tensors": [{"name", "dtype", "shape", "sha256"}...], "strings": {name: value}}
        with dtype as a ckptsurgeon code (F32, BF16, I64, BOOL...), sha256 over the tensor's raw
        little-endian C-order bytes, and append_dict strings (load_checkpoint gives them as str) in "strings"
    python ms_check.py net PATH [--num-classes N] [--allow-extra]
        builds SHARED_NET below (the network of the corpus file mindspore/sharednet_f32.ckpt, N classes,
        default 10), load_param_into_net(net, load_checkpoint(PATH), strict_load=True), requires both
        not-loaded lists empty (with --allow-extra, entries of PATH the net lacks, e.g. optimizer state, are
        only reported), requires every net parameter to keep its shape and dtype, runs one forward pass on
        a random (2, 3, 6, 6) input; prints {"ok": true, "not_loaded": [...]}

Prints one JSON line on stdout (anything MindSpore writes to stdout is sent to stderr); exits 1 with
the reason on stderr. Uses mindspore and numpy only, never ckptsurgeon. Run with the MindSpore
interpreter, e.g. $CKPT_MS_PYTHON (MindSpore 2.10.0, CPU).

Raw bytes: numpy has no bfloat16 MindSpore can use (asnumpy() of a BF16 tensor raises TypeError under
numpy 2.x), so BF16 bytes come from Tensor.get_bytes(), MindSpore's copy of the tensor's buffer, and
are cross-checked against the upper halves of a BF16 -> F32 cast (exact on CPU, NaN payloads and
subnormals included: both give back all 65536 patterns). astype(uint16) converts values, so is not
used. Every other dtype goes through asnumpy() as little-endian C-order bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("GLOG_v", "3")
_OUT = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # keep stdout for the one JSON line

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn  # noqa: E402

CODES = {"Float32": "F32", "Float16": "F16", "BFloat16": "BF16", "Float64": "F64", "Int8": "I8",
         "Int16": "I16", "Int32": "I32", "Int64": "I64", "UInt8": "U8", "UInt16": "U16",
         "UInt32": "U32", "UInt64": "U64", "Bool": "BOOL"}


class SharedNet(nn.Cell):
    """SHARED_NET: conv.weight [8,3,3,3] (no bias), bn [8], fc [N,288] = 8 channels x 6 x 6 ('same' conv)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, pad_mode="same", has_bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(288, num_classes)

    def construct(self, x):
        return self.fc(self.flatten(self.relu(self.bn(self.conv(x)))))


def fail(message: str) -> None:
    print(f"ms_check: {message}", file=sys.stderr)
    sys.exit(1)


def raw_bytes(name: str, tensor) -> bytes:
    """The tensor's raw little-endian C-order bytes (see the module docstring for BF16)."""
    if tensor.dtype == ms.bfloat16:
        data = tensor.get_bytes()
        upper = (tensor.astype(ms.float32).asnumpy().view("<u4") >> 16).astype("<u2")
        if len(data) != 2 * int(np.prod(tensor.shape)) or data != upper.tobytes():
            fail(f"{name}: BF16 bytes from get_bytes() and from the F32 cast differ")
        return data
    array = np.ascontiguousarray(tensor.asnumpy())
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def load(args: argparse.Namespace) -> dict:
    kwargs = {}
    if args.dec_key_file:
        with open(args.dec_key_file, "rb") as f:
            kwargs = {"dec_key": f.read(), "dec_mode": args.dec_mode}
    tensors, strings = [], {}
    for name, value in ms.load_checkpoint(args.path, **kwargs).items():
        if isinstance(value, str):
            strings[name] = value
            continue
        code = CODES.get(str(value.dtype))
        if code is None:
            fail(f"{name}: dtype {value.dtype} has no ckptsurgeon code")
        tensors.append({"name": name, "dtype": code, "shape": [int(d) for d in value.shape],
                        "sha256": hashlib.sha256(raw_bytes(name, value)).hexdigest()})
    return {"ok": True, "tensors": tensors, "strings": strings}


def net(args: argparse.Namespace) -> dict:
    model = SharedNet(args.num_classes)
    before = {p.name: (tuple(p.shape), p.dtype) for p in model.get_parameters()}
    param_not_load, ckpt_not_load = ms.load_param_into_net(model, ms.load_checkpoint(args.path), strict_load=True)
    if param_not_load:
        fail(f"net parameters not loaded: {param_not_load}")
    if ckpt_not_load and not args.allow_extra:
        fail(f"checkpoint entries not loaded: {ckpt_not_load}")
    for p in model.get_parameters():  # load_param_into_net can leave a (10, 1) checkpoint shape on a (10,) param
        if (tuple(p.shape), p.dtype) != before[p.name]:
            fail(f"{p.name}: net parameter became {tuple(p.shape)} {p.dtype}, built as {before[p.name]}")
    model.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32))
    out = model(x).asnumpy()
    if out.shape != (2, args.num_classes) or not np.isfinite(out).all():
        fail(f"forward pass gave shape {out.shape}, finite: {bool(np.isfinite(out).all())}")
    return {"ok": True, "not_loaded": list(param_not_load) + list(ckpt_not_load)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="ms_check.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_load = sub.add_parser("load")
    p_load.add_argument("path")
    p_load.add_argument("--dec-key-file")
    p_load.add_argument("--dec-mode", default="AES-GCM", choices=["AES-GCM", "AES-CBC", "SM4-CBC"])
    p_net = sub.add_parser("net")
    p_net.add_argument("path")
    p_net.add_argument("--num-classes", type=int, default=10)
    p_net.add_argument("--allow-extra", action="store_true")
    try:
        args = parser.parse_args()
    except SystemExit as e:  # usage errors exit 1 like every other failure
        sys.exit(1 if e.code else 0)
    try:
        result = load(args) if args.command == "load" else net(args)
    except Exception as e:
        fail(f"{type(e).__name__}: {' '.join(str(e).split())}")
    _OUT.write(json.dumps(result) + "\n")
    _OUT.flush()


if __name__ == "__main__":
    main()
