"""Saved transfer plans: review a mapping once, replay it exactly.

A plan file (schema ``ckptsurgeon/plan/1``) holds the resolved steps (output name, action, source
name, output dtype, kind, reason) and the digests of both inputs' headers
(:meth:`~ckptsurgeon.formats.base.Reader.header_digest`). Replaying it refuses inputs whose
headers changed since (names, shapes, dtypes or metadata), so a reviewed mapping is never applied
to other files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckFailed, InputError
from .files import read_input
from .plan import MATCHED, NO_SOURCE, SOURCE, TARGET, Plan, Step, TensorRef, TransferOptions, make_step
from .rules import Rules, apply_rules
from .tensors import DTYPES, TensorInfo

if TYPE_CHECKING:
    from .formats.base import Reader

PLAN_SCHEMA = "ckptsurgeon/plan/1"


def plan_to_dict(plan: Plan, source_digest: str, target_digest: str) -> dict[str, object]:
    """The resolved mapping as JSON-ready data, with the digests of the inputs' headers."""
    return {
        "schema": PLAN_SCHEMA,
        "source_digest": source_digest,
        "target_digest": target_digest,
        "match": plan.options.match,
        "steps": [
            {"name": s.name, "action": s.action, "source": s.source, "dtype": s.dtype, "kind": s.kind,
             "reason": s.reason}
            for s in plan.steps
        ],
    }


def plan_from_dict(
    doc: object, source: Sequence[TensorInfo], target: Sequence[TensorInfo], where: str, options: TransferOptions,
) -> Plan:
    """Rebuild a saved plan against the inputs it was made for (the caller has checked their digests).

    Raises ValueError with a one-line reason when the document is not a plan these inputs can replay.
    """
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA or not isinstance(doc.get("steps"), list):
        raise ValueError(f"{where} is not a ckptsurgeon plan (schema {PLAN_SCHEMA})")
    src = {t.name: t for t in source}
    tgt = {t.name: t for t in target}
    steps: list[Step] = []
    for raw in doc["steps"]:
        if not isinstance(raw, dict):
            raise ValueError("a step is not an object")
        name, action, origin, dtype = raw.get("name"), raw.get("action"), raw.get("source"), raw.get("dtype")
        kind, reason = str(raw.get("kind", MATCHED if action != "keep" else NO_SOURCE)), str(raw.get("reason", ""))
        if action == "keep":
            info = tgt.get(name) if isinstance(name, str) else None
            if info is None:
                raise ValueError(f"the plan keeps {name!r}, which the target does not have")
            steps.append(make_step(TensorRef.of(TARGET, info), "keep", kind, reason, layer=info.layer))
            continue
        if action not in ("replace", "add") or not isinstance(name, str) or origin not in src or dtype not in DTYPES:
            raise ValueError(f"step {name!r} is not a valid replace/add step for these inputs")
        info = src[origin]
        layer = tgt[name].layer if name in tgt else None
        if name in tgt and tgt[name].shape != info.shape:
            raise ValueError(f"step {name!r}: the source's {origin!r} has another shape than the target's tensor")
        steps.append(make_step(TensorRef.of(SOURCE, info), action, kind, reason, name=name, dtype=str(dtype),
                               layer=layer, source_key=name))
    used = {s.source for s in steps if s.action != "keep"}
    return Plan(
        steps=tuple(steps),
        unused_sources=tuple(t.name for t in source if t.name not in used),
        renamed=apply_rules([t.name for t in source], Rules()),
        options=options,
        source_count=len(source),
    )


def load_plan(plan_file: Path, src: Reader, tgt: Reader, options: TransferOptions) -> Plan:
    """Read a saved plan and rebuild it against ``src`` and ``tgt``, refusing inputs whose headers changed."""
    try:
        doc = json.loads(read_input(plan_file).decode("utf-8"))  # a regular file only
    except (OSError, ValueError) as exc:
        raise InputError(plan_file, f"cannot read the plan: {exc}") from exc
    for role, reader in (("source", src), ("target", tgt)):
        if isinstance(doc, dict) and doc.get(f"{role}_digest") != reader.header_digest():
            raise CheckFailed(
                reader.path, f"the {role}'s header no longer matches the saved plan {plan_file}; "
                "names, shapes, dtypes or metadata changed since it was made",
            )
    try:
        return plan_from_dict(doc, src.tensors, tgt.tensors, str(plan_file), options)
    except ValueError as exc:
        raise InputError(plan_file, str(exc)) from exc
