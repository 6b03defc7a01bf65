"""Write the PyTorch, safetensors and transformers files of this folder with the real libraries, and their
entries in EXPECTED.json.

    /work/venv-torch/bin/python tests/data/xframe/make_torch.py

(torch 2.13.0+cpu, safetensors, transformers). Run ``make_keras.py`` first: the inputs of
``torch_io.npz`` are those of ``keras_io.npz``. Written:

- ``torch_cnn_init.pt``: ``torch.save(model.state_dict())`` of :class:`XNet`, untrained; the same
  model trained for a few SGD steps on random data (fixed seed) as ``torch_cnn.pt``, and its
  eval-mode output on the inputs of ``keras_io.npz`` in ``torch_io.npz`` (``image`` NHWC as there,
  ``tokens``, ``output``).
- ``torch_linear16.pt``: the state dict of :class:`Linear16` (``fc = nn.Linear(16, 16)``).
- ``torch_mha.safetensors``: ``nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64)``'s
  state dict by ``safetensors.torch.save_file`` (the fused ``self_attn.in_proj_weight`` (96, 32) and
  ``self_attn.in_proj_bias`` (96,)).
- ``bert_v100.safetensors`` / ``bert_v104.safetensors``: the ``model.safetensors`` that
  ``save_pretrained(safe_serialization=True)`` writes for a tiny ``BertForMaskedLM`` (vocab 100, hidden
  32, 2 layers, 2 heads, intermediate 64, 64 positions) trained a few Adam steps (the pretrained
  source), and for the same model untrained after ``resize_token_embeddings(104)`` (the target a
  tokenizer grown by 4 tokens asks for: its first 100 rows are the initial ones, its 4 new embedding
  rows near their mean, its 4 new ``cls.predictions.bias`` entries zero). transformers leaves the
  decoder weight tied to the word embeddings out of the file.
- ``bert_cls5.safetensors`` / ``bert_cls3.safetensors``: ``BertForSequenceClassification`` of the same
  size with ``num_labels=5`` trained a few steps (the source), and with ``num_labels=3`` untrained
  (another seed; the target).

:class:`XNet` is the PyTorch twin of ``make_keras.cnn``: its modules are named like the Keras layers,
BatchNorm2d and LayerNorm use Keras's epsilon (1e-3), and the depthwise convolution is
``nn.Conv2d(4, 8, 3, groups=4)``. The checks in ``tests/transforms`` import :class:`XNet` and
:data:`HERE` from this module (importing it writes nothing and needs torch only).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
IN_CHANNELS = 3
TOKENS = 5
VOCAB = 20
EMBED = 6
CONV = 4
MULT = 2
HIDDEN = 8
CLASSES = 3
EPS = 1e-3
MOMENTUM = 0.5  # torch's momentum m: running = (1 - m) * running + m * batch


class XNet(nn.Module):
    """conv1 -> bn1 -> ReLU -> dw (depthwise, x2) -> bn2 -> mean over H, W; emb -> mean over tokens ->
    proj -> ln; cat (image first) -> fc. ``forward`` takes NCHW images and int64 token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(IN_CHANNELS, CONV, 3)
        self.bn1 = nn.BatchNorm2d(CONV, eps=EPS, momentum=MOMENTUM)
        self.dw = nn.Conv2d(CONV, CONV * MULT, 3, groups=CONV)
        self.bn2 = nn.BatchNorm2d(CONV * MULT, eps=EPS, momentum=MOMENTUM)
        self.emb = nn.Embedding(VOCAB, EMBED)
        self.proj = nn.Linear(EMBED, HIDDEN)
        self.ln = nn.LayerNorm(HIDDEN, eps=EPS)
        self.fc = nn.Linear(CONV * MULT + HIDDEN, CLASSES)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(image)))
        x = self.bn2(self.dw(x)).mean(dim=(2, 3))
        t = self.ln(self.proj(self.emb(tokens).mean(dim=1)))
        return self.fc(torch.cat([x, t], dim=1))


class Linear16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def nchw(image_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image_nhwc.transpose(0, 3, 1, 2)))


