"""MindSpore 2.10.0 checkpoints (``tests/data/mindspore``, written by MindSpore), read and written without it;
outputs loaded by the real MindSpore where ``CKPT_MS_PYTHON`` names an interpreter that has it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from ckptsurgeon.formats import OpenOptions, detect, open_checkpoint
from ckptsurgeon.formats.mindspore import writer as ms_writer
from ckptsurgeon.formats.mindspore.crypto import Secret
from ckptsurgeon.formats.mindspore.reader import Reader

from ...conftest import DATA
from ...support.fixtures import CheckpointMaker, CliRunner

MS_DATA = DATA / "mindspore"
EXPECTED: dict[str, Any] = json.loads((MS_DATA / "EXPECTED.json").read_text())
FILES = EXPECTED["files"]
CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
         "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
CHECK = Path(__file__).with_name("ms_check.py")


def key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.key"
    path.write_bytes(bytes.fromhex(FILES[name]["key_hex"]))
    return path


def options(name: str) -> OpenOptions | None:
    key = FILES[name]["key_hex"]
    return OpenOptions(dec_key=Secret(bytes.fromhex(key))) if key else None


def listing(path: Path, opts: OpenOptions | None = None) -> list[tuple[str, list[int], str, str]]:
    with open_checkpoint(path, opts) as reader:
        return [(t.name, list(t.shape), t.dtype, reader.sha256(t.name)) for t in reader.tensors]


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_file_reads_exactly(name: str) -> None:
    """Names in MindSpore's order, shapes, dtypes and the sha256 of every tensor; strings as metadata."""
    want = FILES[name]
    assert detect(MS_DATA / name) == "mindspore"
    got = listing(MS_DATA / name, options(name))
    assert got == [(t["name"], t["shape"], CODES[t["dtype"]], t["sha256"]) for t in want["tensors"]]
    with open_checkpoint(MS_DATA / name, options(name)) as reader:
        assert {k: reader.metadata[k] for k in want["strings"]} == want["strings"]
        assert reader.layout == (f"encrypted {want['mode']}" if want["mode"] else None)
        for t in reader.tensors:  # read() and the byte stream agree
            assert hashlib.sha256(np.ascontiguousarray(reader.read(t.name)).tobytes()).hexdigest() == reader.sha256(t.name)


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors over 400 KiB are cut (MindSpore cuts those over 512 MiB), so that slices can be tested small."""
    monkeypatch.setattr(ms_writer.Writer, "slice_kib", 400)


@pytest.mark.usefixtures("small_slices")
def test_a_tensor_in_slices_is_joined_and_its_slices_are_byte_ranges(make_checkpoint: CheckpointMaker) -> None:
    """A large parameter is cut into blocks of rows, consecutive values sharing the tag, as save_checkpoint
    cuts it (np.array_split into ceil(KiB / SLICE_SIZE) parts)."""
    big = np.arange(300_000, dtype="<f4").reshape(600, 500)  # 1,172 KiB: three blocks of 200 rows
    wide = np.arange(320_000, dtype="<f4").reshape(2, 160_000)  # 1,250 KiB: four blocks of two rows, two empty
    path = make_checkpoint("big.ckpt", "mindspore", {"w": big, "wide": wide, "b": np.ones(3, "<f4")})
    with Reader(path) as reader:
        assert np.array_equal(reader.read("w"), big) and np.array_equal(reader.read("wide"), wide)
        assert reader.byte_range("w") is None and reader.byte_range("b") is not None
        pieces = reader.byte_ranges("w")
        assert pieces is not None and [n for _, _, n in pieces] == [400_000] * 3
        assert [n for _, _, n in reader.byte_ranges("wide") or []] == [640_000, 640_000, 0, 0]
        data = path.read_bytes()
        assert b"".join(data[o : o + n] for _, o, n in pieces) == big.tobytes()


@pytest.mark.parametrize("name", ["sharednet_aes_gcm.ckpt", "sharednet_aes_cbc.ckpt", "sharednet_sm4_cbc.ckpt"])
def test_encrypted_files_need_their_key_and_agree_with_dec_mode(name: str, cli: CliRunner, tmp_path: Path) -> None:
    path, mode = MS_DATA / name, FILES[name]["mode"]
    result = cli("inspect", path)
    assert result.code == 3 and f"encrypted with {mode}; give its key with --dec-key-file" in result.line
    other = "AES-CBC" if mode != "AES-CBC" else "AES-GCM"
    result = cli("inspect", path, "--dec-key-file", key_file(tmp_path, name), "--dec-mode", other)
    assert result.code == 3 and f"not the {other} that --dec-mode asks for" in result.line
    assert cli("inspect", path, "--dec-key-file", key_file(tmp_path, name), "--dec-mode", mode.lower()).code == 0
    env = dict(os.environ, CKPT_DEC_KEY=FILES[name]["key_hex"])
    done = subprocess.run([sys.executable, "-m", "ckptsurgeon", "inspect", str(path), "--json"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("src", "tgt"), [(t["source"], t["target"]) for t in EXPECTED["transfers"]])
def test_the_corpus_transfers_give_the_results_mindspore_gives(src: str, tgt: str, cli: CliRunner, tmp_path: Path) -> None:
    """ms_new_head (fc kept for its shape) and ms_f32_into_f16 (cast as numpy astype rounds), as MindSpore's
    load_param_into_net and Tensor.astype give them; the output is a .ckpt like the target."""
    out = tmp_path / "out.ckpt"
    result = cli("transfer", MS_DATA / src, MS_DATA / tgt, "-o", out)
    assert result.code == 0, result.err
    outcome = next(t["outcome"] for t in EXPECTED["transfers"] if (t["source"], t["target"]) == (src, tgt))
    got = {n: (shape, sha) for n, shape, _, sha in listing(out)}
    assert got == {o["name"]: (o["shape"], o["sha256"]) for o in outcome}


@pytest.mark.parametrize("mode", ["AES-GCM", "AES-CBC", "SM4-CBC"])
def test_re_encrypting_in_another_mode_keeps_every_tensor(mode: str, cli: CliRunner, tmp_path: Path) -> None:
    source = "sharednet_aes_gcm.ckpt" if mode != "AES-GCM" else "sharednet_sm4_cbc.ckpt"
    new_key = tmp_path / "new.key"
    new_key.write_bytes(bytes(range(16)) if mode == "SM4-CBC" else bytes(range(32)))
    out = tmp_path / "out.ckpt"
    result = cli("convert", MS_DATA / source, "-o", out, "--format", "mindspore", "--dec-key-file",
                 key_file(tmp_path, source), "--enc-key-file", new_key, "--enc-mode", mode)
    assert result.code == 0, result.err
    with open_checkpoint(out, OpenOptions(dec_key=Secret(new_key.read_bytes()))) as reader:
        assert reader.encryption == mode
    assert listing(out, OpenOptions(dec_key=Secret(new_key.read_bytes()))) == listing(MS_DATA / source, options(source))
    assert listing(out, OpenOptions(dec_key=Secret(new_key.read_bytes()))) == listing(MS_DATA / "sharednet_f32.ckpt")


def test_a_transfer_into_an_encrypted_target_is_encrypted_like_it(cli: CliRunner, tmp_path: Path) -> None:
    target = "sharednet_aes_cbc.ckpt"
    out = tmp_path / "out.ckpt"
    result = cli("transfer", MS_DATA / "sharednet_f32.ckpt", MS_DATA / target, "-o", out, "--dec-key-file",
                 key_file(tmp_path, target))
    assert result.code == 0, result.err
    assert out.read_bytes()[:4] == (0x7F3A5ED9).to_bytes(4, "little")  # AES-CBC blocks
    assert listing(out, options(target)) == listing(MS_DATA / "sharednet_f32.ckpt")


def test_only_a_mindspore_output_is_encrypted(cli: CliRunner, tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(bytes(16))
    result = cli("convert", MS_DATA / "sharednet_f32.ckpt", "-o", tmp_path / "x.safetensors", "--enc-key-file", key)
    assert result.code == 2 and "only MindSpore .ckpt outputs are" in result.line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


# --- the real MindSpore -----------------------------------------------------------------------------
def ms_python() -> str:
    other = os.environ.get("CKPT_MS_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("MindSpore is not installed here (set CKPT_MS_PYTHON to an interpreter with mindspore 2.10.0)")


def ms_check(*args: str | Path) -> dict[str, Any]:
    done = subprocess.run([ms_python(), str(CHECK), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    out: dict[str, np.ndarray] = {
        "w.f32": rng.standard_normal((3, 4)).astype("<f4"), "w.f16": rng.standard_normal(5).astype("<f2"),
        "w.bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16), "w.f64": rng.standard_normal(2),
        "n.i64": np.array([-(2**62), 7], "<i8"), "n.i32": np.array([1, -2], "<i4"), "n.i16": np.array([3], "<i2"),
        "n.i8": np.array([-4], "i1"), "n.u8": np.array([0, 255], "u1"), "n.bool": np.array([True, False]),
        "scalar": np.array(2.5, "<f4"), "big": rng.standard_normal((300, 400)).astype("<f4"),  # in two slices
    }
    return out


@pytest.mark.usefixtures("small_slices")
@pytest.mark.parametrize("mode", [None, "AES-GCM", "AES-CBC", "SM4-CBC"])
def test_mindspore_loads_what_ckptsurgeon_writes(mode: str | None, make_checkpoint: CheckpointMaker,
                                                 cli: CliRunner, tmp_path: Path) -> None:
    ms_python()
    tensors = every_dtype()
    plain = make_checkpoint("plain.ckpt", "mindspore", tensors, {"note": "ünïcode ✓"})
    out, args = plain, []
    if mode is not None:
        key = tmp_path / "k.key"
        key.write_bytes(bytes(range(16)))
        out = tmp_path / "enc.ckpt"
        assert cli("convert", plain, "-o", out, "--format", "mindspore", "--enc-key-file", key, "--enc-mode", mode).code == 0
        args = ["--dec-key-file", str(key), "--dec-mode", mode]
    result = ms_check("load", out, *args)
    assert result["strings"] == {"note": "ünïcode ✓"}
    got = {t["name"]: (t["dtype"], t["shape"], t["sha256"]) for t in result["tensors"]}
    assert got == {name: (dtype, shape, sha) for name, shape, dtype, sha in listing(plain)}


def test_a_transferred_checkpoint_loads_into_the_network_strictly(cli: CliRunner, tmp_path: Path) -> None:
    ms_python()
    out = tmp_path / "out.ckpt"
    assert cli("transfer", MS_DATA / "sharednet_train_momentum.ckpt", MS_DATA / "transfer_target_5cls.ckpt",
               "-o", out).code == 0
    assert ms_check("net", out, "--num-classes", "5")["not_loaded"] == []


@pytest.mark.usefixtures("small_slices")
def test_a_tensor_in_slices_is_copied_to_safetensors_as_file_ranges(make_checkpoint: CheckpointMaker, cli: CliRunner,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptsurgeon.formats.safetensors import writer as st_writer

    big = np.arange(300_000, dtype="<f4").reshape(600, 500)
    path = make_checkpoint("big.ckpt", "mindspore", {"w": big})
    copied: list[int] = []
    real = st_writer.Writer.write_ranges

    def counting(self: Any, name: str, pieces: Any) -> bool:
        copied.append(len(pieces))
        return real(self, name, pieces)

    monkeypatch.setattr(st_writer.Writer, "write_ranges", counting)
    out = tmp_path / "out.safetensors"
    assert cli("convert", path, "-o", out).code == 0
    assert copied == [3]  # three slices, three ranges, no bytes through Python
    with open_checkpoint(out) as reader:
        assert np.array_equal(reader.read("w"), big)


def test_an_encrypted_file_with_save_checkpoints_crc_trailer_reads(tmp_path: Path) -> None:
    """save_checkpoint(crc_check=True, enc_key=...) appends b"crc_num" and ten zero bytes after the blocks."""
    source = MS_DATA / "sharednet_aes_gcm.ckpt"
    path = tmp_path / "with_trailer.ckpt"
    path.write_bytes(source.read_bytes() + b"crc_num" + bytes(10))
    assert listing(path, options("sharednet_aes_gcm.ckpt")) == listing(source, options("sharednet_aes_gcm.ckpt"))


def test_a_plain_files_crc_trailer_is_checked(tmp_path: Path, cli: CliRunner) -> None:
    import zlib

    body = (MS_DATA / "sharednet_f32.ckpt").read_bytes()
    good, bad = tmp_path / "good.ckpt", tmp_path / "bad.ckpt"
    good.write_bytes(body + b"crc_num" + zlib.crc32(body).to_bytes(10, "big"))
    bad.write_bytes(body + b"crc_num" + (zlib.crc32(body) ^ 1).to_bytes(10, "big"))
    assert listing(good) == listing(MS_DATA / "sharednet_f32.ckpt")
    result = cli("inspect", bad)
    assert result.code == 3 and "the crc_num trailer says CRC-32" in result.line


def _multi_block(tmp_path: Path, mode: str = "AES-GCM") -> tuple[Path, Path, list[Any]]:
    """sharednet_f32.ckpt encrypted in blocks of 4 KiB (MindSpore's are 64 MiB): three blocks and a bit."""
    import os as _os

    from ckptsurgeon.formats.mindspore.crypto import Encrypter, Plaintext

    key = tmp_path / "k.key"
    key.write_bytes(bytes(range(16)))
    path = tmp_path / "blocks.ckpt"
    fd = _os.open(path, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL)
    enc = Encrypter(fd, Secret(key.read_bytes()), mode, block_bytes=4096)
    enc.write((MS_DATA / "sharednet_f32.ckpt").read_bytes())
    enc.finish()
    _os.close(fd)
    with open(path, "rb") as f:
        blocks = Plaintext(path, f, path.stat().st_size, Secret(key.read_bytes()), mode).blocks
    return path, key, blocks


def test_a_tampered_block_is_refused_by_inspect_and_convert_whichever_block_it_is(cli: CliRunner,
                                                                                  tmp_path: Path) -> None:
    """Headers are read before their blocks' tags are checked (the check runs beside): a tampered AES-GCM
    block still fails inspect (on close, before anything is shown) and convert (before anything is
    committed). (CBC carries no tag: a changed byte inside a CBC block is found only where it breaks the
    padding or the protobuf.)"""
    path, key, blocks = _multi_block(tmp_path, "AES-GCM")
    assert len(blocks) >= 3
    assert listing(path, OpenOptions(dec_key=Secret(key.read_bytes()))) == listing(MS_DATA / "sharednet_f32.ckpt")
    for block in blocks:
        damaged = tmp_path / f"damaged{block.number}.ckpt"
        data = bytearray(path.read_bytes())
        data[block.data + block.size // 2] ^= 0x01
        damaged.write_bytes(bytes(data))
        for args in (["inspect", damaged], ["convert", damaged, "-o", tmp_path / "out.safetensors"]):
            result = cli(*args, "--dec-key-file", key)
            assert result.code == 3, (block.number, args[0], result.out)
            assert "tag does not match" in result.line, result.line
            assert not (tmp_path / "out.safetensors").exists()
