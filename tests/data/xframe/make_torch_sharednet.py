"""Write ``torch_sharednet.pt``: the PyTorch twin of the MindSpore ``SharedNet`` whose checkpoints are in
``tests/data/mindspore`` (conv: Conv2d(3, 8, 3) without bias, bn: BatchNorm2d(8), fc: Linear(288, 10)),
for the ``mindspore->torch`` and ``torch->mindspore`` presets. Run with torch 2.13.0+cpu, after
``make_keras.py`` and ``make_torch.py`` (which write EXPECTED.json anew):

    /work/venv-torch/bin/python tests/data/xframe/make_torch_sharednet.py

The state dict is saved after two forward passes in train mode (fixed seed), so BatchNorm's running
statistics and ``num_batches_tracked`` are not their initial values. Its entry in EXPECTED.json is
written too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class SharedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(288, 10)


def main() -> None:
    torch.manual_seed(3)
    model = SharedNet()
    model.train()
    for _ in range(2):
        model.bn(model.conv(torch.randn(4, 3, 8, 8)))
    state = model.state_dict()
    out = HERE / "torch_sharednet.pt"
    torch.save(state, out)
    expected_path = HERE / "EXPECTED.json"
    doc = json.loads(expected_path.read_text())
    doc.setdefault("files", {})[out.name] = {"writer": "torch.save(SharedNet().state_dict())", "tensors": [
        {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."),
         "sha256": hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()} for k, v in state.items()]}
    expected_path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
