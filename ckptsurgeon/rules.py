"""Rename, filter and map rules, parsed once into frozen data and applied to plain lists of names.

Nothing here knows about sources or targets: ``ckpt transfer`` applies the rules to the source's
names, ``ckpt rename`` to one checkpoint's names, ``ckpt diff`` to either side.

How a name is processed (fixed, because a command line cannot interleave different options):

1. Filters see the name as stored. With any ``--include`` glob the name must match one of them;
   a name matching any ``--exclude`` glob is dropped. Globs are ``fnmatchcase`` (case-sensitive,
   ``*`` also crosses ``.`` and ``/``).
2. An entry of the ``--map`` file for the name gives its new name outright; the rules below are
   not applied to it.
3. Otherwise every ``--strip-prefix`` in the order given, then every ``--rename`` in the order
   given (``re.sub``: all occurrences), then every ``--add-prefix``. A rule that does not match a
   name leaves it as it is.

Two names that end up with the same new name are an error, as is a rule or map entry that never
matched when the caller asks for that check (:meth:`Renamed.check_unused`).
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from .errors import CheckFailed, Failure, InputError, UsageError
from .files import read_input
from .text import listing, quote

RuleKind = Literal["rename", "strip_prefix", "add_prefix"]

RENAME_ARROW = "=>"
_SHOWN = 4  # names listed in a message before "and N more"

# The option a rule's text starts with -> the keyword the library takes it by (Rules.from_options,
# TransferOptions). Messages of the library name rules by keyword; the CLI shows its flags.
RULE_KEYWORDS = {
    "--rename": "rename", "--strip-prefix": "strip_prefix", "--add-prefix": "add_prefix",
    "--include": "include", "--exclude": "exclude", "--only-target": "only_target", "--skip-target": "skip_target",
    "--transform": "transform", "--resize": "resize", "--split": "split", "--concat": "concat", "--preset": "preset",
}


def rule_label(text: str) -> str:
    """A rule's text (as reports list it) named by its library keyword: ``--skip-target 'fc.*'`` -> ``skip_target 'fc.*'``."""
    option, sep, rest = text.partition(" ")
    return f"{RULE_KEYWORDS[option]}{sep}{rest}" if option in RULE_KEYWORDS else text


# --- single rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rename rule. ``text`` is how the user wrote it, for reports and error messages."""

    kind: RuleKind
    pattern: str  # the regex (rename) or the prefix (strip_prefix, add_prefix)
    replacement: str  # the re.sub template (rename); "" otherwise
    text: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "rename":
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    def apply(self, name: str) -> str | None:
        """The new name, or None when the rule does not match ``name`` (add_prefix always matches)."""
        if self.kind == "strip_prefix":
            return name[len(self.pattern) :] if name.startswith(self.pattern) else None
        if self.kind == "add_prefix":
            return self.pattern + name
        assert self._regex is not None
        new, count = self._regex.subn(self.replacement, name)
        return new if count else None


def parse_rename(spec: str) -> Rule:
    """``'REGEX=>REPLACEMENT'`` into a rename rule; any problem is a UsageError now, not later.

    The spec is split on its first ``=>``; the replacement may use ``\\1`` or ``\\g<name>``.
    """
    text = f"--rename {quote(spec)}"

    def bad(problem: str) -> UsageError:
        return UsageError(None, f"{text}: {problem}", hint="write it as 'REGEX=>REPLACEMENT'")

    pattern, arrow, replacement = spec.partition(RENAME_ARROW)
    if not arrow:
        raise bad(f"no {RENAME_ARROW!r} between the pattern and the replacement")
    if not pattern:
        raise bad("the pattern is empty")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise bad(f"the pattern is not a valid regular expression: {exc}") from None
    try:
        # Compiling the template happens before any search, so this checks group references
        # and escapes in the replacement without needing a matching name.
        regex.sub(replacement, "")
    except (re.error, IndexError) as exc:
        raise bad(f"the replacement is invalid: {exc}") from None
    return Rule("rename", pattern, replacement, text)


