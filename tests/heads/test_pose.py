"""Task ``pose``: Ultralytics YOLOv8 -pose (``Detect`` + keypoint branch ``cv4``). Locating it, the record,
the raw layouts, layer-1 exactness, the keypoint decode against onnxruntime, detections, a refused variant.

Fixtures: the generator ``yolov8_pose`` (17 x 3, 17 x 2, 5 x 3 with 2 classes, onnxslim'ed again) and the torch
``Pose`` head of ``torch_ultralytics_tasks.py`` exported by torch's legacy (+ onnxslim) and dynamo exporters.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from _helpers import needs_torch
from onnx import numpy_helper

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.layers import decode_check
from onnx_headcut.check.results import Allowed
from onnx_headcut.decode import decode, detect, original_output
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Geometry, Layout
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region
from onnx_headcut.strip import read_metadata, strip
from onnx_headcut.synth import yolov8_pose

SIZE = (256, 256)
ROWS = sum((SIZE[0] // s) * (SIZE[1] // s) for s in (8, 16, 32))

GENERATED = {
    "17x3": dict(),
    "17x2": dict(kpt_shape=(17, 2)),
    "5x3-nc2": dict(kpt_shape=(5, 3), nc=2),
    "17x3-onnxslim": dict(slim=True),
}


def _check_stripped(src, tmp_path, count, dims, nc, layout=Layout()):
    """strip ``src``: the record, the raw output, layer 1 exact, layer 2 and 3; the decode against onnxruntime."""
    res = strip(src, tmp_path / "raw.onnx", layout=layout)
    assert res.head.task == "pose" and res.head.keypoints == (count, dims) and res.head.num_classes == nc
    meta = read_metadata(tmp_path / "raw.onnx")
    assert meta["schema"] == 5 and meta["task"] == "pose" and meta["keypoints"] == {"count": count, "dims": dims}
    assert [c["name"] for c in meta["channels"]][-1] == "kpt" and meta["channels"][-1]["size"] == count * dims
    assert not meta["channels"][-1]["sigmoid"]
    (c,) = res.verification.checks
    assert res.verification.ok and c.layout.ok and c.detections.n_ref == c.detections.matched > 0
    if layout.kind == "flat":
        assert c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values  # data movement only
    m = onnx.load(str(src))
    x = deterministic_input((1, 3, *SIZE), seed=5)
    y = session(str(src)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert y.shape == (1, 4 + nc + count * dims, ROWS)
    got = original_output(r, meta)
    assert np.abs(got - y).max() <= 1e-3, np.abs(got - y).max()
    del m
    return res, meta, r, y


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_pose_strips_exact_and_verified(name, tmp_path):
    kw = GENERATED[name]
    count, dims = kw.get("kpt_shape", (17, 3))
    nc = kw.get("nc", 1)
    onnx.save(yolov8_pose(**kw), str(tmp_path / "in.onnx"))
    res, meta, r, _ = _check_stripped(tmp_path / "in.onnx", tmp_path, count, dims, nc)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, ROWS, 64 + nc + count * dims]
    tail = decode_region(GraphIndex(raw), out.name)
    assert Counter(n.op_type for n in tail.data_nodes) == {"Concat": 4, "Reshape": 3, "Transpose": 3}
    assert max_rank(infer_shapes(raw)) <= 4
    assert res.head.family == "YOLOv8" and any("keypoints" in why for why in res.head.reasons)
    assert [b.role for b in res.head.levels[0].branches] == ["dfl", "cls", "kpt"]


def test_keypoint_decode_by_hand(tmp_path):
    """One row's keypoints from its raw values: (raw * 2 + cell) * stride, sigmoid visibility, as upstream."""
    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    _, meta, r, y = _check_stripped(tmp_path / "in.onnx", tmp_path, 17, 3, 1)
    g = Geometry.of(meta)
    row = 32 * 32 + 16 * 5 + 7  # level 1 (stride 16), cell x=7, y=5
    k = r[0][0, row, g.columns()["kpt"]].astype(np.float64).reshape(17, 3)
    want = np.stack([(k[:, 0] * 2 + 7) * 16, (k[:, 1] * 2 + 5) * 16, 1 / (1 + np.exp(-k[:, 2]))], 1).reshape(-1)
    assert np.abs(decode(r, meta)[0, row, 6:] - want).max() <= 1e-4
    assert np.abs(y[0, 5:, row] - want).max() <= 1e-3  # the original's own columns


@pytest.mark.parametrize("layout", [Layout("levels"), Layout("split"), Layout("flat-split"),
                                    Layout("split", score_sum=True)])
