"""Run in an interpreter that has torch and transformers (the tests run it as ``CKPT_TORCH_PYTHON``).

``make BASE_DIR CLS_DIR``: a ``BertForSequenceClassification`` shaped like the base model in
BASE_DIR (its config, two labels, seeded weights), saved to CLS_DIR by ``save_pretrained`` with a
small ``max_shard_size`` (so it is sharded), with BASE_DIR's tokenizer saved beside it.

``check OUT_DIR CLS_DIR BASE_WEIGHTS``: ``from_pretrained(OUT_DIR, output_loading_info=True)``; prints
one JSON line: the loading info, whether every encoder tensor equals BASE_WEIGHTS' (``bert.`` + its
name) and whether the classifier equals CLS_DIR's.
"""

from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification


def make(base: str, out: str) -> None:
    torch.manual_seed(7)
    config = BertConfig.from_pretrained(base, num_labels=2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out, max_shard_size="30MB")
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    print(json.dumps({"ok": True}))


def check(out: str, cls: str, base_weights: str) -> None:
    model, info = BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    original = BertForSequenceClassification.from_pretrained(cls)
    state = model.state_dict()
    base = load_file(base_weights)
    compared = [name for name in base if f"bert.{name}" in state]
    encoder_equal = all(torch.equal(state[f"bert.{name}"], base[name]) for name in compared)
    head = {k: v for k, v in original.state_dict().items() if k.startswith("classifier.")}
    classifier_equal = bool(head) and all(torch.equal(state[k], v) for k, v in head.items())
    print(json.dumps({
        "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [list(map(str, m)) for m in info.get("mismatched_keys", [])],
        "compared": len(compared), "encoder_equal": encoder_equal, "classifier_equal": classifier_equal,
    }))


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](*sys.argv[2:])
