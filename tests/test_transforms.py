"""Transforms on their own: each layout against numpy's own transpose, inverses, byte ranges, resize
fills, the pieces a large tensor is cut into, and what the options refuse."""

from __future__ import annotations

import numpy as np
import pytest

from ckptsurgeon import transforms as tf
from ckptsurgeon.errors import UsageError
from ckptsurgeon.plan_transforms import framework_trap, permutation_hint
from ckptsurgeon.transforms import Concat, Layout, Resize, Slice, blocks, chain_shape, parse_layout_op


def _run(ts: tuple[tf.Transform, ...], arrays: list[np.ndarray], code: str = "F32") -> np.ndarray:
    overflow = [0]
    out = np.concatenate([b.reshape(-1) for b in blocks(ts, arrays, code, overflow)])
    shape = chain_shape(ts, [a.shape for a in arrays])
    return out.reshape(shape)


RNG = np.random.default_rng(7)


@pytest.mark.parametrize(("op", "shape", "numpy_axes"), [
    ("transpose", (3, 5), (1, 0)),
    ("hwio->oihw", (3, 2, 4, 6), (3, 2, 0, 1)),
    ("oihw->hwio", (6, 4, 3, 2), (2, 3, 1, 0)),
    ("wio->oiw", (3, 4, 6), (2, 1, 0)),
    ("dhwio->oidhw", (2, 3, 3, 4, 5), (4, 3, 0, 1, 2)),
    ("oidhw->dhwio", (5, 4, 2, 3, 3), (2, 3, 4, 1, 0)),
    ("permute:1,2,0", (2, 3, 4), (1, 2, 0)),
])
def test_a_layout_is_numpys_transpose_and_its_inverse_gives_the_input_back(op: str, shape: tuple[int, ...],
                                                                             numpy_axes: tuple[int, ...]) -> None:
    x = RNG.standard_normal(shape).astype(np.float32)
    layout = parse_layout_op(op).resolve(shape, None)
    assert isinstance(layout, Layout)
    y = _run((layout,), [x])
    assert np.array_equal(y, x.transpose(numpy_axes))
    assert np.array_equal(_run((layout.inverse(shape),), [y]), x)


def test_keras_to_torch_follows_the_rank_and_leaves_vectors_alone() -> None:
    op = parse_layout_op("keras->torch")
    assert op.resolve((7,), None) is None
    assert op.resolve((3, 4), None) == Layout("keras->torch", (1, 0))
    assert op.resolve((3, 3, 2, 8), None) == Layout("keras->torch", (3, 2, 0, 1))
    back = parse_layout_op("torch->keras")
    for shape in [(3, 4), (8, 2, 5), (8, 2, 3, 3), (8, 2, 1, 3, 3)]:
        there = op.resolve(shape, None)
        assert isinstance(there, Layout)
        again = back.resolve(there.output(shape), None)
        assert isinstance(again, Layout) and again.output(there.output(shape)) == shape
        x = RNG.standard_normal(shape).astype(np.float32)
        assert np.array_equal(_run((again,), [_run((there,), [x])]), x)


def test_a_depthwise_kernel_keeps_each_output_channel_where_both_frameworks_put_it() -> None:
    kh, kw, cin, mult = 3, 2, 4, 2
    k = RNG.standard_normal((kh, kw, cin, mult)).astype(np.float32)
    layout = parse_layout_op("depthwise-keras->torch").resolve(k.shape, None)
    assert isinstance(layout, Layout)
    w = _run((layout,), [k])
    assert w.shape == (cin * mult, 1, kh, kw)
    for i in range(cin):
        for m in range(mult):
            assert np.array_equal(w[i * mult + m, 0], k[:, :, i, m])
    back = parse_layout_op("depthwise-torch->keras").resolve(w.shape, (kh, kw, cin, mult))  # grouping from the target
    assert isinstance(back, Layout)
    assert np.array_equal(_run((back,), [w]), k)


