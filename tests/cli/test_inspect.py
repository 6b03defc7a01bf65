from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptsurgeon.cli.app import main

from ..conftest import ROOT, manifest_code
from ..support.cli import one_line, run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("ckpt ")


def test_inspect_json_matches_manifest(corpus: Path, manifest: dict, capsys: pytest.CaptureFixture[str]) -> None:
    entry = next(f for f in manifest["files"] if f["path"] == "torch/smallcnn_bf16.safetensors")
    code, out, err = run(["inspect", str(corpus / entry["path"]), "--json", "--hash"], capsys)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"schema", "ok", "path", "format", "layout", "files", "metadata", "tensors", "totals"}
    assert doc["layout"] is None
    assert doc["format"] == "safetensors"
    got = {t["name"]: t for t in doc["tensors"]}
    for t in entry["tensors"]:
        assert got[t["name"]]["shape"] == t["shape"]
        assert got[t["name"]]["dtype"] == manifest_code(t["dtype"])
        assert got[t["name"]]["sha256"] == t["sha256"]
    assert doc["totals"]["tensors"] == 16
    assert doc["totals"]["parameters"] == sum(int(np.prod(t["shape"])) for t in entry["tensors"])


def test_inspect_without_hash_has_no_sha(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["inspect", str(corpus / "torch/smallcnn.safetensors"), "--json", "--filter", "conv*"], capsys)
    doc = json.loads(out)
    assert code == 0 and all("sha256" not in t for t in doc["tensors"])
    assert {t["name"] for t in doc["tensors"]} == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}


