"""The locator, whatever the head: names ignored, non-detectors and several outputs refused, raw models recognised.

What it finds and refuses for each head kind: ``tests/heads/test_<kind>.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import build
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.errors import AlreadyRawError, NoHeadError
from onnx_headcut.locate import locate


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
    with pytest.raises(AlreadyRawError, match="^already raw: written by headcut .YOLOv6 0.1.0, flat layout"):
        locate(onnx.load(str(tmp_path / "raw.onnx")))
