"""Reader and writer options that are not plain values: the keys of encrypted MindSpore checkpoints
(from a file or the environment, never from an argument), the encryption mode, a container's state
dict and TensorFlow's name style, for the command line and the library alike.

``flag`` turns an option's keyword into the caller's spelling: the command line shows
``--dec-key-file``, the library ``dec_key_file``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .formats.base import OpenOptions

MODES_TEXT = "AES-GCM, AES-CBC or SM4-CBC"
Flag = Callable[[str], str]


def cli_flag(keyword: str) -> str:
    """``dec_key_file`` -> ``--dec-key-file``."""
    return "--" + keyword.replace("_", "-")


def read_key(file: Path | None, variable: str, option: str) -> Any:
    """A key from ``file`` (its raw bytes) or the environment variable (hex); None when neither is set."""
    from .formats.mindspore.crypto import Secret

    if file is not None:
        try:
            with open(file, "rb") as f:
                raw = f.read(1025)
        except OSError as exc:
            raise UsageError(file, f"{option}: cannot read the key file ({exc.strerror or type(exc).__name__})") from None
        if not 0 < len(raw) <= 1024:
            raise UsageError(file, f"{option}: the key file holds {'no bytes' if not raw else 'more than 1024 bytes'}")
        return Secret(raw)
    text = os.environ.get(variable)
    if text is None:
        return None
    try:
        return Secret(bytes.fromhex(text.strip()))
    except ValueError:
        raise UsageError(None, f"{variable} is not a key in hex (its value is not shown)") from None


def read_mode(mode: str | None, option: str) -> str | None:
    from .formats.mindspore import MODES

    if mode is None:
        return None
    found = {m.lower(): m for m in MODES}.get(mode.strip().lower())
    if found is None:
        raise UsageError(None, f"{option} {mode!r}: choose {MODES_TEXT}")
    return found


def open_options(dict_path: str | None, all_dicts: bool = False, *, dec_key_file: Path | None = None,
                 dec_mode: str | None = None, tf_names: str = "keys", flag: Flag = cli_flag) -> OpenOptions | None:
    """The reader options the --dict / --all-dicts / --dec-key-file / --dec-mode / --tf-names flags give (None: none)."""
    key = read_key(dec_key_file, "CKPT_DEC_KEY", flag("dec_key_file"))
    mode = read_mode(dec_mode, flag("dec_mode"))
    if tf_names not in ("keys", "short"):
        raise UsageError(None, f"{flag('tf_names')} {tf_names!r}: choose keys or short")
    if not dict_path and not all_dicts and key is None and mode is None and tf_names == "keys":
        return None
    from .formats.base import OpenOptions

    return OpenOptions(dict_path=dict_path or None, all_dicts=all_dicts, dec_key=key, dec_mode=mode,
                       tf_names=tf_names)


def encryption(enc_key_file: Path | None, enc_mode: str | None, flag: Flag = cli_flag) -> Any:
    """The output encryption --enc-key-file / CKPT_ENC_KEY and --enc-mode ask for (None: not encrypted)."""
    key = read_key(enc_key_file, "CKPT_ENC_KEY", flag("enc_key_file"))
    mode = read_mode(enc_mode, flag("enc_mode"))
    if key is None:
        if mode is not None:
            raise UsageError(None, f"{flag('enc_mode')} needs a key: {flag('enc_key_file')} FILE or CKPT_ENC_KEY")
        return None
    from .formats.mindspore.crypto import Encryption

    return Encryption(key, mode or "AES-GCM")
