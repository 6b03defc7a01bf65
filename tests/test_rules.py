"""Rename / filter / map rules, on plain lists of names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckptsurgeon.errors import CheckFailed, InputError, UsageError
from ckptsurgeon.rules import (
    Rule,
    Rules,
    apply_rules,
    load_map,
    parse_add_prefix,
    parse_rename,
    parse_strip_prefix,
)

# --- parsing single rules --------------------------------------------------------------------


def test_rename_with_numbered_group() -> None:
    rule = parse_rename(r"layers\.(\d+)\.=>blocks.\1.")
    assert rule.kind == "rename"
    assert rule.apply("encoder.layers.3.attn.weight") == "encoder.blocks.3.attn.weight"
    assert rule.apply("head.weight") is None


def test_rename_with_named_group_and_all_occurrences() -> None:
    rule = parse_rename(r"(?P<n>\d+)=>[\g<n>]")
    assert rule.apply("a.0.b.12") == "a.[0].b.[12]"


def test_rename_splits_on_first_arrow() -> None:
    rule = parse_rename("a=>b=>c")
    assert (rule.pattern, rule.replacement) == ("a", "b=>c")
    assert rule.apply("xa") == "xb=>c"


def test_rename_to_empty_replacement_deletes() -> None:
    assert parse_rename(r"^backbone\.=>").apply("backbone.conv.weight") == "conv.weight"


def test_rule_texts_are_shell_quoted() -> None:
    assert parse_rename("a=>b").text == "--rename 'a=>b'"
    assert parse_strip_prefix("module.").text == "--strip-prefix module."
    assert parse_add_prefix("encoder.").text == "--add-prefix encoder."


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("a.b", "no '=>'"),
        ("=>b", "pattern is empty"),
        ("(a=>b", "not a valid regular expression"),
        ("a=>\\1", "replacement is invalid"),
        ("(?P<x>a)=>\\g<y>", "replacement is invalid"),
        ("(a)=>\\2", "replacement is invalid"),
        ("a=>\\q", "replacement is invalid"),
    ],
)
def test_bad_rename_is_a_usage_error_at_parse_time(spec: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_rename(spec)
    assert info.value.path is None
    assert info.value.problem.startswith("--rename ")
    assert problem in info.value.problem


def test_empty_prefixes_are_refused() -> None:
    with pytest.raises(UsageError):
        parse_strip_prefix("")
    with pytest.raises(UsageError):
        parse_add_prefix("")


def test_prefix_rules() -> None:
    strip = parse_strip_prefix("module.")
    assert strip.apply("module.module.fc.weight") == "module.fc.weight"  # once
    assert strip.apply("fc.weight") is None
    assert parse_add_prefix("enc.").apply("fc.weight") == "enc.fc.weight"


def test_rules_are_frozen_and_comparable() -> None:
    rule = parse_rename("a=>b")
    assert rule == parse_rename("a=>b")
    assert hash(rule) == hash(parse_rename("a=>b"))
    with pytest.raises(AttributeError):
        rule.pattern = "c"  # type: ignore[misc]


# --- order of application --------------------------------------------------------------------


def test_fixed_order_strip_then_rename_then_add() -> None:
    rules = Rules.from_options(
        add_prefix=["model."],
        rename=[r"^fc\.=>head."],
        strip_prefix=["module."],
    )
    assert [r.kind for r in rules.renames] == ["strip_prefix", "rename", "add_prefix"]
    result = apply_rules(["module.fc.weight"], rules)
    # The rename anchors at the start, so it only works on the stripped name.
    assert result.mapping == {"module.fc.weight": "model.head.weight"}


def test_renames_apply_in_the_order_given() -> None:
    rules = Rules.from_options(rename=["a=>b", "b=>c"])
    assert apply_rules(["a"], rules).mapping == {"a": "c"}
    rules = Rules.from_options(rename=["b=>c", "a=>b"])
    assert apply_rules(["a"], rules).mapping == {"a": "b"}


def test_map_entry_beats_the_rules(tmp_path: Path) -> None:
    map_file = tmp_path / "map.json"
    map_file.write_text('{"module.fc.weight": "classifier.weight"}')
    rules = Rules.from_options(strip_prefix=["module."], map_file=map_file)
    result = apply_rules(["module.fc.weight", "module.fc.bias"], rules)
    assert result.mapping == {"module.fc.weight": "classifier.weight", "module.fc.bias": "fc.bias"}
    assert result.map_used == 1
    assert result.rule_counts == ((parse_strip_prefix("module."), 1),)


# --- results ---------------------------------------------------------------------------------


def test_counts_and_unused_rules_listed() -> None:
    rules = Rules(
        renames=(parse_strip_prefix("module."), parse_rename("typo=>x")),
        name_map=(("fc.weight", "head.weight"), ("missing", "gone")),
        exclude=("nothing.*",),
    )
    result = apply_rules(["module.a", "module.b", "fc.weight"], rules)
    assert dict(result.rule_counts) == {rules.renames[0]: 2, rules.renames[1]: 0}
    assert result.map_used == 1
    assert result.map_missing == ("missing",)
    assert result.unused() == [
        "--rename 'typo=>x'",
        "--exclude 'nothing.*'",
        "map entry 'missing' -> 'gone'",
    ]
    with pytest.raises(CheckFailed) as info:
        result.check_unused(allow=False)
    assert "3 rules matched no tensor name" in info.value.problem
    assert "rename 'typo=>x'" in info.value.problem and "--" not in info.value.problem  # the library names no flag
    assert info.value.failures[0].rules == ("rename 'typo=>x'", "exclude 'nothing.*'", "map entry 'missing' -> 'gone'")
    result.check_unused(allow=True)


def test_no_unused_rules_passes_the_check() -> None:
    result = apply_rules(["module.a"], Rules.from_options(strip_prefix=["module."]))
    assert result.unused() == []
    result.check_unused()


def test_collision_names_both_sources() -> None:
    rules = Rules.from_options(strip_prefix=["module."])
    with pytest.raises(CheckFailed) as info:
        apply_rules(["module.fc.weight", "fc.weight", "x"], rules)
    problem = info.value.problem
    assert "'module.fc.weight' and 'fc.weight' both become 'fc.weight'" in problem
    assert info.value.exit_code == 1


def test_collision_of_many_names_lists_a_few() -> None:
    names = [f"layer{i}.weight" for i in range(7)]
    with pytest.raises(CheckFailed) as info:
        apply_rules(names, Rules.from_options(rename=[r"layer\d+=>layer"]))
    assert "'layer0.weight', 'layer1.weight', 'layer2.weight', 'layer3.weight' and 3 more all become" in (
        info.value.problem
    )


def test_map_onto_a_renamed_name_collides() -> None:
    rules = Rules(renames=(parse_rename("^b=>a"),), name_map=(("c", "a"),))
    with pytest.raises(CheckFailed, match="'b' and 'c' both become 'a'"):
        apply_rules(["b", "c"], rules)


def test_rule_emptying_a_name_fails() -> None:
    with pytest.raises(CheckFailed, match="empty name"):
        apply_rules(["module."], Rules.from_options(strip_prefix=["module."]))


def test_include_and_exclude_reasons() -> None:
    rules = Rules.from_options(include=["encoder.*", "head.*"], exclude=["head.*", "*.num_batches_tracked"])
    names = ["encoder.w", "encoder.bn.num_batches_tracked", "head.w", "decoder.w"]
    result = apply_rules(names, rules)
    assert result.mapping == {"encoder.w": "encoder.w"}
    assert result.excluded == {
        "encoder.bn.num_batches_tracked": "excluded by --exclude '*.num_batches_tracked'",
        "head.w": "excluded by --exclude 'head.*'",
        "decoder.w": "not matched by any --include",
    }
    assert result.renamed("encoder.w") == "encoder.w"
    assert result.renamed("head.w") is None
    assert result.unused() == []


def test_filters_see_stored_names_and_are_case_sensitive() -> None:
    rules = Rules.from_options(strip_prefix=["module."], exclude=["module.Head.*"])
    result = apply_rules(["module.Head.w", "module.head.w"], rules)
    assert result.mapping == {"module.head.w": "head.w"}
    assert list(result.excluded) == ["module.Head.w"]


def test_excluded_names_are_not_renamed_or_counted() -> None:
    rules = Rules.from_options(rename=["^head=>cls"], exclude=["head.*"])
    result = apply_rules(["head.w", "body.w"], rules)
    assert result.rule_counts == ((rules.renames[0], 0),)
    assert result.unused() == ["--rename '^head=>cls'"]


def test_mapping_keeps_input_order_and_reverse_lookup() -> None:
    result = apply_rules(["c", "a", "b"], Rules.from_options(add_prefix=["x."]))
    assert list(result.mapping) == ["c", "a", "b"]
    assert result.original == {"x.c": "c", "x.a": "a", "x.b": "b"}


@given(st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=30))
def test_no_rules_is_the_identity(names: list[str]) -> None:
    result = apply_rules(names, Rules())
    assert result.mapping == {name: name for name in names}
    assert result.excluded == {}
    assert result.unused() == []


_COMPONENT = st.text(alphabet="abcxyz0129_", min_size=1, max_size=5)


@given(st.lists(st.lists(_COMPONENT, min_size=1, max_size=4).map(".".join), unique=True, max_size=30))
def test_add_then_strip_the_same_prefix_is_the_identity(names: list[str]) -> None:
    added = apply_rules(names, Rules.from_options(add_prefix=["wrap."])).mapping
    back = apply_rules(list(added.values()), Rules.from_options(strip_prefix=["wrap."])).mapping
    assert [back[added[name]] for name in names] == names


# --- map files -------------------------------------------------------------------------------


def test_json_map(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text('{"a.weight": "b.weight", "a.bias": "b.bias"}')
    assert load_map(path) == {"a.weight": "b.weight", "a.bias": "b.bias"}


def test_toml_flat_and_map_table(tmp_path: Path) -> None:
    flat = tmp_path / "flat.toml"
    flat.write_text('"a.weight" = "b.weight"\nplain = "other"\n')
    assert load_map(flat) == {"a.weight": "b.weight", "plain": "other"}
    table = tmp_path / "table.toml"
    table.write_text('[map]\n"a.weight" = "b.weight"\n')
    assert load_map(table) == {"a.weight": "b.weight"}


def test_format_by_content_without_known_extension(tmp_path: Path) -> None:
    as_json = tmp_path / "names.txt"
    as_json.write_text('  {"a": "b"}')
    as_toml = tmp_path / "names.cfg"
    as_toml.write_text('a = "b"\n')
    assert load_map(as_json) == load_map(as_toml) == {"a": "b"}


@pytest.mark.parametrize(
    ("filename", "content", "problem"),
    [
        ("m.json", '["a", "b"]', "must be an object"),
        ("m.json", '{"a": 1}', "'a' is a number"),
        ("m.json", '{"a": null}', "'a' is null"),
        ("m.json", '"just a string"', "not a string"),
        ("m.json", '{"a": {"b": "c"}}', "'a' is a nested table"),
        ("m.json", '{"a": "x", "a": "y"}', "'a' appears twice"),
        ("m.json", '{"a": "x",}', "not valid JSON"),
        ("m.json", '{"a": "x", "b": "x"}', "'a' and 'b' are both mapped to 'x'"),
        ("m.json", '{"a": ""}', "empty name"),
        ("m.toml", 'a.weight = "b"\n', "'a' is a nested table"),
        ("m.toml", "a = true\n", "'a' is a boolean"),
        ("m.toml", 'a = "x"\nb = "x"\n', "'a' and 'b' are both mapped to 'x'"),
        ("m.toml", "a = [1]\n", "'a' is a list"),
        ("m.toml", '[map]\na = "b"\n[other]\nc = "d"\n', "besides the [map] table"),
        ("m.toml", "a = \n", "valid TOML"),
        ("m.cfg", "neither", "neither a JSON object nor valid TOML"),
    ],
)
def test_bad_map_files(tmp_path: Path, filename: str, content: str, problem: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_map(path)
    assert info.value.path == str(path)
    assert problem in info.value.problem
    assert "\n" not in info.value.message


def test_dotted_toml_key_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('encoder.weight = "enc.weight"\n')
    with pytest.raises(InputError) as info:
        load_map(path)
    assert info.value.hint == "quote names that contain dots"


def test_unreadable_map_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_map(tmp_path / "missing.json")
    with pytest.raises(InputError, match="cannot read"):
        load_map(tmp_path)
    binary = tmp_path / "m.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="UTF-8"):
        load_map(binary)


def test_from_options_reads_the_map_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"z": "1", "a": "2"}')
    assert Rules.from_options(map_file=path).name_map == (("z", "1"), ("a", "2"))


def test_rule_direct_construction() -> None:
    rule = Rule("rename", r"(\w+)\.w", r"\1.weight", "--rename x")
    assert rule.apply("fc.w") == "fc.weight"
    assert Rules().empty
    assert not Rules(include=("a",)).empty
