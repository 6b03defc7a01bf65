"""Pairing target tensors with source tensors: exact, suffix and order matching.

Everything here works on metadata: target ``TensorInfo`` records in file order and the source's
records keyed by their name after the rename rules (the record itself keeps the stored name).
Shapes decide whether a pair can be copied; dtypes are left to the planner, which casts.

Modes:

``exact``
    a target takes the source of the same name.
``suffix``
    names are split into components on ``.`` and ``/``; a source is a candidate for a target when
    the components of one name are a trailing run of the other's (whole components only:
    ``a.bias`` fits ``encoder.a.bias``, ``xa.bias`` does not). The candidate sharing the most
    trailing components wins; on a tie, a candidate of the target's shape beats the others; a tie
    that remains is reported as ambiguous, never guessed. An exact name match always wins: a
    target whose best candidate is another target's exact match gets no source (with a note).
    A source that is the best candidate of several targets makes all of them ambiguous.
``order``
    the i-th target takes the i-th source, and only when the counts and every pair of shapes agree.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .errors import CheckFailed, UsageError
from .layers import name_template
from .rules import listing
from .tensors import TensorInfo
from .text import format_shape, quote

MatchMode = Literal["exact", "suffix", "order"]
Status = Literal["matched", "shape_mismatch", "no_source", "ambiguous"]

MATCH_MODES: tuple[MatchMode, ...] = ("exact", "suffix", "order")
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model_weights/")
"""Prefixes that training wrappers put in front of every name: DataParallel / DDP (``module.``),
``torch.compile`` (``_orig_mod.``) and Keras' legacy HDF5 weight files (``model_weights/``)."""

_SHOWN = 3  # mismatching pairs listed in an order-mode error





# --- wrapper prefixes ------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixFix:
    """Strip a wrapper prefix from source names, or add one, and what that does to exact matches."""

    action: Literal["strip", "add"]
    prefix: str
    before: int  # exact name matches without the fix
    after: int  # exact name matches with it

    def apply(self, name: str) -> str:
        """The source name with the fix applied (a name without the prefix is kept when stripping)."""
        if self.action == "add":
            return self.prefix + name
        return name[len(self.prefix) :] if name.startswith(self.prefix) else name

    @property
    def rule(self) -> str:
        """The rule option that makes the same change by hand (``--add-prefix 'bert.'``)."""
        return f"--{self.action}-prefix {quote(self.prefix)}"

    @property
    def suggestion(self) -> str:
        return f"{self.rule} would pair {self.after:,} tensors ({self.before:,} now)"

    @property
    def text(self) -> str:
        verb = "stripped" if self.action == "strip" else "added"
        where = "from" if self.action == "strip" else "to"
        return f"{verb} {self.prefix!r} {where} source names ({self.before} -> {self.after} exact matches)"


def _wrapper_chains(names: Iterable[str], prefixes: Sequence[str]) -> set[str]:
    """Every run of known wrapper prefixes that starts some name: ``module.``, ``module._orig_mod.``."""
    chains: set[str] = set()
    starts = tuple(p for p in prefixes if p)
    for name in names:
        if not name.startswith(starts):  # most names: one call, no loop over the prefixes
            continue
        chain, rest = "", name
        while True:
            prefix = next((p for p in prefixes if p and rest.startswith(p)), None)
            if prefix is None or len(rest) == len(prefix):
                break
            chain += prefix
            rest = rest[len(prefix) :]
            chains.add(chain)
    return chains


def auto_prefix(
    source_names: Iterable[str],
    target_names: Iterable[str],
    prefixes: Sequence[str] = WRAPPER_PREFIXES,
) -> PrefixFix | None:
    """The wrapper-prefix fix for the source names that most increases exact name matches.

    Candidates are the runs of ``prefixes`` found at the start of source names (to strip) and of
    target names (to add to source names). A fix is returned only when it strictly increases the
    number of source names equal to a target name and does not give two source names one name;
    otherwise None. The caller applies it with :meth:`PrefixFix.apply` to every source name.
    """
    sources = list(dict.fromkeys(source_names))
    targets = set(target_names)
    chains = [("strip", chain) for chain in _wrapper_chains(sources, prefixes)]
    chains += [("add", chain) for chain in _wrapper_chains(targets, prefixes)]
    if not chains:
        return None
    before = sum(1 for name in sources if name in targets)
    candidates = [PrefixFix(action, chain, before, before) for action, chain in chains]  # type: ignore[arg-type]
    # Deterministic preference when two fixes reach the same count: strip before add, shorter first.
    candidates.sort(key=lambda fix: (fix.action != "strip", len(fix.prefix), fix.prefix))

    best: PrefixFix | None = None
    for fix in candidates:
        fixed = {fix.apply(name) for name in sources}
        if len(fixed) < len(sources):
            continue  # two source names would become one
        after = sum(1 for name in fixed if name in targets)
        if after > (best.after if best else before):
            best = replace(fix, after=after)
    return best


