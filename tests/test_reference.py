"""Against genuine upstream exports (shared/reference beside the repo). Skipped, and reported so, without it.

1. headcut strips every YOLOv6 0.1.0 (and YOLOX) reference and its raw output equals the recorded
   prediction-conv outputs, laid out as documented; the decode reproduces the recorded output.
2. The project's generator writes the same decode graph as the genuine exporter: the same nodes,
   with the same attributes, fed by the same kinds of producers and constants of the same shapes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import REFERENCE

from onnx_headcut.check import session
from onnx_headcut.decode import original_output
from onnx_headcut.graph import GraphIndex
from onnx_headcut.region import decode_region
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af, yolov6_v1, yolov8, yolox

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"no reference exports at {REFERENCE}")

FILES = ["yolov6-0.1.0/yolov6n-tiny_320.onnx", "yolov6-0.1.0/yolov6n-tiny_320_inplace.onnx",
         "yolox-0.3.0/yolox_nano-tiny_320_decoded.onnx", "yolov6-0.3.0/yolov6m-tiny_320_dfl.onnx",
         "yolov6-0.3.0/yolov6n-tiny_320_sim.onnx", "yolov6-main-lite/yolov6lite_s-tiny_320_sim.onnx",
         "ultralytics-8.4/yolov8n-tiny_320.onnx"]


@pytest.mark.parametrize("rel", FILES)
def test_strip_reference(rel, tmp_path):
    src = REFERENCE / rel
    data = np.load(src.with_suffix(".npz"))
    res = strip(src, tmp_path / "raw.onnx")
    assert res.verification.ok and res.max_rank_after <= 4
    (out_key,) = [k for k in data if k.startswith("out__")]
    raw = session(str(tmp_path / "raw.onnx")).run(None, {res.head.input_name: data["input"]})[0]
    # the raw rows are the recorded conv outputs: level by level, row-major (y, x), [box, obj, cls]
    expect = np.concatenate([
        np.concatenate([data[f"raw__{b.tensor}"][0] for b in lv.branches], 0).reshape(res.head.width(), -1).T
        for lv in res.head.levels])
    np.testing.assert_allclose(raw[0], expect, atol=1e-5)
    assert np.abs(original_output(raw, res.metadata) - data[out_key]).max() <= 1e-3


def signature(model: onnx.ModelProto) -> Counter:
    """Each decode node as (op, attributes, what feeds each input): names and weight values ignored."""
    ix = GraphIndex(model)
    region = decode_region(ix, model.graph.output[0].name)
    frontier = set(region.frontier)
    sig = Counter()
    for n in region.nodes:
        if n.op_type == "Constant":
            continue
        attrs = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a)).replace("\n", " "))
                             for a in n.attribute if a.type != onnx.AttributeProto.TENSOR))
        kinds = []
        for i in n.input:
            if i in frontier:
                kinds.append("conv")
            elif ix.const_value(i) is not None:
                v = ix.const_value(i)
                kinds.append(f"const{v.shape}:{v.dtype}" + (f"={v.tolist()}" if v.size <= 5 else ""))
            else:
                kinds.append(ix.producer[i].op_type)
        sig[(n.op_type, attrs, tuple(kinds))] += 1
    return sig


@pytest.mark.parametrize("rel,make,kw", [
    ("yolov6-0.1.0/yolov6n-tiny_320.onnx", yolov6_v1, {}),
    ("yolov6-0.1.0/yolov6n-tiny_320_inplace.onnx", yolov6_v1, {"inplace": True}),
    ("yolov6-0.3.0/yolov6m-tiny_320_dfl.onnx", yolov6_af, {"reg_max": 16}),
    ("yolov6-0.3.0/yolov6n-tiny_320_sim.onnx", yolov6_af, {"simplify": True}),
    ("yolov6-main-lite/yolov6lite_s-tiny_320_sim.onnx", yolov6_af, {"levels": 4, "shuffle": True, "simplify": True}),
    ("ultralytics-8.4/yolov8n-tiny_320.onnx", yolov8, {}),
    ("yolox-0.3.0/yolox_nano-tiny_320_decoded.onnx", yolox, {}),
])
def test_generator_reproduces_the_genuine_decode_graph(rel, make, kw):
    genuine = onnx.load(str(REFERENCE / rel))
    ours = make(nc=80, size=(320, 320), width=8, **kw)
    assert signature(ours) == signature(genuine)
    assert [o.version for o in ours.opset_import] == [o.version for o in genuine.opset_import]
    assert [i.name for i in ours.graph.input] == [i.name for i in genuine.graph.input]
    assert [o.name for o in ours.graph.output] == [o.name for o in genuine.graph.output]