def parse_strip_prefix(prefix: str) -> Rule:
    """A ``--strip-prefix`` rule: removes ``prefix`` once from the start of names that have it."""
    if not prefix:
        raise UsageError(None, "--strip-prefix: the prefix is empty")
    return Rule("strip_prefix", prefix, "", f"--strip-prefix {quote(prefix)}")


def parse_add_prefix(prefix: str) -> Rule:
    """An ``--add-prefix`` rule: puts ``prefix`` in front of every name."""
    if not prefix:
        raise UsageError(None, "--add-prefix: the prefix is empty")
    return Rule("add_prefix", prefix, "", f"--add-prefix {quote(prefix)}")


# --- map files -------------------------------------------------------------------------------


def load_map(path: str | Path) -> dict[str, str]:
    """An explicit old-name → new-name map from a JSON object or a TOML table of strings.

    A ``.json`` file is read as JSON and a ``.toml`` file as TOML; any other file is JSON when its
    first non-blank character is ``{`` and TOML otherwise. In TOML the entries are either the
    whole document or a ``[map]`` table; names containing dots must be quoted there
    (``"encoder.weight" = "enc.weight"``). Every problem is an InputError naming the file.
    """
    path = Path(path)
    try:
        text = read_input(path).decode("utf-8")  # a regular file: a FIFO or a device is refused, never read
    except InputError as exc:
        raise InputError(path, f"cannot read the map file: {exc.problem}") from None
    except UnicodeDecodeError:
        raise InputError(path, "is not UTF-8 text; a map file is JSON or TOML") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the map file: {exc.strerror or exc}") from None

    suffix = path.suffix.lower()
    as_json = suffix == ".json" or (suffix != ".toml" and text.lstrip().startswith("{"))
    entries = _map_entries_from_json(path, text) if as_json else _map_entries_from_toml(path, text)

    result: dict[str, str] = {}
    first_source_of: dict[str, str] = {}
    for source, target in entries:
        if not source or not target:
            raise InputError(path, f"map entry {source!r}: {target!r} has an empty name")
        if target in first_source_of:
            raise InputError(
                path, f"{first_source_of[target]!r} and {source!r} are both mapped to {target!r}"
            )
        first_source_of[target] = source
        result[source] = target
    return result


