"""A key never appears anywhere ckptsurgeon writes: not in argv (no option takes one), stdout, stderr,
``--json``, reports, saved plans, provenance metadata, error messages or ``--debug`` tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckptsurgeon.formats import OpenOptions, open_checkpoint
from ckptsurgeon.formats.mindspore.crypto import Encryption, Secret

from ...conftest import DATA

MS = DATA / "mindspore"
KEY = b"KeyLeakCanary-32bytes-0123456789"  # printable, so that any repr of it would be found too
WRONG = b"WrongLeakCanary-32bytes-01234567"
FORMS = [KEY, KEY.hex().encode(), KEY.hex().upper().encode(), WRONG, WRONG.hex().encode(), b"KeyLeakCanary",
         b"WrongLeakCanary"]


def ckpt(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ckptsurgeon", *map(str, args)], capture_output=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def leaks(blob: bytes) -> list[bytes]:
    return [form for form in FORMS if form in blob]


def test_no_key_anywhere(tmp_path: Path) -> None:
    key, wrong = tmp_path / "key", tmp_path / "wrong"
    key.write_bytes(KEY)
    wrong.write_bytes(WRONG)
    enc = tmp_path / "enc.ckpt"
    runs = [ckpt("convert", MS / "sharednet_f32.ckpt", "-o", enc, "--format", "mindspore", "--enc-key-file", key,
                 "--json")]
    assert runs[0].returncode == 0, runs[0].stderr
    out = tmp_path / "out.ckpt"
    files = [tmp_path / "report.json", tmp_path / "plan.json", out]
    runs.append(ckpt("transfer", enc, MS / "transfer_target_5cls.ckpt", "-o", out, "--dec-key-file", key, "--json",
                     "--provenance", "--report", files[0], "--save-plan", files[1], "--verify"))
    assert runs[-1].returncode == 0, runs[-1].stderr
    runs.append(ckpt("inspect", enc, "--json", "--hash", env={"CKPT_DEC_KEY": KEY.hex()}))
    assert runs[-1].returncode == 0, runs[-1].stderr
    for args in (["inspect", enc, "--dec-key-file", wrong], ["inspect", enc, "--dec-key-file", wrong, "--json"],
                 ["diff", enc, MS / "sharednet_f32.ckpt"]):
        runs.append(ckpt(*args))
        assert runs[-1].returncode == 3, runs[-1].stderr
    runs.append(ckpt("--debug", "inspect", enc, "--dec-key-file", wrong))  # the traceback, shown
    assert b"Traceback" in runs[-1].stderr and b"wrong key" in runs[-1].stderr
    runs.append(ckpt("inspect", enc, env={"CKPT_DEC_KEY": "zz" + KEY.hex()}))  # not hex: refused, not echoed
    assert runs[-1].returncode == 2
    for run in runs:
        assert not leaks(run.stdout) and not leaks(run.stderr), run.args
    for path in files:
        assert not leaks(path.read_bytes()), path
    with open_checkpoint(out) as reader:
        assert not leaks(repr(reader.metadata).encode())
    assert ckpt("inspect", enc, "--dec-key", KEY.hex()).returncode == 2  # no option takes a key itself


def test_keys_do_not_show_in_any_repr() -> None:
    secret = Secret(KEY)
    shown = [repr(secret), str(secret), repr(OpenOptions(dec_key=secret)), repr(Encryption(secret, "AES-GCM")),
             f"{secret}", f"{secret!r}"]
    assert not any(leaks(s.encode()) for s in shown)
    import copy
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)
