"""The planner, tested from hand-made TensorInfos: no files, no arrays."""

from __future__ import annotations

import pytest

from ckptsurgeon.errors import CheckFailed
from ckptsurgeon.plan import TransferOptions, gate_failures, plan_transfer
from ckptsurgeon.rules import Rules
from ckptsurgeon.tensors import TensorInfo, default_layer


def T(name: str, shape: tuple[int, ...] = (4,), dtype: str = "F32") -> TensorInfo:
    return TensorInfo(name, shape, dtype, default_layer(name))


def plan(source: list[TensorInfo], target: list[TensorInfo], **kw: object):  # type: ignore[no-untyped-def]
    rules = kw.pop("rules", Rules())
    return plan_transfer(source, target, TransferOptions(rules=rules, **kw))  # type: ignore[arg-type]


def by_name(p) -> dict:  # type: ignore[no-untyped-def]
    return {s.name: s for s in p.steps}


def test_default_is_same_name_and_shape() -> None:
    p = plan([T("a.w"), T("b.w", (3,)), T("extra")], [T("a.w"), T("b.w", (5,)), T("c.w")])
    steps = by_name(p)
    assert steps["a.w"].action == "replace" and steps["a.w"].reason == "same name and shape"
    assert steps["b.w"].action == "keep" and steps["b.w"].reason == "shape mismatch: source [3] vs target [5]"
    assert steps["c.w"].action == "keep" and steps["c.w"].kind == "no_source"
    assert [s.name for s in p.steps] == ["a.w", "b.w", "c.w"]  # the target's order, nothing else
    assert p.unused_sources == ("b.w", "extra")
    assert gate_failures(p) == []


def test_did_you_mean_names_closest_unused_source_of_same_shape() -> None:
    p = plan([T("enc.0.attn.qkv"), T("enc.0.attn.qkv_big", (9,))], [T("enc.0.attention.qkv"), T("x")])
    assert by_name(p)["enc.0.attention.qkv"].hint == "enc.0.attn.qkv"


def test_wrapper_prefix_stripped_automatically_and_reported() -> None:
    src = [T("module.conv.w"), T("module.fc.w")]
    p = plan(src, [T("conv.w"), T("fc.w")])
    assert p.prefix_fix is not None and p.prefix_fix.action == "strip" and p.prefix_fix.prefix == "module."
    assert all(s.action == "replace" for s in p.steps)
    assert by_name(p)["conv.w"].source == "module.conv.w"
    off = plan(src, [T("conv.w"), T("fc.w")], auto_prefix=False)
    assert off.prefix_fix is None and not off.replaced
    assert any("nothing was loaded" in str(f) for f in gate_failures(off))


def test_wrapper_prefix_added_when_target_has_it() -> None:
    p = plan([T("conv.w")], [T("_orig_mod.conv.w")])
    assert p.prefix_fix is not None and p.prefix_fix.action == "add"
    assert p.steps[0].action == "replace" and p.steps[0].source == "conv.w"


def test_rename_rule_with_groups_and_map_entry_beating_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    map_file = tmp_path / "map.json"
    map_file.write_text('{"layers.1.w": "special.w"}')
    rules = Rules.from_options(rename=[r"layers\.(\d+)\.=>blocks.\1."], map_file=map_file)
    p = plan([T("layers.0.w"), T("layers.1.w")], [T("blocks.0.w"), T("blocks.1.w"), T("special.w")], rules=rules)
    steps = by_name(p)
    assert steps["blocks.0.w"].source == "layers.0.w" and steps["blocks.0.w"].reason.endswith("(after rules)")
    assert steps["special.w"].source == "layers.1.w" and "map entry" in steps["special.w"].reason
    assert steps["blocks.1.w"].action == "keep"
    assert dict((r.text, n) for r, n in p.renamed.rule_counts)[r"--rename 'layers\.(\d+)\.=>blocks.\1.'"] == 1


def test_unused_rule_fails_unless_allowed() -> None:
    rules = Rules.from_options(rename=["typo=>x"])
    p = plan([T("a")], [T("a")], rules=rules)
    assert any("matched no tensor name" in str(f) and "typo" in str(f) for f in gate_failures(p))
    p = plan([T("a")], [T("a")], rules=rules, allow_unused_rules=True)
    assert gate_failures(p) == []


def test_collision_names_both_sources() -> None:
    rules = Rules.from_options(rename=[r"^(enc|dec)\.=>"])
    with pytest.raises(CheckFailed) as info:
        plan([T("enc.w"), T("dec.w")], [T("w")], rules=rules)
    assert "enc.w" in info.value.message and "dec.w" in info.value.message


