"""YOLO26 (reg_max 1, no DFL) one-to-many heads and NMS-free top-k exports (YOLO26, YOLOv10 with DFL).

The raw graph is the head before the selection (kind ``dist_anchor``); the metadata records the top-k
selection and the decode reproduces it (ties as onnxruntime breaks them), so layer 2 compares the
original's ``(1, 300, 6)`` with the reproduction. Fixtures: the generator (``synth.yolo26``) and the torch
reproduction of Ultralytics 8.4's ``Detect`` / YOLOv10's ``v10postprocess`` (``torch_topk.py``), exported by
the legacy exporter at opset 12 and 18 and by the dynamo exporter.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from _helpers import dynamo_export, needs_torch
from onnx import TensorProto, helper

from onnx_headcut.check import deterministic_input, gap_threshold, match_detections, session
from onnx_headcut.check.ort import reference_session
from onnx_headcut.decode import _topk, corners, select_topk, selected
from onnx_headcut.detect import detect
from onnx_headcut.errors import InputError, NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.metadata import check_metadata
from onnx_headcut.region import decode_region
from onnx_headcut.strip import inspect, read_metadata, strip
from onnx_headcut.synth import yolo26, yolov10
from onnx_headcut.synth.builder import Builder
from onnx_headcut.synth.yolo26 import _topk_tail

ROWS = 2100  # 320x320: 40² + 20² + 10²

GENERATED = {  # name: (builder, family, reg_max recorded, raw columns, top-k)
    "yolo26": (lambda: yolo26(), "YOLO26", 1, 84, 0),
    "yolo26-opset12": (lambda: yolo26(opset=12), "YOLO26", 1, 84, 0),
    "yolo26-e2e": (lambda: yolo26(end2end=True), "YOLO26", 1, 84, 300),
    "yolo26-e2e-opset12": (lambda: yolo26(end2end=True, opset=12), "YOLO26", 1, 84, 300),
    "yolo26-e2e-v10-tail": (lambda: yolo26(end2end=True, tail="v10"), "YOLO26", 1, 84, 300),
    "yolov10-e2e": (lambda: yolov10(), "YOLOv10", 16, 144, 300),
    "yolov10-e2e-opset18-8.4-tail": (lambda: yolov10(opset=18, tail="8.4"), "YOLOv10", 16, 144, 300),
    "yolo26-e2e-k100": (lambda: yolo26(end2end=True, k=100), "YOLO26", 1, 84, 100),
}

TORCH = {  # name: (keywords of torch_topk.export, family, reg_max, raw columns, top-k)
    "yolo26-one2many": (dict(end2end=False), "YOLO26", 1, 84, 0),
    "yolo26-e2e-opset18": (dict(), "YOLO26", 1, 84, 300),
    "yolo26-e2e-opset12": (dict(opset=12), "YOLO26", 1, 84, 300),
    "yolov10-e2e-opset12": (dict(reg_max=16, postprocess="v10", opset=12), "YOLOv10", 16, 144, 300),
    "yolov10-e2e-opset18": (dict(reg_max=16), "YOLOv10", 16, 144, 300),
}


def _check(src, tmp_path, family, reg_max, cols, k, conf=None):
    """strip ``src``: family, raw layout (reshape-only), metadata, the three layers with numbers; layer 3 at a
    threshold the best 20 scores reach (random weights: at 0.25 it compared 0 detections with 0)."""
    from onnx_headcut.check.engine import conf_reached_by

    conf = conf if conf is not None else conf_reached_by(src)
    res = strip(src, tmp_path / "raw.onnx", conf=conf)
    h, meta = res.head, res.metadata
    assert (h.family, h.version, h.decode) == (family, "Ultralytics", "dist_anchor")
    assert meta["reg_max"] == reg_max and meta["dfl_bins"] == (16 if reg_max == 16 else 0)
    assert [c["name"] for c in meta["channels"]] == (["reg", "cls"] if reg_max == 1 else ["dfl", "cls"])
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    assert out.name == "output0" and [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, ROWS, cols]
    assert set(decode_region(GraphIndex(raw), out.name).ops) <= {"Concat", "Reshape", "Transpose"}
    assert max_rank(infer_shapes(raw)) <= 4
    assert not {n.op_type for n in raw.graph.node} & {"TopK", "GatherElements", "Softmax", "ReduceMax"}
    if k:
        assert meta["selection"]["kind"] == "topk" and meta["selection"]["k"] == k
        assert meta["selection"]["nms"] is False and meta["original_output"]["shape"] == [1, 4 + 80, ROWS]
        assert meta["selection"]["output"] == {"name": "output0", "shape": [1, k, 6]}
        assert meta["original_output"]["boxes"] == "xyxy" and h.xyxy
    else:
        assert "selection" not in meta and not h.xyxy
    v = res.verification
    assert v.ok
    (c,) = v.checks
    assert c.layout.ok and c.layout.max_abs_err == 0  # layer 1 exact
    assert c.decode.max_abs_err_boxes <= 1e-3 and c.decode.max_abs_err_scores <= 1e-6
    assert c.detections.nms is (not k)
    assert c.detections.conf == conf and c.detections.ok and c.detections.matched > 0
    check_metadata(json.loads(json.dumps(meta)))
    return res


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated(name, tmp_path):
    make, family, reg_max, cols, k = GENERATED[name]
    onnx.save(make(), str(tmp_path / "in.onnx"))
    _check(tmp_path / "in.onnx", tmp_path, family, reg_max, cols, k)


@pytest.mark.parametrize("name", list(TORCH))
def test_torch_legacy_export(name, tmp_path):
    needs_torch()
    import torch_topk

    kw, family, reg_max, cols, k = TORCH[name]
    src = torch_topk.export(tmp_path / "in.onnx", **kw)
    res = _check(src, tmp_path, family, reg_max, cols, k)
    assert not res.inspection.folded


@pytest.mark.parametrize("name", ["yolo26-e2e", "yolov10-e2e", "yolo26-one2many"])
def test_torch_dynamo_export(name, tmp_path):
    needs_torch()
    import torch_topk

    kw = {"yolo26-e2e": dict(), "yolov10-e2e": dict(reg_max=16, postprocess="v10"),
          "yolo26-one2many": dict(end2end=False)}[name]
    src = dynamo_export(torch_topk.export, kw, tmp_path)
    ops = {n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node}
    if name != "yolo26-one2many":  # the dynamo exporter writes ``//`` on the indices as Div/Mod/Less/Equal/And
        assert {"TopK", "GatherElements", "Less", "And"} <= ops
    family, reg_max, cols, k = ("YOLOv10", 16, 144, 300) if name == "yolov10-e2e" else ("YOLO26", 1, 84, 300)
    _check(src, tmp_path, family, reg_max, cols, 0 if name == "yolo26-one2many" else k)


# --- the selection: onnxruntime's TopK, ties included -------------------------------------------------------


@pytest.mark.parametrize("n", [400, 2100, 168000])
def test_numpy_topk_is_onnxruntime_topk_with_ties(n):
    """onnxruntime's TopK (largest, sorted) orders ties by the lower index, as a stable sort of -v does."""
    g = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=1, sorted=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 300]),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [1, 300])],
                          [helper.make_tensor("k", TensorProto.INT64, [1], [300])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    m.ir_version = 7
    s = session(m.SerializeToString())
    rng = np.random.default_rng(n)
    for levels in (2, 7, 1000, 0):
        x = (rng.integers(0, levels, (1, n)) if levels else rng.random((1, n))).astype(np.float32)
        _, i = s.run(None, {"x": x})
        assert np.array_equal(i[0], _topk(x[0], 300))


@pytest.mark.parametrize("tail", ["8.4", "v10"])
def test_select_topk_reproduces_the_tail_exactly_with_tied_scores(tail):
    """The upstream tails on a decoded tensor whose scores are heavily tied (saturated and quantised):
    numpy's selection is the graph's, bit for bit."""
    nc, n, k = 80, 2100, 300
    b = Builder(0)
    _topk_tail(b, "dec", nc, k, tail, 18, "out")
    g = helper.make_graph(b.nodes, "tail", [helper.make_tensor_value_info("dec", TensorProto.FLOAT, [1, 4 + nc, n])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, k, 6])], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    s = session(m.SerializeToString())
    rng = np.random.default_rng(1)
    for quant in (2, 4, 50):
        d = rng.random((1, 4 + nc, n), dtype=np.float32) * 300
        d[:, 4:] = np.floor(rng.random((1, nc, n)) * quant) / quant  # many exact ties, among anchors and classes
        (o,) = s.run(None, {"dec": d})
        out, anchors, classes = select_topk(d.transpose(0, 2, 1), k)
        assert np.array_equal(out, o)
        assert np.array_equal(o[0, :, 5], classes[0].astype(np.float32))
        assert np.array_equal(o[0, :, :4], d[0, :4].T[anchors[0]])