# --- model prefixes --------------------------------------------------------------------------

PREFIX_DEPTH = 2
"""A model prefix is the first one or two whole components of a name (``bert.``, ``model.decoder.``)."""
PREFIX_SHARE = 0.5
"""A model prefix is applied on its own when, with it, at least this share of the target tensors pair by name and shape."""


def _leading_cuts(name: str) -> Iterator[int]:
    """Where the first :data:`PREFIX_DEPTH` components of ``name`` end (just after their ``.`` or ``/``)."""
    pos = 0
    for _ in range(PREFIX_DEPTH):
        cuts = [i for i in (name.find(".", pos), name.find("/", pos)) if i >= 0]
        if not cuts or min(cuts) + 1 >= len(name):
            return
        pos = min(cuts) + 1
        yield pos


def _pairs(names: Iterable[tuple[str, tuple[int, ...]]], targets: Mapping[str, tuple[int, ...]]) -> int:
    return sum(1 for name, shape in names if targets.get(name) == shape)


def model_prefixes(
    sources: Mapping[str, tuple[int, ...]], targets: Mapping[str, tuple[int, ...]], *, most: int = 3,
) -> list[PrefixFix]:
    """The model prefixes that, added to every source name or stripped from those that have it, pair
    more tensors by name *and shape* than the names do as they are; at most ``most``, best first.

    A base model's names lack the prefix its task model puts on them (``bert.``, ``model.``) and a task
    model's names carry it, so each candidate is read off a name on one side whose rest is a name of
    the other side with the same shape. ``before`` and ``after`` count pairs of the same name and shape.
    A prefix that would give two source names one name is left out.
    """
    adds: Counter[str] = Counter()
    strips: Counter[str] = Counter()
    for name, shape in targets.items():
        if sources.get(name) != shape:  # only names not paired already can gain
            for cut in _leading_cuts(name):
                if sources.get(name[cut:]) == shape:
                    adds[name[:cut]] += 1
    for name, shape in sources.items():
        if targets.get(name) != shape:
            for cut in _leading_cuts(name):
                if targets.get(name[cut:]) == shape:
                    strips[name[:cut]] += 1
    if not adds and not strips:
        return []
    before = _pairs(sources.items(), targets)
    ranked = sorted([("add", p, n) for p, n in adds.items()] + [("strip", p, n) for p, n in strips.items()],
                    key=lambda c: (-c[2], c[0] != "strip", len(c[1]), c[1]))
    found: list[PrefixFix] = []
    for action, prefix, _ in ranked[: most * 2]:
        fix = PrefixFix(action, prefix, before, before)  # type: ignore[arg-type]
        fixed = {fix.apply(name): shape for name, shape in sources.items()}
        if len(fixed) < len(sources):
            continue  # two source names would become one
        after = _pairs(fixed.items(), targets)
        if after > before:
            found.append(replace(fix, after=after))
    found.sort(key=lambda f: -f.after)
    return found[:most]


def choose_prefix(
    wrapper: PrefixFix | None, candidates: Sequence[PrefixFix], target_count: int,
) -> tuple[PrefixFix | None, PrefixFix | None]:
    """(the fix to apply, a fix only to suggest): never two fixes applied.

    A wrapper fix (:func:`auto_prefix`) is applied as before. A model prefix is applied instead when
    it pairs more, and on its own when it pairs at least :data:`PREFIX_SHARE` of the target tensors
    and no other model prefix does; the best one not applied is the suggestion.
    """
    enough = [f for f in candidates if f.after >= PREFIX_SHARE * target_count]
    best = enough[0] if len(enough) == 1 else None
    if best is not None and (wrapper is None or best.after > wrapper.after):
        return best, None
    suggestion = next((f for f in candidates if wrapper is None or f.after > wrapper.after), None)
    return wrapper, suggestion


