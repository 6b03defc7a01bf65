"""Write the half-precision copies of this folder with the real libraries.

    /work/venv-torch/bin/python tests/data/cross_dtype/make_cross_dtype.py

(torch 2.13.0+cpu, safetensors 0.8.0). The source is ``tests/data/corpus/torch/smallcnn.safetensors``:
a SmallCNN state dict written by ``safetensors.torch.save_file`` (14 F32 tensors, two I64
``num_batches_tracked``). Read with ``safetensors.torch.load_file``, every floating tensor is cast
with ``t.to(dtype)`` (round to nearest even) and the state dict written back by
``safetensors.torch.save_file`` (the integer tensors unchanged, metadata ``{"format": "pt"}`` as
the source has). Written:

- ``smallcnn_bf16.safetensors``: ``t.to(torch.bfloat16)``.
- ``smallcnn_f16.safetensors``: ``t.to(torch.float16)``.
- ``smallcnn_bf16_altered.safetensors``: as ``smallcnn_bf16`` but ``fc.weight[3, 5]`` had 0.5 added
  to it (in float32, before the cast): one element far beyond any rounding tolerance.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "corpus" / "torch" / "smallcnn.safetensors"


def half(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def main() -> None:
    state = load_file(str(SOURCE))
    assert {t.dtype for t in state.values()} == {torch.float32, torch.int64}
    save_file(half(state, torch.bfloat16), str(HERE / "smallcnn_bf16.safetensors"), metadata={"format": "pt"})
    save_file(half(state, torch.float16), str(HERE / "smallcnn_f16.safetensors"), metadata={"format": "pt"})
    altered = {name: t.clone() for name, t in state.items()}
    altered["fc.weight"][3, 5] += 0.5
    save_file(half(altered, torch.bfloat16), str(HERE / "smallcnn_bf16_altered.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
