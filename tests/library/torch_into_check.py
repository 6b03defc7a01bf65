"""Run in an interpreter with torch (CKPT_TORCH_PYTHON), with ckptsurgeon importable (PYTHONPATH):

    python torch_into_check.py WORKDIR

Writes a small trained model's state dict as ``pretrained.pt`` (torch.save) and
``pretrained.safetensors`` (safetensors.torch), a fresh model's as ``fresh.pt``, then fills a fresh
model's own ``state_dict()`` in place with ``ckptsurgeon.transfer_into`` from each file and prints
one JSON document: for each file whether every tensor kept its ``data_ptr`` (no copy), whether the
model's parameters and buffers now equal the pretrained ones, whether ``load_state_dict(strict=True)``
accepted the state dict, and the report (``to_dict()``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import ckptsurgeon as cs


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2).to(torch.bfloat16)  # a dtype numpy has no name for


def main(work: Path) -> int:
    torch.manual_seed(0)
    trained = Net()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
        trained.bn(trained.conv(torch.randn(2, 3, 6, 6)))  # running statistics move
    torch.save(trained.state_dict(), work / "pretrained.pt")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(work / "pretrained.safetensors"))
    torch.manual_seed(1)
    torch.save(Net().state_dict(), work / "fresh.pt")
    out = {}
    for name in ("pretrained.pt", "pretrained.safetensors"):
        torch.manual_seed(1)
        model = Net()
        state = model.state_dict()
        pointers = {k: v.data_ptr() for k, v in state.items()}
        report = cs.transfer_into(state, work / name, check=True)
        live = model.state_dict()
        out[name] = {
            "same_memory": all(live[k].data_ptr() == p for k, p in pointers.items()),
            "equal": all(torch.equal(live[k], v) for k, v in trained.state_dict().items()),
            "strict_load": str(model.load_state_dict(state, strict=True)),
            "report": report.to_dict(),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