def test_a_layout_that_does_not_fit_says_why() -> None:
    assert "rank-2" in str(parse_layout_op("transpose").resolve((3,), None))
    assert "rank-4" in str(parse_layout_op("hwio->oihw").resolve((3, 3), None))


@pytest.mark.parametrize("text", ["flip", "permute:0,0", "permute:a,b", "permute:"])
def test_an_unknown_layout_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_layout_op(text)


def test_a_split_along_the_first_axis_is_a_byte_range_and_along_another_is_not() -> None:
    assert Slice(0, 4, 8).byte_parts([(12, 5)], 4) == [(0, 4 * 5 * 4, 4 * 5 * 4)]
    assert Slice(1, 4, 8).byte_parts([(1, 12, 5)], 2) == [(0, 4 * 5 * 2, 4 * 5 * 2)]  # leading axes of 1
    assert Slice(1, 1, 2).byte_parts([(3, 4)], 4) is None
    assert Concat(0).byte_parts([(2, 3), (4, 3)], 4) == [(0, 0, 24), (1, 0, 48)]
    assert Concat(1).byte_parts([(2, 3), (2, 1)], 4) is None
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    assert np.array_equal(_run((Slice(1, 2, 5),), [x]), x[:, 2:5])
    parts = [x[:, :2], x[:, 2:]]
    assert np.array_equal(_run((Concat(1),), parts), x)


def test_resize_copies_the_overlap_and_fills_by_mode() -> None:
    src = RNG.standard_normal((5, 3)).astype(np.float32)
    tgt = np.full((7, 4), 9.0, dtype=np.float32)
    keep = _run((Resize("keep", (5, 3), (7, 4)),), [src, tgt])
    assert np.array_equal(keep[:5, :3], src) and (keep[5:] == 9).all() and (keep[:, 3] == 9).all()
    zero = _run((Resize("zero", (5, 3), (7, 4)),), [src])
    assert np.array_equal(zero[:5, :3], src) and not zero[5:].any() and not zero[:, 3].any()
    mean = _run((Resize("mean", (5, 3), (7, 3)),), [src])
    assert np.array_equal(mean[:5], src)
    assert np.allclose(mean[5:], src.astype(np.float64).mean(axis=0))
    shrink = _run((Resize("keep", (5, 3), (2, 3)),), [src, tgt[:2, :3]])
    assert np.array_equal(shrink, src[:2])
    assert Resize("mean", (32000, 8), (32064, 8), ("rows", "columns")).partial() == "rows 32000 of 32064"
    assert Resize("keep", (5, 8), (3, 8), ("rows", "columns")).partial() == "rows 3 of 5 taken"


def test_blocks_of_a_large_tensor_give_the_same_bytes_as_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf, "BLOCK_BYTES", 64)  # many blocks, a short last one
    src = RNG.standard_normal((37, 5)).astype(np.float32)
    pieces = list(blocks((Layout("transpose", (1, 0)),), [src], "F16", [0]))
    assert len(pieces) > 1 and all(p.flags.c_contiguous and p.dtype == np.float16 for p in pieces)
    assert np.array_equal(np.concatenate(pieces), src.T.astype(np.float16))
    grown = list(blocks((Resize("mean", (37, 5), (40, 5)),), [src], "F32", [0]))
    assert len(grown) > 1
    whole = np.concatenate(grown)
    assert whole.shape == (40, 5) and np.array_equal(whole[:37], src)
    assert np.allclose(whole[37:], src.astype(np.float64).mean(axis=0))  # new rows: the mean row
    both = np.concatenate(list(blocks((Resize("mean", (37, 5), (40, 6)),), [src], "F32", [0])))
    assert np.allclose(both[:37, 5], src.mean()) and np.allclose(both[37:], src.mean())  # both axes grew


