"""Write the model folders in this directory with transformers' own ``save_pretrained`` (run in an
interpreter that has torch and transformers; the results are committed, this script is how they were made).

Each folder is a tiny ``BertForSequenceClassification`` (1 layer, hidden size 8) with a tokenizer:

- ``both/``: ``model.safetensors`` (save_pretrained) and a ``pytorch_model.bin`` holding other values
  (``torch.save`` of a state dict, as transformers 4 wrote it without safetensors);
- ``training/``: ``model.safetensors`` beside what a Trainer checkpoint holds (``optimizer.pt``,
  ``scheduler.pt``, ``rng_state.pth``, ``training_args.bin``; each written by torch.save);
- ``sharded/``: save_pretrained with ``max_shard_size="4KB"``: ``model.safetensors.index.json`` and its
  shards, with a ``README.md`` and a file in a subdirectory (``1_Pooling/config.json``);
- ``single_and_index/``: ``model.safetensors`` beside a sharded copy holding other values;
- ``bin_only/``: ``pytorch_model.bin`` alone (with config and tokenizer).

``EXPECTED.json`` records, for each folder, which weight file ``from_pretrained`` loaded (found by
comparing the loaded classifier with each file's).

    python tests/data/folders/make_folders.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

HERE = Path(__file__).parent
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(27)]]


def model(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, type_vocab_size=2, num_labels=2)
    return BertForSequenceClassification(config).eval()


def tokenizer(folder: Path) -> None:
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)


def fresh(name: str) -> Path:
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def main() -> None:
    both = fresh("both")
    model(0).save_pretrained(both)
    torch.save(model(1).state_dict(), both / "pytorch_model.bin")
    tokenizer(both)

    training = fresh("training")
    m = model(2)
    m.save_pretrained(training)
    tokenizer(training)
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    m(input_ids=torch.tensor([[2, 5, 3]])).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    torch.save(optimizer.state_dict(), training / "optimizer.pt")
    torch.save(scheduler.state_dict(), training / "scheduler.pt")
    torch.save({"python": [1, 2, 3], "cpu": torch.get_rng_state()}, training / "rng_state.pth")
    torch.save({"learning_rate": 1e-3, "num_train_epochs": 1}, training / "training_args.bin")
    (training / "trainer_state.json").write_text(json.dumps({"global_step": 1}) + "\n")

    sharded = fresh("sharded")
    model(3).save_pretrained(sharded, max_shard_size="4KB")
    tokenizer(sharded)
    (sharded / "README.md").write_text("# tiny\n\nA tiny BERT sequence classifier, sharded.\n")
    (sharded / "1_Pooling").mkdir()
    (sharded / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}) + "\n")

    both_kinds = fresh("single_and_index")
    model(5).save_pretrained(both_kinds, max_shard_size="4KB")
    model(4).save_pretrained(HERE / "_single")
    shutil.move(HERE / "_single" / "model.safetensors", both_kinds / "model.safetensors")
    shutil.rmtree(HERE / "_single")
    tokenizer(both_kinds)

    bin_only = fresh("bin_only")
    m = model(6)
    m.config.save_pretrained(bin_only)
    torch.save(m.state_dict(), bin_only / "pytorch_model.bin")
    tokenizer(bin_only)

    expected = {}
    for folder in (both, training, sharded, both_kinds, bin_only):
        loaded = BertForSequenceClassification.from_pretrained(folder).classifier.weight.detach()
        candidates = {}
        for path in sorted(folder.iterdir()):
            if path.name.endswith(".safetensors") and "-of-" not in path.name:
                candidates[path.name] = load_file(path)["classifier.weight"]
            elif path.name == "pytorch_model.bin":
                candidates[path.name] = torch.load(path, weights_only=True)["classifier.weight"]
            elif path.name.endswith(".safetensors.index.json"):
                index = json.loads(path.read_text())
                shard = index["weight_map"]["classifier.weight"]
                candidates[path.name] = load_file(folder / shard)["classifier.weight"]
        chosen = [name for name, weight in candidates.items() if torch.equal(weight, loaded)]
        assert len(chosen) == 1, (folder, chosen)
        expected[folder.name] = chosen[0]
    (HERE / "EXPECTED.json").write_text(json.dumps({"from_pretrained_loads": expected}, indent=2) + "\n")
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
