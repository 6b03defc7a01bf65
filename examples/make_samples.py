"""Write the sample checkpoints of the quick start with the official safetensors library.

    python examples/make_samples.py

pretrained.safetensors: a small vision-transformer-like classifier (10 classes) with trained-looking
weights. target.safetensors: the same network in a newer code base, freshly initialised, where the
feed-forward block is called ``mlp`` instead of ``ffn`` and the head predicts 4 classes.
A fixed seed makes the files the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).parent
DIM, BLOCKS, PATCH = 64, 4, 48


def network(rng: np.random.Generator, classes: int, ffn_name: str, scale: float) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {"patch_embed.weight": w(DIM, PATCH), "patch_embed.bias": w(DIM), "pos_embed": w(17, DIM)}
    for i in range(BLOCKS):
        b = f"blocks.{i}"
        tensors |= {
            f"{b}.norm1.weight": np.ones(DIM, np.float32), f"{b}.norm1.bias": np.zeros(DIM, np.float32),
            f"{b}.attn.qkv.weight": w(3 * DIM, DIM), f"{b}.attn.qkv.bias": w(3 * DIM),
            f"{b}.attn.proj.weight": w(DIM, DIM), f"{b}.attn.proj.bias": w(DIM),
            f"{b}.norm2.weight": np.ones(DIM, np.float32), f"{b}.norm2.bias": np.zeros(DIM, np.float32),
            f"{b}.{ffn_name}.fc1.weight": w(4 * DIM, DIM), f"{b}.{ffn_name}.fc1.bias": w(4 * DIM),
            f"{b}.{ffn_name}.fc2.weight": w(DIM, 4 * DIM), f"{b}.{ffn_name}.fc2.bias": w(DIM),
        }
    tensors |= {"norm.weight": np.ones(DIM, np.float32), "norm.bias": np.zeros(DIM, np.float32),
                "head.weight": w(classes, DIM), "head.bias": np.zeros(classes, np.float32)}
    return tensors


def main() -> None:
    save_file(network(np.random.default_rng(1), 10, "ffn", 0.05), HERE / "pretrained.safetensors",
              metadata={"format": "pt", "model": "tiny-vit", "classes": "10"})
    save_file(network(np.random.default_rng(2), 4, "mlp", 0.02), HERE / "target.safetensors",
              metadata={"format": "pt", "model": "tiny-vit-v2", "classes": "4"})


if __name__ == "__main__":
    main()