def test_include_exclude_and_target_filters() -> None:
    rules = Rules.from_options(exclude=["head.*"])
    p = plan([T("body.w"), T("head.w")], [T("body.w"), T("head.w")], rules=rules)
    steps = by_name(p)
    assert steps["head.w"].kind == "source_excluded" and "--exclude 'head.*'" in steps["head.w"].reason
    assert p.excluded_sources == (("head.w", "excluded by --exclude 'head.*'"),)
    p = plan([T("body.w"), T("head.w")], [T("body.w"), T("head.w")], only_target=("body.*",))
    assert by_name(p)["head.w"].reason == "not selected by --only-target"
    p = plan([T("body.w"), T("head.w")], [T("body.w"), T("head.w")], skip_target=("head.*",))
    assert by_name(p)["head.w"].reason == "skipped by --skip-target 'head.*'"
    assert p.unused_sources == ("head.w",)


def test_suffix_mode_reports_ties_as_ambiguous_with_every_candidate() -> None:
    src = [T("model.enc.a.w"), T("model.dec.a.w"), T("x.only.w", (2,))]
    p = plan(src, [T("a.w"), T("only.w", (2,))], match="suffix")
    steps = by_name(p)
    assert steps["a.w"].kind == "ambiguous"
    assert "model.enc.a.w" in steps["a.w"].reason and "model.dec.a.w" in steps["a.w"].reason
    assert steps["only.w"].action == "replace" and steps["only.w"].source == "x.only.w"


def test_order_mode_refuses_mismatched_shapes() -> None:
    p = plan([T("x"), T("y", (2,))], [T("a"), T("b", (2,))], match="order")
    assert [s.source for s in p.steps] == ["x", "y"]
    with pytest.raises(CheckFailed):
        plan([T("x"), T("y", (3,))], [T("a"), T("b", (2,))], match="order")


def test_casts_follow_the_target_dtype_unless_kept() -> None:
    p = plan([T("w", dtype="F32"), T("n", (1,), "I64")], [T("w", dtype="BF16"), T("n", (1,), "F32")])
    steps = by_name(p)
    assert steps["w"].cast == ("F32", "BF16") and steps["w"].dtype == "BF16"
    assert steps["n"].action == "keep" and steps["n"].kind == "dtype_not_castable"
    p = plan([T("w", dtype="F32")], [T("w", dtype="BF16")], keep_dtype=True)
    assert p.steps[0].cast is None and p.steps[0].dtype == "F32"


def test_add_unmatched_appends_sources_the_target_lacks() -> None:
    p = plan([T("a"), T("new.w"), T("b", (9,))], [T("a"), T("b")], add_unmatched=True)
    assert [(s.name, s.action) for s in p.steps] == [("a", "replace"), ("b", "keep"), ("new.w", "add")]
    assert p.unused_sources == ("b",)


def test_strict_and_coverage_gates() -> None:
    p = plan([T("a"), T("unused")], [T("a"), T("b", (12,))], strict=True, min_coverage=0.5)
    failures = [str(f) for f in gate_failures(p)]
    assert any("not replaced: b" in f for f in failures)
    assert any("source tensor(s) unused: unused" in f for f in failures)
    assert any("replaced 25%" in f for f in failures)
    ok = plan([T("a"), T("b", (12,))], [T("a"), T("b", (12,))], strict=True, min_coverage=1.0)
    assert gate_failures(ok) == []


def test_empty_transfer_fails_unless_allowed() -> None:
    assert gate_failures(plan([T("x")], [T("y")]))
    assert gate_failures(plan([T("x")], [T("y")], allow_empty=True)) == []


def test_hints_for_many_renamed_blocks_compare_each_target_with_its_own_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 renamed blocks: each hint is searched among its block's sources, not among all 2,000 (quadratic)."""
    import difflib

    compared = []
    real = difflib.get_close_matches

    def counting(word, possibilities, *args, **kwargs):  # type: ignore[no-untyped-def]
        compared.append(len(possibilities))
        return real(word, possibilities, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    n = 2000
    p = plan([T(f"m.layers.{i}.attn.w") for i in range(n)], [T(f"m.layers.{i}.attention.w") for i in range(n)])
    steps = by_name(p)
    assert steps["m.layers.1234.attention.w"].hint == "m.layers.1234.attn.w"
    assert steps["m.layers.0.attention.w"].hint == "m.layers.0.attn.w"
    assert len(compared) == n and sum(compared) == n  # one candidate each, not n * n comparisons


def test_hints_among_few_sources_of_a_shape_are_unchanged() -> None:
    p = plan([T(f"enc.{i}.attn.qkv") for i in range(3)] + [T("other", (9,))], [T("enc.9.attention.qkv")])
    assert by_name(p)["enc.9.attention.qkv"].hint in {f"enc.{i}.attn.qkv" for i in range(3)}