def test_inspect_table_collapses_repeated_blocks(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = corpus / "hf_sharded/tiny_gpt2/model.safetensors.index.json"
    code, out, _ = run(["inspect", str(index)], capsys)
    assert code == 0
    assert "transformer.h.{0,1}.attn.c_attn" in out and "×2" in out
    assert "28 tensors, 28,032 parameters" in out
    assert "\x1b[" not in out  # no colour codes without a terminal
    code, out, _ = run(["inspect", str(index), "--all"], capsys)
    assert "transformer.h.1.attn.c_attn" in out and "×2" not in out


def one_line_error(code: int, out: str, err: str, path: Path, expected_code: int = 3) -> str:
    assert code == expected_code, err
    assert out == ""
    line = one_line(err)  # exactly one line, no traceback
    assert line.startswith("ckpt: error: ") and str(path) in line
    return line


def safetensors_bytes(header: dict, data: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def malformed_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import h5py

    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, content: bytes, expect: str) -> None:
        p = tmp_path / name
        p.write_bytes(content)
        files[name] = (p, expect)

    good = safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    add("truncated.safetensors", good[:-3], "truncated")
    add("len_past_end.safetensors", safetensors_bytes({}, b"", length=4096), "runs past the end")
    add("overlap.safetensors", safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlaps")
    add("unknown_dtype.safetensors", safetensors_bytes(
        {"a": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "unknown dtype")
    add("pointer.safetensors", b"version https://git-lfs.github.com/spec/v1\noid sha256:"
        + b"0" * 64 + b"\nsize 123\n", "Git LFS pointer")
    add("pickle.bin", b"\x80\x02}q\x00.", "pickle")

    obj = tmp_path / "object.npz"
    np.savez(obj, a=np.array([{"x": 1}], dtype=object))
    files["object.npz"] = (obj, "object")

    sentinel = tmp_path / "sentinel.h5"
    with h5py.File(sentinel, "w") as f:
        f["secret"] = np.arange(4)
    link = tmp_path / "external_link.h5"
    with h5py.File(link, "w") as f:
        f["w"] = np.zeros(3, np.float32)
        f["evil"] = h5py.ExternalLink(str(sentinel), "/secret")
    files["external_link.h5"] = (link, "link")
    return files


@pytest.mark.parametrize(
    "name",
    ["truncated.safetensors", "len_past_end.safetensors", "overlap.safetensors", "unknown_dtype.safetensors",
     "pointer.safetensors", "pickle.bin", "object.npz", "external_link.h5"],
)
def test_malformed_input_is_one_line_and_exit_3(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, expect = malformed_files(tmp_path)[name]
    code, out, err = run(["inspect", str(path)], capsys)
    line = one_line_error(code, out, err, path)
    assert expect.lower() in line.lower()


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["inspect", str(tmp_path / "nope.safetensors")], capsys)
    assert "no such file" in one_line_error(code, out, err, tmp_path / "nope.safetensors")
    code, out, err = run(["inspect", str(tmp_path)], capsys)
    one_line_error(code, out, err, tmp_path)


def test_internal_error_exit_70_and_debug_traceback(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ckptsurgeon import api

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api, "inspect", boom)
    code, _out, err = run(["inspect", str(corpus / "torch/smallcnn.safetensors")], capsys)
    assert code == 70 and "internal error" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "inspect", str(corpus / "torch/smallcnn.safetensors")])


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["inspect"], capsys)
    assert code == 2
    code, _, _ = run(["no-such-command"], capsys)
    assert code == 2


def test_python_dash_m_entry_point(corpus: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "ckptsurgeon", "inspect", str(corpus / "torch/smallcnn.safetensors"), "--json"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["totals"]["tensors"] == 16


# --- start-up: a run imports what its command needs, nothing more -----------------------------------
_IMPORTS_OF_A_RUN = """
import contextlib, io, json, sys
from ckptsurgeon.cli.app import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["inspect", "examples/pretrained.safetensors"],
         ["numpy", "ml_dtypes", "h5py", "ckptsurgeon.execute", "ckptsurgeon.cli.transfer_cmd"]),
        (["inspect", "examples/pretrained.safetensors", "--json"], ["numpy", "h5py", "rich.table"]),
        (["--help"], ["numpy", "h5py"]),
        (["transfer", "examples/pretrained.safetensors", "examples/target.safetensors", "--dry-run"],
         ["numpy", "h5py", "ckptsurgeon.cli.inspect_cmd"]),
        # byte ranges only: the values are never touched, so numpy is never loaded
        (["transfer", "examples/pretrained.safetensors", "examples/target.safetensors", "-o", "{tmp}/out.safetensors"],
         ["numpy", "h5py", "ckptsurgeon.values"]),
        (["rename", "examples/pretrained.safetensors", "-o", "{tmp}/out.safetensors", "--rename", "blocks=>b"],
         ["numpy", "h5py", "ckptsurgeon.values"]),
    ],
)
def test_a_run_imports_only_what_its_command_needs(argv: list[str], absent: list[str], tmp_path: Path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF_A_RUN, *argv], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] in (0, None)
    assert "ckptsurgeon.formats.safetensors" in result["modules"] or argv == ["--help"]
    assert [m for m in absent if m in result["modules"]] == []


def _flat_safetensors(path: Path, n: int) -> Path:
    """``n`` one-value F32 tensors named ``dense_{i}.kernel``: no numeric component, so no layer collapses."""
    doc = {f"dense_{i}.kernel": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(n)}
    raw = json.dumps(doc).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4 * n))
    return path


def test_many_rows_are_drawn_like_rich_draws_them(tmp_path: Path) -> None:
    """Past RICH_MAX_ROWS the table is drawn without rich's layout; what it shows is what rich would show."""
    import io

    from ckptsurgeon.cli import render
    from ckptsurgeon.commands.inspect import run as inspect_run

    result = inspect_run(_flat_safetensors(tmp_path / "flat.safetensors", 300))
    grid = render.inspect_grid(result)
    assert len(grid.rows) == 300
    plain = io.StringIO()
    grid.write_plain(plain)
    drawn = io.StringIO()
    render.console(drawn, width=200).print(grid.to_rich())
    assert plain.getvalue() == drawn.getvalue()


def test_inspect_of_more_rows_than_rich_lays_out_lists_every_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ckptsurgeon.cli.render import RICH_MAX_ROWS

    n = RICH_MAX_ROWS + 500
    code, out, err = run(["inspect", str(_flat_safetensors(tmp_path / "flat.safetensors", n))], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert sum(1 for line in lines if line.startswith("│ dense_")) == n
    assert lines[1].startswith("┏") and lines[-2].startswith("└")
    assert f"{n:,} tensors" in lines[-1]
