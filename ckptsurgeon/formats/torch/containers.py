"""Where the weights are in a pickled PyTorch object: which state dict a reader lists, by what names.

A checkpoint is whatever object ``torch.save`` was given. Tensors are named by their dotted path
in it (dict keys, list and tuple indices as decimal, joined by ``.``). :func:`choose` picks the
tensors a reader lists:

- ``--dict PATH``: the tensors under that dotted path, named relative to it;
- ``all_dicts``: every tensor under its full path (optimizer state included);
- otherwise a *flat* state dict (the object is a dict whose tensors are its own values) is taken
  whole; else the one state dict under a known key (:data:`KNOWN_KEYS`: ``state_dict``,
  ``model``, ...) is taken and named in the reader's ``layout``. EMA copies (keys naming ``ema``)
  are never taken without ``--dict``; several candidates, or none under a known key, give one
  line listing them.

Non-tensor entries become metadata: top-level scalars as text, JSON-able values as compact JSON
(up to :data:`MAX_META_CHARS` characters each). The walk is iterative and bounded (depth
:data:`MAX_DEPTH`, :data:`MAX_VISITS` nodes), so a cyclic or shared-reference bomb cannot run away.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError, UsageError
from .unpickle import TensorRecord

#: Keys under which a checkpoint keeps its model's state dict, in order of preference.
KNOWN_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "model_state",
              "weights", "params")
EMA = re.compile(r"(^|[._])ema($|[._])|ema_|_ema|averaged", re.IGNORECASE)
MAX_DEPTH = 64
MAX_VISITS = 1_000_000
MAX_META_CHARS = 65_536
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class Choice:
    """The tensors a reader lists (name -> record, in the object's order), where they came from, and metadata."""

    tensors: dict[str, TensorRecord]
    where: str | None  # the dotted path of the chosen dict; None for the whole object
    note: str  # for the reader's layout: "state dict", "dict 'model' (also: model_ema)", "all dicts"
    metadata: dict[str, str]
    #: every tensor of the whole object by its full dotted path (a tensor reached by two paths: under both)
    everything: dict[str, TensorRecord] = field(default_factory=dict)


def _key(key: Any) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return None


def _children(node: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, dict):
        yield from node.items()
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)


class _Holds:
    """Which containers hold a tensor at any depth: one bounded pass, each shared node visited once."""

    def __init__(self, path: Path, root: Any) -> None:
        self.path = path
        self.memo: dict[int, bool] = {}
        self._keep: list[Any] = []  # the ids stay valid while the nodes are alive
        visits = 0
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if not isinstance(node, (dict, list, tuple)) or (not done and id(node) in self.memo):
                continue
            if done:
                self.memo[id(node)] = any(self(v) for _, v in _children(node))
                continue
            visits += 1
            if visits > MAX_VISITS or len(stack) > MAX_VISITS:
                raise InputError(path, f"the pickled object has more than {MAX_VISITS} containers; refusing it")
            self.memo[id(node)] = False  # a cycle reads as no tensors here; walk() refuses it
            self._keep.append(node)
            stack.append((node, True))
            stack.extend((v, False) for _, v in _children(node))

    def __call__(self, value: Any) -> bool:
        return isinstance(value, TensorRecord) or self.memo.get(id(value), False)

    def state_dict(self, value: Any) -> bool:
        """A dict with at least one tensor value, whose tensors are all its own values (none nested deeper)."""
        if not isinstance(value, dict):
            return False
        direct = False
        for v in value.values():
            if isinstance(v, TensorRecord):
                direct = True
            elif self(v):
                return False
        return direct


def walk(holds: _Holds, root: Any, base: str = "") -> Iterator[tuple[str, TensorRecord]]:
    """Every tensor under ``root`` with its dotted path, in order.

    Containers without tensors are skipped; a container of tensors reached by a second path (a cycle,
    or a shared reference that would name its tensors twice, or exponentially often) is refused.
    """
    path = holds.path
    if isinstance(root, TensorRecord):
        yield base, root
        return
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [(base, _children(root))]
    on_path: list[int] = [id(root)]
    seen: dict[int, str] = {id(root): base}
    while stack:
        prefix, items = stack[-1]
        step = next(items, None)
        if step is None:
            stack.pop()
            on_path.pop()
            continue
        key, value = step
        if not holds(value):
            continue
        name = _key(key)
        if name is None:
            raise InputError(path, f"a tensor sits under a key of type {type(key).__name__} under {prefix[:80]!r}")
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(value, TensorRecord):
            yield full, value
            continue
        if id(value) in on_path:
            raise InputError(path, f"the pickled object refers to itself at {full[:80]!r}; refusing a cyclic checkpoint")
        if id(value) in seen:
            raise InputError(path, f"one container of tensors is both {seen[id(value)][:80]!r} and {full[:80]!r} "
                             "(a shared reference); refusing names that would repeat")
        if len(stack) >= MAX_DEPTH:
            raise InputError(path, f"the pickled object nests deeper than {MAX_DEPTH} levels at {full[:80]!r}")
        seen[id(value)] = full
        stack.append((full, _children(value)))
        on_path.append(id(value))