def test_pose_layouts(layout, tmp_path):
    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    res, meta, r, _ = _check_stripped(tmp_path / "in.onnx", tmp_path, 17, 3, 1, layout)
    names = [o["name"] for o in meta["raw_outputs"]]
    if layout.kind == "levels":  # YOLOv6's ncnn layout for the detection part, then the raw keypoints
        assert [o["shape"] for o in meta["raw_outputs"]] == [[1, 1 + 4 + 51, g, g] for g in (32, 16, 8)]
        assert [c["name"] for c in meta["channels"]] == ["cls", "reg", "kpt"]
    elif layout.kind == "split":
        per = ["box", "cls", "kpt"] + (["sum"] if layout.score_sum else [])
        assert names == [f"output0_s{s}_{p}" for s in (8, 16, 32) for p in per]
        assert [o["shape"][1] for o in meta["raw_outputs"][:len(per)]] == [64, 1, 51, 1][:len(per)]
        assert "_kpt" in meta["outputs"]
    else:
        assert names == ["output0_box", "output0_cls", "output0_kpt"]
        assert [o["shape"] for o in meta["raw_outputs"]] == [[1, ROWS, 64], [1, ROWS, 1], [1, ROWS, 51]]


def test_layer2_holds_keypoints_to_the_tolerance(tmp_path):
    """A keypoint column off by more than the tolerance fails layer 2; within it, passes: the keypoints are checked."""
    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    _, meta, r, y = _check_stripped(tmp_path / "in.onnx", tmp_path, 17, 3, 1)
    g = Geometry.of(meta)
    allowed = Allowed.for_input(g.input_shape, np.float32)
    got = original_output(r, meta)
    assert decode_check(y, got, allowed, g).ok
    for col, off in ((5 + 3 * 4, 0.05), (5 + 3 * 4 + 2, 0.01)):  # keypoint 4's x (px), its visibility
        bad = got.copy()
        bad[0, col, 100] += off
        chk = decode_check(y, bad, allowed, g)
        assert not chk.ok and f"column {col}" in chk.worst


def test_detect_pose_original_and_raw_agree(tmp_path):
    from onnx_headcut.check import gap_threshold
    from onnx_headcut.detect import detect as detect_image
    from onnx_headcut.detect import draw

    photo = "samples/images/astronaut.jpg"
    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    every = detect_image(tmp_path / "in.onnx", photo, conf=0.0)
    conf = gap_threshold(np.array([d.score for d in every.detections]), 0.25, k=10)
    a = detect_image(tmp_path / "in.onnx", photo, conf=conf)
    b = detect_image(tmp_path / "raw.onnx", photo, conf=conf)
    assert len(a.detections) == len(b.detections) >= 10
    for da, db in zip(a.detections, b.detections):
        assert da.cls == db.cls and np.abs(np.subtract(da.box, db.box)).max() <= 1e-2
        ka, kb = np.array(da.extra["keypoints"]), np.array(db.extra["keypoints"])
        assert ka.shape == (17, 3) and np.abs(ka - kb).max() <= 1e-2
    j = json.loads(json.dumps(b.to_json()))
    assert len(j["detections"][0]["keypoints"]) == 17 and len(j["detections"][0]["keypoints"][0]) == 3
    out = draw(photo, b, tmp_path / "pose.png")
    assert out.exists()


def test_detect_rows_carry_keypoints(tmp_path):
    onnx.save(yolov8_pose(kpt_shape=(17, 2)), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": deterministic_input((1, 3, *SIZE), seed=1)})
    dets = detect(r, res.metadata, conf=1e-6, iou=0.45)
    assert dets.shape[1] == 6 + 34 and len(dets)
    full = decode(r, res.metadata)[0]
    best = int(np.argmax(full[:, 5]))  # the best-scoring row is always kept
    np.testing.assert_allclose(dets[0, 6:], full[best, 6:], atol=1e-5)


def test_broken_keypoint_scale_is_refused(tmp_path):
    """The keypoint offsets multiplied by 2.5 instead of 2: not the upstream decode, refused in one line."""
    m = yolov8_pose()
    ix = GraphIndex(m)
    region = decode_region(ix, "output0")
    (mul,) = [n for n in region.data_nodes if n.op_type == "Mul" and any(
        (v := ix.const_value(i)) is not None and v.size == 1 and float(v) == 2.0 for i in n.input)]
    name = next(i for i in mul.input if ix.const_value(i) is not None)
    for t in m.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.array(2.5, np.float32), name))
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(2.5, np.float32), name))
    with pytest.raises(NoHeadError) as e:
        locate(m)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Ultralytics pose export") and "not proven" in msg
    assert "2.5" in msg


