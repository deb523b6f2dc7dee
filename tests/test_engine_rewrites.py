"""The copies headcut hands an engine converter rewritten around its bugs (no engine needed): each rewrite is
exact in onnxruntime, and only what it is for is rewritten."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnx_headcut.engine_rewrites import constants_to_initializers, fold_constants, maxpool_edge_pad
from onnx_headcut.synth import yolov8


def _pools(pads, strides=(1, 1), chain=3, **attrs) -> onnx.ModelProto:
    """SPPF's pools: ``chain`` MaxPool 5x5 in a row after a SiLU-like shift to negatives, and a Concat."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 10])
    nodes, src, outs = [], "x", []
    for i in range(chain):
        nodes.append(helper.make_node("MaxPool", [src], [f"p{i}"], kernel_shape=[5, 5], strides=list(strides),
                                      pads=list(pads), **attrs))
        src = f"p{i}"
        outs.append(src)
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("pads, strides", [((2, 2, 2, 2), (1, 1)), ((1, 2, 3, 0), (2, 1)), ((4, 4, 4, 4), (3, 3))])
def test_maxpool_edge_pad_is_exact_on_negative_values(pads, strides):
    m = _pools(pads, strides, chain=1 if strides != (1, 1) else 3)
    copy = maxpool_edge_pad(m)
    assert copy is not None
    ops = [n.op_type for n in copy.graph.node]
    assert ops.count("Pad") == ops.count("MaxPool") and ops[0] == "Pad"
    for n in copy.graph.node:
        if n.op_type == "Pad":
            assert helper.get_attribute_value(n.attribute[0]) == b"edge"
        if n.op_type == "MaxPool":
            assert list(next(a.ints for a in n.attribute if a.name == "pads")) == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for shift in (0.0, -5.0):  # all negative: a 0 pad would win every border window
        x = (rng.standard_normal((1, 4, 12, 10)) + shift).astype(np.float32)
        np.testing.assert_array_equal(_run(copy, x), _run(m, x))
    assert [n.op_type for n in m.graph.node] == ["MaxPool"] * (len(ops) // 2) + ["Concat"]  # the model is untouched


def test_maxpool_edge_pad_leaves_what_it_cannot_prove():
    assert maxpool_edge_pad(_pools((0, 0, 0, 0))) is None  # nothing padded
    assert maxpool_edge_pad(_pools((2, 2, 2, 2), ceil_mode=1)) is None
    assert maxpool_edge_pad(_pools((2, 2, 2, 2), dilations=[2, 2])) is None
    assert maxpool_edge_pad(yolov8(width=8)) is None  # no pool in the fixture's head


def _chunks(values: dict) -> onnx.ModelProto:
    """C2f's chunk as onnxslim leaves it: a Split whose sizes come from a Constant node, then a Mul by a
    Constant of each other form (``values``: attribute name -> value)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    nodes = [helper.make_node("Constant", [], ["sizes"], value=helper.make_tensor("s", TensorProto.INT64, [2], [3, 5])),
             helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)]
    outs, src = [], "a"
    for k, (attr, v) in enumerate(values.items()):
        nodes.append(helper.make_node("Constant", [], [f"c{k}"], **{attr: v}))
        cast = f"c{k}" if attr.startswith("value_float") else f"f{k}"
        if cast != f"c{k}":
            nodes.append(helper.make_node("Cast", [f"c{k}"], [cast], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [src, cast], [f"m{k}"]))
        src = f"m{k}"
    nodes.append(helper.make_node("Constant", [], ["kept"], value_float=2.0))  # a graph output: stays a node
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (src, "b", "kept")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 18)])


def test_constants_to_initializers_is_exact_and_moves_only_main_graph_constants():
    m = _chunks({"value_float": 1.5, "value_floats": [0.5], "value_int": 3, "value_ints": [2]})
    copy = constants_to_initializers(m)
    assert copy is not None
    left = [n.output[0] for n in copy.graph.node if n.op_type == "Constant"]
    assert left == ["kept"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in copy.graph.initializer}
    assert inits["sizes"].tolist() == [3, 5] and inits["sizes"].dtype == np.int64
    assert inits["c0"].dtype == np.float32 and inits["c3"].tolist() == [2]
    x = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)
    s0 = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    for a, b in zip(s0.run(None, {"x": x}), s1.run(None, {"x": x})):
        np.testing.assert_array_equal(a, b)
    assert sum(n.op_type == "Constant" for n in m.graph.node) == 6  # the model is untouched


def test_constants_to_initializers_leaves_what_it_need_not_move():
    m = _chunks({})
    m.graph.node.pop(0)  # the sizes as an initializer already: only the graph output's Constant is left
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([3, 5], np.int64), "sizes"))
    assert constants_to_initializers(m) is None
    m = _chunks({})
    m.ir_version = 3  # initializers must also be graph inputs there
    assert constants_to_initializers(m) is None


def test_tflite_is_handed_the_copy_without_constant_nodes(tmp_path):
    """``convert`` gives onnx2tf the rewritten copy (no engine needed to see which file it is given)."""
    from onnx_headcut.convert import _rewritten
    from onnx_headcut.engines import MODULES

    m = _chunks({"value_float": 1.5})
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    (tmp_path / "scratch").mkdir()
    given = _rewritten(src, m, MODULES["tflite"], tmp_path / "scratch")
    assert given != src
    assert [n.op_type for n in onnx.load(str(given)).graph.node] == ["Split", "Mul", "Constant"]
    assert _rewritten(src, m, MODULES["mnn"], tmp_path / "scratch") == src  # other targets get the file itself


def _anchor_points(big: int = 0) -> onnx.ModelProto:
    """YOLOv6 0.3's decoded export: anchor points Expand-ed and Concat-ed from constants, added to the data path;
    ``big``: one more Expand of that many rows (over the fold limit when large), and a RandomUniform (never
    folded)."""
    from onnx import numpy_helper

    inits = [numpy_helper.from_array(np.arange(2, dtype=np.float32).reshape(1, 2, 1) + 0.5, "row"),
             numpy_helper.from_array(np.array([1, 2, 2], np.int64), "shape")]
    nodes = [helper.make_node("Constant", [], ["col"], value=numpy_helper.from_array(
                 np.arange(2, dtype=np.float32).reshape(1, 1, 2) + 0.5)),
             helper.make_node("Expand", ["row", "shape"], ["ey"]),
             helper.make_node("Expand", ["col", "shape"], ["ex"]),
             helper.make_node("Unsqueeze", ["ex", "axis"], ["ux"]),
             helper.make_node("Unsqueeze", ["ey", "axis"], ["uy"]),
             helper.make_node("Concat", ["ux", "uy"], ["xy"], axis=-1),
             helper.make_node("Reshape", ["xy", "flat"], ["pts"]),
             helper.make_node("Add", ["x", "pts"], ["y"])]
    inits += [numpy_helper.from_array(np.array([-1], np.int64), "axis"),
              numpy_helper.from_array(np.array([1, 4, 2], np.int64), "flat")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2])
    if big:
        inits.append(numpy_helper.from_array(np.array([big, 1], np.int64), "big_shape"))
        inits.append(numpy_helper.from_array(np.ones((1, 1), np.float32), "one"))
        nodes += [helper.make_node("Expand", ["one", "big_shape"], ["wide"]),
                  helper.make_node("ReduceSum", ["wide"], ["n"], keepdims=0),
                  helper.make_node("RandomUniform", [], ["noise"], shape=[1], dtype=TensorProto.FLOAT),
                  helper.make_node("Mul", ["noise", "n"], ["z"])]
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs, initializer=inits),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_fold_constants_computes_constant_subgraphs_exactly():
    m = _anchor_points()
    copy = fold_constants(m)
    assert copy is not None
    assert [n.op_type for n in copy.graph.node] == ["Add"]  # onnx2tf 1.29 fails on the Expand of constants
    assert {t.name for t in copy.graph.initializer} == {"pts"}  # what only folded nodes read is gone
    x = np.random.default_rng(0).standard_normal((1, 4, 2)).astype(np.float32)
    s0 = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(s0.run(None, {"x": x})[0], s1.run(None, {"x": x})[0])
    assert [n.op_type for n in m.graph.node].count("Expand") == 2  # the model is untouched


def test_fold_constants_leaves_large_random_and_data_path_nodes():
    from onnx_headcut.engine_rewrites import FOLD_MAX_ELEMENTS

    copy = fold_constants(_anchor_points(big=FOLD_MAX_ELEMENTS + 1))
    assert copy is not None
    ops = [n.op_type for n in copy.graph.node]
    assert ops == ["Add", "Expand", "ReduceSum", "RandomUniform", "Mul"]  # the anchor points folded, the rest kept
    small = fold_constants(_anchor_points(big=8))
    assert small is not None and [n.op_type for n in small.graph.node] == ["Add", "RandomUniform", "Mul"]
    assert maxpool_edge_pad(_pools((0, 0, 0, 0))) is None and fold_constants(_pools((2, 2, 2, 2))) is None


def test_fold_constants_folds_the_shape_of_a_static_tensor_only():
    """The ``--inplace`` export Expands its grid to the ``Shape`` of a data tensor; static, that shape is a
    constant. With a symbolic batch it is not, and stays."""
    def model(batch):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4])
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
                 helper.make_node("Shape", ["r"], ["s2"], start=1),
                 helper.make_node("Expand", ["g", "s"], ["e"]), helper.make_node("Add", ["r", "e"], ["y"]),
                 helper.make_node("Cast", ["s2"], ["z"], to=TensorProto.FLOAT)]
        g = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "g")
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")]
        return helper.make_model(helper.make_graph(nodes, "g", [x], outs, initializer=[g]),
                                 opset_imports=[helper.make_opsetid("", 18)])

    m = model(2)
    copy = fold_constants(m)
    assert copy is not None and [n.op_type for n in copy.graph.node] == ["Relu", "Add", "Cast"]
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    a = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    b = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert b[1].tolist() == [3.0, 4.0]  # Shape's start attribute
    assert fold_constants(model("batch")) is None  # a symbolic batch: nothing is constant


def test_a_rewritten_copy_over_2gb_keeps_its_weights_beside_it(tmp_path, monkeypatch):
    """The copy a converter is handed is saved as headcut saves models: over protobuf's 2 GB (here: over a
    lowered threshold) its weights go to ``<name>.data`` in the scratch folder, instead of onnx.save failing
    with a traceback (exit 1)."""
    import onnx_headcut.io as hio
    from onnx_headcut.convert import _rewritten
    from onnx_headcut.engines import MODULES

    m = _anchor_points()
    big = np.random.default_rng(1).standard_normal((512, 4, 2)).astype(np.float32)  # read by the data path
    m.graph.initializer.append(onnx.numpy_helper.from_array(big, "big"))
    m.graph.node.append(helper.make_node("Mul", ["y", "big"], ["z"]))
    m.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    monkeypatch.setattr(hio, "_EXTERNAL_THRESHOLD", 1024)
    (tmp_path / "scratch").mkdir()
    given = _rewritten(src, onnx.load(str(src)), MODULES["tflite"], tmp_path / "scratch")
    assert given != src and (tmp_path / "scratch" / "m.onnx.data").is_file()
    x = np.random.default_rng(0).standard_normal((1, 4, 2)).astype(np.float32)
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    b = ort.InferenceSession(str(given), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
