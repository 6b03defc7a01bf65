"""The PyTorch zip writer, checked without torch: the archive's structure, torch.save's bytes, streaming,
reproducibility and atomic output. (``test_writer_torch.py`` loads the output with the real torch.)"""

from __future__ import annotations

import base64
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ckptsurgeon.atomic import atomic_path, temp_path_for
from ckptsurgeon.errors import InputError, OutputError
from ckptsurgeon.formats._zip import ZipArchive
from ckptsurgeon.formats.base import WriterStateError
from ckptsurgeon.formats.torch._pickle_out import Emitter, contiguous_strides
from ckptsurgeon.formats.torch.writer import METADATA_MEMBER, Writer, archive_name
from ckptsurgeon.tensors import DTYPES, TensorSpec

from ...support.factory import specs_of

# torch 2.13.0 ``torch.save`` of OrderedDict(w=arange(6, float32).reshape(2, 3),
# s=tensor(0.5).to(float8_e4m3fn), n=tensor([1, -2], int64)) to a file named tiny.pt; zlib, base64.
TORCH_SAVED_TINY = (
    "eNqlle9r00AYxy/J+mPpNre52c3phu86nG36uxXmZpAgZGBXmYy9CVmbtcEs2aXXjQnCQDbwnYIvRfYv+Er/BsEX+lIFXyior0Tw"
    "hW/8cZdkXZLZlm1Hr0eT+36fz909z7UkMj0AhMPgSOsHowCp+naiKiM5vnFXE/ghsOJvO3SlYmiaUkGqoTfYW2ZVMZXqDbWCWAim"
    "y5CKLVPYbAvSFWSYlXpcaiJVa7CSqaw2Va0qIUVvGKa0mWIhE4sth/DkBp4p1xTYY0tYQTNkdNt+yMKAZcjB4DKDx8pGE4bEIILh"
    "RRGItMjswV6REak9yD6sE4AIgn1l2G+JGnCgC0WahWdisboTOe6QsEs62t5Qqi2GQcsuCYfqIZFCcBjHnp624511oNcIdEFSMuvp"
    "NZ2FIwiOluE5S6fDaJ05jMIuGHqtZT1mTUnBcWxNI3jeWtYunBCpXXjBDnERwckynGrGS2Io/PzJj9/3sYT0UtvDHAHX7cOMrxnm"
    "uoykTcVs4BMT+NmjZ3qcliQML75/eECoSW/PEAVXHQZnWyVZU2v6uqIjgc+dECOXIQBzW/AbjUPQHQEGAG8DrG4jxSCZKvDXTrf8"
    "FU1FSFMIw+7sp/EgjhLsyBA5OAhSVQnu1Ptvu+7M4a95/MF9B/f9eUIUffTl8Rh+MdaFKOEiSgr85eMQcSTQpY/vf3Y//wjemsNA"
    "KYGncSDKefnnr92IXeLd1KtB/Gywo10fyNl2rVROnWAr0yyJ+OZZbal7/kyArJPA1goaiqniDL4nk6tPUqsCnzw+AFfIFDOFQiGT"
    "L+ayXKaQT2c5rpjOZzk85jNcupjjislcmlDeXPj1NIY5YhYlRWBbnO5roP8Iuece90vd1Tvikb2mwH9vDb+Du/yiHodFGrSreb+J"
    "u34GPCZvD0xadevXujM94tHeYYC73vxCd+Z6hV89wqRf6M5Rr3Cxxy1M+YXuVOvzCPcPhG122X38Ex7lcAB0SsySGAzOOFMnmSst"
    "Wa9vnKHt8WXAHrGO/B2DzyH7t13egaCt6bXm23P/AZzU1XE="
)


def tiny() -> dict[str, np.ndarray]:
    return {
        "w": np.arange(6, dtype="<f4").reshape(2, 3),
        "s": np.array(0.5, dtype=ml_dtypes.float8_e4m3fn),
        "n": np.array([1, -2], dtype="<i8"),
    }


