"""Every wording helper in one place: counts, sizes, shapes, shares, lists of names, shell quoting.

Reports, tables and error messages all word numbers and names through these, so that ``1,234
tensors``, ``[64, 3, 3, 3]``, ``99.8%`` and ``'a', 'b' and 3 more`` read the same everywhere.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import CkptError, UsageError

_SHOWN = 4  # quoted items a listing names before "and N more"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 tensor``, ``2 tensors``, ``1,234 values changed`` (``many`` for irregular plurals)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def human(n: int) -> str:
    """1234 -> '1,234'; 1_210_000 -> '1.21 M'; 3_400_000_000 -> '3.40 B'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f} B"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def human_bytes(n: int) -> str:
    """Decimal units, as Hugging Face and ``rich.filesize.decimal`` count: ``112.1 kB``."""
    if n < 1000:
        return f"{n} byte" + ("s" if n != 1 else "")
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95:
            return f"{value:,.1f} {unit}"
    return f"{value / 1000:,.1f} PB"


def percent(share: float) -> str:
    """0.9987 -> '99.8%' (never rounded up past what was reached); 0.5 -> '50%'."""
    tenths = int(share * 1000 + 1e-9) / 10
    return f"{tenths:.0f}%" if tenths == int(tenths) else f"{tenths:.1f}%"


def format_shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(map(str, shape))}]"


def quote(text: str) -> str:
    """``text`` as a user would type it in a shell: rule texts and messages show it this way."""
    return shlex.quote(text)


def listing(items: Sequence[str], shown: int = _SHOWN) -> str:
    """``'a', 'b' and 'c'`` — at most ``shown`` quoted items, then ``and N more``."""
    quoted = [repr(item) for item in items[:shown]]
    rest = len(items) - len(quoted)
    if rest:
        return f"{', '.join(quoted)} and {rest} more"
    if len(quoted) <= 1:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])} and {quoted[-1]}"


@contextlib.contextmanager
def blame(path: str | Path) -> Iterator[None]:
    """Name ``path`` in errors raised without a file (a rule problem is a problem with that file's names)."""
    try:
        yield
    except CkptError as exc:
        if exc.path is None:
            exc.path = str(path)
        raise


_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str | int) -> int:
    """A byte count from ``2GB`` (10^9, as Hugging Face counts), ``2GiB`` (2^30), ``500MB`` or ``1000``."""
    from decimal import Decimal, InvalidOperation  # exact: 1.5GB is 1,500,000,000 bytes, not a float's guess

    if isinstance(text, int) and not isinstance(text, bool):
        value = Decimal(text)
    else:
        m = _SIZE.fullmatch(str(text))
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _UNITS:
            raise UsageError(None, f"shard size {text!r} is not a size",
                             hint="write e.g. 500MB, 2GB (10^9 bytes), 2GiB (2^30 bytes) or a plain byte count")
        try:
            value = Decimal(m.group(1)) * _UNITS[unit]
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
            raise UsageError(None, f"shard size {text!r} is not a size") from exc
    size = int(value)
    if size < 1:
        raise UsageError(None, f"shard size {text!r} is less than one byte")
    return size