def _map_entries_from_json(path: Path, text: str) -> list[tuple[str, str]]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise InputError(path, f"the name {key!r} appears twice in the map")
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(
            path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(path, f"a JSON map must be an object of names, not {_kind(data)}")
    return _string_entries(path, data, hint=None)


def _map_entries_from_toml(path: Path, text: str) -> list[tuple[str, str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InputError(path, "reading a TOML map needs Python 3.11 or the tomli package") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"is neither a JSON object nor valid TOML: {exc}") from None
    table = data.get("map")
    if isinstance(table, dict):
        others = [key for key in data if key != "map"]
        if others:
            raise InputError(path, f"has keys besides the [map] table: {listing(others)}")
        data = table
    return _string_entries(path, data, hint="quote names that contain dots")


def _string_entries(path: Path, data: dict[str, Any], hint: str | None) -> list[tuple[str, str]]:
    for key, value in data.items():
        if not isinstance(value, str):
            raise InputError(
                path,
                f"the map entry {key!r} is {_kind(value)}; every entry must map a name to a name (a string)",
                hint=hint if isinstance(value, dict) else None,
            )
    return list(data.items())


def _kind(value: Any) -> str:
    """What a parsed JSON / TOML value is, in words for an error message."""
    if isinstance(value, dict):
        return "a nested table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


# --- the rule set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """Every rename, map and filter option of one command, in the order they apply.

    ``renames`` holds the strip-prefix, rename and add-prefix rules already in application order.
    """

    renames: tuple[Rule, ...] = ()
    name_map: tuple[tuple[str, str], ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    optional: frozenset[str] = frozenset()  # texts of rules a preset brought: not reported when they match nothing

    @classmethod
    def from_options(
        cls,
        rename: Iterable[str] | None = (),
        strip_prefix: Iterable[str] | None = (),
        add_prefix: Iterable[str] | None = (),
        map_file: str | Path | None = None,
        include: Iterable[str] | None = (),
        exclude: Iterable[str] | None = (),
    ) -> Rules:
        """Parse command-line option values (None: the option was not given); raises UsageError /
        InputError on a bad one."""
        renames = (
            *(parse_strip_prefix(p) for p in strip_prefix or ()),
            *(parse_rename(spec) for spec in rename or ()),
            *(parse_add_prefix(p) for p in add_prefix or ()),
        )
        name_map = tuple(load_map(map_file).items()) if map_file is not None else ()
        return cls(renames, name_map, tuple(include or ()), tuple(exclude or ()))

    @property
    def empty(self) -> bool:
        return not (self.renames or self.name_map or self.include or self.exclude)


@dataclass(frozen=True)
class Renamed:
    """The outcome of :func:`apply_rules`: new names, dropped names and what each rule did.

    ``glob_counts`` holds, for every ``--include`` / ``--exclude`` glob (by its option text), how
    many names it matched; ``rule_counts`` how many names each rename rule matched.
    """

    mapping: dict[str, str]
    excluded: dict[str, str]
    rule_counts: tuple[tuple[Rule, int], ...]
    map_used: int
    map_missing: tuple[str, ...]
    glob_counts: tuple[tuple[str, int], ...] = ()
    unused_map: tuple[tuple[str, str], ...] = ()
    optional: frozenset[str] = frozenset()

    def renamed(self, name: str) -> str | None:
        """The new name of a stored name; None when it was excluded (or is not one of the names)."""
        return self.mapping.get(name)

    @cached_property
    def original(self) -> dict[str, str]:
        """New name → stored name for every kept name."""
        return {new: old for old, new in self.mapping.items()}

    def unused(self) -> list[str]:
        """Rule texts, globs and map entries that matched no name, in the order they were given."""
        unused = [rule.text for rule, count in self.rule_counts if count == 0 and rule.text not in self.optional]
        unused += [text for text, count in self.glob_counts if count == 0 and text not in self.optional]
        unused += [f"map entry {source!r} -> {target!r}" for source, target in self.unused_map]
        return unused

    def check_unused(self, allow: bool = False, file: str | Path | None = None) -> None:
        """Raise CheckFailed naming every rule that matched nothing (and ``file``, whose names they were), unless ``allow``."""
        unused = self.unused()
        if unused and not allow:
            raise CheckFailed.of([unused_rules_failure(unused, file)])


def unused_rules_failure(unused: Sequence[str], file: str | Path | None = None, *, applied: bool = False) -> Failure:
    """The failure every command gives for rules, globs and map entries (their texts) that matched nothing in
    ``file``; with ``applied``, for transform rules that applied to no tensor (they may have matched names whose
    shapes needed nothing)."""
    rules = tuple(rule_label(text) for text in unused)
    what = "applied to no tensor" if applied else "matched no tensor name"
    return Failure("unused_rules", f"{_rules_word(len(rules))} {what}: {'; '.join(rules)}",
                   file=None if file is None else str(file), accept="allow_unused_rules", count=len(rules), rules=rules)


def glob_counts(names: Sequence[str], option: str, globs: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """For each glob of ``option`` (by its option text, ``--skip-target 'head.*'``): how many of ``names`` it matches.

    The same matching as ``--include`` / ``--exclude`` (``fnmatchcase``), for globs that choose
    names without dropping them (the target-side ``--only-target`` / ``--skip-target``).
    """
    compiled = [_Glob.of(option, g) for g in globs]
    return tuple((g.text, sum(1 for n in names if g.matches(n))) for g in compiled)


def glob_hit(name: str, option: str, globs: Sequence[str]) -> str | None:
    """The option text of the first of ``globs`` matching ``name`` (``--skip-target 'head.*'``), or None."""
    return next((f"{option} {quote(g)}" for g in globs if fnmatch.fnmatchcase(name, g)), None)


def _rules_word(count: int) -> str:
    return "1 rule" if count == 1 else f"{count} rules"


@dataclass(frozen=True)
class _Glob:
    text: str
    regex: re.Pattern[str]

    @classmethod
    def of(cls, option: str, glob: str) -> _Glob:
        return cls(f"{option} {quote(glob)}", re.compile(fnmatch.translate(glob)))

    def matches(self, name: str) -> bool:
        return self.regex.match(name) is not None


def apply_rules(names: Sequence[str], rules: Rules) -> Renamed:
    """Filter and rename ``names`` (stored names, in file order) as ``rules`` say.

    Raises CheckFailed when two kept names end up with the same new name, or a rule empties a name.
    """
    includes = [_Glob.of("--include", g) for g in rules.include]
    excludes = [_Glob.of("--exclude", g) for g in rules.exclude]
    glob_counts = dict.fromkeys([g.text for g in includes + excludes], 0)
    name_map = dict(rules.name_map)
    rule_counts = [0] * len(rules.renames)

    mapping: dict[str, str] = {}
    excluded: dict[str, str] = {}
    map_used: set[str] = set()
    for name in names:
        reason = _filter(name, includes, excludes, glob_counts)
        if reason is not None:
            excluded[name] = reason
            continue
        if name in name_map:
            map_used.add(name)
            mapping[name] = name_map[name]
            continue
        new = name
        for index, rule in enumerate(rules.renames):
            changed = rule.apply(new)
            if changed is not None:
                rule_counts[index] += 1
                new = changed
        if not new:
            raise CheckFailed(None, f"renaming turns {name!r} into an empty name")
        mapping[name] = new

    _check_collisions(mapping)
    present = set(names)
    return Renamed(
        mapping=mapping,
        excluded=excluded,
        rule_counts=tuple(zip(rules.renames, rule_counts, strict=True)),
        map_used=len(map_used),
        map_missing=tuple(source for source in name_map if source not in present),
        glob_counts=tuple(glob_counts.items()),
        unused_map=tuple((s, t) for s, t in rules.name_map if s not in map_used),
        optional=rules.optional,
    )


def _filter(name: str, includes: list[_Glob], excludes: list[_Glob], counts: dict[str, int]) -> str | None:
    """Why ``name`` is dropped, or None when it is kept. Counts every glob that matches it."""
    reason = None
    if includes:
        included = False
        for glob in includes:
            if glob.matches(name):
                counts[glob.text] += 1
                included = True
        if not included:
            reason = "not matched by any --include"
    for glob in excludes:
        if glob.matches(name):
            counts[glob.text] += 1
            reason = reason or f"excluded by {glob.text}"
    return reason


def _check_collisions(mapping: dict[str, str]) -> None:
    if len(set(mapping.values())) == len(mapping):
        return
    sources_of: dict[str, list[str]] = {}
    for old, new in mapping.items():
        sources_of.setdefault(new, []).append(old)
    collisions = [(new, olds) for new, olds in sources_of.items() if len(olds) > 1]
    if not collisions:
        return
    new, olds = collisions[0]
    verb = "both become" if len(olds) == 2 else "all become"
    more = len(collisions) - 1
    tail = f" (and {more} more name{'s' if more > 1 else ''} reached by several)" if more else ""
    raise CheckFailed(
        None,
        f"renaming gives several tensors one name: {listing(olds)} {verb} {new!r}{tail}",
        hint="make the rules tell them apart or exclude one",
    )