def every_dtype() -> dict[str, np.ndarray]:
    """One tensor of each dtype code (all of them), with shapes of every rank from 0 to 5 and empty ones."""
    rng = np.random.default_rng(7)
    shapes = [(2, 3), (5,), (), (2, 1, 3), (1, 2, 1, 2), (2, 1, 1, 1, 2), (0, 4), (4, 0)]
    out: dict[str, np.ndarray] = {}
    for i, code in enumerate(c for c, d in DTYPES.items() if not d.is_block):  # quantized blocks: GGUF only
        shape = shapes[i % len(shapes)]
        raw = rng.integers(0, 256, size=int(np.prod(shape)) * DTYPES[code].itemsize, dtype=np.uint8)
        arr = raw.view(DTYPES[code].numpy).reshape(shape)
        if code == "BOOL":
            arr = (raw % 2).astype(bool).reshape(shape)
        out[f"layer.{i}.{code.lower()}"] = arr
    return out


def write_pt(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None, *,
             how: str = "write", cls: type[Writer] = Writer) -> Path:
    """Write ``tensors`` to ``path`` through :func:`atomic_path`, each by ``write``, ``chunks`` (odd pieces)
    or ``range`` (from a scratch file of their raw bytes)."""
    scratch = path.with_name(path.name + ".raw")
    offsets: dict[str, int] = {}
    if how == "range":
        with open(scratch, "wb") as f:
            f.write(b"x" * 13)  # tensors at odd offsets
            for name, arr in tensors.items():
                offsets[name] = f.tell()
                f.write(np.ascontiguousarray(arr).tobytes())
    with atomic_path(path) as tmp:
        writer = cls(tmp, metadata=metadata)
        try:
            writer.begin(specs_of(tensors))
            for name, arr in tensors.items():
                data = np.ascontiguousarray(arr).tobytes()
                if how == "write":
                    writer.write(name, arr)
                elif how == "chunks":
                    writer.write_chunks(name, (data[i : i + 7] for i in range(0, len(data), 7)))
                else:
                    assert writer.write_range(name, scratch, offsets[name], len(data))
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    if how == "range":
        scratch.unlink()
    return path


def local_header(raw: bytes, offset: int) -> tuple[int, int, int, int, int]:
    """``(flags, crc, compressed size, size, data start)`` of the local header at ``offset``."""
    sig, _, flags, method, _, _, crc, csize, usize, n, m = struct.unpack_from("<4s5H3L2H", raw, offset)
    assert sig == b"PK\x03\x04" and method == 0
    return flags, crc, csize, usize, offset + 30 + n + m


def masked(path: Path) -> bytes:
    """The file's bytes with the serialization id's digits and CRC-32 (descriptor and central record) zeroed."""
    raw = bytearray(path.read_bytes())
    info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith("/.data/serialization_id"))
    start = local_header(bytes(raw), info.header_offset)[4]
    raw[start : start + 40] = b"0" * 40
    raw[start + 44 : start + 48] = bytes(4)  # the data descriptor's CRC
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 16 : central + 20] = bytes(4)
    return bytes(raw)


def test_the_file_is_torch_saves_but_for_the_serialization_id(tmp_path: Path) -> None:
    torch_saved = tmp_path / "torch" / "tiny.pt"
    torch_saved.parent.mkdir()
    torch_saved.write_bytes(zlib.decompress(base64.b64decode(TORCH_SAVED_TINY)))
    ours = write_pt(tmp_path / "tiny.pt", tiny())
    assert masked(ours) == masked(torch_saved)
    assert ours.read_bytes() != torch_saved.read_bytes()  # torch's id is partly random, ours is not