def test_a_cast_in_blocks_counts_overflow() -> None:
    src = np.array([[1.0, 1e6], [70000.0, 2.0]], dtype=np.float32)
    overflow = [0]
    out = np.concatenate(list(blocks((Layout("transpose", (1, 0)),), [src], "F16", overflow)))
    assert overflow == [2] and np.isinf(out).sum() == 2


def test_a_saved_transform_that_does_not_fit_its_input_is_refused() -> None:
    assert chain_shape((Layout("t", (1, 0)), Slice(0, 0, 2)), [(4, 3)]) == (2, 4)
    for bad in [(Slice(0, 3, 9),), (Layout("t", (1, 0, 2)),), (Resize("zero", (9, 9), (3, 3)),),
                (Concat(1),), (Layout("d", (0, 1), (5, 5), None),)]:
        with pytest.raises(ValueError):
            chain_shape(bad, [(4, 3), (4, 2, 2)] if isinstance(bad[0], Concat) else [(4, 3)])


@pytest.mark.parametrize("t", [Layout("hwio->oihw", (3, 2, 0, 1)), Layout("d", (2, 3, 0, 1), (4, 2, 3, 3), None),
                               Slice(1, 2, 5, 1, 3), Concat(0), Resize("mean", (3, 4), (5, 4), ("rows", "columns"))])
def test_every_transform_survives_its_saved_form(t: tf.Transform) -> None:
    again = tf.transform_from_dict(t.to_dict())
    assert again.to_dict() == t.to_dict()


@pytest.mark.parametrize("doc", [None, {"op": "layout", "axes": [0, 0]}, {"op": "split", "axis": -1, "start": 0, "stop": 1,
                                 "index": 0, "parts": 1}, {"op": "resize", "mode": "grow", "source_shape": [1], "shape": [2]},
                                 {"op": "shuffle"}])
def test_a_malformed_saved_transform_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        tf.transform_from_dict(doc)


def test_split_and_concat_specs() -> None:
    rule = tf.parse_split(r"(.*)\.qkv\.(.*)=>\1.{q,k,v}.\2@0:8,4,4")
    assert rule.targets("h.0.qkv.weight") == ("h.0.q.weight", "h.0.k.weight", "h.0.v.weight")
    assert rule.sizes == (8, 4, 4) and rule.axis == 0
    assert rule.targets("h.0.proj.weight") is None
    join = tf.parse_concat(r"(.*)\.{q,k,v}_proj\.(\w{1,9})=>\1.in_proj_\2@1")  # {1,9} stays a quantifier
    assert join.axis == 1 and [p.pattern for p in join.parts][1] == r"(.*)\.k_proj\.(\w{1,9})"
    for bad in [r"a=>b", r"(.*)=>\1.{q}", r"(.*)=>\1.{q,k}@0:1,2,3", r"(=>{a,b}", r"(.*)=>\2.{a,b}"]:
        with pytest.raises(UsageError):
            tf.parse_split(bad)
    for bad in [r"a=>b", r"(.*)\.{q,k}=>", r"(.*)\.{q,k}=>x@0:1,2"]:
        with pytest.raises(UsageError):
            tf.parse_concat(bad)


def test_permutation_hints_and_the_framework_trap() -> None:
    assert permutation_hint((3, 5), (5, 3)) == "transpose"
    assert permutation_hint((3, 3, 2, 8), (8, 2, 3, 3)) == "hwio->oihw"
    assert permutation_hint((2, 3, 4), (4, 2, 3)) == "permute:2,0,1"
    assert permutation_hint((3, 5), (3, 6)) is None
    assert framework_trap("fc/kernel", "fc.weight", (16, 16), ()) == "keras->torch"
    assert framework_trap("fc.weight", "fc/kernel:0", (16, 16), ()) == "torch->keras"
    assert framework_trap("fc/kernel", "fc.weight", (16, 16), (Layout("transpose", (1, 0)),)) is None
    assert framework_trap("fc/bias", "fc.bias", (16,), ()) is None
    assert framework_trap("emb/embeddings", "emb.weight", (10, 4), ()) is None
