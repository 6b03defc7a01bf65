"""ckptsurgeon: checkpoint surgery across safetensors, PyTorch, TensorFlow, MindSpore, HDF5/Keras and npz,
without loading a framework.

``import ckptsurgeon as cs``: ``cs.inspect``, ``cs.transfer``, ``cs.rename``, ``cs.convert``,
``cs.diff`` and ``cs.verify`` take the command line's options as keyword arguments and return the
command's report; ``cs.transfer_into`` fills a state dict in memory and ``cs.load`` gives a
checkpoint's tensors as read-only numpy arrays (:mod:`ckptsurgeon.library`). Also
``open_checkpoint`` (a lazy reader of any supported format), the option types and the errors.
Importing the package loads none of the commands' code; each name is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module it lives in (imported on first use, so `import ckptsurgeon` stays cheap)
_EXPORTS = {
    "inspect": "library", "transfer": "library", "rename": "library", "convert": "library", "diff": "library",
    "verify": "library", "transfer_into": "library", "load": "library", "Loaded": "library",
    "transfer_options": "library", "write_hashes": "api", "plan_transfer": "api", "transform_options": "api",
    "TransformRules": "transforms",
    "open_checkpoint": "formats", "OpenOptions": "formats.base",
    "Rules": "rules", "TransferOptions": "plan", "DiffOptions": "commands.diff",
    "CkptError": "errors", "InputError": "errors", "UnsafeInputError": "errors", "OutputError": "errors",
    "UsageError": "errors", "CheckFailed": "errors", "Failure": "errors",
}

__all__ = [
    "CheckFailed", "CkptError", "DiffOptions", "Failure", "InputError", "Loaded", "OpenOptions", "OutputError", "Rules",
    "TransferOptions", "TransformRules", "UnsafeInputError", "UsageError", "__version__", "convert", "diff", "inspect",
    "load", "open_checkpoint", "plan_transfer", "rename", "transfer", "transfer_into", "transfer_options",
    "transform_options", "verify", "write_hashes",
]

if TYPE_CHECKING:
    from .api import plan_transfer, transform_options, write_hashes
    from .commands.diff import DiffOptions
    from .errors import CheckFailed, CkptError, Failure, InputError, OutputError, UnsafeInputError, UsageError
    from .formats import open_checkpoint
    from .formats.base import OpenOptions
    from .library import (
        Loaded,
        convert,
        diff,
        inspect,
        load,
        rename,
        transfer,
        transfer_into,
        transfer_options,
        verify,
    )
    from .plan import TransferOptions
    from .rules import Rules
    from .transforms import TransformRules


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptsurgeon' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