def test_detections_without_nms_and_detect_on_the_raw_model(tmp_path):
    """At a threshold 20 rows reach, layer 3 pairs the same (anchor, class) rows; ``detect`` on the raw
    model and on the original gives the rows above the threshold in the selection's order, no NMS."""
    onnx.save(yolo26(end2end=True), str(tmp_path / "in.onnx"))
    src = tmp_path / "in.onnx"
    x = deterministic_input((1, 3, 320, 320))
    (o,) = session(str(src)).run(None, {"images": x})
    conf = gap_threshold(o[0, :, 4], k=20)
    res = _check(src, tmp_path, "YOLO26", 1, 84, 300, conf=conf)
    det = res.verification.checks[0].detections
    assert det.n_ref == det.n_got == det.matched >= 20 and det.min_iou >= 0.99
    img = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((320, 320, 3)) * 255).astype(np.uint8)).save(img)
    a, b = detect(tmp_path / "raw.onnx", img, conf=1e-9), detect(src, img, conf=1e-9)
    assert len(a.detections) == len(b.detections) == 300  # every selected row: no NMS, no cap below k
    rows = [np.array([[*d.box, d.score, d.cls] for d in r.detections]) for r in (a, b)]
    assert all(np.all(r[:-1, 4] >= r[1:, 4]) for r in rows)  # the selection's order
    # the same rows; scores within 1e-3 of each other can be in either order (numpy's sigmoid vs onnxruntime's)
    matched, worst = match_detections(rows[1], rows[0])
    assert matched >= 295 and worst >= 0.99
    assert np.abs(rows[0][:, 4] - rows[1][:, 4]).max() <= 1e-6


