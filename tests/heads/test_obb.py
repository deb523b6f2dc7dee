"""Task ``obb``: Ultralytics YOLOv8 -obb (``Detect`` + 1-channel angle branch ``cv4``, rotated boxes). Locating
it, the record, the raw layouts, layer-1 exactness, the rotated-box decode against onnxruntime, Ultralytics'
probiou and rotated (fast) NMS, detections, a refused variant.

Fixtures: the generator ``yolov8_obb`` and the torch ``OBB`` head of ``torch_ultralytics_tasks.py`` exported by
torch's legacy (+ onnxslim) and dynamo exporters.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import onnx
import pytest
from _helpers import needs_torch

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.layers import decode_check, detection_check
from onnx_headcut.check.results import Allowed
from onnx_headcut.decode import canonical, decode, detect, original_output
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Geometry, Layout
from onnx_headcut.heads.tasks.obb import enclosing, nms_rotated, probiou
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region
from onnx_headcut.strip import read_metadata, strip
from onnx_headcut.synth import yolov8_obb

SIZE = (256, 256)
ROWS = sum((SIZE[0] // s) * (SIZE[1] // s) for s in (8, 16, 32))


def _check_stripped(src, tmp_path, nc, layout=Layout()):
    res = strip(src, tmp_path / "raw.onnx", layout=layout)
    assert res.head.task == "obb" and res.head.num_classes == nc
    meta = read_metadata(tmp_path / "raw.onnx")
    assert meta["schema"] == 5 and meta["task"] == "obb" and "keypoints" not in meta
    assert meta["channels"][-1] == {"name": "angle", "size": 1, "sigmoid": False,
                                    "columns": "angle logit (before sigmoid, -0.25, *pi)"} | (
        {"output": "angle"} if layout.kind in ("split", "flat-split") else {})
    (c,) = res.verification.checks
    assert res.verification.ok and c.layout.ok and c.detections.n_ref == c.detections.matched > 0
    if layout.kind == "flat":
        assert c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values
    x = deterministic_input((1, 3, *SIZE), seed=5)
    y = session(str(src)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert y.shape == (1, 4 + nc + 1, ROWS)
    assert np.abs(original_output(r, meta) - y).max() <= 1e-3
    return res, meta, r, y


@pytest.mark.parametrize("kw", [dict(), dict(nc=1), dict(slim=True)], ids=["nc3", "nc1", "onnxslim"])
def test_generated_obb_strips_exact_and_verified(kw, tmp_path):
    nc = kw.get("nc", 3)
    onnx.save(yolov8_obb(**kw), str(tmp_path / "in.onnx"))
    src = onnx.load(str(tmp_path / "in.onnx"))
    assert {"Sin", "Cos"} <= set(decode_region(GraphIndex(src), "output0").ops)
    res, meta, r, _ = _check_stripped(tmp_path / "in.onnx", tmp_path, nc)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, ROWS, 64 + nc + 1]
    tail = decode_region(GraphIndex(raw), out.name)
    assert Counter(n.op_type for n in tail.data_nodes) == {"Concat": 4, "Reshape": 3, "Transpose": 3}
    assert max_rank(infer_shapes(raw)) <= 4
    assert res.head.family == "YOLOv8" and [b.role for b in res.head.levels[0].branches] == ["dfl", "cls", "angle"]
    assert any("angle offset 0.25" in why and "angle * pi" in why for why in res.head.reasons)


def test_rotated_decode_by_hand(tmp_path):
    """One row from its raw values with dist2rbox as upstream writes it."""
    onnx.save(yolov8_obb(), str(tmp_path / "in.onnx"))
    _, meta, r, y = _check_stripped(tmp_path / "in.onnx", tmp_path, 3)
    g = Geometry.of(meta)
    row = 32 * 32 + 16 * 9 + 3  # stride 16, cell x=3, y=9
    v = r[0][0, row].astype(np.float64)
    bins = v[:64].reshape(4, 16)
    p = np.exp(bins - bins.max(1, keepdims=True))
    ltrb = (p / p.sum(1, keepdims=True) * np.arange(16)).sum(1)
    angle = (1 / (1 + np.exp(-v[g.columns()["angle"]][0])) - 0.25) * math.pi
    xf, yf = (ltrb[2] - ltrb[0]) / 2, (ltrb[3] - ltrb[1]) / 2
    cx = (xf * math.cos(angle) - yf * math.sin(angle) + 3.5) * 16
    cy = (xf * math.sin(angle) + yf * math.cos(angle) + 9.5) * 16
    want = [cx, cy, (ltrb[0] + ltrb[2]) * 16, (ltrb[1] + ltrb[3]) * 16]
    d = decode(r, meta)[0, row]
    assert np.abs(d[:4] - want).max() <= 1e-3 and abs(d[-1] - angle) <= 1e-6
    assert np.abs(y[0, [0, 1, 2, 3, 7], row] - [*want, angle]).max() <= 1e-3


def _upstream_probiou(obb1, obb2, eps=1e-7):
    """``ultralytics.utils.metrics.batch_probiou`` as upstream writes it (torch)."""
    import torch

    def cov(boxes):
        gbbs = torch.cat((boxes[:, 2:4].pow(2) / 12, boxes[:, 4:]), dim=-1)
        a, b, c = gbbs.split(1, dim=-1)
        cos, sin = c.cos(), c.sin()
        return a * cos.pow(2) + b * sin.pow(2), a * sin.pow(2) + b * cos.pow(2), (a - b) * cos * sin

    x1, y1 = obb1[..., :2].split(1, dim=-1)
    x2, y2 = (x.squeeze(-1)[None] for x in obb2[..., :2].split(1, dim=-1))
    a1, b1, c1 = cov(obb1)
    a2, b2, c2 = (x.squeeze(-1)[None] for x in cov(obb2))
    t1 = (((a1 + a2) * (y1 - y2).pow(2) + (b1 + b2) * (x1 - x2).pow(2)) / ((a1 + a2) * (b1 + b2) - (c1 + c2).pow(2)
                                                                          + eps)) * 0.25
    t2 = (((c1 + c2) * (x2 - x1) * (y1 - y2)) / ((a1 + a2) * (b1 + b2) - (c1 + c2).pow(2) + eps)) * 0.5
    t3 = (((a1 + a2) * (b1 + b2) - (c1 + c2).pow(2)) / (4 * ((a1 * b1 - c1.pow(2)).clamp_(0) * (
        a2 * b2 - c2.pow(2)).clamp_(0)).sqrt() + eps) + eps).log() * 0.5
    bd = (t1 + t2 + t3).clamp(eps, 100.0)
    hd = (1.0 - (-bd).exp() + eps).sqrt()
    return 1 - hd


def test_probiou_is_upstreams():
    torch = needs_torch()
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 60, (40, 2)), rng.uniform(2, 30, (40, 2)), rng.uniform(-0.8, 2.4, (40, 1))],
                           1)
    ours = probiou(boxes, boxes[:25])
    theirs = _upstream_probiou(torch.tensor(boxes), torch.tensor(boxes[:25])).numpy()
    assert ours.shape == (40, 25) and np.abs(ours - theirs).max() <= 1e-12
    assert np.all(np.diag(ours[:25]) > 0.999)  # a box with itself
    same = np.array([[10.0, 10, 8, 4, 0.3]])
    assert probiou(same, same + [[0, 0, 0, 0, math.pi]])[0, 0] > 0.999  # half a turn is the same box


def test_nms_rotated_is_fast_nms():
    """Upstream's fast NMS: C goes when B overlaps it, even though B itself went to A (greedy NMS would keep C)."""
    a, b, c = [20.0, 20, 10, 10, 0], [23.0, 20, 10, 10, 0], [26.5, 20, 10, 10, 0]
    boxes, scores = np.array([a, b, c]), np.array([0.9, 0.8, 0.7])
    iou = probiou(boxes, boxes)
    assert iou[0, 1] > 0.45 and iou[1, 2] > 0.45 and iou[0, 2] < 0.45
    assert nms_rotated(boxes, scores, 0.45).tolist() == [0]
    assert nms_rotated(boxes[[2, 0, 1]], scores[[2, 0, 1]], 0.45).tolist() == [1]
    assert nms_rotated(np.zeros((0, 5)), np.zeros(0), 0.45).tolist() == []


