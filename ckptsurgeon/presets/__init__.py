"""Framework presets: recipe files shipped in ``ckptsurgeon/presets/`` (``ckpt presets`` lists them).

A preset is data, not code: a TOML file with a ``name`` (``keras->torch``), a ``description``
and any of

- ``rename``: rename rules (``'REGEX=>REPLACEMENT'``) on the source's names, applied after the
  user's own rules;
- ``target-rename``: rename rules on the target's names, for matching only (the output keeps the
  target's names): how a preset goes *into* a framework whose names say more than the source's;
- ``transform``: ``'GLOB=OP'`` layout rules, after the user's ``--transform`` rules;
- ``skip-target`` / ``exclude``: tensors one framework has and the other does not (PyTorch's
  BatchNorm ``num_batches_tracked``), left out on purpose so ``--strict`` does not count them.

A preset's rules that match nothing in a given model are not reported as unused rules: a preset
covers layer kinds a model may not have.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..errors import UsageError
from ..rules import RENAME_ARROW, Rule, Rules, parse_rename
from ..text import quote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    rename: tuple[str, ...] = ()
    target_rename: tuple[str, ...] = ()
    transform: tuple[str, ...] = ()
    skip_target: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    file: str = ""

    def rules(self, key: str) -> tuple[Rule, ...]:
        """The preset's ``rename`` or ``target-rename`` entries as rules named after the preset."""
        specs = self.rename if key == "rename" else self.target_rename
        out = []
        for spec in specs:
            rule = parse_rename(spec)
            out.append(Rule(rule.kind, rule.pattern, rule.replacement, f"--preset {self.name} {quote(spec)}"))
        return tuple(out)

    def layouts(self) -> tuple[tuple[str, str, str], ...]:
        """(glob, op, text) of the preset's layout rules."""
        out = []
        for spec in self.transform:
            glob, _, op = spec.rpartition("=")
            out.append((glob, op, f"--preset {self.name} {quote(spec)}"))
        return tuple(out)


def _strings(doc: dict[str, object], key: str, file: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"preset file {file}: {key!r} is not a list of strings")
    return tuple(value)


@cache
def presets() -> dict[str, Preset]:
    """Every shipped preset by name."""
    found: dict[str, Preset] = {}
    for entry in sorted(resources.files("ckptsurgeon.presets").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        doc = tomllib.loads(entry.read_text(encoding="utf-8"))
        name = str(doc["name"])
        found[name] = Preset(
            name, str(doc.get("description", "")), _strings(doc, "rename", entry.name),
            _strings(doc, "target-rename", entry.name), _strings(doc, "transform", entry.name),
            _strings(doc, "skip-target", entry.name), _strings(doc, "exclude", entry.name), entry.name,
        )
    return found


def preset(name: str) -> Preset:
    """The preset called ``name``; UsageError naming the known ones otherwise."""
    known = presets()
    if name not in known:
        raise UsageError(None, f"--preset: no preset named {quote(name)}; the presets are {', '.join(known)}",
                         hint="ckpt presets lists them")
    return known[name]


def with_presets(rules: Rules, names: tuple[str, ...] | list[str]) -> tuple[Rules, tuple[Rule, ...], tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]:
    """``rules`` with the presets' source renames and excludes added; and the presets' target renames,
    layout rules (glob, op, text) and target skips (glob, preset name)."""
    chosen = [preset(n) for n in names]
    if not chosen:
        return rules, (), (), ()
    renames = rules.renames + tuple(r for p in chosen for r in p.rules("rename"))
    exclude = rules.exclude + tuple(g for p in chosen for g in p.exclude)
    optional = set(rules.optional) | {r.text for p in chosen for r in p.rules("rename")}
    optional |= {f"--exclude {quote(g)}" for p in chosen for g in p.exclude}
    target = tuple(r for p in chosen for r in p.rules("target"))
    layouts = tuple(x for p in chosen for x in p.layouts())
    skips = tuple((g, p.name) for p in chosen for g in p.skip_target)
    return Rules(renames, rules.name_map, rules.include, exclude, frozenset(optional)), target, layouts, skips


__all__ = ["RENAME_ARROW", "Preset", "preset", "presets", "with_presets"]
