"""Checks made with the real torch, in an interpreter that has it (run in a subprocess by the tests).

    python torch_load_check.py load PATH EXPECTED.json   torch.load(weights_only=True), plain and mmap:
                                                         an OrderedDict with the expected names in order,
                                                         dtypes, shapes, contiguous strides and bytes (sha256)
    python torch_load_check.py module PATH               load_state_dict(strict=True) into MODEL below, then
                                                         a forward pass; prints each parameter's sha256
    python torch_load_check.py resave PATH OUT           torch.save of what torch.load returns, to OUT
    python torch_load_check.py count PATH                the number of tensors and the last one's values

Prints one JSON line on success; exits 1 with the reason on stderr otherwise. Uses torch only, never
ckptsurgeon, and never unpickles anything but with ``weights_only=True``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import sys

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}


class Model(torch.nn.Module):
    """Its state dict: emb.weight [10, 4], proj.weight [3, 4], proj.bias [3], norm.weight/bias/running_mean/
    running_var [3] (F32) and norm.num_batches_tracked [] (I64)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.proj = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.emb(ids)))


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def raw_sha256(t: torch.Tensor) -> str:
    flat = t.contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"").hexdigest()


def contiguous_strides(shape: list[int]) -> tuple[int, ...]:
    return torch.empty(shape, dtype=torch.uint8).stride()


def check_load(path: str, expected_path: str) -> None:
    with open(expected_path) as f:
        expected = json.load(f)
    for mmap in (False, True):
        sd = torch.load(path, weights_only=True, mmap=mmap)
        if type(sd) is not collections.OrderedDict:
            fail(f"mmap={mmap}: loaded a {type(sd).__name__}, not an OrderedDict")
        if list(sd) != [e["name"] for e in expected]:
            fail(f"mmap={mmap}: names {list(sd)[:5]}..., expected {[e['name'] for e in expected][:5]}...")
        for e in expected:
            t = sd[e["name"]]
            if t.dtype != DTYPES[e["dtype"]] or list(t.shape) != e["shape"]:
                fail(f"{e['name']}: {t.dtype}{list(t.shape)}, expected {e['dtype']}{e['shape']}")
            if t.stride() != contiguous_strides(e["shape"]) or t.storage_offset() != 0 or t.requires_grad:
                fail(f"{e['name']}: stride {t.stride()} offset {t.storage_offset()} requires_grad {t.requires_grad}")
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():
                fail(f"{e['name']}: its storage holds {t.untyped_storage().nbytes()} bytes")
            if raw_sha256(t) != e["sha256"]:
                fail(f"{e['name']}: values differ (mmap={mmap})")
    print(json.dumps({"ok": True, "tensors": len(expected)}))


def check_module(path: str) -> None:
    sd = torch.load(path, weights_only=True)
    model = Model()
    result = model.load_state_dict(sd, strict=True)
    if result.missing_keys or result.unexpected_keys:
        fail(f"missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    model.eval()
    out = model(torch.tensor([1, 2, 3]))
    if not torch.isfinite(out).all():
        fail("the forward pass gave non-finite values")
    state = {k: raw_sha256(v) for k, v in model.state_dict().items()}
    print(json.dumps({"ok": True, "state": state}))


def resave(path: str, out: str) -> None:
    torch.save(torch.load(path, weights_only=True), out)
    print(json.dumps({"ok": True}))


def count(path: str) -> None:
    sd = torch.load(path, weights_only=True)
    name, last = next(reversed(sd.items()))
    print(json.dumps({"ok": True, "count": len(sd), "last": [name, last.tolist()]}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"load": check_load, "module": check_module, "resave": resave, "count": count}[command](*args)