def _candidates(holds: _Holds, root: Any) -> list[str]:
    """The dotted paths of the state dicts in ``root`` (not descending into one), bounded like :func:`walk`."""
    found: list[str] = []
    stack: list[tuple[str, Any, int]] = [("", root, 0)]
    visits = 0
    seen: set[int] = set()
    while stack:
        prefix, node, depth = stack.pop()
        if id(node) in seen:  # reached by a second path: its state dicts are found once
            continue
        seen.add(id(node))
        for key, value in reversed(list(_children(node))):
            visits += 1
            name = _key(key)
            if visits > MAX_VISITS:
                raise InputError(holds.path, f"the pickled object has more than {MAX_VISITS} entries (shared "
                                 "references?); refusing it")
            if depth >= MAX_DEPTH or name is None or not holds(value):
                continue
            full = f"{prefix}.{name}" if prefix else name
            if holds.state_dict(value):
                found.append(full)
            else:
                stack.append((full, value, depth + 1))
    return found


def resolve(path: Path, root: Any, dotted: str) -> Any:
    """The object at a dotted path; keys may hold dots themselves (the longest key that fits wins)."""
    node, rest, done = root, dotted, ""
    while rest:
        best: tuple[str, Any] | None = None
        for key, value in _children(node):
            name = _key(key)
            if name is not None and (rest == name or rest.startswith(name + ".")) and (best is None or len(name) > len(best[0])):
                best = (name, value)
        if best is None:
            where = f"under {done!r}" if done else "at the top level"
            keys = [k for k in (_key(k) for k, _ in _children(node)) if k is not None]
            shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
            raise UsageError(path, f"no state dict at {dotted!r}: no entry {rest.split('.')[0]!r} {where} "
                             f"(it holds: {shown or 'nothing'})")
        name, node = best
        done = f"{done}.{name}" if done else name
        rest = rest[len(name) + 1:]
    return node


def _metadata(holds: _Holds, node: Any) -> dict[str, str]:
    """The non-tensor entries of a dict, as text: scalars plainly, other JSON-able values as compact JSON."""
    out: dict[str, str] = {}
    if not isinstance(node, dict):
        return out
    for key, value in node.items():
        name = _key(key)
        if name is None or holds(value):
            continue
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
            except (TypeError, ValueError, RecursionError):
                continue
        if len(text) <= MAX_META_CHARS:
            out[name] = text
    return out


def _listing(holds: _Holds, node: Any, base: str = "") -> dict[str, TensorRecord]:
    path = holds.path
    tensors: dict[str, TensorRecord] = {}
    for name, record in walk(holds, node, base):
        if name in tensors:
            raise InputError(path, f"two tensors are named {name!r} (keys that read alike)")
        tensors[name] = record
    return tensors


def choose(path: Path, root: Any, *, dict_path: str | None = None, all_dicts: bool = False) -> Choice:
    """The tensors to list (see the module docstring)."""
    holds = _Holds(path, root)
    everything = _listing(holds, root)  # checks the whole object: no cycle, shared container or deep nesting
    choice = _choose(path, root, holds, everything, dict_path=dict_path, all_dicts=all_dicts)
    choice.everything = everything
    return choice


def _choose(path: Path, root: Any, holds: _Holds, everything: dict[str, TensorRecord], *, dict_path: str | None,
            all_dicts: bool) -> Choice:
    if dict_path:
        node = resolve(path, root, dict_path)
        tensors = _listing(holds, node)
        if not tensors:
            raise UsageError(path, f"the entry {dict_path!r} holds no tensors")
        return Choice(tensors, dict_path, f"dict {dict_path!r}", _metadata(holds, node))
    if not holds(root):
        raise InputError(path, "a PyTorch pickle checkpoint that holds no tensors; nothing to read")
    if isinstance(root, TensorRecord):
        return Choice({"tensor": root}, None, "a single tensor", {})
    if all_dicts:
        return Choice(everything, None, "all dicts", _metadata(holds, root))
    if holds.state_dict(root):
        return Choice(everything, None, "state dict", _metadata(holds, root))
    found = _candidates(holds, root)
    known = [k for k in KNOWN_KEYS if k in found]
    if not found:
        return Choice(everything, None, "all tensors", _metadata(holds, root))
    if len(known) == 1:
        also = [f"{f} (EMA)" if EMA.search(f) else f for f in found if f != known[0] and "." not in f]
        note = f"dict {known[0]!r}" + (f"; not chosen: {', '.join(also)}" if also else "")
        return Choice(_listing(holds, resolve(path, root, known[0])), known[0], note, _metadata(holds, root))
    listed = known + [f for f in found if f not in known and not _under_optimizer(f)] or found
    shown = ", ".join(p[:80] for p in listed[:10]) + (", ..." if len(listed) > 10 else "")
    what = "several state dicts" if len(listed) > 1 else "a state dict under a key that does not say it is the model"
    raise UsageError(path, f"holds {what} ({shown}); choose one with --dict PATH (or list every tensor with "
                     "inspect --all-dicts)")


def _under_optimizer(dotted: str) -> bool:
    top = dotted.split(".")[0].lower()
    return "optim" in top or top in ("lr_schedulers", "callbacks", "loops", "scheduler", "scaler")
