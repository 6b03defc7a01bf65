"""A model folder given as an input is read from the file ``from_pretrained`` would load.

The folders in ``tests/data/folders`` were written by transformers' ``save_pretrained`` (see
``make_folders.py`` there); ``EXPECTED.json`` records which weight file transformers itself loaded
from each, and :func:`resolve_folder` must pick the same one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptsurgeon.formats import resolve_folder

from ..support.fixtures import CliRunner

DATA = Path(__file__).parent.parent / "data" / "folders"
EXPECTED = json.loads((DATA / "EXPECTED.json").read_text())["from_pretrained_loads"]


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_the_file_from_pretrained_loads_is_the_one_chosen(folder: str) -> None:
    assert resolve_folder(DATA / folder) == DATA / folder / EXPECTED[folder]


def test_a_training_folder_resolves_to_its_model_not_its_optimizer() -> None:
    names = {p.name for p in (DATA / "training").iterdir()}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "model.safetensors"} <= names
    assert resolve_folder(DATA / "training") == DATA / "training" / "model.safetensors"


def test_safetensors_is_read_before_a_bin_copy_and_the_report_names_it(cli: CliRunner) -> None:
    result = cli("inspect", DATA / "both", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["files"] == [str(DATA / "both" / "model.safetensors")]


def test_without_hugging_face_names_the_generic_rule_still_applies(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes((DATA / "both" / "model.safetensors").read_bytes())
    assert resolve_folder(tmp_path) == tmp_path / "weights.safetensors"
    (tmp_path / "other.safetensors").write_bytes((DATA / "both" / "model.safetensors").read_bytes())
    from ckptsurgeon.errors import InputError

    with pytest.raises(InputError, match="is a directory; name the checkpoint file"):
        resolve_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((DATA / "both" / "model.safetensors").read_bytes())
    assert resolve_folder(tmp_path) == tmp_path / "model.safetensors"  # the Hugging Face name wins


def test_a_directory_named_like_a_weight_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").mkdir()
    (tmp_path / "pytorch_model.bin").write_bytes((DATA / "both" / "pytorch_model.bin").read_bytes())
    assert resolve_folder(tmp_path) == tmp_path / "pytorch_model.bin"
