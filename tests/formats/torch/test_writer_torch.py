"""The PyTorch writer's output loaded by the real torch (``torch_load_check.py`` in a subprocess).

Skipped unless torch can be imported here or ``CKPT_TORCH_PYTHON`` names an interpreter that has it
(``pip install torch==2.13.0``: the local CPU build).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon.formats.torch.writer import Writer
from ckptsurgeon.tensors import DTYPES, TensorSpec, code_of

from ...support.fixtures import CliRunner
from .test_writer import Zip64Everywhere, every_dtype, masked, write_pt

CHECK = Path(__file__).with_name("torch_load_check.py")


def torch_python() -> str:
    """An interpreter with torch: this one, or the one CKPT_TORCH_PYTHON names; else the test is skipped."""
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    other = os.environ.get("CKPT_TORCH_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("torch is not installed here (set CKPT_TORCH_PYTHON to an interpreter that has torch)")


def run_check(*args: str | Path) -> dict[str, object]:
    python = torch_python()
    done = subprocess.run([python, str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def expected(tensors: Mapping[str, np.ndarray], path: Path) -> Path:
    doc = [{"name": n, "dtype": code_of(a.dtype), "shape": list(a.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()} for n, a in tensors.items()]
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("how", ["write", "chunks", "range"])
def test_torch_loads_every_dtype_as_written(tmp_path: Path, how: str) -> None:
    tensors = every_dtype()
    path = write_pt(tmp_path / "model.pt", tensors, {"format": "pt"}, how=how)
    assert run_check("load", path, expected(tensors, tmp_path / "expected.json")) == {"ok": True, "tensors": 16}


def test_load_state_dict_strict_into_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    f32 = {"emb.weight": (10, 4), "proj.weight": (3, 4), "proj.bias": (3,), "norm.weight": (3,), "norm.bias": (3,),
           "norm.running_mean": (3,)}
    tensors = {n: rng.standard_normal(s).astype("<f4") for n, s in f32.items()}
    tensors["norm.running_var"] = rng.uniform(0.5, 2, 3).astype("<f4")
    tensors["norm.num_batches_tracked"] = np.array(12345, dtype="<i8")
    path = write_pt(tmp_path / "model.pt", tensors)
    state = run_check("module", path)["state"]
    assert state == {n: hashlib.sha256(a.tobytes()).hexdigest() for n, a in tensors.items()}


def test_torch_save_of_what_torch_loads_is_the_same_file_but_its_id(tmp_path: Path) -> None:
    """Many tensors (dict items in several SETITEMS batches, memo indices past 255) and every dtype."""
    tensors = {f"blocks.{i}.w": np.full((i % 3 + 1, 2), i, dtype="<f4") for i in range(2100)} | every_dtype()
    (tmp_path / "ours").mkdir()
    ours = write_pt(tmp_path / "ours" / "model.pt", tensors)
    resaved = tmp_path / "model.pt"
    run_check("resave", ours, resaved)
    assert masked(ours) == masked(resaved)


def test_torch_reads_the_zip64_fields(tmp_path: Path) -> None:
    tensors = every_dtype()
    path = write_pt(tmp_path / "m.pt", tensors, cls=Zip64Everywhere)
    assert run_check("load", path, expected(tensors, tmp_path / "expected.json"))["ok"] is True


def test_more_members_than_the_classic_end_record_counts(tmp_path: Path) -> None:
    """65,535 members and more: the end record holds the marker, the ZIP64 end record the count."""
    torch_python()  # skip before writing, not after
    n = 65_600
    path = tmp_path / "many.pt"
    writer = Writer(path)
    writer.begin([TensorSpec(f"p.{i}", (1,), "I32") for i in range(n)])
    for i in range(n):
        writer.write_chunks(f"p.{i}", [struct.pack("<i", i)])
    writer.finish()
    assert path.read_bytes()[-22:][8:12] == b"\xff\xff\xff\xff"  # members on this disk, in all
    assert run_check("count", path) == {"ok": True, "count": n, "last": [f"p.{n - 1}", [n - 1]]}


def test_every_dtype_code_is_covered() -> None:
    assert {code_of(a.dtype) for a in every_dtype().values()} == {c for c, d in DTYPES.items() if not d.is_block}


LIGHTNING_CHECK = Path(__file__).with_name("lightning_check.py")
TORCH_DATA = Path(__file__).parents[2] / "data" / "torch"


@pytest.mark.parametrize(("kind", "target"), [("train", "convclf_train_ckpt.pt"), ("lightning", "lightning_convclf.ckpt")])
def test_an_updated_training_checkpoint_still_loads_and_resumes(tmp_path: Path, cli: CliRunner, kind: str,
                                                                target: str) -> None:
    """torch.load and load_state_dict(strict=True) + the optimizer's load_state_dict; for Lightning,
    load_from_checkpoint and Trainer.fit resumed from the output (skipped without pytorch_lightning)."""
    python = torch_python()
    source, tgt = TORCH_DATA / "convclf.pt", TORCH_DATA / target
    out = tmp_path / f"out{tgt.suffix}"
    assert cli("transfer", source, tgt, "-o", out).code == 0
    run = subprocess.run([python, str(LIGHTNING_CHECK), kind, str(out), str(source), str(tgt)], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["ok"]
    if kind == "lightning":
        assert result["global_step"] > result["resumed_at_step"] == 4