@pytest.mark.parametrize("dynamo,kpt_shape,yolo11", [(False, (17, 3), False), (False, (17, 2), False),
                                                    (True, (17, 3), False), (False, (17, 3), True)])
def test_torch_pose_exports(dynamo, kpt_shape, yolo11, tmp_path):
    needs_torch()
    if dynamo:
        pytest.importorskip("onnxscript")
    import torch_ultralytics_tasks

    src = torch_ultralytics_tasks.export("pose", tmp_path / "in.onnx", kpt_shape=kpt_shape, dynamo=dynamo,
                                         yolo11=yolo11)
    if dynamo:
        assert (tmp_path / "in.onnx.data").exists()
    res, meta, _, _ = _check_stripped(src, tmp_path, *kpt_shape, 1)
    assert res.head.family == ("YOLO11" if yolo11 else "YOLOv8") and res.verification.max_abs_err <= 1e-3


def test_cli_inspect_and_detect_json(tmp_path):
    import subprocess
    import sys

    def headcut(*args):
        return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)

    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    p = headcut("inspect", tmp_path / "in.onnx")
    assert p.returncode == 0 and "task=pose (17 keypoints x 3)" in p.stdout and "kpt:51" in p.stdout
    p = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert p.returncode == 0, p.stderr
    p = headcut("detect", tmp_path / "raw.onnx", "samples/images/astronaut.jpg", "--conf", "0.26", "--json",
                "-o", tmp_path / "out.png")
    assert p.returncode == 0, p.stderr
    dets = json.loads(p.stdout)["detections"]
    assert dets and all(len(d["keypoints"]) == 17 and all(len(k) == 3 for k in d["keypoints"]) for d in dets)
    assert (tmp_path / "out.png").exists()
    p = headcut("codegen", tmp_path / "raw.onnx", "-o", tmp_path / "cpp")  # compiled and run in test_codegen.py
    assert p.returncode == 0, p.stderr
    assert "constexpr int kNumPoints = 17, kPointDims = 3" in (tmp_path / "cpp" / "raw_decode.hpp").read_text()


def test_int8_agreement_measures_keypoints(tmp_path):
    from onnx_headcut.check.int8 import agreement, parse_layouts, verify_int8
    from onnx_headcut.report import int8_text
    from onnx_headcut.synth.scenes import save_scenes

    ref = [np.array([[0, 0, 10, 10, 0.9, 0, 1, 1, 0.9, 5, 5, 0.8]], np.float32)]
    det = [np.array([[0, 0, 10, 10, 0.8, 0, 4, 5, 0.1, 5, 5, 0.8]], np.float32)]  # keypoint 0 off by (3, 4)
    assert agreement("x", det, ref, kpt_dims=3).keypoint_error == pytest.approx(2.5)
    assert np.isnan(agreement("x", det, ref).keypoint_error)  # a detection head: not measured
    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    save_scenes(tmp_path / "calib", 7, 4)
    save_scenes(tmp_path / "eval", 8, 4)
    rep = verify_int8(tmp_path / "in.onnx", calib=tmp_path / "calib", eval_dir=tmp_path / "eval", method="minmax",
                      layouts=parse_layouts("split"))
    split = next(r for r in rep.rows if r.name == "split")
    assert split.reference > 0 and split.matched > 0 and 0 <= split.keypoint_error < 50
    assert "kpt err px" in int8_text(rep)


def test_the_record_is_checked(tmp_path):
    """A record whose task, extra block and keypoints disagree is malformed (one line), never decoded."""
    from onnx_headcut.errors import InputError
    from onnx_headcut.metadata import check_metadata

    onnx.save(yolov8_pose(), str(tmp_path / "in.onnx"))
    meta = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx").metadata
    assert check_metadata(json.loads(json.dumps(meta)))["task"] == "pose"
    bad = [({k: v for k, v in meta.items() if k != "task"}, "the detect task has the extra channel block none"),
           (meta | {"keypoints": {"count": 17, "dims": 2}}, "keypoints 17 x 2 do not match the kpt block of 51"),
           (meta | {"task": "obb"}, "the obb task has the extra channel block ['angle']"),
           (meta | {"task": "kites"}, "task must be detect or one of")]
    for m, why in bad:
        with pytest.raises(InputError, match="malformed headcut metadata") as e:
            check_metadata(json.loads(json.dumps(m)))
        assert why in str(e.value) and "\n" not in str(e.value)
