"""The restricted unpickler: an allow-list of globals as local builders, bounded, and nothing ever run."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ckptsurgeon.errors import InputError, UnsafeInputError
from ckptsurgeon.formats.torch import unpickle
from ckptsurgeon.formats.torch.unpickle import (
    ALLOWED,
    Builder,
    DType,
    Storage,
    StorageType,
    TensorRecord,
    Unpickler,
)

from ...conftest import ROOT
from .conftest import HOSTILE

RCE = ["rce_os_system.pt", "rce_posix_system.pt", "rce_builtins_eval.pt", "rce_subprocess.pt",
       "rce_stack_global_proto4.pt", "inst_opcode.pt", "legacy_rce.pt", "global_getattr.pt"]


def load(data: bytes) -> Any:
    return Unpickler(Path("x.pt"), io.BytesIO(data)).load()


def test_the_allow_list_names_only_tensor_building_globals() -> None:
    modules = {name.rsplit(".", 1)[0] for name in ALLOWED}
    assert modules == {"collections", "torch", "torch._utils", "torch._tensor", "torch.nn.parameter", "torch.storage",
                       "_codecs", "builtins", "__builtin__"}
    assert all(isinstance(v, (Builder, StorageType, DType)) for v in ALLOWED.values())
    assert not {"builtins.eval", "builtins.getattr", "__builtin__.eval", "os.system", "posix.system"} & set(ALLOWED)


def test_a_state_dict_becomes_records(gen: Any) -> None:
    root = load(gen.Pk().state_dict(gen.torch_entries()).done())
    assert list(root) == ["w", "wt", "row", "b"]
    w, wt = root["w"], root["wt"]
    assert isinstance(w, TensorRecord) and isinstance(w.storage, Storage)
    assert (w.dtype, w.offset, w.shape, w.stride) == ("F32", 0, (2, 3), (3, 1))
    assert wt.storage is w.storage and wt.stride == (1, 3) and root["row"].offset == 3


@pytest.mark.parametrize(("global_", "word"), [("os system", "os.system"), ("builtins eval", "builtins.eval"),
                                               ("subprocess call", "subprocess.call"), ("commands call", "commands.call"),
                                               ("torch load", "torch.load"), ("numpy load", "numpy.load")])
def test_any_other_global_is_refused_by_name(global_: str, word: str) -> None:
    module, name = global_.split()
    with pytest.raises(UnsafeInputError, match=word.replace(".", r"\.")):
        load(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R.")


@pytest.mark.parametrize(("data", "match"), [
    (b"\x80\x02" + b"(" * (unpickle.MAX_MARKS + 1), "MARK"),
    (b"\x80\x02X\xff\xff\xff\x7fab.", "truncated"),
    (b"\x80\x02\x8e" + (1 << 62).to_bytes(8, "little") + b".", "truncated"),  # BINBYTES8
    (b"\x80\x02h\x05.", "never stored"),  # BINGET of a memo entry never put
    (b"\x80\x02K\x01K\x02a.", "not a list"),  # APPEND to an int
    (b"\x80\x02]}b.", "BUILD on list"),  # BUILD sets state on dicts and tensors only
    (b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.", "OrderedDict of int"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "not callable"),
    (b"\x80\x02X\x07\x00\x00\x00storage\x85Q.", "not a storage reference"),
    (b"\x80\x02K\x01K\x02.", "ends with 2 values"),
    (b"\x80\x02K\x01", "STOP"),
    (b"Vno newline at all", "truncated"),
])
def test_malformed_and_bomb_pickles_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load(data)


def test_the_opcode_budget_bounds_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpickle, "MAX_OBJECTS", 1000)
    with pytest.raises(InputError, match="pickle bomb"):
        load(b"\x80\x02]" + b"K\x01a" * 1000 + b".")


def test_hostile_payloads_never_run(tmp_path: Path) -> None:
    """Each file would create PWNED-* in the working directory if its pickle ran; none may appear."""
    files = [str(HOSTILE / "torch" / name) for name in RCE]
    script = textwrap.dedent(
        """
        import sys
        from ckptsurgeon.cli.app import main
        codes = []
        for f in sys.argv[1:]:
            for argv in (["inspect", f], ["convert", f, "-o", "out.safetensors"]):
                try:
                    main(argv)
                except SystemExit as exc:
                    codes.append(exc.code)
        print(codes)
        """
    )
    p = subprocess.run([sys.executable, "-c", script, *files], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    assert p.stdout.strip() == str([3] * (2 * len(files))), p.stderr[-2000:]
    assert len(p.stderr.splitlines()) == 2 * len(files)
    assert all(line.startswith("ckpt: error: ") and ("not allowed" in line or "INST" in line)
               for line in p.stderr.splitlines())
    assert sorted(x.name for x in tmp_path.iterdir()) == [], "a payload ran or something was written"