@pytest.mark.parametrize("how", ["write", "chunks", "range"])
def test_members_are_torchs_stored_aligned_and_hold_the_raw_bytes(tmp_path: Path, how: str) -> None:
    tensors = every_dtype()
    path = write_pt(tmp_path / "model.pt", tensors, how=how)
    raw = path.read_bytes()
    names = [i.filename for i in zipfile.ZipFile(path).infolist()]
    storages = [f"model/data/{i}" for i in range(len(tensors))]
    assert names == ["model/data.pkl", "model/.format_version", "model/.storage_alignment", "model/byteorder",
                     *storages, "model/version", "model/.data/serialization_id"]
    with ZipArchive(path) as archive:  # ckptsurgeon's own checks of a zip: layout, headers, descriptors, CRCs
        for member in archive:
            flags, crc, csize, usize, start = local_header(raw, member.header_offset)
            assert start == member.data_offset and start % 64 == 0
            assert (crc, csize, usize) == (0, 0, 0)
            assert flags == (0x0808 if member.size else 0x0800)
            archive.verify(member)
        assert [bytes(archive.view(archive[s])) for s in storages] == [a.tobytes() for a in tensors.values()]
        contents = {n: bytes(archive.view(archive[f"model/{n}"])) for n in ("version", "byteorder", ".format_version")}
        assert contents == {"version": b"3\n", "byteorder": b"little", ".format_version": b"1"}
        assert bytes(archive.view(archive["model/.storage_alignment"])) == b"64"
        assert bytes(archive.view(archive["model/.data/serialization_id"])).isdigit()
    pickle = zipfile.ZipFile(path).read("model/data.pkl")
    for code, (module, name) in {"F8_E8M0": ("torch", "float8_e8m0fnu"), "U16": ("torch", "uint16"),
                                 "BF16": ("torch", "BFloat16Storage"), "BOOL": ("torch", "BoolStorage")}.items():
        assert f"c{module}\n{name}\n".encode() in pickle, code


def test_the_same_tensors_give_the_same_bytes_whichever_way_they_are_written(tmp_path: Path) -> None:
    tensors = every_dtype()
    files = []
    for how in ("write", "chunks", "range"):
        (tmp_path / how).mkdir()
        files.append(write_pt(tmp_path / how / "m.pt", tensors, {"k": "v"}, how=how))
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    other = write_pt(tmp_path / "m.pt", {**tensors, "layer.0.f64": tensors["layer.0.f64"] + 1}, {"k": "v"})
    ids = [zipfile.ZipFile(p).read("m/.data/serialization_id") for p in (files[0], other)]
    assert ids[0] != ids[1]  # the id follows the content


def test_metadata_goes_into_a_member_torch_does_not_read(tmp_path: Path) -> None:
    meta = {"format": "pt", "note": "ünï ✓\ttab"}
    path = write_pt(tmp_path / "m.pt", tiny(), meta)
    doc = json.loads(zipfile.ZipFile(path).read(f"m/{METADATA_MEMBER}").decode("utf-8"))
    assert doc == {"ckptsurgeon": 1, "metadata": meta}
    plain = write_pt(tmp_path / "plain.pt", tiny())
    assert not any("extra" in n for n in zipfile.ZipFile(plain).namelist())


@pytest.mark.parametrize(("name", "prefix"), [
    ("model.pt", "model"), ("a.b.pth", "a.b"), ("x.", "x"), (".hidden.pt", ".hidden"), ("noext", "noext"),
    ("pytorch_model-00001-of-00002.bin", "pytorch_model-00001-of-00002"), ("a b.ckpt", "a b"),
    ("é.pt", "archive"), (".pt", "archive"), ("back\\slash.pt", "archive"), ("...pt", "archive"),
])
def test_the_member_prefix_is_the_destinations_stem_as_torch_makes_it(name: str, prefix: str) -> None:
    assert archive_name(Path("/d") / name) == prefix
    assert archive_name(temp_path_for(Path("/d") / name)) == prefix  # the destination's, not the temp file's


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    tensors = every_dtype()

    class Interrupted(Writer):
        def _close_member(self) -> None:
            super()._close_member()
            if self._next == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_pt(tmp_path / "m.pt", tensors, cls=Interrupted)
    assert os.listdir(tmp_path) == []


class Zip64Everywhere(Writer):
    zip64_limit = 0  # every size and offset takes its ZIP64 field, as those of 4 GiB and more do


