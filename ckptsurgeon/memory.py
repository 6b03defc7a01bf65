"""Checkpoints that live in memory: a mapping of names to arrays as a transfer's target.

:func:`views` turns a state dict into numpy arrays that share its memory: numpy arrays as they are,
and anything numpy can view without a copy. A CPU PyTorch tensor is recognised by duck typing
(``.numpy()``, and for bfloat16 / float8, which numpy cannot name, a view as same-size integers
through the ``torch`` module its tensor already loaded); torch is never imported. An entry that
cannot be viewed without a copy (a GPU tensor, a tensor that needs grad, an array that is not
writable or not C-contiguous) is refused by name: filling a copy would silently change nothing.

:class:`MemoryReader` lists those arrays as a checkpoint, so the planner and the executor treat the
mapping as they treat a file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .formats.base import Reader
from .tensors import TensorInfo, code_of, default_layer

if TYPE_CHECKING:
    import numpy as np

MEMORY = "memory"


def _torch_view(value: Any, name: str) -> np.ndarray | None:
    """A numpy view of a CPU torch tensor, or None when ``value`` is not one."""
    numpy = getattr(value, "numpy", None)
    if not callable(numpy) or not hasattr(value, "dtype") or not hasattr(value, "is_contiguous"):
        return None
    if getattr(value, "requires_grad", False):
        raise UsageError(None, f"state entry {name!r} requires grad: pass module.state_dict(), whose tensors do not")
    if getattr(getattr(value, "device", None), "type", "cpu") != "cpu":
        raise UsageError(None, f"state entry {name!r} is on {value.device}: only CPU memory can be filled in place")
    if not value.is_contiguous():
        raise UsageError(None, f"state entry {name!r} is not contiguous: it cannot be filled in place")
    try:
        return numpy()
    except TypeError:  # bfloat16 / float8: numpy has no name for them, ml_dtypes does
        torch = sys.modules.get(type(value).__module__.split(".")[0])
        from .tensors import DTYPES

        code = {"torch.bfloat16": "BF16", "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2"}.get(str(value.dtype))
        if torch is None or code is None:
            raise UsageError(None, f"state entry {name!r} has dtype {value.dtype}, which has no numpy view") from None
        word = torch.int16 if DTYPES[code].itemsize == 2 else torch.uint8
        return value.view(word).numpy().view(DTYPES[code].numpy)


def views(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each entry of ``state`` as a numpy array sharing its memory (UsageError naming an entry that cannot be)."""
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise UsageError(None, f"state key {name!r} is not a string")
        array = value if isinstance(value, np.ndarray) else _torch_view(value, name)
        if array is None:
            if getattr(value, "__array_interface__", None) is None:  # a list, a scalar: numpy would copy it
                raise UsageError(None, f"state entry {name!r} ({type(value).__name__}) is not an array numpy can view in place")
            array = np.asarray(value)
        if not array.flags.writeable or not array.flags.c_contiguous:
            raise UsageError(None, f"state entry {name!r} is {'read-only' if not array.flags.writeable else 'not C-contiguous'}:"
                             " it cannot be filled in place")
        if code_of(array.dtype) is None:
            raise UsageError(None, f"state entry {name!r} has dtype {array.dtype}, which is not a tensor dtype")
        out[name] = array
    return out


class MemoryReader(Reader):
    """Arrays in memory, listed as a checkpoint (``path`` is ``<memory>``, ``files`` none)."""

    format = MEMORY

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        super().__init__(Path("<memory>"))
        self._arrays = dict(arrays)
        self.tensors = [TensorInfo(name, tuple(a.shape), code_of(a.dtype) or "", default_layer(name))
                        for name, a in self._arrays.items()]

    @property
    def files(self) -> list[Path]:
        return []

    def read(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def content_sha256(self) -> str:
        import hashlib

        return hashlib.sha256("".join(f"{t.name} {self.sha256(t.name)}\n" for t in self.tensors).encode()).hexdigest()