# --- pairings --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pairing:
    """What :func:`match` found for one target tensor.

    ``matched``: ``source`` has the target's shape and will be copied. ``shape_mismatch``: found
    by name, never copied. ``no_source``: nothing fits. ``ambiguous``: ``candidates`` are the
    source keys that could not be told apart; ``note`` says why when it is not obvious.
    """

    target: TensorInfo
    source: TensorInfo | None = None
    source_key: str | None = None
    status: Status = "no_source"
    candidates: tuple[str, ...] = ()
    note: str = ""

    @property
    def matched(self) -> bool:
        return self.status == "matched"


def _found(target: TensorInfo, key: str, source: TensorInfo) -> Pairing:
    status: Status = "matched" if source.shape == target.shape else "shape_mismatch"
    return Pairing(target, source, key, status)


def match(
    targets: Sequence[TensorInfo],
    sources: Mapping[str, TensorInfo],
    mode: MatchMode = "exact",
) -> list[Pairing]:
    """One :class:`Pairing` per target, in target order (see the module docstring for the modes).

    Raises CheckFailed in ``order`` mode when the counts or shapes disagree.
    """
    if mode == "exact":
        get = sources.get
        return [Pairing(t) if (s := get(t.name)) is None else _found(t, t.name, s) for t in targets]
    if mode == "suffix":
        return _match_suffix(targets, sources)
    if mode == "order":
        return _match_order(targets, sources)
    raise UsageError(None, f"unknown match mode {mode!r}; use one of {', '.join(MATCH_MODES)}")


def _exact(target: TensorInfo, sources: Mapping[str, TensorInfo]) -> Pairing | None:
    source = sources.get(target.name)
    return None if source is None else _found(target, target.name, source)


# --- suffix mode -----------------------------------------------------------------------------


def _components(name: str) -> tuple[str, ...]:
    """``encoder/a.bias`` -> ``("encoder", "a", "bias")``; empty parts (``a..b``, ``/a``) are dropped."""
    parts = name.replace("/", ".").split(".")
    return tuple(parts) if "" not in parts else tuple(part for part in parts if part)


@dataclass
class _Best:
    """The highest-scoring candidates offered to one target so far."""

    score: int = 0
    keys: list[str] = field(default_factory=list)

    def offer(self, score: int, key: str) -> None:
        if score > self.score:
            self.score, self.keys = score, [key]
        elif score == self.score:
            self.keys.append(key)


def _suffix_candidates(pending: Mapping[int, TensorInfo], source_keys: Iterable[str]) -> dict[int, _Best]:
    """Best suffix candidates for each pending target (by index).

    Instead of comparing every target with every source, each name is looked up by its trailing
    runs of components: a target's runs find the sources no longer than it, a source's proper
    runs find the targets shorter than it. The work is the total number of components plus the
    number of candidate pairs, and no pair is offered twice.
    """
    sources_by_parts: dict[tuple[str, ...], list[str]] = {}
    for key in source_keys:
        sources_by_parts.setdefault(_components(key), []).append(key)
    targets_by_parts: dict[tuple[str, ...], list[int]] = {}
    best: dict[int, _Best] = {}
    for index, target in pending.items():
        targets_by_parts.setdefault(_components(target.name), []).append(index)
        best[index] = _Best()

    # Only runs as long as some name on the other side can equal them are worth looking up.
    source_lengths = sorted({len(parts) for parts in sources_by_parts})
    target_lengths = sorted({len(parts) for parts in targets_by_parts})
    for parts, indices in targets_by_parts.items():
        for length in source_lengths:
            if length > len(parts):
                break
            for key in sources_by_parts.get(parts[-length:], ()):
                for index in indices:
                    best[index].offer(length, key)
    for parts, keys in sources_by_parts.items():
        for length in target_lengths:
            if length >= len(parts):
                break
            for index in targets_by_parts.get(parts[-length:], ()):
                for key in keys:
                    best[index].offer(length, key)
    return best