def test_zip64_fields_read_back(tmp_path: Path) -> None:
    tensors = every_dtype()
    path = write_pt(tmp_path / "m.pt", tensors, cls=Zip64Everywhere)
    with ZipArchive(path) as archive:
        assert [bytes(archive.view(archive[f"m/data/{i}"])) for i in range(len(tensors))] == \
            [a.tobytes() for a in tensors.values()]
        for member in archive:
            archive.verify(member)
    raw = path.read_bytes()
    end = raw[-22:]
    assert struct.unpack("<4s4H2LH", end)[5:7] == (0xFFFFFFFF, 0xFFFFFFFF)
    info = zipfile.ZipFile(path).infolist()[5]
    assert info.header_offset > 0 and info.file_size == tensors["layer.1.f32"].nbytes


def test_only_what_needs_zip64_gets_it(tmp_path: Path) -> None:
    class Zip64Large(Writer):
        zip64_limit = 1000  # members of 1000 bytes or more, and offsets from 1000 on

    tensors = {"small": np.zeros(4, "<f4"), "large": np.arange(300, dtype="<f4")}
    path = write_pt(tmp_path / "m.pt", tensors, cls=Zip64Large)
    raw = path.read_bytes()
    kinds = set()
    for info in zipfile.ZipFile(path).infolist():
        big_size, big_offset = info.file_size >= 1000, info.header_offset >= 1000
        kinds.add((big_size, big_offset))
        fields = 2 * big_size + big_offset
        assert info.extra == (struct.pack("<HH", 1, 8 * fields) + info.extra[4:] if fields else b"")
        assert len(info.extra) == (4 + 8 * fields if fields else 0)
        local_extra = raw[info.header_offset + 30 + len(info.filename):][:4]
        assert (local_extra == b"\x01\x00\x10\x00") == big_size  # sizes in the local header too
    assert kinds == {(False, False), (True, False), (False, True)}
    with ZipArchive(path) as archive:
        assert bytes(archive.view(archive["m/data/1"])) == tensors["large"].tobytes()
        archive.verify(archive["m/data/1"])


def test_integers_and_memo_indices_are_pickled_as_pickle_does() -> None:
    e = Emitter()
    start = len(e.out)
    for value in (0, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**40, -1):
        e.integer(value)
    assert bytes(e.out[start:]) == (
        b"K\x00K\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\xff\xff\xff\x7f"
        b"\x8a\x05\x00\x00\x00\x80\x00\x8a\x06\x00\x00\x00\x00\x00\x01J\xff\xff\xff\xff"
    )
    for i in range(300):
        e.global_("m", f"g{i}")
    e.global_("m", "g299")
    assert bytes(e.out[-5:]) == b"j" + struct.pack("<I", 299)  # LONG_BINGET past 255
    assert contiguous_strides((2, 0, 3)) == (3, 3, 1) and contiguous_strides(()) == ()


def test_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    with pytest.raises(OutputError, match="UTF-8"):
        Writer(path).begin([TensorSpec("bad\udc80", (1,), "F32")])
    with pytest.raises(OutputError, match="strings"):
        Writer(path, metadata={"k": 1}).begin([TensorSpec("a", (1,), "F32")])  # type: ignore[dict-item]
    assert not path.exists()


def test_a_short_source_range_is_the_inputs_error(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(10))
    writer = Writer(tmp_path / "m.pt")
    writer.begin([TensorSpec("a", (4,), "F32"), TensorSpec("b", (4,), "F32")])
    with pytest.raises(InputError, match="declared"):
        writer.write_range("a", src, 0, 12)
    with pytest.raises(InputError, match="ended 6 bytes early"):
        writer.write_range("a", src, 0, 16)
    writer.abort()


def test_misuse_raises_at_the_call_and_abort_closes_everything(tmp_path: Path) -> None:
    fds = set(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(64))
    writer = Writer(tmp_path / "m.pt")
    with pytest.raises(WriterStateError):
        writer.write("a", np.zeros(2, "<f4"))
    writer.begin([TensorSpec("a", (2,), "F32"), TensorSpec("b", (2,), "F32")])
    assert writer.write_range("a", src, 0, 8)
    with pytest.raises(WriterStateError):
        writer.write("a", np.zeros(2, "<f4"))
    with pytest.raises(WriterStateError):
        writer.finish()
    with pytest.raises(WriterStateError):
        writer.write_chunks("b", [bytes(9)])
    writer.abort()
    if fds is not None:
        assert set(os.listdir("/proc/self/fd")) == fds
