"""Group tensors into layers and collapse repeated blocks (``h.{0..11}.attn``) for reading.

Used by ``inspect`` and by the change table. Two layers collapse into one group when their names
differ only in numeric components (``h.0.attn`` / ``h.1.attn``) and their rows agree exactly;
the group's name lists the numbers each position takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .tensors import gc_paused

T = TypeVar("T")

_SPLIT = re.compile(r"([./])")
_HAS_DIGIT = re.compile(r"[0-9]")


def name_template(name: str) -> tuple[str, tuple[int, ...]]:
    """``'h.3.attn'`` -> ``('h.{}.attn', (3,))``: numeric components become placeholders."""
    parts = _SPLIT.split(name)
    numbers: list[int] = []
    for i in range(0, len(parts), 2):
        if parts[i].isdigit() and parts[i].isascii():
            numbers.append(int(parts[i]))
            parts[i] = "{}"
    return "".join(parts), tuple(numbers)


def _ranges(values: Iterable[int]) -> str:
    nums = sorted(set(values))
    if len(nums) == 1:
        return str(nums[0])
    spans: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}..{prev}" if prev > start + 1 else f"{start},{prev}")
        if n is not None:
            start = prev = n
    return "{" + ",".join(spans) + "}"


def pattern_name(template: str, numbers: Sequence[tuple[int, ...]]) -> str:
    """Fill a template's placeholders with the numbers each position takes across a group."""
    columns = [_ranges(col) for col in zip(*numbers, strict=False)] if numbers and numbers[0] else []
    out = template
    for col in columns:
        out = out.replace("{}", col.replace("{", "\0").replace("}", "\1"), 1)
    return out.replace("\0", "{").replace("\1", "}")


@dataclass
class Group(Generic[T]):
    """One layer, or several identical ones collapsed: its display name, members and rows."""

    name: str
    layers: list[str]
    rows: list[T]  # the rows of the first member layer (all members agree when collapsed)
    members: list[list[T]]  # the rows of every member layer

    @property
    def count(self) -> int:
        return len(self.layers)


@gc_paused
def group_layers(
    items: Sequence[T],
    layer_of: Callable[[T], str],
    signature: Callable[[T], Hashable],
    *,
    collapse: bool = True,
) -> list[Group[T]]:
    """Group items by layer (first appearance order), then collapse repeated layers.

    ``signature(item)`` is what must agree, row by row, for two layers to collapse (for example the
    tensor name relative to its layer, its shape and dtype).
    """
    by_layer: dict[str, list[T]] = {}
    for item in items:
        by_layer.setdefault(layer_of(item), []).append(item)
    if not collapse:
        return [Group(layer, [layer], rows, [rows]) for layer, rows in by_layer.items()]

    # A layer without numeric components cannot collapse with another: it is its own group, in order.
    buckets: dict[tuple[str, tuple[Hashable, ...]], list[tuple[str, tuple[int, ...], list[T]]]] = {}
    order: list[tuple[str, tuple[Hashable, ...]] | tuple[str, list[T]]] = []
    for layer, rows in by_layer.items():
        if not _HAS_DIGIT.search(layer):
            order.append((layer, rows))
            continue
        template, numbers = name_template(layer)
        if not numbers:
            order.append((layer, rows))
            continue
        key = (template, tuple(signature(r) for r in rows))
        if key not in buckets:
            buckets[key] = []
            order.append(key)
        buckets[key].append((layer, numbers, rows))

    groups: list[Group[T]] = []
    for entry in order:
        if isinstance(entry[1], list):
            groups.append(Group(entry[0], [entry[0]], entry[1], [entry[1]]))
            continue
        key = entry
        members = buckets[key]
        if len(members) == 1:
            layer, _, rows = members[0]
            groups.append(Group(layer, [layer], rows, [rows]))
        else:
            name = pattern_name(key[0], [m[1] for m in members])
            groups.append(Group(name, [m[0] for m in members], members[0][2], [m[2] for m in members]))
    return groups


def relative_name(name: str, layer: str) -> str:
    """The tensor name without its layer prefix (``h.0.attn.c_attn.weight`` -> ``c_attn.weight``)."""
    if layer and name.startswith(layer) and name[len(layer) : len(layer) + 1] in (".", "/"):
        return name[len(layer) + 1 :]
    return name