def _match_suffix(targets: Sequence[TensorInfo], sources: Mapping[str, TensorInfo]) -> list[Pairing]:
    pairings: list[Pairing | None] = [_exact(t, sources) for t in targets]
    taken = {p.target.name for p in pairings if p is not None}  # sources of exact matches
    pending = {i: t for i, t in enumerate(targets) if pairings[i] is None}
    position = {key: i for i, key in enumerate(sources)}

    chosen_by: dict[str, list[int]] = {}
    for index, best in _suffix_candidates(pending, sources).items():
        target = targets[index]
        keys = best.keys if len(best.keys) < 2 else sorted(best.keys, key=position.__getitem__)
        same_shape = [key for key in keys if sources[key].shape == target.shape]
        tied = same_shape or keys
        if not tied:
            pairings[index] = Pairing(target)
        elif len(tied) > 1:
            note = f"{len(tied)} sources share the last {best.score} name components"
            pairings[index] = Pairing(target, status="ambiguous", candidates=tuple(tied), note=note)
        elif tied[0] in taken:
            note = f"its best candidate {tied[0]!r} is the exact match of target {tied[0]!r}"
            pairings[index] = Pairing(target, note=note)
        else:
            pairings[index] = _found(target, tied[0], sources[tied[0]])
            chosen_by.setdefault(tied[0], []).append(index)

    for key, indices in chosen_by.items():
        if len(indices) < 2:
            continue
        for index in indices:
            others = [targets[i].name for i in indices if i != index]
            note = f"source {key!r} is also the best match for target {listing(others)}"
            pairings[index] = Pairing(targets[index], status="ambiguous", candidates=(key,), note=note)

    return [p if p is not None else Pairing(t) for p, t in zip(pairings, targets, strict=True)]


# --- order mode ------------------------------------------------------------------------------


def _match_order(targets: Sequence[TensorInfo], sources: Mapping[str, TensorInfo]) -> list[Pairing]:
    pairs = list(zip(targets, sources.items(), strict=False))  # unequal counts are reported below
    mismatched = [
        f"#{i} target {t.name!r} {format_shape(t.shape)} vs source {key!r} {format_shape(s.shape)}"
        for i, (t, (key, s)) in enumerate(pairs)
        if t.shape != s.shape
    ]
    problems = []
    if len(targets) != len(sources):
        problems.append(
            f"the target has {len(targets)} tensors and the source {len(sources)}; "
            "order matching needs the same number"
        )
    if mismatched:
        shown = "; ".join(mismatched[:_SHOWN])
        more = f"; and {len(mismatched) - _SHOWN} more" if len(mismatched) > _SHOWN else ""
        problems.append(f"{len(mismatched)} positions differ in shape: {shown}{more}")
    if problems:
        raise CheckFailed(
            None,
            "order matching refused: " + "; ".join(problems),
            hint="order matching pairs tensors by position and needs identical shapes",
        )
    return [Pairing(t, s, key, "matched") for t, (key, s) in pairs]


# --- after matching --------------------------------------------------------------------------


def unused_sources(pairings: Iterable[Pairing], sources: Mapping[str, TensorInfo]) -> list[str]:
    """Source keys, in source order, that no ``matched`` pairing uses."""
    used = {p.source_key for p in pairings if p.status == "matched"}
    return [key for key in sources if key not in used]


def did_you_mean(target: TensorInfo, unused: Iterable[TensorInfo], cutoff: float = 0.6) -> str | None:
    """The ``name`` of the unused source of the target's shape whose name is closest to the target's.

    Closeness is difflib's ratio; None when no name of that shape reaches ``cutoff``. To hint with
    renamed keys rather than stored names, pass records whose ``name`` is the key.
    """
    names = [info.name for info in unused if info.shape == target.shape]
    close = difflib.get_close_matches(target.name, names, n=1, cutoff=cutoff)
    return close[0] if close else None


class Hints:
    """:func:`did_you_mean` for every target of a plan, in time linear in the number of tensors.

    The unused sources are indexed once by shape. When more than :attr:`POOL` of them share the
    target's shape, only those with the target's block numbers (``h.7.attn`` -> ``(7,)``) are
    compared, and when those are still too many there is no hint: comparing every target with every
    unused source would be quadratic (hours for 200,000 renamed tensors).
    """

    POOL = 64

    def __init__(self, unused: Iterable[TensorInfo]) -> None:
        self._by_shape: dict[tuple[int, ...], list[TensorInfo]] = {}
        self._by_block: dict[tuple[tuple[int, ...], tuple[int, ...]], list[TensorInfo]] | None = None
        for info in unused:
            self._by_shape.setdefault(info.shape, []).append(info)

    def _block(self, shape: tuple[int, ...], numbers: tuple[int, ...]) -> list[TensorInfo]:
        if self._by_block is None:
            self._by_block = {}
            for infos in self._by_shape.values():
                if len(infos) > self.POOL:
                    for info in infos:
                        self._by_block.setdefault((info.shape, name_template(info.name)[1]), []).append(info)
        return self._by_block.get((shape, numbers), [])

    def __call__(self, target: TensorInfo) -> str | None:
        pool = self._by_shape.get(target.shape, [])
        if len(pool) > self.POOL:
            pool = self._block(target.shape, name_template(target.name)[1])
            if len(pool) > self.POOL:
                return None
        return did_you_mean(target, pool)
