"""The int8 layouts (#15): ``split`` (per level a box and a score output, optionally a score sum) and
``flat-split`` (one (1, N, box) and one (1, N, scores) output), for every head kind: structure, the
three verification layers (layer 1 exact where nothing is computed in the graph), the decode of the
session's outputs, the score sum's values and the strictness of the record."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnx_headcut.check import deterministic_input, gap_threshold, match_detections, session
from onnx_headcut.decode import decode, detect, original_output, sigmoid
from onnx_headcut.errors import InputError, UsageError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.metadata import check_metadata
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8, yolox

STRIDES = (8, 16, 32)
SIZE = 320
#: head -> (builder, keywords, box channels per anchor, score channels per anchor (obj first), anchors per cell)
HEADS = {
    "yolov6-0.1.0": (yolov6_v1, {}, 4, 81, 1),
    "yolox": (yolox, {}, 4, 81, 1),
    "yolov6-af": (yolov6_af, {}, 4, 80, 1),
    "yolov6-af-dfl": (yolov6_af, {"reg_max": 16}, 68, 80, 1),
    "yolov8": (yolov8, {}, 64, 80, 1),
    "yolov5": (yolov5, {}, 4, 81, 3),
    "yolov7": (yolov5, {"v7": True}, 4, 81, 3),
}
LAYOUTS = {
    "split": Layout("split"),
    "flat-split": Layout("flat-split"),
    "split-sigmoid": Layout("split", keep_sigmoid=True),
    "flat-split-sigmoid": Layout("flat-split", keep_sigmoid=True),
    "split-sum": Layout("split", score_sum=True),
    "flat-split-sum-sigmoid": Layout("flat-split", keep_sigmoid=True, score_sum=True),
    "split-keep-dfl": Layout("split", keep_dfl=True),
}
TAIL_OPS = {"Concat", "Reshape", "Transpose", "Slice", "Identity", "Sigmoid", "Conv", "Clip", "Softmax", "MatMul"}


def _applies(head: str, layout: Layout) -> bool:
    objectness = head in ("yolov6-0.1.0", "yolox", "yolov5", "yolov7")
    dfl = head in ("yolov6-af-dfl", "yolov8")
    return not (layout.score_sum and objectness) and not (layout.keep_dfl and not dfl)


CASES = [(h, n) for h in HEADS for n, lay in LAYOUTS.items() if _applies(h, lay)]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("originals")
    out = {}
    for name, (make, kw, *_) in HEADS.items():
        onnx.save(make(width=8, **kw), str(d / f"{name}.onnx"))
        out[name] = d / f"{name}.onnx"
    return out


def _tail_nodes(raw: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in raw.graph.node if n.name.startswith("headcut/")]


@pytest.mark.parametrize("head,layout_name", CASES)
def test_layout_structure_and_verification(head, layout_name, originals, tmp_path):
    layout = LAYOUTS[layout_name]
    _, _, box_w, cls_w, na = HEADS[head]
    if layout.keep_dfl:
        box_w = 4
    res = strip(originals[head], tmp_path / "raw.onnx", layout=layout)

    # structure: names, count and shapes of the outputs, what the tail is made of
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    base = res.head.output_name
    grids = [(SIZE // s, SIZE // s) for s in STRIDES]
    parts = ["box", "cls"] + (["sum"] if layout.score_sum else [])
    width = {"box": box_w, "cls": cls_w, "sum": 1}
    if layout.kind == "split":
        want = [(f"{base}_s{s}_{p}", [1, na * width[p], h, w]) for s, (h, w) in zip(STRIDES, grids) for p in parts]
    else:
        rows = na * sum(h * w for h, w in grids)
        want = [(f"{base}_{p}", [1, rows, width[p]]) for p in parts]
    got = [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in raw.graph.output]
    assert got == want
    assert [(o["name"], o["shape"]) for o in res.metadata["raw_outputs"]] == want
    ops = {n.op_type for n in _tail_nodes(raw)}
    assert ops <= TAIL_OPS, ops - TAIL_OPS
    assert ("Conv" in ops and "Clip" in ops) == layout.score_sum  # the sum: a 1x1 Conv of ones (see cut.py)
    assert ("Sigmoid" in ops) == (layout.keep_sigmoid or layout.score_sum)
    assert max_rank(infer_shapes(raw)) <= 4
    ix = GraphIndex(raw)
    for n in _tail_nodes(raw):  # --keep-sigmoid: the only consumer of what it reads (a conv; YOLOv5/v7: a Slice)
        if n.op_type == "Sigmoid" and layout.keep_sigmoid:
            src = ix.producer[n.input[0]]
            assert src.op_type == ("Slice" if na > 1 else "Conv") and len(ix.consumers[n.input[0]]) == 1

    # the record
    meta = res.metadata
    assert meta["layout"] == layout.kind and meta["score_sum"] is layout.score_sum
    assert all(c["output"] == ("box" if c["name"] in ("box", "reg", "dfl") else "cls") for c in meta["channels"])
    assert [c["sigmoid"] for c in meta["channels"] if c["output"] == "cls"] == \
        [layout.keep_sigmoid] * len([c for c in meta["channels"] if c["output"] == "cls"])
    assert isinstance(meta["outputs"], str) and ("_sum" in meta["outputs"]) == layout.score_sum
    check_metadata(json.loads(json.dumps(meta)))

    # the three layers; layer 1 exact (bit for bit) where the graph computes nothing
    assert res.verification.ok
    (c,) = res.verification.checks
    assert c.layout is not None and c.layout.ok and c.layout.exact_values > 0
    computed = layout.keep_sigmoid or layout.score_sum or layout.keep_dfl
    if not computed:
        assert c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values
    assert c.max_abs_err_boxes <= 1e-3 and c.max_abs_err_scores <= 1e-3
    assert c.detections.ok

    # the decode reads the session's list of outputs; the original's output comes back
    x = deterministic_input((1, 3, SIZE, SIZE), seed=5)
    inp = res.head.input_name
    y = session(str(originals[head])).run(None, {inp: x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {inp: x})
    assert np.abs(original_output(r, meta) - y).max() <= 1e-3
    assert decode(r, meta).shape == (1, na * sum(h * w for h, w in grids), 5 + 80)
    if layout.score_sum:  # = clip(sum of the class scores, 0, 1), per cell
        for k in range(len(STRIDES) if layout.kind == "split" else 1):
            cls, s = r[len(parts) * k + 1], r[len(parts) * k + 2]
            scores = cls if layout.keep_sigmoid else sigmoid(cls)
            axis = 1 if layout.kind == "split" else 2
            np.testing.assert_allclose(s, np.clip(scores.sum(axis, keepdims=True), 0, 1), rtol=0, atol=2e-6)
            assert s.min() > 0 and s.std() > 0  # not a vacuous comparison of zeros or of a constant
            assert (s >= scores.max(axis, keepdims=True) - 1e-6).all()  # bounds every class score: early rejection
    # detections of the split outputs are those of the flat layout
    flat = strip(originals[head], tmp_path / "flat.onnx")
    rf = session(str(tmp_path / "flat.onnx")).run(None, {inp: x})
    d = decode(rf, flat.metadata)[0]
    conf = gap_threshold(d[:, 4] * d[:, 5:].max(1), conf=1.0, k=30)  # in a gap: rounding cannot cross it
    a, b = detect(rf, flat.metadata, conf=conf), detect(r, meta, conf=conf)
    assert len(a) >= 5 and a.shape == b.shape
    assert match_detections(a, b, min_iou=0.999)[0] == len(a)  # same boxes and classes (tied scores in any order)
    np.testing.assert_allclose(np.sort(a[:, 4]), np.sort(b[:, 4]), atol=1e-6)
    with pytest.raises(ValueError, match=f"the {layout.kind} layout has {len(want)} outputs"):
        detect(r[0], meta)


def test_score_sum_and_keep_sigmoid_where_they_do_not_apply(originals, tmp_path):
    with pytest.raises(UsageError, match="--score-sum needs --layout split or flat-split"):
        Layout("levels", score_sum=True)
    with pytest.raises(UsageError, match="objectness .* already bounds every score"):
        strip(originals["yolox"], tmp_path / "raw.onnx", layout=Layout("split", score_sum=True))
    assert not (tmp_path / "raw.onnx").exists()


def test_split_records_are_checked_strictly(originals, tmp_path):
    meta = strip(originals["yolov8"], tmp_path / "raw.onnx", layout=Layout("split", score_sum=True)).metadata
    check_metadata(json.loads(json.dumps(meta)))

    def bad(change, message):
        m = json.loads(json.dumps(meta))
        change(m)
        with pytest.raises(InputError, match=message):
            check_metadata(m)

    bad(lambda m: m["channels"][0].update(output="cls"), r"channels\[0\] \('dfl'\) must say output 'box'")
    bad(lambda m: m["channels"][1].pop("output"), r"channels\[1\] \('cls'\) must say output 'cls'")
    bad(lambda m: m.update(layout="flat"), "score_sum and channel outputs belong to the split layouts")
    bad(lambda m: m.update(layout="diagonal"), "layout must be one of flat, levels, split, flat-split")
    bad(lambda m: m.update(score_sum="yes"), "score_sum must be true or false")
    bad(lambda m: m["raw_outputs"].pop(), "8 raw_outputs for the split layout of 3 levels, which has 9")
    bad(lambda m: m.update(score_sum=False), "9 raw_outputs for the split layout of 3 levels, which has 6")


def test_cli_strip_split_with_score_sum_then_verify(originals, tmp_path):
    def headcut(*args):
        p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    raw = tmp_path / "raw.onnx"
    code, out, err = headcut("strip", originals["yolov8"], "-o", raw, "--layout", "split", "--score-sum")
    assert code == 0, err
    assert "layout    split: dfl 64 + cls 80" in out and "_sum (clip(sum of the class scores, 0, 1))" in out
    assert [o.name for o in onnx.load(str(raw)).graph.output][:3] == ["output0_s8_box", "output0_s8_cls",
                                                                      "output0_s8_sum"]
    code, out, err = headcut("verify", originals["yolov8"], raw, "--conf", "0.001")
    assert code == 0 and "OK" in out, err
    code, _, err = headcut("strip", originals["yolov8"], "-o", tmp_path / "b.onnx", "--score-sum")
    assert code == 2 and err.strip().splitlines() == ["headcut: error: --score-sum needs --layout split or flat-split "
                                                      "(the sum is an output of its own), not flat"], err
    assert not (tmp_path / "b.onnx").exists()


TORCH = {  # torch reproductions of the upstream heads (tests/torch_families.py): exporter, layout
    "yolov8": ("export_yolov8", Layout("split", score_sum=True)),
    "yolox": ("export_yolox", Layout("flat-split")),
    "yolov7": ("export_yolov7", Layout("split", keep_sigmoid=True)),
    "yolov6-af-dfl": ("export_yolov6_af", Layout("flat-split", score_sum=True)),
}


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", list(TORCH))
def test_split_layouts_on_torch_exports(name, dynamo, tmp_path):
    """The layouts on torch's legacy and dynamo exports of the upstream heads (opsets 11-18, onnxsim/onnxslim)."""
    pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    import torch_families

    fn, layout = TORCH[name]
    kw = {"reg_max": 16} if name == "yolov6-af-dfl" else {}
    src = getattr(torch_families, fn)(tmp_path / "in.onnx", dynamo=dynamo, **kw)
    res = strip(src, tmp_path / "raw.onnx", layout=layout)
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    (c,) = res.verification.checks
    assert c.layout is not None and c.layout.ok and c.detections.ok
    if not (layout.keep_sigmoid or layout.score_sum):
        assert c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values
    n = len(layout.parts) * (3 if layout.kind == "split" else 1)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert len(raw.graph.output) == n and max_rank(infer_shapes(raw)) <= 4
    assert all(o.name.endswith(("_box", "_cls", "_sum")) for o in raw.graph.output)
    assert {n.op_type for n in _tail_nodes(raw)} <= TAIL_OPS


