"""rewrite_5d: exact on the YOLOv6 chain, a channel shuffle and random chains; loud where impossible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.check import session
from onnx_headcut.errors import RewriteError
from onnx_headcut.graph import infer_shapes, max_rank
from onnx_headcut.surgery import reduce_permutation, rewrite_5d


def chain(in_shape, mid_shape, perm, out_shape=None, opset=13):
    """x(in_shape) -> Reshape(mid_shape) -> Transpose(perm) [-> Reshape(out_shape)] -> y, plus a Relu after."""
    inits = [numpy_helper.from_array(np.array(mid_shape, np.int64), "s_mid")]
    nodes = [helper.make_node("Reshape", ["x", "s_mid"], ["a"]),
             helper.make_node("Transpose", ["a"], ["b"], perm=list(perm))]
    last = "b"
    if out_shape is not None:
        inits.append(numpy_helper.from_array(np.array(out_shape, np.int64), "s_out"))
        nodes.append(helper.make_node("Reshape", ["b", "s_out"], ["c"]))
        last = "c"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def run(m, x):
    return session(m.SerializeToString()).run(None, {"x": x})[0]


def check_exact(m, in_shape):
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    out, report = rewrite_5d(m)
    assert max_rank(infer_shapes(out)) <= 4
    np.testing.assert_array_equal(run(out, x), run(m, x))
    return out, report


def test_yolov6_decode_chain():
    m = chain((1, 85, 20, 20), (1, 1, 85, 20, 20), (0, 1, 3, 4, 2), (1, -1, 85))
    out, report = check_exact(m, (1, 85, 20, 20))
    (low,) = report.lowered
    assert (low.shape_after, low.perm_after) == ((1, 85, 400), (0, 2, 1))
    assert report.max_rank_before == 5 and report.max_rank_after <= 4
    assert [n.op_type for n in out.graph.node] == ["Reshape", "Transpose", "Reshape", "Relu"]
    assert m.graph.node[1].attribute[0].ints == [0, 1, 3, 4, 2]  # the input model is not modified


def test_channel_shuffle():
    m = chain((1, 116, 10, 12), (1, 2, 58, 10, 12), (0, 2, 1, 3, 4), (1, 116, 10, 12))
    _, report = check_exact(m, (1, 116, 10, 12))
    assert (report.lowered[0].shape_after, report.lowered[0].perm_after) == ((1, 2, 58, 120), (0, 2, 1, 3))


def test_following_reshape_that_copies_dims_is_pinned():
    m = chain((2, 6, 4, 5), (2, 1, 6, 4, 5), (0, 1, 3, 4, 2), (0, -1, 6))
    check_exact(m, (2, 6, 4, 5))


def test_other_graph_parts_are_untouched():
    m = chain((1, 85, 4, 4), (1, 1, 85, 4, 4), (0, 1, 3, 4, 2), (1, -1, 85))
    out, _ = rewrite_5d(m)
    assert out.graph.node[3] == m.graph.node[3]
    assert out.graph.input == m.graph.input and out.graph.output == m.graph.output


def test_no_change_when_nothing_is_above_rank_4():
    m = chain((1, 8, 4, 4), (1, 8, 16), (0, 2, 1), (1, 16, 8))
    out, report = rewrite_5d(m)
    assert not report.changed and not report.unlowered and out.graph == m.graph


def test_raises_when_no_4d_equivalent_exists():
    m = chain((2, 3, 5, 7, 11), (2, 3, 5, 7, 11), (4, 3, 2, 1, 0), (-1,))
    with pytest.raises(RewriteError, match="no equivalent of rank <= 4"):
        rewrite_5d(m)
    _, report = rewrite_5d(m, strict=False)
    assert report.unlowered and not report.lowered


def test_raises_when_a_5d_tensor_is_consumed_as_such():
    m = chain((1, 85, 4, 4), (1, 1, 85, 4, 4), (0, 1, 3, 4, 2))  # Transpose output goes to Relu
    with pytest.raises(RewriteError, match="feeds Relu"):
        rewrite_5d(m)


@st.composite
def shapes_and_perms(draw):
    rank = draw(st.integers(5, 7))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    perm = draw(st.permutations(range(rank)))
    return tuple(shape), tuple(perm)


@settings(max_examples=60, deadline=None)
@given(shapes_and_perms())
def test_random_chains_match_onnxruntime(sp):
    shape, perm = sp
    new_shape, new_perm = reduce_permutation(shape, perm)
    x = np.arange(int(np.prod(shape)), dtype=np.float32)
    # numpy first: the reduced chain has the same element order
    np.testing.assert_array_equal(x.reshape(shape).transpose(perm).ravel(),
                                  x.reshape(new_shape).transpose(new_perm).ravel())
    m = chain((int(np.prod(shape)),), shape, perm, (-1,))
    if len(new_shape) <= 4:
        check_exact(m, (int(np.prod(shape)),))
    else:
        with pytest.raises(RewriteError):
            rewrite_5d(m)