def test_detect_applies_no_nms(tmp_path, monkeypatch):
    """``detect`` on an NMS-free raw model or original never reaches the NMS postprocess."""
    from PIL import Image

    import onnx_headcut.detect as det

    onnx.save(yolov10(), str(tmp_path / "in.onnx"))
    strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(1).random((256, 320, 3)) * 255).astype(np.uint8)).save(img)

    def boom(*a, **k):
        raise AssertionError("NMS applied")

    monkeypatch.setattr(det, "postprocess", boom)
    for model in (tmp_path / "raw.onnx", tmp_path / "in.onnx"):
        assert len(detect(model, img, conf=1e-9).detections) == 300


def test_raw_decode_is_the_original_output(tmp_path):
    """decode.original_output on the raw model's output = the original's (1, 300, 6), element for element."""
    from onnx_headcut.decode import original_output

    onnx.save(yolov10(opset=18, tail="8.4"), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    x = deterministic_input((1, 3, 320, 320), seed=3)
    s = reference_session(str(tmp_path / "in.onnx"), [onnx.ValueInfoProto(name=res.head.output_name)])
    o, d = s.run(["output0", res.head.output_name], {"images": x})
    (r,) = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert np.abs(corners(r, res.metadata) - d.transpose(0, 2, 1)).max() <= 1e-3
    mine = original_output(r, res.metadata)
    assert mine.shape == o.shape == (1, 300, 6)
    # the selection on the original's own decoded tensor is its output, bit for bit
    assert np.array_equal(select_topk(d.transpose(0, 2, 1), 300)[0], o)
    # on the numpy decode: rows whose scores lie within rounding of each other may swap (random weights
    # pack the scores densely), the sorted scores agree and nearly every row is the same
    assert np.abs(mine[0, :, 4] - o[0, :, 4]).max() <= 1e-6
    matched, worst = match_detections(o[0], mine[0])
    assert matched >= 290 and worst >= 0.99
    assert len(selected(o, 0.0)) == 300


def test_inspect_names_the_head_and_the_selection(tmp_path):
    onnx.save(yolov10(), str(tmp_path / "in.onnx"))
    insp = inspect(tmp_path / "in.onnx")
    assert insp.head.family == "YOLOv10" and insp.head.selection.k == 300
    assert any("TopK(300)" in r for r in insp.head.reasons) and any("YOLOv10" in r for r in insp.head.reasons)
    assert insp.to_json()["head"]["selection"]["k"] == 300


# --- refusals -----------------------------------------------------------------------------------------------


def _edit(model: onnx.ModelProto, fn) -> onnx.ModelProto:
    fn(model)
    return model


def _topks(m):
    return [n for n in m.graph.node if n.op_type == "TopK"]


def _set_const(m, name, value):
    for t in m.graph.initializer:
        if t.name == name:
            t.CopyFrom(onnx.numpy_helper.from_array(np.asarray(value, dtype=onnx.numpy_helper.to_array(t).dtype), name))
            return
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            n.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.asarray(value, np.int64)))
            return
    raise KeyError(name)


def _first_k_200(m):
    _set_const(m, _topks(m)[0].input[1], [200])


def _mod_79(m):
    mod = next(n for n in m.graph.node if n.op_type == "Mod")
    _set_const(m, mod.input[1], 79)


