"""Matching target tensors with source tensors, from hand-made TensorInfos."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckptsurgeon.errors import CheckFailed, UsageError
from ckptsurgeon.match import (
    WRAPPER_PREFIXES,
    Pairing,
    PrefixFix,
    auto_prefix,
    choose_prefix,
    did_you_mean,
    match,
    model_prefixes,
    unused_sources,
)
from ckptsurgeon.tensors import TensorInfo


def info(name: str, *shape: int, dtype: str = "F32") -> TensorInfo:
    return TensorInfo(name, tuple(shape), dtype)


def by_key(*infos: TensorInfo) -> dict[str, TensorInfo]:
    return {i.name: i for i in infos}


def statuses(pairings: list[Pairing]) -> dict[str, tuple[str, str | None]]:
    return {p.target.name: (p.status, p.source_key) for p in pairings}


# --- auto prefix -----------------------------------------------------------------------------


def test_auto_prefix_strips_a_source_wrapper() -> None:
    fix = auto_prefix(["module.fc.weight", "module.fc.bias"], ["fc.weight", "fc.bias"])
    assert fix == PrefixFix("strip", "module.", 0, 2)
    assert fix.apply("module.fc.weight") == "fc.weight"
    assert fix.apply("other") == "other"
    assert "'module.'" in fix.text


def test_auto_prefix_adds_the_target_wrapper() -> None:
    fix = auto_prefix(
        ["dense/kernel:0", "dense/bias:0"], ["model_weights/dense/kernel:0", "model_weights/dense/bias:0"]
    )
    assert fix == PrefixFix("add", "model_weights/", 0, 2)
    assert fix.apply("dense/bias:0") == "model_weights/dense/bias:0"


def test_auto_prefix_strips_nested_wrappers() -> None:
    fix = auto_prefix(["module._orig_mod.a", "module._orig_mod.b"], ["a", "b"])
    assert fix is not None
    assert (fix.action, fix.prefix, fix.after) == ("strip", "module._orig_mod.", 2)


def test_auto_prefix_is_none_when_names_already_match() -> None:
    assert auto_prefix(["a", "b"], ["a", "b"]) is None
    assert auto_prefix(["module.a"], ["module.a"]) is None


def test_auto_prefix_never_lowers_matches() -> None:
    # Stripping would gain 'x' but lose two matches that already carry the prefix.
    sources = ["module.a", "module.b", "module.x"]
    targets = ["module.a", "module.b", "x"]
    assert auto_prefix(sources, targets) is None


def test_auto_prefix_refuses_a_fix_that_merges_source_names() -> None:
    assert auto_prefix(["module.a", "a", "module.b"], ["b"]) is None


def test_auto_prefix_with_extended_prefixes() -> None:
    prefixes = (*WRAPPER_PREFIXES, "ema.")
    assert auto_prefix(["ema.w"], ["w"]) is None
    fix = auto_prefix(["ema.w"], ["w"], prefixes=prefixes)
    assert fix is not None and fix.prefix == "ema."


# --- model prefixes --------------------------------------------------------------------------

BASE = {"embeddings.word.weight": (50, 8), "encoder.layer.0.q.weight": (8, 8), "encoder.layer.0.q.bias": (8,),
        "pooler.dense.weight": (8, 8)}


def test_a_base_model_gets_the_task_models_prefix() -> None:
    task = {f"bert.{name}": shape for name, shape in BASE.items()} | {"classifier.weight": (2, 8), "classifier.bias": (2,)}
    found = model_prefixes(BASE, task)
    assert found == [PrefixFix("add", "bert.", 0, 4)]
    assert choose_prefix(None, found, len(task)) == (found[0], None)  # 4 of 6 targets: applied
    assert found[0].rule == "--add-prefix bert." and found[0].suggestion == "--add-prefix bert. would pair 4 tensors (0 now)"


def test_a_task_model_loses_its_prefix_into_a_base_model() -> None:
    task = {f"model.{name}": shape for name, shape in BASE.items()} | {"lm_head.weight": (50, 8)}
    found = model_prefixes(task, BASE)
    assert found[0] == PrefixFix("strip", "model.", 0, 4)
    assert choose_prefix(None, found, len(BASE))[0] == found[0]


def test_a_prefix_counts_only_pairs_of_the_same_shape() -> None:
    task = {f"bert.{name}": (1,) for name in BASE}  # every shape differs
    assert model_prefixes(BASE, task) == []


def test_a_prefix_that_pairs_too_few_is_only_suggested() -> None:
    targets = {"bert.pooler.dense.weight": (8, 8)} | {f"head.{i}": (3,) for i in range(5)}
    found = model_prefixes(BASE, targets)
    assert found == [PrefixFix("add", "bert.", 0, 1)]
    assert choose_prefix(None, found, len(targets)) == (None, found[0])  # 1 of 6 targets: below half


def test_two_prefixes_that_both_pair_most_targets_are_never_applied() -> None:
    fixes = [PrefixFix("add", "a.", 0, 6), PrefixFix("add", "b.", 0, 5)]
    assert choose_prefix(None, fixes, 8) == (None, fixes[0])


def test_a_wrapper_fix_stays_unless_a_model_prefix_pairs_more() -> None:
    wrapper = PrefixFix("strip", "module.", 0, 3)
    assert choose_prefix(wrapper, [PrefixFix("add", "bert.", 0, 3)], 4) == (wrapper, None)
    better = PrefixFix("add", "bert.", 0, 4)
    assert choose_prefix(wrapper, [better], 4) == (better, None)


def test_names_that_already_pair_find_no_prefix() -> None:
    assert model_prefixes(BASE, dict(BASE)) == []


# --- exact -----------------------------------------------------------------------------------


def test_exact_statuses() -> None:
    targets = [info("a", 2, 3), info("b", 4), info("c", 1)]
    sources = by_key(info("a", 2, 3, dtype="F16"), info("b", 5), info("z", 1))
    pairings = match(targets, sources, "exact")
    assert [p.target.name for p in pairings] == ["a", "b", "c"]
    assert statuses(pairings) == {
        "a": ("matched", "a"),
        "b": ("shape_mismatch", "b"),
        "c": ("no_source", None),
    }
    mismatch = pairings[1]
    assert mismatch.source is not None and (mismatch.source.shape, mismatch.target.shape) == ((5,), (4,))


def test_source_record_keeps_the_stored_name() -> None:
    stored = info("module.a", 2)
    pairing = match([info("a", 2)], {"a": stored})[0]
    assert pairing.source_key == "a"
    assert pairing.source is stored


_NAMES = st.lists(st.text(alphabet="ab./", min_size=1, max_size=6), unique=True, max_size=20)


@given(_NAMES, _NAMES)
def test_exact_pairs_every_equal_name(target_names: list[str], source_names: list[str]) -> None:
    targets = [info(n, 1) for n in target_names]
    sources = by_key(*(info(n, 1) for n in source_names))
    for pairing in match(targets, sources, "exact"):
        if pairing.target.name in sources:
            assert (pairing.status, pairing.source_key) == ("matched", pairing.target.name)
        else:
            assert pairing.status == "no_source"


@given(_NAMES)
def test_suffix_on_identical_names_is_exact(names: list[str]) -> None:
    targets = [info(n, 1) for n in names]
    assert all(
        p.status == "matched" and p.source_key == p.target.name
        for p in match(targets, by_key(*targets), "suffix")
    )


# --- suffix ----------------------------------------------------------------------------------


def test_suffix_longest_common_run_wins() -> None:
    targets = [info("model.encoder.a.bias", 4)]
    sources = by_key(info("bias", 4), info("a.bias", 4), info("encoder.a.bias", 4), info("decoder.a.bias", 4))
    assert statuses(match(targets, sources, "suffix")) == {
        "model.encoder.a.bias": ("matched", "encoder.a.bias")
    }


def test_suffix_source_longer_than_target() -> None:
    targets = [info("a.bias", 4)]
    sources = by_key(info("backbone.a.bias", 4))
    assert statuses(match(targets, sources, "suffix")) == {"a.bias": ("matched", "backbone.a.bias")}


def test_suffix_dot_and_slash_are_both_separators() -> None:
    targets = [info("dense/kernel:0", 3, 4)]
    sources = by_key(info("model.dense.kernel:0", 3, 4))
    assert statuses(match(targets, sources, "suffix"))["dense/kernel:0"] == (
        "matched",
        "model.dense.kernel:0",
    )


def test_suffix_whole_components_only() -> None:
    targets = [info("encoder.a.bias", 4)]
    sources = by_key(info("xa.bias", 4))
    # 'bias' alone is shared, but 'xa.bias' is not a trailing run of the target's components.
    assert statuses(match(targets, sources, "suffix")) == {"encoder.a.bias": ("no_source", None)}


def test_suffix_shape_breaks_a_tie() -> None:
    targets = [info("fc.weight", 10, 5)]
    sources = by_key(info("cls.fc.weight", 10, 5), info("box.fc.weight", 4, 5))
    # Both sources share the target's two components; only one has its shape.
    assert statuses(match(targets, sources, "suffix")) == {"fc.weight": ("matched", "cls.fc.weight")}


def test_suffix_score_beats_shape() -> None:
    targets = [info("enc.fc.weight", 10, 5)]
    sources = by_key(info("enc.fc.weight.x", 1), info("fc.weight", 4, 5), info("weight", 10, 5))
    pairing = match(targets, sources, "suffix")[0]
    assert (pairing.status, pairing.source_key) == ("shape_mismatch", "fc.weight")


def test_suffix_remaining_tie_is_ambiguous_with_every_candidate() -> None:
    targets = [info("fc.weight", 10, 5)]
    sources = by_key(info("cls.fc.weight", 10, 5), info("box.fc.weight", 10, 5), info("aux.fc.weight", 3))
    pairing = match(targets, sources, "suffix")[0]
    assert pairing.status == "ambiguous"
    assert pairing.source is None and pairing.source_key is None
    assert pairing.candidates == ("cls.fc.weight", "box.fc.weight")  # source order; wrong shape dropped


def test_suffix_tie_without_the_right_shape_lists_all() -> None:
    targets = [info("fc.weight", 10, 5)]
    sources = by_key(info("cls.fc.weight", 1), info("box.fc.weight", 2))
    pairing = match(targets, sources, "suffix")[0]
    assert (pairing.status, pairing.candidates) == ("ambiguous", ("cls.fc.weight", "box.fc.weight"))


def test_suffix_source_claimed_twice_makes_both_ambiguous() -> None:
    targets = [info("encoder.norm.weight", 8), info("decoder.norm.weight", 8), info("head.weight", 2)]
    sources = by_key(info("norm.weight", 8), info("head.weight", 2))
    pairings = match(targets, sources, "suffix")
    enc, dec, head = pairings
    assert (enc.status, enc.candidates) == ("ambiguous", ("norm.weight",))
    assert (dec.status, dec.candidates) == ("ambiguous", ("norm.weight",))
    assert "'decoder.norm.weight'" in enc.note and "'encoder.norm.weight'" in dec.note
    assert (head.status, head.source_key) == ("matched", "head.weight")


def test_suffix_exact_match_wins_over_suffix_claims() -> None:
    targets = [info("norm.weight", 8), info("encoder.norm.weight", 8)]
    sources = by_key(info("norm.weight", 8))
    exact, other = match(targets, sources, "suffix")
    assert (exact.status, exact.source_key) == ("matched", "norm.weight")
    assert other.status == "no_source"
    assert "exact match of target 'norm.weight'" in other.note


def test_suffix_does_not_fall_back_past_an_exactly_claimed_source() -> None:
    targets = [info("a.bias", 4), info("dec.a.bias", 4)]
    sources = by_key(info("a.bias", 4), info("bias", 4))
    assert statuses(match(targets, sources, "suffix")) == {
        "a.bias": ("matched", "a.bias"),
        "dec.a.bias": ("no_source", None),
    }


def test_suffix_with_many_tensors_in_target_order() -> None:
    targets = [info(f"model.layers.{i}.mlp.weight", i + 1) for i in range(500)]
    sources = by_key(*(info(f"layers.{i}.mlp.weight", i + 1) for i in reversed(range(500))))
    pairings = match(targets, sources, "suffix")
    assert [p.source_key for p in pairings] == [f"layers.{i}.mlp.weight" for i in range(500)]
    assert all(p.matched for p in pairings)


# --- order -----------------------------------------------------------------------------------


def test_order_pairs_by_position() -> None:
    targets = [info("dense/kernel:0", 3, 4), info("dense/bias:0", 4)]
    sources = {"w": info("fc.weight", 3, 4), "b": info("fc.bias", 4)}
    pairings = match(targets, sources, "order")
    assert [(p.status, p.source_key) for p in pairings] == [("matched", "w"), ("matched", "b")]
    assert pairings[0].source == info("fc.weight", 3, 4)


def test_order_refuses_mismatched_shapes() -> None:
    targets = [info("k", 3, 4), info("b", 4), info("k2", 4, 4)]
    sources = by_key(info("w", 4, 3), info("c", 4), info("w2", 4, 5))
    with pytest.raises(CheckFailed) as exc:
        match(targets, sources, "order")
    problem = exc.value.problem
    assert "2 positions differ in shape" in problem
    assert "#0 target 'k' [3, 4] vs source 'w' [4, 3]" in problem
    assert "#2 target 'k2'" in problem


def test_order_refuses_different_counts() -> None:
    with pytest.raises(CheckFailed, match="the target has 2 tensors and the source 1"):
        match([info("a", 1), info("b", 1)], by_key(info("x", 1)), "order")


def test_unknown_mode() -> None:
    with pytest.raises(UsageError, match="unknown match mode"):
        match([], {}, "fuzzy")  # type: ignore[arg-type]


# --- after matching --------------------------------------------------------------------------


def test_unused_sources_excludes_only_copied_ones() -> None:
    targets = [info("a", 1), info("b", 2)]
    sources = by_key(info("z", 1), info("a", 1), info("b", 3))
    assert unused_sources(match(targets, sources), sources) == ["z", "b"]


def test_did_you_mean_picks_the_closest_name_of_the_same_shape() -> None:
    target = info("encoder.layer.0.attention.weight", 64, 64)
    unused = [
        info("encoder.layer.0.attn.weight", 64, 64),
        info("encoder.layer.0.attention.weight_v", 64, 32),
        info("decoder.out.bias", 64, 64),
    ]
    assert did_you_mean(target, unused) == "encoder.layer.0.attn.weight"
    assert did_you_mean(target, unused[1:2]) is None  # close name, other shape
    assert did_you_mean(target, [info("zzz", 64, 64)]) is None  # same shape, nothing alike
    assert did_you_mean(target, []) is None
