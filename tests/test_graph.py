"""onnx_headcut.graph: the package's public names, its tunable limits, and the one constant evaluator
(numpy first, onnx's reference evaluator for what numpy does not cover; read-only, cached)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_headcut.graph as graph
from onnx_headcut.errors import TooLargeError
from onnx_headcut.graph import GraphIndex
from onnx_headcut.graph import constants as constants_mod


def _c(name, arr):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name))


def _model(nodes, inits=(), inputs=(), opset=13):
    out = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", list(inputs), [out], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


W = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")

#: constant chains of every op the numpy folder covers, and the value each must have
CHAINS = {
    "reshape, 0 copies a dim": ([_c("s", np.array([0, 3, 1], np.int64)),
                                 helper.make_node("Reshape", ["w", "s"], ["y"])],
                                np.arange(6, dtype=np.float32).reshape(2, 3, 1)),
    "unsqueeze, squeeze, cast": ([_c("a", np.array([0, -1], np.int64)),
                                  helper.make_node("Unsqueeze", ["w", "a"], ["u"]),
                                  _c("b", np.array([0], np.int64)), helper.make_node("Squeeze", ["u", "b"], ["q"]),
                                  helper.make_node("Cast", ["q"], ["i"], to=TensorProto.INT64),
                                  helper.make_node("Identity", ["i"], ["y"])],
                                 np.arange(6, dtype=np.int64).reshape(2, 3, 1)),
    "grid": ([_c("lo", np.array(0, np.int64)), _c("hi", np.array(3, np.int64)), _c("d", np.array(1, np.int64)),
              helper.make_node("Range", ["lo", "hi", "d"], ["r"]), _c("e", np.array([2, 3], np.int64)),
              helper.make_node("Expand", ["r", "e"], ["x"]), helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
              _c("k", np.array([1, 2], np.int64)), helper.make_node("Tile", ["t", "k"], ["tt"]),
              helper.make_node("Concat", ["tt", "tt"], ["cc"], axis=0),
              helper.make_node("Cast", ["cc"], ["f"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["f", "f"], ["m"]), helper.make_node("Sub", ["m", "f"], ["s"]),
              helper.make_node("Add", ["s", "f"], ["y"])],
             np.concatenate([np.tile(np.array([[0, 1, 2]] * 2).T, (1, 2))] * 2).astype(np.float32) ** 2),
    "slice, gather, constant of shape": ([_c("st", np.array([1], np.int64)), _c("en", np.array([3], np.int64)),
                                          _c("ax", np.array([1], np.int64)),
                                          helper.make_node("Slice", ["w", "st", "en", "ax"], ["sl"]),
                                          _c("ix", np.array([1, 0], np.int64)),
                                          helper.make_node("Gather", ["sl", "ix"], ["g"], axis=0),
                                          _c("sh", np.array([2, 2], np.int64)),
                                          helper.make_node("ConstantOfShape", ["sh"], ["z"],
                                                           value=numpy_helper.from_array(np.array([1], np.float32))),
                                          helper.make_node("Add", ["g", "z"], ["y"])],
                                         np.array([[5, 6], [2, 3]], np.float32)),
}


def test_public_names_are_re_exported():
    for name in graph.__all__:
        assert getattr(graph, name) is not None
    for gone in ("is_const", "elem_type", "model_size_on_disk"):
        assert not hasattr(graph, gone)


def test_limits_set_in_their_module_are_the_ones_checked(monkeypatch):
    monkeypatch.setattr(graph.sizes, "MAX_CONSTANT_ELEMENTS", 10)
    m = _model([_c("s", np.array([11], np.int64)), helper.make_node("ConstantOfShape", ["s"], ["y"])])
    with pytest.raises(TooLargeError, match=r"'y' \(ConstantOfShape\) would hold 11 elements, above .* of 10;"):
        GraphIndex(m).const_value("y")
    monkeypatch.setattr(graph.sizes, "MAX_INPUT_ELEMENTS", 5)
    with pytest.raises(TooLargeError, match="above headcut's limit of 5"):
        graph.check_input_size("x", (1, 6))


@pytest.mark.parametrize("chain", list(CHAINS))
def test_numpy_and_reference_evaluator_agree(chain, monkeypatch):
    nodes, expected = CHAINS[chain]
    m = _model(nodes, [W])
    before = m.SerializeToString()
    ix = GraphIndex(m)
    v = ix.const_value("y")
    assert v.dtype == expected.dtype and np.array_equal(v, expected)
    assert ix.const_value("y") is v  # cached
    assert all(o in ix._const_cache for n in nodes for o in n.output)  # intermediates too
    monkeypatch.setattr(constants_mod, "NUMPY_OPS", {})  # everything through the reference evaluator
    r = GraphIndex(m).const_value("y")
    assert r.dtype == expected.dtype and np.array_equal(r, expected)
    assert m.SerializeToString() == before  # read-only


def test_an_op_numpy_does_not_cover_goes_to_the_reference_evaluator():
    m = _model([helper.make_node("Neg", ["w"], ["n"]), helper.make_node("Cast", ["n"], ["y"], to=TensorProto.INT32)],
               [W])
    assert np.array_equal(GraphIndex(m).const_value("y"), -np.arange(6, dtype=np.int32).reshape(2, 3))


def test_non_constant_or_malformed_chains_have_no_value():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1])
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32), "v"),
                                       numpy_helper.from_array(np.array([1], np.int64), "i"), [3])
    cases = {
        "graph input": _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], inputs=[x]),
        "axes from a graph input": _model([helper.make_node("Squeeze", ["w", "x"], ["y"])], [W], [x]),
        "Shape is not folded": _model([helper.make_node("Shape", ["w"], ["y"])], [W]),
        "Cast without 'to'": _model([helper.make_node("Cast", ["w"], ["y"])], [W]),
        "shapes that do not broadcast": _model([_c("z", np.ones(4, np.float32)),
                                                helper.make_node("Add", ["w", "z"], ["y"])], [W]),
        "sparse Constant": _model([helper.make_node("Constant", [], ["y"], sparse_value=sparse)]),
        "too long a chain": _model([helper.make_node("Identity", [f"i{k - 1}" if k else "w"],
                                                     [f"i{k}" if k < 69 else "y"]) for k in range(70)], [W]),
    }
    for what, m in cases.items():
        assert GraphIndex(m).const_value("y") is None, what
    assert GraphIndex(cases["graph input"]).const_value("nothing") is None


def test_initializers_are_read_directly():
    ix = GraphIndex(_model([helper.make_node("Identity", ["w"], ["y"])], [W]))
    assert np.array_equal(ix.const_value("w"), numpy_helper.to_array(W))
    assert isinstance(ix.position(ix.producer["y"]), int)
