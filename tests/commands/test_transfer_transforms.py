"""Transforms through the command line: resize, layouts, splits as byte ranges, the square-kernel
trap, saved plans run backwards, and what a user can get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ckptsurgeon import api, execute
from ckptsurgeon.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_USAGE

from ..support.cli import one_line, run

SCHEMA = json.loads((Path(api.__file__).parent / "schemas" / "transfer-report.schema.json").read_text())
RNG = np.random.default_rng(11)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.fixture
def keras_like(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Keras-named source weights and a PyTorch-named target with fused and grown tensors."""
    src = {"fc/kernel": _f32(6, 4), "fc/bias": _f32(4), "conv/kernel": _f32(3, 3, 2, 5), "bn/gamma": _f32(5),
           "bn/moving_mean": _f32(5), "emb/embeddings": _f32(10, 4), "attn.qkv.weight": _f32(12, 4)}
    tgt = {"fc.weight": np.zeros((4, 6), np.float32), "fc.bias": np.zeros(4, np.float32),
           "conv.weight": np.zeros((5, 2, 3, 3), np.float32), "bn.weight": np.zeros(5, np.float32),
           "bn.running_mean": np.zeros(5, np.float32), "bn.num_batches_tracked": np.zeros((), np.int64),
           "emb.weight": np.ones((13, 4), np.float32), "attn.q.weight": np.zeros((4, 4), np.float32),
           "attn.k.weight": np.zeros((4, 4), np.float32), "attn.v.weight": np.zeros((4, 4), np.float32)}
    save_file(src, tmp_path / "src.safetensors")
    save_file(tgt, tmp_path / "tgt.safetensors")
    return tmp_path / "src.safetensors", tmp_path / "tgt.safetensors", src


SPLIT = r"(.*)\.qkv\.(.*)=>\1.{q,k,v}.\2"


