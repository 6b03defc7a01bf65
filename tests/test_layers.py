from __future__ import annotations

from ckptsurgeon.layers import group_layers, name_template, pattern_name, relative_name


def test_name_template_replaces_whole_numeric_components() -> None:
    assert name_template("h.3.attn") == ("h.{}.attn", (3,))
    assert name_template("blocks/12/mlp/fc2") == ("blocks/{}/mlp/fc2", (12,))
    assert name_template("conv2d_1") == ("conv2d_1", ())
    assert name_template("layer10x.0") == ("layer10x.{}", (0,))


def test_pattern_name_lists_ranges() -> None:
    assert pattern_name("h.{}.attn", [(0,), (1,), (2,), (3,)]) == "h.{0..3}.attn"
    assert pattern_name("h.{}.attn", [(0,), (2,), (3,), (4,), (7,)]) == "h.{0,2..4,7}.attn"
    assert pattern_name("e.{}.x.{}", [(0, 1), (1, 1)]) == "e.{0,1}.x.1"


def rows(layer: str, n: int = 2, shape: tuple[int, ...] = (4,)) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(layer, f"{layer}.w{i}", shape) for i in range(n)]


def test_identical_blocks_collapse_in_first_appearance_order() -> None:
    items = rows("emb") + rows("h.0.attn") + rows("h.0.mlp") + rows("h.1.attn") + rows("h.1.mlp") + rows("head")
    groups = group_layers(items, lambda r: r[0], lambda r: (relative_name(r[1], r[0]), r[2]))
    assert [(g.name, g.count) for g in groups] == [("emb", 1), ("h.{0,1}.attn", 2), ("h.{0,1}.mlp", 2), ("head", 1)]
    assert groups[1].members[1][0][1] == "h.1.attn.w0"


def test_blocks_that_differ_do_not_collapse() -> None:
    items = rows("h.0.attn") + rows("h.1.attn", shape=(8,)) + rows("h.2.attn")
    groups = group_layers(items, lambda r: r[0], lambda r: (relative_name(r[1], r[0]), r[2]))
    assert [g.name for g in groups] == ["h.{0,2}.attn", "h.1.attn"]
    assert [g.name for g in group_layers(items, lambda r: r[0], lambda r: r[2], collapse=False)] == [
        "h.0.attn", "h.1.attn", "h.2.attn"]


def test_relative_name() -> None:
    assert relative_name("h.0.attn.c_attn.weight", "h.0.attn") == "c_attn.weight"
    assert relative_name("layers/dense/vars/0", "dense_1") == "layers/dense/vars/0"
    assert relative_name("h.0.attnx", "h.0.attn") == "h.0.attnx"