def test_enclosing_box():
    r = np.array([[10.0, 20, 8, 4, 0], [10.0, 20, 8, 4, math.pi / 2], [0.0, 0, 2, 2, math.pi / 4]])
    np.testing.assert_allclose(enclosing(r), [[6, 18, 14, 22], [8, 16, 12, 24],
                                              [-math.sqrt(2), -math.sqrt(2), math.sqrt(2), math.sqrt(2)]], atol=1e-9)


@pytest.mark.parametrize("layout", [Layout("levels"), Layout("split"), Layout("flat-split")])
def test_obb_layouts(layout, tmp_path):
    onnx.save(yolov8_obb(), str(tmp_path / "in.onnx"))
    _, meta, _, _ = _check_stripped(tmp_path / "in.onnx", tmp_path, 3, layout)
    names = [o["name"] for o in meta["raw_outputs"]]
    if layout.kind == "levels":
        assert [o["shape"] for o in meta["raw_outputs"]] == [[1, 3 + 4 + 1, g, g] for g in (32, 16, 8)]
    elif layout.kind == "split":
        assert names == [f"output0_s{s}_{p}" for s in (8, 16, 32) for p in ("box", "cls", "angle")]
    else:
        assert [o["shape"] for o in meta["raw_outputs"]] == [[1, ROWS, 64], [1, ROWS, 3], [1, ROWS, 1]]