def test_split_layouts_on_top_k_heads_and_raw_5d_originals(tmp_path):
    """#14's heads: an NMS-free YOLO26 (verified through its top-k selection) and a YOLOv7 without --grid
    (raw 5-D outputs, anchors given) take the split layouts like any other head of their kind."""
    from onnx_headcut.heads.anchor_raw import parse_anchors
    from onnx_headcut.synth import yolo26
    from onnx_headcut.synth.multiout import yolov7_raw

    anchors = parse_anchors("12,16,19,36,40,28/36,75,76,55,72,146/142,110,192,243,459,401")
    for name, model, kw, layout, n in [("y26", yolo26(width=8, end2end=True), {}, Layout("split", score_sum=True), 9),
                                       ("v7", yolov7_raw(width=8), {"anchors": anchors}, Layout("split"), 6),
                                       ("v7f", yolov7_raw(width=8), {"anchors": anchors},
                                        Layout("flat-split", keep_sigmoid=True), 2)]:
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        res = strip(tmp_path / f"{name}.onnx", tmp_path / f"{name}.raw.onnx", layout=layout, **kw)
        (c,) = res.verification.checks
        assert res.verification.ok and c.layout is not None and c.layout.ok, name
        assert len(res.metadata["raw_outputs"]) == n
        if name == "v7":
            assert c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values
