"""End-to-end NMS exports of YOLOv7 (``--end2end``, ONNX NMS or EfficientNMS_TRT) and YOLOv9/GELAN
(EfficientNMS_TRT on a channel-first DFL head), with a static or a dynamic batch (#14 part 6).

The head is located at the decoded tensor that feeds the wrapper (found by structure, with the batch
pinned to 1 when it is symbolic, also when it is channel-first and transposed before the wrapper); the cut
is verified in three layers against that tensor, and the report says the NMS was removed with the decode.
Fixtures: the generators ``synth.end2end.end2end_yolov7`` / ``end2end_yolov9`` (with ``synth.batch.dynamic_batch``)
and the torch wrappers of ``tests/torch_multiout.py`` (upstream's End2End / ONNX_ORT / ONNX_TRT).
"""

from __future__ import annotations

import onnx
import pytest

from onnx_headcut.graph import GraphIndex
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5, yolov8
from onnx_headcut.synth.batch import dynamic_batch
from onnx_headcut.synth.end2end import end2end_yolov7, end2end_yolov9
from onnx_headcut.wrappers import nms_candidates

WRAPPER_OPS = {"NonMaxSuppression", "EfficientNMS_TRT", "MatMul", "ArgMax", "ReduceMax", "Slice", "Gather", "Flatten"}

GENERATED = {  # name: (model, NMS op, decoded tensor's shape, channel first)
    "yolov7-ort": (lambda: end2end_yolov7(yolov5(width=8, v7=True), "ort"), "NonMaxSuppression", (1, 6300, 85), False),
    "yolov7-trt": (lambda: end2end_yolov7(yolov5(width=8, v7=True), "trt"), "EfficientNMS_TRT", (1, 6300, 85), False),
    "yolov9-trt": (lambda: end2end_yolov9(yolov8(width=8)), "EfficientNMS_TRT", (1, 84, 2100), True),
}


def check_end2end(src, dst, nms, shape, channel_first, dynamic):
    res = strip(src, dst)
    h = res.head
    assert tuple(h.output_shape) == shape and h.channel_first is channel_first  # located at the decoded tensor
    out_names = {o.name for o in onnx.load(str(src), load_external_data=False).graph.output}
    assert h.output_name not in out_names  # an internal tensor of the export
    for c in res.verification.checks:  # all three layers against that tensor
        assert c.ok and c.layout.max_abs_err == 0 and c.decode.ok and c.decode.max_abs_err <= 1e-3
        assert c.detections is not None and c.detections.ok and not c.not_checked()
    assert any(nms in n and "removed with the decode" in n for n in res.metadata["notes"])
    assert any("dynamic batch 'batch' pinned to 1" in n for n in h.notes) is dynamic
    raw = onnx.load(str(dst))
    assert not {n.op_type for n in raw.graph.node} & WRAPPER_OPS and len(raw.graph.output) == 1
    assert [o.domain for o in raw.opset_import] == [""]
    dims = raw.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, h.rows, h.width()]
    return res


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_end2end(name, dynamic, tmp_path):
    make, nms, shape, cf = GENERATED[name]
    model = make() if not dynamic else None
    if dynamic:  # the symbolic batch goes under the wrapper, as export.py --dynamic-batch does
        base = yolov5(width=8, v7=True) if name.startswith("yolov7") else yolov8(width=8)
        model = (end2end_yolov7(dynamic_batch(base), name.split("-")[1]) if name.startswith("yolov7")
                 else end2end_yolov9(dynamic_batch(base)))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    onnx.save(model, str(tmp_path / "e2e.onnx"))
    res = check_end2end(tmp_path / "e2e.onnx", tmp_path / "raw.onnx", nms, shape, cf, dynamic)
    if name.startswith("yolov7"):
        assert res.head.family == "YOLOv7" and res.head.anchors_from == "graph"


def test_candidates_are_never_constants():
    """The decoded tensor depends on the image: the anchor-point constant (1, 2, N) of a channel-first head
    upstream of the NMS is not tried (it was, and named in the refusal)."""
    m = end2end_yolov9(dynamic_batch(yolov8(width=8)))
    ix = GraphIndex(m)
    tried = [t for _, t, _ in nms_candidates(m)]
    assert tried and all(ix.producer[t].op_type != "Constant" and ix.const_value(t) is None for t in tried)


TORCH = {  # name: (exporter, keywords, NMS op, decoded shape, channel first)
    "yolov7-ort": ("export_yolov7_end2end", dict(max_wh=640), "NonMaxSuppression", (1, 6300, 85), False),
    "yolov7-ort-dynamic-batch": ("export_yolov7_end2end", dict(max_wh=640, dynamic_batch=True), "NonMaxSuppression",
                                 (1, 6300, 85), False),
    "yolov7-trt-dynamic-batch": ("export_yolov7_end2end", dict(max_wh=None, dynamic_batch=True), "EfficientNMS_TRT",
                                 (1, 6300, 85), False),
    "gelan-trt": ("export_gelan_end2end", dict(dynamic_batch=False), "EfficientNMS_TRT", (1, 84, 2100), True),
    "gelan-trt-dynamic-batch": ("export_gelan_end2end", dict(dynamic_batch=True), "EfficientNMS_TRT", (1, 84, 2100),
                                True),
}


@pytest.mark.parametrize("name", list(TORCH))
def test_torch_end2end(name, tmp_path):
    pytest.importorskip("torch")
    import torch_multiout

    fn, kw, nms, shape, cf = TORCH[name]
    src = getattr(torch_multiout, fn)(tmp_path / "e2e.onnx", **kw)
    m = onnx.load(str(src))
    assert nms in {n.op_type for n in m.graph.node}
    if kw.get("dynamic_batch"):
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    if nms == "NonMaxSuppression":  # ONNX_ORT: one (n, 7) output, boxes converted by the convert matrix
        assert [o.name for o in m.graph.output] == ["output"] and "MatMul" in {n.op_type for n in m.graph.node}
    else:
        assert [o.name for o in m.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    check_end2end(src, tmp_path / "raw.onnx", nms, shape, cf, bool(kw.get("dynamic_batch")))
