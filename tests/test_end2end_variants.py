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

from onnx_headcut.check.engine import conf_reached_by
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, is_static
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5, yolov8
from onnx_headcut.synth.batch import dynamic_batch
from onnx_headcut.synth.end2end import end2end_yolov7, end2end_yolov9
from onnx_headcut.wrappers import batch_pinned_shapes, nms_candidates

WRAPPER_OPS = {"NonMaxSuppression", "EfficientNMS_TRT", "MatMul", "ArgMax", "ReduceMax", "Slice", "Gather", "Flatten"}

GENERATED = {  # name: (model, NMS op, decoded tensor's shape, channel first)
    "yolov7-ort": (lambda: end2end_yolov7(yolov5(width=8, v7=True), "ort"), "NonMaxSuppression", (1, 6300, 85), False),
    "yolov7-trt": (lambda: end2end_yolov7(yolov5(width=8, v7=True), "trt"), "EfficientNMS_TRT", (1, 6300, 85), False),
    "yolov9-trt": (lambda: end2end_yolov9(yolov8(width=8)), "EfficientNMS_TRT", (1, 84, 2100), True),
}


def check_end2end(src, dst, nms, shape, channel_first, dynamic):
    conf = conf_reached_by(src)  # random weights: the default 0.25 would compare 0 detections with 0
    res = strip(src, dst, conf=conf)
    h = res.head
    assert tuple(h.output_shape) == shape and h.channel_first is channel_first  # located at the decoded tensor
    out_names = {o.name for o in onnx.load(str(src), load_external_data=False).graph.output}
    assert h.output_name not in out_names  # an internal tensor of the export
    for c in res.verification.checks:  # all three layers against that tensor
        assert c.ok and c.layout.max_abs_err == 0 and c.decode.ok and c.decode.max_abs_err <= 1e-3
        assert c.detections is not None and c.detections.ok and not c.not_checked()
        assert c.detections.conf == conf and c.detections.matched > 0
    assert any(nms in n and "removed with the decode" in n for n in res.metadata["notes"])
    assert any("dynamic batch 'batch' pinned to 1" in n for n in h.notes) is dynamic
    raw = onnx.load(str(dst))
    # the wrapper's ops are gone (those the backbone also has, GELAN's Slice chunks, may stay)
    assert not {n.op_type for n in raw.graph.node} & (WRAPPER_OPS - _upstream_ops(src, h.output_name))
    assert len(raw.graph.output) == 1
    assert [o.domain for o in raw.opset_import] == [""]
    dims = raw.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, h.rows, h.width()]
    return res


def _upstream_ops(src, tensor: str) -> set[str]:
    """The op types of the nodes ``tensor`` depends on (the network before the NMS wrapper)."""
    ix = GraphIndex(onnx.load(str(src), load_external_data=False))
    seen, todo, ops = set(), [tensor], set()
    while todo:
        t = todo.pop()
        node = ix.producer.get(t)
        if t in seen or node is None:
            continue
        seen.add(t)
        ops.add(node.op_type)
        todo.extend(node.input)
    return ops


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
    else:  # the generator wraps the YOLOv8 graph (C2f backbone): named by structure, not by the wrapper
        assert res.head.family == "YOLOv8"


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
    res = check_end2end(src, tmp_path / "raw.onnx", nms, shape, cf, bool(kw.get("dynamic_batch")))
    # plain stride-2 backbones: YOLOv7's head reads its anchors; the DDetect head alone names no family
    assert res.head.family == ("YOLOv7" if name.startswith("yolov7") else "WongKinYiu DDetect head")


def test_gelan_backbone_with_dynamic_batch(tmp_path):
    """GELAN's ADown chunks under a dynamic batch: a Shape chain per block, each pinned once the block before
    it is static (one round per block: 12 rounds stopped at the fourth; and a chain pinned one node per round
    before, its renamed inputs hiding the rest), then make_anchors' float Range; the per-level (1, 144, H*W)
    reshapes of the convs it reaches are raw-looking candidates, tried and passed over, not an "already raw"
    error for the whole export (test below). Located at the decoded (1, 84, N) tensor, named YOLOv9 (WongKinYiu)."""
    pytest.importorskip("torch")
    import torch_multiout

    src = torch_multiout.export_gelan_end2end(tmp_path / "e2e.onnx", size=(160, 160), gelan_backbone=True)
    m = onnx.load(str(src))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    shapes = batch_pinned_shapes(m)
    body = [n for n in m.graph.node if n.name.startswith(("/model/body.", "/model/head/"))]
    assert len(body) > 300 and all(is_static(shapes.get(n.output[0])) for n in body)
    assert (1, 84, 525) in [s for _, _, s in nms_candidates(m)]
    res = check_end2end(src, tmp_path / "raw.onnx", "EfficientNMS_TRT", (1, 84, 525), True, True)
    assert (res.head.family, res.head.version) == ("YOLOv9", "WongKinYiu")


def test_a_raw_looking_candidate_is_passed_over(tmp_path, monkeypatch):
    """A candidate before the NMS that is the convs laid out (a per-level class reshape) is tried and named in
    the refusal; it was an "already raw" error for the whole end-to-end export (the decoded tensor, found by
    the GELAN backbone only after its shapes were pinned, came after such reshapes)."""
    import onnx_headcut.pipeline as pipeline

    real = pipeline.nms_candidates
    monkeypatch.setattr(pipeline, "nms_candidates", lambda m, s=None: (c for c in real(m, s) if c[2] == (1, 80, 1600)))
    onnx.save(end2end_yolov9(yolov8(width=8)), str(tmp_path / "e2e.onnx"))
    with pytest.raises(NoHeadError, match=r"before the NMS \(tried '.*' \[1, 80, 1600\]: already raw"):
        strip(tmp_path / "e2e.onnx", tmp_path / "raw.onnx")
