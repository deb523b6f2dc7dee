"""The locator: what it finds on generated exports, and what it refuses, with which reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.errors import AlreadyRawError, NoHeadError
from onnx_headcut.graph import GraphIndex
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region

from conftest import VARIANTS, build

PLAIN_OPS = {"Add": 3, "Concat": 7, "Exp": 3, "Mul": 6, "Reshape": 6, "Sigmoid": 6, "Slice": 9, "Transpose": 3}
INPLACE_OPS = {"Add": 3, "Concat": 10, "Exp": 3, "Expand": 6, "Mul": 6, "Reshape": 12, "ScatterND": 6,
               "Shape": 12, "Sigmoid": 6, "Slice": 18, "Transpose": 3}


@pytest.mark.parametrize("variant,ops", [("legacy", PLAIN_OPS), ("legacy-inplace", INPLACE_OPS)])
def test_decode_region_matches_genuine_export_histograms(variant, ops):
    """These histograms are those of genuine YOLOv6 0.1.0 exports (shared/reference/README.md)."""
    m = build(variant)
    assert dict(decode_region(GraphIndex(m), "outputs").ops) == ops


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_locate_reads_geometry_from_structure(variant):
    kw = VARIANTS[variant]
    h, w = kw.get("size", (320, 320))
    head = locate(build(variant))
    assert head.decode == "grid_exp_obj"
    assert head.strides == (8, 16, 32)
    assert [(b.role, b.size, b.sigmoid) for b in head.blocks()] == [("box", 4, False), ("obj", 1, False), ("cls", kw.get("nc", 80), False)]
    assert head.rows == sum((h // s) * (w // s) for s in (8, 16, 32))
    producer = {o: n for n in build(variant).graph.node for o in n.output}
    assert all(producer[b.tensor].op_type == "Conv" for lv in head.levels for b in lv.branches)


def test_locate_ignores_names():
    """Renaming every node and tensor changes nothing."""
    m = build("legacy")
    mapping = {}
    for i, t in enumerate(m.graph.initializer):
        mapping[t.name] = f"w{i}"
        t.name = f"w{i}"
    for k, n in enumerate(m.graph.node):
        n.name = f"n{k}"
        for j, o in enumerate(n.output):
            if o not in mapping:
                mapping[o] = f"t{k}_{j}"
            n.output[j] = mapping[o]
    for n in m.graph.node:
        for j, i in enumerate(n.input):
            n.input[j] = mapping.get(i, i)
    for o in m.graph.output:
        o.name = mapping[o.name]
    head = locate(m)
    assert head.strides == (8, 16, 32) and head.num_classes == 80


def _const_nodes(m, pred):
    for n in m.graph.node:
        if n.op_type == "Constant":
            v = numpy_helper.to_array(n.attribute[0].t)
            if pred(v):
                yield n, v


def test_refuses_grid_constant_that_does_not_match_the_feature_map():
    m = build("legacy")
    n, v = next(_const_nodes(m, lambda v: v.ndim == 5 and v.shape[-1] == 2))
    n.attribute[0].t.CopyFrom(numpy_helper.from_array(v + 0.5))
    with pytest.raises(NoHeadError, match="grid constant"):
        locate(m)


def test_refuses_a_stride_that_is_not_a_level_stride():
    m = build("legacy")
    n, v = next(_const_nodes(m, lambda v: v.ndim == 0 and v.dtype == np.float32 and v == 16.0))
    n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(12.0, np.float32)))
    with pytest.raises(NoHeadError, match=r"not a level stride"):
        locate(m)


def test_refuses_a_level_missing_its_objectness_conv():
    """Feed level 2's Concat from the box conv twice instead of the obj conv: 2 convs, not 3."""
    m = build("legacy")
    ix = GraphIndex(m)
    concats = [n for n in m.graph.node if n.op_type == "Concat" and len(n.input) == 3
               and any(ix.producer.get(i) is not None and ix.producer[i].op_type == "Conv" for i in n.input)]
    last = concats[-1]
    sig = ix.producer[last.input[1]]
    sig.input[0] = last.input[0]
    with pytest.raises(NoHeadError, match="10x10 level"):
        locate(m)


def test_refuses_a_classifier_and_says_what_it_looked_for():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((8, 10), np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["l"]),
             helper.make_node("Softmax", ["l"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "cls", [x], [y], [w, fc]))
    with pytest.raises(NoHeadError, match="looked for .*prediction convs") as e:
        locate(m)
    assert "MatMul" in str(e.value) and "\n" not in str(e.value)


def test_refuses_several_outputs():
    m = build("legacy")
    m.graph.output.append(helper.make_tensor_value_info(m.graph.node[0].output[0], TensorProto.FLOAT, None))
    with pytest.raises(NoHeadError, match="expected one decoded output, found 2"):
        locate(m)


def test_already_raw_model_is_recognised(tmp_path):
    from onnx_headcut.strip import strip

    onnx.save(build("legacy"), str(tmp_path / "in.onnx"))
    strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", verify=False)
    with pytest.raises(AlreadyRawError, match="already raw .written by headcut"):
        locate(onnx.load(str(tmp_path / "raw.onnx")))
