"""Container checkpoints: which state dict is read, --dict / --src-dict / --tgt-dict, inspect --all-dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import load_file

from ckptsurgeon.errors import UsageError
from ckptsurgeon.formats import OpenOptions, open_checkpoint

from ...support.cli import one_line, run
from .conftest import EXPECTED, TORCH_DATA

CONTAINERS = [name for name, f in EXPECTED.items() if f["dict"] is not None]


def _want(name: str) -> dict[str, str]:
    entry = EXPECTED[name]
    return {t["key_in_subdict"]: t["sha256"] for t in entry["tensors"] if t["name"].startswith(entry["dict"] + ".")}


@pytest.mark.parametrize("name", CONTAINERS)
def test_the_one_state_dict_under_a_known_key_is_taken_and_named(name: str) -> None:
    sub = EXPECTED[name]["dict"]
    with open_checkpoint(TORCH_DATA / name) as reader:
        assert {t.name: reader.sha256(t.name) for t in reader.tensors} == _want(name)
        assert f"dict {sub!r}" in (reader.layout or "")
    with open_checkpoint(TORCH_DATA / name, OpenOptions(dict_path=sub)) as reader:
        assert {t.name: reader.sha256(t.name) for t in reader.tensors} == _want(name)


@pytest.mark.parametrize("name", CONTAINERS)
def test_all_dicts_lists_every_tensor_by_its_full_path(name: str) -> None:
    want = {t["name"]: t["sha256"] for t in EXPECTED[name]["tensors"]}
    with open_checkpoint(TORCH_DATA / name, OpenOptions(all_dicts=True)) as reader:
        assert {t.name: reader.sha256(t.name) for t in reader.tensors} == want


def test_an_ema_copy_is_never_chosen_silently() -> None:
    with open_checkpoint(TORCH_DATA / "convclf_ema.pt") as reader:
        assert "model_ema (EMA)" in (reader.layout or "") and "not chosen" in (reader.layout or "")
        model = {t.name: reader.sha256(t.name) for t in reader.tensors}
    with open_checkpoint(TORCH_DATA / "convclf_ema.pt", OpenOptions(dict_path="model_ema")) as reader:
        ema = {t.name: reader.sha256(t.name) for t in reader.tensors}
    assert set(ema) == set(model) and ema["stem.weight"] != model["stem.weight"]
    want = {t["key_in_subdict"]: t["sha256"] for t in EXPECTED["convclf_ema.pt"]["tensors"] if t["name"].startswith("model_ema.")}
    assert ema == want


def test_non_tensor_entries_become_metadata() -> None:
    with open_checkpoint(TORCH_DATA / "convclf_train_ckpt.pt") as reader:
        assert reader.metadata == {"epoch": "3"}
    with open_checkpoint(TORCH_DATA / "lightning_convclf.ckpt") as reader:
        assert reader.metadata["pytorch-lightning_version"] == "2.6.6" and reader.metadata["epoch"] == "2"
        assert json.loads(reader.metadata["loops"])  # a nested entry as compact JSON


def _container(gen: Any, tmp_path: Path, top: dict[str, Any]) -> Path:
    """A zip whose data.pkl is a dict of state dicts (or of dicts of them), written opcode by opcode."""
    pk = gen.Pk().raw(b"}").raw(b"(")

    def put(p: Any, value: Any) -> None:
        if value == "sd":
            p.state_dict(gen.torch_entries())
        else:
            p.raw(b"}(")
            for k, v in value.items():
                p.str(k)
                put(p, v)
            p.raw(b"u")

    for key, value in top.items():
        pk.str(key)
        put(pk, value)
    path = tmp_path / "container.pt"
    path.write_bytes(gen.torch_zip(pk.raw(b"u").done()))
    return path


def test_several_candidates_give_one_line_naming_them_and_the_option(gen: Any, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _container(gen, tmp_path, {"student": "sd", "teacher": "sd"})
    code, _, err = run(["inspect", path], capsys)
    line = one_line(err)
    assert code == 2 and "student" in line and "teacher" in line and "--dict" in line
    code, out, err = run(["inspect", path, "--dict", "teacher", "--json"], capsys)
    assert code == 0, err
    assert [t["name"] for t in json.loads(out)["tensors"]] == ["w", "wt", "row", "b"]


def test_an_ema_alone_or_a_nested_dict_needs_dict(gen: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="model_ema"):
        open_checkpoint(_container(gen, tmp_path, {"model_ema": "sd"}))
    path = _container(gen, tmp_path, {"checkpoint": {"model": "sd"}})
    with pytest.raises(UsageError, match=r"checkpoint\.model"):
        open_checkpoint(path)
    with open_checkpoint(path, OpenOptions(dict_path="checkpoint.model")) as reader:
        assert [t.name for t in reader.tensors] == ["w", "wt", "row", "b"]
    with pytest.raises(UsageError, match=r"no entry 'nothing' under 'checkpoint'.*model"):
        open_checkpoint(path, OpenOptions(dict_path="checkpoint.nothing"))


def test_cli_dict_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = TORCH_DATA / "lightning_convclf.ckpt"
    code, out, err = run(["inspect", ckpt, "--json", "--all-dicts"], capsys)
    assert code == 0, err
    names = {t["name"] for t in json.loads(out)["tensors"]}
    assert {"state_dict.model.stem.weight", "optimizer_states.0.state.0.exp_avg"} <= names
    target = TORCH_DATA / "convclf_target.safetensors"
    out_path = tmp_path / "out.safetensors"
    code, _, err = run(["transfer", ckpt, target, "-o", out_path, "--src-dict", "state_dict",
                        "--strip-prefix", "model.", "--strict"], capsys)
    assert code == 0, err
    want = _want("lightning_convclf.ckpt")
    from hashlib import sha256

    got = load_file(out_path)
    assert {f"model.{k}": sha256(v.tobytes()).hexdigest() for k, v in got.items()} == want
    for argv in (["verify", TORCH_DATA / "convclf_train_ckpt.pt", "--dict", "optimizer"],
                 ["diff", TORCH_DATA / "convclf_ema.pt", TORCH_DATA / "convclf_ema.pt", "--dict", "model_ema"],
                 ["convert", TORCH_DATA / "convclf_train_ckpt.pt", "--dict", "model", "-o", tmp_path / "m.safetensors"],
                 ["rename", TORCH_DATA / "convclf_ema.pt", "--dict", "model_ema", "--add-prefix", "ema.",
                  "-o", tmp_path / "e.safetensors"]):
        code, _, err = run(argv, capsys)
        assert code == 0, (argv, err)
    assert load_file(tmp_path / "m.safetensors").keys() == {t for t in _want("convclf_train_ckpt.pt")}
    assert all(k.startswith("ema.") for k in load_file(tmp_path / "e.safetensors"))
    code, _, err = run(["transfer", target, ckpt, "-o", tmp_path / "x.safetensors", "--tgt-dict", "nope"], capsys)
    assert code == 2 and "no state dict at 'nope'" in one_line(err)


def test_a_recipe_chooses_the_dicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'source = "{TORCH_DATA / "lightning_convclf.ckpt"}"\n'
                      f'target = "{TORCH_DATA / "convclf_target.safetensors"}"\n'
                      'src-dict = "state_dict"\nstrip-prefix = ["model."]\nstrict = true\n')
    code, _, err = run(["transfer", "--config", recipe, "-o", tmp_path / "out.safetensors"], capsys)
    assert code == 0, err
    assert len(load_file(tmp_path / "out.safetensors")) == 15