def test_a_preset_a_resize_and_a_split_in_one_transfer(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, values = keras_like
    out = tmp_path / "out.safetensors"
    code, stdout, err = run(["transfer", src, tgt, "-o", out, "--preset", "keras->torch", "--resize", "emb.*=mean",
                             "--split", SPLIT, "--strict", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    import jsonschema

    jsonschema.validate(doc, SCHEMA)
    o = load_file(out)
    assert np.array_equal(o["fc.weight"], values["fc/kernel"].T)
    assert np.array_equal(o["conv.weight"], values["conv/kernel"].transpose(3, 2, 0, 1))
    assert np.array_equal(o["bn.weight"], values["bn/gamma"]) and np.array_equal(o["bn.running_mean"], values["bn/moving_mean"])
    assert np.array_equal(o["emb.weight"][:10], values["emb/embeddings"])
    assert np.allclose(o["emb.weight"][10:], values["emb/embeddings"].astype(np.float64).mean(axis=0))
    for i, part in enumerate("qkv"):
        assert np.array_equal(o[f"attn.{part}.weight"], values["attn.qkv.weight"][4 * i : 4 * i + 4])
    rows = {t["name"]: t for t in doc["tensors"]}
    assert rows["emb.weight"]["partial"] == "rows 10 of 13" and rows["emb.weight"]["kind"] == "resized"
    assert rows["conv.weight"]["transform"][0]["label"] == "keras->torch"
    assert rows["attn.k.weight"]["transform"][0] == {"op": "split", "axis": 0, "start": 4, "stop": 8, "index": 1, "parts": 3}
    assert rows["bn.num_batches_tracked"]["action"] == "keep"  # the preset leaves it alone, on purpose
    assert doc["summary"]["replaced_parameters"] == doc["summary"]["target_parameters"] - 1 - 3 * 4


def test_a_dry_run_shows_the_resize_and_writes_nothing(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, _ = keras_like
    code, stdout, _ = run(["transfer", src, tgt, "--dry-run", "--preset", "keras->torch", "--resize", "emb.*=keep",
                           "--split", SPLIT], capsys)
    assert code == 0 and "partial: rows 10 of 13 (new: keep)" in stdout and "dry run" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors", "tgt.safetensors"]
    # without --resize the grown tensor is kept, with the reason and a shape
    code, stdout, _ = run(["transfer", src, tgt, "--dry-run", "--json", "--preset", "keras->torch", "--split", SPLIT], capsys)
    row = next(t for t in json.loads(stdout)["tensors"] if t["name"] == "emb.weight")
    assert row["action"] == "keep" and row["reason"].startswith("shape mismatch: source [10, 4] vs target [13, 4]")


def test_a_split_along_the_first_axis_runs_as_byte_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    n = 1024  # 12 MiB: more than one block of the value path
    fused = {"l0.in_proj_weight": _f32(3 * n, n), "l0.in_proj_bias": _f32(3 * n)}
    save_file(fused, tmp_path / "mha.safetensors")

    def no_values(*args: object, **kwargs: object) -> None:
        raise AssertionError("the values of a split along axis 0 were read")

    monkeypatch.setattr(execute, "transformed_blocks", no_values)
    split = tmp_path / "split.safetensors"
    code, _, err = run(["rename", tmp_path / "mha.safetensors", "-o", split,
                        "--split", r"(.*)\.in_proj_(weight|bias)=>\1.{q,k,v}_proj.\2"], capsys)
    assert code == 0, err
    got = load_file(split)
    for i, part in enumerate("qkv"):
        assert np.array_equal(got[f"l0.{part}_proj.weight"], fused["l0.in_proj_weight"][n * i : n * (i + 1)])
    back = tmp_path / "back.safetensors"
    code, _, err = run(["rename", split, "-o", back, "--concat", r"(.*)\.{q,k,v}_proj\.(.*)=>\1.in_proj_\2"], capsys)
    assert code == 0, err
    assert back.read_bytes() == (tmp_path / "mha.safetensors").read_bytes()


def test_a_split_along_another_axis_and_a_transpose_into_a_writer_that_takes_whole_arrays(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = {"a.kv": _f32(6, 8), "b": _f32(3, 5)}
    save_file(x, tmp_path / "x.safetensors")
    out = tmp_path / "y.npz"
    code, _, err = run(["rename", tmp_path / "x.safetensors", "-o", out, "--split", r"a\.kv=>a.{k,v}@1",
                        "--transform", "b=transpose"], capsys)
    assert code == 0, err
    from ckptsurgeon.formats import open_checkpoint

    with open_checkpoint(out) as r:
        assert np.array_equal(r.read("a.k"), x["a.kv"][:, :4]) and np.array_equal(r.read("a.v"), x["a.kv"][:, 4:])
        assert np.array_equal(r.read("b"), x["b"].T)


def test_the_square_kernel_trap_is_warned_about_and_fails_with_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = _f32(16, 16)
    save_file({"fc/kernel": kernel}, tmp_path / "k.safetensors")
    save_file({"fc.weight": np.zeros((16, 16), np.float32)}, tmp_path / "t.safetensors")
    rules = ["--rename", "/kernel$=>/weight", "--rename", "/=>."]
    out = tmp_path / "o.safetensors"
    code, stdout, _ = run(["transfer", tmp_path / "k.safetensors", tmp_path / "t.safetensors", "-o", out, *rules], capsys)
    assert code == 0 and "--preset keras->torch" in stdout and "1 layout warning" in stdout
    out.unlink()
    code, _, err = run(["transfer", tmp_path / "k.safetensors", tmp_path / "t.safetensors", "-o", out, *rules, "--strict"], capsys)
    assert code == EXIT_CHECK_FAILED and "keras->torch" in one_line(err) and not out.exists()
    code, _, err = run(["transfer", tmp_path / "k.safetensors", tmp_path / "t.safetensors", "-o", out, "--preset", "keras->torch",
                        "--strict"], capsys)
    assert code == 0, err
    assert np.array_equal(load_file(out)["fc.weight"], kernel.T)


def test_a_permuted_shape_gets_a_hint_never_a_transform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_file({"w": _f32(3, 5)}, tmp_path / "a.safetensors")
    save_file({"w": np.zeros((5, 3), np.float32)}, tmp_path / "b.safetensors")
    code, stdout, _ = run(["transfer", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--dry-run", "--json",
                           "--allow-empty"], capsys)
    row = json.loads(stdout)["tensors"][0]
    assert code == 0 and row["action"] == "keep" and "--transform w=transpose" in row["reason"]


def test_a_plan_run_backwards_gives_the_source_back_byte_for_byte(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, values = keras_like
    out, plan, back = tmp_path / "out.safetensors", tmp_path / "plan.json", tmp_path / "back.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, "--preset", "keras->torch", "--split", SPLIT,
                        "--resize", "emb.*=zero", "--save-plan", plan], capsys)
    assert code == 0, err
    # the resized embedding cannot come back exactly... (it grew: it can) but a source tensor not carried cannot
    code, _, err = run(["transfer", out, src, "--plan", plan, "--invert", "-o", back], capsys)
    assert code == 0, err
    restored = load_file(back)
    assert set(restored) == set(values)
    for name, value in values.items():
        assert restored[name].tobytes() == value.tobytes(), name


def test_a_step_that_cannot_be_undone_is_refused_by_name(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, values = keras_like
    out, plan, back = tmp_path / "out.safetensors", tmp_path / "plan.json", tmp_path / "back.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, "--preset", "keras->torch", "--split", SPLIT,
                        "--exclude", "bn/*", "--save-plan", plan], capsys)  # bn is not carried, emb shape-mismatched
    assert code == 0, err
    code, _, err = run(["transfer", out, src, "--plan", plan, "--invert", "-o", back], capsys)
    line = one_line(err)
    assert code == EXIT_CHECK_FAILED and "bn/gamma (not carried to the output)" in line and "emb/embeddings" in line
    assert "--allow-lossy" in line and not back.exists()
    code, _, err = run(["transfer", out, src, "--plan", plan, "--invert", "--allow-lossy", "-o", back], capsys)
    assert code == 0, err
    restored = load_file(back)
    assert restored["fc/kernel"].tobytes() == values["fc/kernel"].tobytes()
    assert restored["bn/gamma"].tobytes() == values["bn/gamma"].tobytes()  # kept: the source's own
    # the plan's source is checked: another file as TARGET is refused
    code, _, err = run(["transfer", out, tgt, "--plan", plan, "--invert", "-o", tmp_path / "x.safetensors"], capsys)
    assert code == EXIT_CHECK_FAILED and "not the source the saved plan" in one_line(err)


@pytest.mark.parametrize(("args", "says"), [
    (["--transform", "fc*=flip"], "unknown layout flip"),
    (["--transform", "fc*"], "write it as 'GLOB=OP'"),
    (["--resize", "fc*=grow"], "unknown mode grow"),
    (["--split", "fc=>fc2"], "one brace list"),
    (["--concat", "(.*){a,b}=>x@0:1,2"], "sizes are given to --split only"),
    (["--preset", "jax->torch"], "no preset named 'jax->torch'"),
    (["--invert"], "need --plan"),
    (["--preset", "keras->torch", "--split", SPLIT, "--transform", "fc/kernel=hwio->oihw", "--strict"], None),
])
def test_what_a_user_gets_wrong_is_one_line(args: list[str], says: str | None,
                                           keras_like: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, _ = keras_like
    out = tmp_path / "o.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, *args], capsys)
    line = one_line(err)
    if says is None:  # a layout that does not fit the tensor: a kept tensor, named, and --strict fails
        assert code == EXIT_CHECK_FAILED and "2 target tensor(s) not replaced: emb.weight, fc.weight" in line
    else:
        assert code == EXIT_USAGE and says in line, line
    assert not out.exists()


def test_a_saved_plan_whose_transform_does_not_fit_is_refused(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, _ = keras_like
    plan = tmp_path / "plan.json"
    code, _, err = run(["transfer", src, tgt, "--dry-run", "--preset", "keras->torch", "--split", SPLIT,
                        "--save-plan", plan], capsys)
    assert code == 0, err
    doc = json.loads(plan.read_text())
    step = next(s for s in doc["steps"] if s["name"] == "attn.v.weight")
    step["transform"][0]["stop"] = 99
    plan.write_text(json.dumps(doc))
    code, _, err = run(["transfer", src, tgt, "--plan", plan, "-o", tmp_path / "o.safetensors"], capsys)
    assert code == EXIT_BAD_INPUT and "does not fit" in one_line(err)


def test_count_changes_and_verify_follow_the_transforms(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, _ = keras_like
    out = tmp_path / "o.safetensors"
    code, stdout, err = run(["transfer", src, tgt, "-o", out, "--preset", "keras->torch", "--split", SPLIT,
                             "--resize", "emb.*=keep", "--count-changes", "--verify", "--json"], capsys)
    assert code == 0, err
    rows = {t["name"]: t for t in json.loads(stdout)["tensors"]}
    assert rows["fc.weight"]["changed"] == 24 and rows["attn.q.weight"]["changed"] == 16
    assert rows["emb.weight"]["changed"] == 40  # the 10 source rows differ from the target's ones; the 3 new rows kept


def test_a_recipe_file_takes_the_transform_options(keras_like: tuple[Path, Path, dict[str, np.ndarray]],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, tgt, values = keras_like
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("preset = ['keras->torch']\n" f"split = ['{SPLIT}']\n"  # a TOML literal string: backslashes as they are
                      "resize = ['emb.*=zero']\nstrict = true\n")
    out = tmp_path / "o.safetensors"
    code, _, err = run(["transfer", src, tgt, "-o", out, "--config", recipe], capsys)
    assert code == 0, err
    o = load_file(out)
    assert np.array_equal(o["fc.weight"], values["fc/kernel"].T) and not o["emb.weight"][10:].any()