def _scaled_scores(m):
    """A Mul by 0.5 on the selected scores before the output Concat."""
    cat = next(n for n in m.graph.node if n.output[0] == "output0")
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    m.graph.node.insert(len(m.graph.node) - 1, helper.make_node("Mul", [cat.input[1], "half"], ["scaled"]))
    cat.input[1] = "scaled"


REFUSED = {
    "first TopK keeps 200": (lambda: _edit(yolo26(end2end=True), _first_k_200), "keeps k=200, but the output has 300"),
    "class by Mod 79": (lambda: _edit(yolo26(end2end=True), _mod_79), "not by nc = 80"),
    "scores scaled in the tail": (lambda: _edit(yolo26(end2end=True), _scaled_scores), "Mul computes on the decoded"),
    "anchor constant shifted (e2e)": (lambda: yolo26(end2end=True, anchor_shift=0.25), "anchor-point constant"),
    "anchor constant shifted (one-to-many)": (lambda: yolo26(anchor_shift=0.25), "anchor-point constant"),
    "DFL anchor shifted (v10)": (lambda: yolo26(end2end=True, reg_max=16, anchor_shift=0.5), "anchor-point constant"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused(case, tmp_path):
    make, why = REFUSED[case]
    onnx.save(make(), str(tmp_path / "in.onnx"))
    with pytest.raises(NoHeadError, match=why):
        strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    assert not (tmp_path / "raw.onnx").exists()


@pytest.mark.parametrize("bad, why", [
    ({"kind": "nms", "k": 300}, "selection.kind"),
    ({"kind": "topk", "k": 0}, "selection.k"),
    ({"kind": "topk", "k": 5000}, "selection.k"),
    ({"kind": "topk", "k": 300, "nms": True}, "selection.nms"),
    ("topk", "selection must be a dict"),
])
def test_malformed_selection_is_refused(bad, why, tmp_path):
    onnx.save(yolo26(end2end=True), str(tmp_path / "in.onnx"))
    strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    meta = read_metadata(tmp_path / "raw.onnx")
    with pytest.raises(InputError, match=why):
        check_metadata({**meta, "selection": bad})
    with pytest.raises(InputError, match="original_output.boxes"):
        check_metadata({**meta, "original_output": {**meta["original_output"], "boxes": "cxcy"}})


# --- engines ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
@pytest.mark.parametrize("name", ["yolo26", "yolo26-e2e", "yolov10-e2e"])
def test_raw_model_converts_and_matches_on_engine(name, engine, tmp_path):
    pytest.importorskip("MNN" if engine == "mnn" else "ncnn")
    from conftest import model_conf

    from onnx_headcut.check.engine import verify_engine
    from onnx_headcut.convert import convert

    make = GENERATED[name][0]
    onnx.save(make(), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx")
    res = convert(tmp_path / "raw.onnx", engine, force=True)
    (check,) = verify_engine(tmp_path / "original.onnx", res.model, conf=model_conf(tmp_path / "original.onnx"))
    assert check.engine == engine
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-3
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 5 and det.min_iou >= 0.99
    assert det.nms is (name == "yolo26")
    assert check.ok


def test_a_tail_that_is_not_the_selection_fails_verification(tmp_path):
    """Class and score columns swapped in the output Concat: structurally a selection, but the original's
    (1, 300, 6) is not the recorded selection of its own decoded tensor, so layer 2 fails (exit 3)."""
    from onnx_headcut.errors import VerificationError

    def swap(m):
        cat = next(n for n in m.graph.node if n.output[0] == "output0")
        cat.input[1], cat.input[2] = cat.input[2], cat.input[1]

    onnx.save(_edit(yolo26(end2end=True), swap), str(tmp_path / "in.onnx"))
    with pytest.raises(VerificationError, match="layer 2.*not the recorded selection"):
        strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    assert not (tmp_path / "raw.onnx").exists()


@pytest.mark.parametrize("layout", [Layout("levels"), Layout(keep_dfl=True), Layout(keep_sigmoid=True)])
def test_layout_options_on_a_top_k_head(layout, tmp_path):
    """The layout options apply to the head before the selection; the selection is reproduced from each."""
    onnx.save(yolov10(), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", layout=layout)
    (c,) = res.verification.checks
    assert res.verification.ok and c.layout.ok and c.decode.max_abs_err <= 1e-3
    assert res.metadata["selection"]["k"] == 300 and res.metadata["layout"] == layout.kind
    outs = onnx.load(str(tmp_path / "raw.onnx")).graph.output
    assert len(outs) == (3 if layout.kind == "levels" else 1)