def test_layers_2_and_3_hold_the_angle(tmp_path):
    """An angle off by 0.01 rad fails layer 2 (tolerance pi x 1e-3 rad); detections use the rotated boxes."""
    onnx.save(yolov8_obb(), str(tmp_path / "in.onnx"))
    _, meta, r, y = _check_stripped(tmp_path / "in.onnx", tmp_path, 3)
    g = Geometry.of(meta)
    allowed = Allowed.for_input(g.input_shape, np.float32)
    got = original_output(r, meta)
    assert decode_check(y, got, allowed, g).ok
    bad = got.copy()
    bad[0, 7, 50] += 0.01
    chk = decode_check(y, bad, allowed, g)
    assert not chk.ok and "column 7" in chk.worst
    ref = canonical(y, g)
    det = detection_check(ref, canonical(got, g), 0.25, 0.45, allowed.score_atol, g)
    assert det.n_ref == det.matched > 0 and det.min_iou > 0.999
    turned = got.copy()  # every angle a quarter turn on: the same scores, other rotated boxes
    turned[0, 7] += math.pi / 2
    moved = detection_check(ref, canonical(turned, g), 0.25, 0.45, allowed.score_atol, g)
    assert moved.matched < moved.n_ref


def test_detect_obb_original_and_raw_agree(tmp_path):
    from onnx_headcut.check import gap_threshold
    from onnx_headcut.detect import detect as detect_image
    from onnx_headcut.detect import draw

    photo = "samples/images/astronaut.jpg"
    onnx.save(yolov8_obb(), str(tmp_path / "in.onnx"))
    strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    every = detect_image(tmp_path / "in.onnx", photo, conf=0.0)
    conf = gap_threshold(np.array([d.score for d in every.detections]), 0.25, k=10)
    a = detect_image(tmp_path / "in.onnx", photo, conf=conf)
    b = detect_image(tmp_path / "raw.onnx", photo, conf=conf)
    assert len(a.detections) == len(b.detections) >= 10
    for da, db in zip(a.detections, b.detections):
        ra, rb = da.extra["rotated_box"], db.extra["rotated_box"]
        assert da.cls == db.cls and abs(ra["angle"] - rb["angle"]) <= 1e-4
        assert np.abs(np.subtract(ra["corners"], rb["corners"])).max() <= 1e-2
    j = json.loads(json.dumps(b.to_json()))
    assert set(j["detections"][0]["rotated_box"]) == {"cx", "cy", "w", "h", "angle", "corners"}
    assert draw(photo, b, tmp_path / "obb.png").exists()


def test_detect_rows(tmp_path):
    onnx.save(yolov8_obb(), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": deterministic_input((1, 3, *SIZE), seed=1)})
    dets = detect(r, res.metadata, conf=0.2)
    assert dets.shape[1] == 11 and len(dets)
    np.testing.assert_allclose(dets[:, :4], enclosing(dets[:, 6:11].astype(np.float64)), atol=1e-3)
    assert np.all((dets[:, 10] >= -math.pi / 4 - 1e-6) & (dets[:, 10] <= 3 * math.pi / 4 + 1e-6))


def test_other_angle_offset_is_refused():
    with pytest.raises(NoHeadError) as e:
        locate(yolov8_obb(angle_offset=0.3))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Ultralytics OBB export") and "not proven" in msg and "0.3" in msg


@pytest.mark.parametrize("dynamo,yolo11", [(False, False), (True, False), (False, True)],
                         ids=["legacy", "dynamo", "yolo11"])
def test_torch_obb_exports(dynamo, yolo11, tmp_path):
    needs_torch()
    if dynamo:
        pytest.importorskip("onnxscript")
    import torch_ultralytics_tasks

    src = torch_ultralytics_tasks.export("obb", tmp_path / "in.onnx", nc=3, dynamo=dynamo, yolo11=yolo11)
    res, _, _, _ = _check_stripped(src, tmp_path, 3)
    assert res.head.family == ("YOLO11" if yolo11 else "YOLOv8") and res.verification.max_abs_err <= 1e-3


@pytest.mark.parametrize("task", ["obb", "pose"])
def test_torch_dynamic_hw_exports_keep_their_size(task, tmp_path):
    """Ultralytics ``dynamic=True``: height and width kept symbolic in the raw graph, verified at two sizes."""
    needs_torch()
    import torch_ultralytics_tasks

    src = torch_ultralytics_tasks.export(task, tmp_path / "in.onnx", nc=2, dynamic_hw=True)
    res = strip(src, tmp_path / "raw.onnx")
    assert res.head.task == task and res.head.dynamic_hw is not None and res.verification.ok
    assert len(res.verification.checks) == 2 and all(c.layout.max_abs_err == 0 for c in res.verification.checks)
    (out,) = onnx.load(str(tmp_path / "raw.onnx")).graph.output
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim][1] == "rows"
    x = deterministic_input((1, 3, 192, 320), seed=2)
    y = session(str(src)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert np.abs(original_output(r, res.metadata, input_size=(192, 320)) - y).max() <= 1e-3