def run_eval(model: XNet, image_nhwc: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(nchw(image_nhwc), torch.from_numpy(tokens.astype(np.int64))).numpy()


def train(model: XNet, seed: int, steps: int = 6, batch: int = 8) -> None:
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        image = rng.standard_normal((batch, IN_CHANNELS, 8, 8)).astype(np.float32) * 2 + 0.5
        tokens = rng.integers(0, VOCAB, (batch, TOKENS))
        target = torch.from_numpy(rng.standard_normal((batch, CLASSES)).astype(np.float32))
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(torch.from_numpy(image), torch.from_numpy(tokens)), target)
        loss.backward()
        optimizer.step()
    model.eval()


def entry(tensors: dict[str, torch.Tensor], writer: str) -> dict[str, object]:
    return {"writer": writer, "tensors": [
        {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
         "sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()} for name, t in tensors.items()]}


def save_pt(model: nn.Module, name: str, files: dict[str, dict[str, object]]) -> None:
    torch.save(model.state_dict(), HERE / name)
    files[name] = entry(torch.load(HERE / name, weights_only=True), "torch.save(model.state_dict())")


def train_bert(model: nn.Module, seed: int, labels: int | None = None, steps: int = 3) -> None:
    """A few Adam steps on random token ids (a masked-LM model's labels are its inputs; a classifier's are
    random classes), so that every value moves off its init."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, 100, (4, 12), generator=generator)
        target = ids if labels is None else torch.randint(0, labels, (4,), generator=generator)
        optimizer.zero_grad()
        model(input_ids=ids, labels=target).loss.backward()
        optimizer.step()
    model.eval()


def bert(files: dict[str, dict[str, object]]) -> str:
    """The transformers files (or the reason they could not be made)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    def config(**extra: int) -> BertConfig:
        return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, **extra)

    def save(model: nn.Module, name: str, writer: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            shutil.copyfile(Path(tmp) / "model.safetensors", HERE / name)
        files[name] = entry(load_file(HERE / name), writer)

    torch.manual_seed(10)
    mlm = BertForMaskedLM(config())
    grown = copy.deepcopy(mlm)
    grown.resize_token_embeddings(104)
    save(grown, "bert_v104.safetensors", "BertForMaskedLM, untrained, after resize_token_embeddings(104)")
    train_bert(mlm, seed=13)
    save(mlm, "bert_v100.safetensors", "BertForMaskedLM trained a few steps, save_pretrained(safe_serialization=True)")
    torch.manual_seed(11)
    cls5 = BertForSequenceClassification(config(num_labels=5))
    train_bert(cls5, seed=14, labels=5)
    save(cls5, "bert_cls5.safetensors", "BertForSequenceClassification(num_labels=5) trained a few steps")
    torch.manual_seed(12)
    save(BertForSequenceClassification(config(num_labels=3)), "bert_cls3.safetensors",
         "BertForSequenceClassification(num_labels=3), untrained")
    return str(transformers.__version__)


def main() -> None:
    import safetensors
    from safetensors.torch import load_file, save_file

    files: dict[str, dict[str, object]] = {}
    torch.manual_seed(1)
    model = XNet()
    save_pt(model, "torch_cnn_init.pt", files)
    train(model, seed=2)
    save_pt(model, "torch_cnn.pt", files)
    keras_io = np.load(HERE / "keras_io.npz")
    image, tokens = keras_io["image"], keras_io["tokens"]
    np.savez(HERE / "torch_io.npz", image=image, tokens=tokens, output=run_eval(model, image, tokens))

    torch.manual_seed(3)
    save_pt(Linear16(), "torch_linear16.pt", files)

    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64)
    save_file(layer.state_dict(), HERE / "torch_mha.safetensors")
    files["torch_mha.safetensors"] = entry(load_file(HERE / "torch_mha.safetensors"), "safetensors.torch.save_file")

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "safetensors": safetensors.__version__,
                "numpy": np.__version__, "transformers": bert(files)}
    path = HERE / "EXPECTED.json"
    doc = json.loads(path.read_text())  # make_keras.py wrote it first
    doc.setdefault("versions", {})["torch"] = versions
    doc.setdefault("files", {}).update(files)
    doc["files"] = dict(sorted(doc["files"].items()))
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
