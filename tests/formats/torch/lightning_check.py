"""Checks of updated training checkpoints with the real torch (and PyTorch Lightning), run in a subprocess.

    python lightning_check.py train OUT SOURCE TARGET      a {"model", "optimizer", "epoch"} checkpoint:
        torch.load(weights_only=True); every entry but "model" equal to TARGET's; "model" holds SOURCE's
        tensors; load_state_dict(strict=True) into CONV below and Adam.load_state_dict of "optimizer"
    python lightning_check.py lightning OUT SOURCE TARGET  a Lightning checkpoint: the same comparison with
        "state_dict" (keys "model." + SOURCE's); LitWrap.load_from_checkpoint(OUT); then Trainer.fit
        resumed from OUT for one more epoch (epoch and global step go on from the target's)

CONV is the ConvClassifier of tests/data/torch (names and shapes as stored there). Prints one JSON
line; exits 1 with the reason on stderr. Uses torch and Lightning only, never ckptsurgeon; every
torch.load is weights_only (Lightning's own loading of OUT included).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

torch.manual_seed(0)


class ConvClassifier(torch.nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(6, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6))
        self.head = torch.nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.block(x))
        return self.head(x.mean(dim=(2, 3)))


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def same(a: Any, b: Any, where: str) -> None:
    """Equal values, tensors by dtype, shape and bytes, containers entry by entry."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b)):
            fail(f"{where}: tensors differ")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            fail(f"{where}: keys differ: {list(a)} vs {list(b)}")
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            fail(f"{where}: sequences differ")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}.{i}")
        return
    if a != b:
        fail(f"{where}: {a!r} != {b!r}")


def compare(out_path: str, source_path: str, target_path: str, key: str, prefix: str) -> dict[str, Any]:
    out = torch.load(out_path, weights_only=True)
    target = torch.load(target_path, weights_only=True)
    source = torch.load(source_path, weights_only=True)
    if list(out) != list(target):
        fail(f"top-level keys differ: {list(out)} vs {list(target)}")
    for k in out:
        if k != key:
            same(out[k], target[k], k)
    weights = out[key]
    if list(weights) != list(target[key]):
        fail("the state dict's keys differ from the target's")
    same(dict(weights), {prefix + k: v for k, v in source.items()}, key)
    return out


def check_train(out_path: str, source_path: str, target_path: str) -> None:
    out = compare(out_path, source_path, target_path, "model", "")
    model = ConvClassifier()
    model.load_state_dict(out["model"], strict=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.load_state_dict(out["optimizer"])
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    print(json.dumps({"ok": True, "epoch": out["epoch"], "steps": len(optimizer.state)}))


def check_lightning(out_path: str, source_path: str, target_path: str) -> None:
    try:
        import pytorch_lightning as pl
    except ImportError:
        print(json.dumps({"skip": "pytorch_lightning is not installed"}))
        return
    compare(out_path, source_path, target_path, "state_dict", "model.")

    class LitWrap(pl.LightningModule):
        def __init__(self, lr: float = 0.01, num_classes: int = 5, seed: int = 14) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = ConvClassifier(num_classes)
            self.first: dict[str, torch.Tensor] | None = None

        def on_train_start(self) -> None:  # after the checkpoint is restored, before any step
            self.first = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]

    source = torch.load(source_path, weights_only=True)
    loaded = LitWrap.load_from_checkpoint(out_path, weights_only=True)
    same(dict(loaded.model.state_dict()), dict(source), "load_from_checkpoint")
    target = torch.load(target_path, weights_only=True)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    lit = LitWrap()
    trainer = pl.Trainer(max_epochs=target["epoch"] + 2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(lit, loader, ckpt_path=out_path, weights_only=True)
    assert lit.first is not None
    same(lit.first, dict(source), "the weights training resumed from")
    print(json.dumps({"ok": True, "resumed_at_step": target["global_step"], "global_step": trainer.global_step,
                      "epoch": trainer.current_epoch}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"train": check_train, "lightning": check_lightning}[command](*args)
