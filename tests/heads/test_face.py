"""Face heads (``heads/tasks/face.py``): YOLOv6 0.3.1 face, from the torch module written from the face release
(``tests/torch_tasks.py``, legacy and dynamo exporters) and the generator (``synth.yolov6_af(landmarks=True)``):
located by structure, cut (landmark offsets after the detection blocks), the three layers (landmarks in pixels in
layer 2), the detections' landmark columns, and refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _helpers import dims, torch_export

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.results import Allowed
from onnx_headcut.decode import canonical, detect, original_output, postprocess
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS, CONF = 2100, 0.25  # 320x320


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def exported(request, tmp_path_factory) -> Path:
    return torch_export(request, tmp_path_factory, "face", "export_yolov6_face")


def test_torch_face_flat(exported, tmp_path):
    res = strip(exported, tmp_path / "raw.onnx", conf=CONF)
    head = res.head
    assert (head.family, head.version, head.task) == ("YOLOv6", "0.2+ anchor-free, face", "face")
    assert [(b.role, b.channels) for b in head.levels[0].branches] == [("reg", 4), ("cls", 1), ("lmk", 10)]
    meta = res.metadata
    assert meta["schema"] == 5 and meta["task"] == "face" and meta["landmarks"] == {"count": 5}
    assert meta["original_output"]["extra_at"] == 4
    assert [(c["name"], c["size"]) for c in meta["channels"]] == [("reg", 4), ("cls", 1), ("lmk", 10)]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, dims(o)) for o in raw.graph.output] == [("outputs", [1, ROWS, 15])]
    assert set(decode_region(GraphIndex(raw), "outputs").ops) <= {"Concat", "Reshape", "Transpose"}
    assert max_rank(infer_shapes(raw)) <= 4
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0
    assert check.decode.max_abs_err_boxes <= 1e-3 and check.decode.max_abs_err_scores <= 1e-6
    assert check.detections.matched == check.detections.n_ref > 5

    x = deterministic_input((1, 3, 320, 320), seed=4)
    y = session(str(exported)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    back = original_output(r, meta)
    assert back.shape == y.shape == (1, ROWS, 16)
    assert np.abs(back - y).max() <= 1e-3  # boxes and landmarks (pixels), the ones column, the score
    dets = detect(r, meta, conf=CONF)
    ref = postprocess(canonical(y, meta), conf=CONF, num_classes=1)
    assert dets.shape[1] == 6 + 10 and len(dets) == len(ref) > 5
    assert np.abs(dets[:, 6:] - ref[:, 6:]).max() <= 1e-3  # the landmarks, x, y per point, in input pixels
    cx = (dets[:, 0] + dets[:, 2]) / 2  # random weights: landmarks sit within a few strides of their box centre
    assert np.abs(dets[:, 6::2] - cx[:, None]).max() < 320


def test_torch_face_levels(exported, tmp_path):
    res = strip(exported, tmp_path / "raw.onnx", layout=Layout("levels"), conf=CONF)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, dims(o)) for o in raw.graph.output] == [
        ("outputs_s8", [1, 15, 40, 40]), ("outputs_s16", [1, 15, 20, 20]), ("outputs_s32", [1, 15, 10, 10])]
    assert [c["name"] for c in res.metadata["channels"]] == ["cls", "reg", "lmk"]
    (check,) = res.verification.checks
    assert check.ok and check.decode.max_abs_err_boxes <= 1e-3 and check.detections.matched > 5


def test_generated_face_split(tmp_path):
    """The split layouts give the landmarks an output of their own, after _cls and before _sum."""
    src = tmp_path / "face.onnx"
    onnx.save(yolov6_af(width=8, nc=1, landmarks=True), str(src))
    res = strip(src, tmp_path / "raw.onnx", layout=Layout("flat-split", score_sum=True), conf=0.0105)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, dims(o)) for o in raw.graph.output] == [
        ("outputs_box", [1, ROWS, 4]), ("outputs_cls", [1, ROWS, 1]), ("outputs_lmk", [1, ROWS, 10]),
        ("outputs_sum", [1, ROWS, 1])]
    (check,) = res.verification.checks
    assert check.ok and check.decode.max_abs_err <= 1e-3 and check.detections.matched > 0


@pytest.mark.parametrize("nc,opset", [(1, 13), (3, 12)])
def test_generated_face(nc, opset, tmp_path):
    src = tmp_path / "face.onnx"
    onnx.save(yolov6_af(width=8, nc=nc, landmarks=True, opset=opset), str(src))
    res = strip(src, tmp_path / "raw.onnx", conf=0.0105)  # the generator's scores sit at upstream's 0.01 prior
    assert res.head.task == "face" and res.head.landmarks == 5
    assert any("5 landmarks" in r for r in res.head.reasons)
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0 and check.decode.max_abs_err <= 1e-3
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert dims(raw.graph.output[0]) == [1, ROWS, 4 + nc + 10]


def test_landmarks_off_the_anchor_points_are_refused():
    """A landmark Add whose constant is not the cell centres: the recorded formula would be wrong, so no head."""
    m = yolov6_af(width=8, nc=1, landmarks=True)
    ix = GraphIndex(m)
    for n in m.graph.node:
        if n.op_type == "Constant":
            v = onnx.numpy_helper.to_array(n.attribute[0].t)
            if v.shape == (ROWS, 10):
                n.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(v + np.float32(0.5), n.attribute[0].t.name))
    del ix
    with pytest.raises(NoHeadError, match=r"^no YOLO head: face .*: the landmarks' Add constant .* is not the anchor "
                                          r"points \(cell \+ 0\.5\) repeated per landmark \(once\)$"):
        locate(m)


def test_layer2_sees_landmarks_recorded_elsewhere(exported, tmp_path):
    """Layer 2 covers the landmark columns: a record placing them after the scores fails it."""
    from onnx_headcut.check.layers import decode_check
    from onnx_headcut.heads import Geometry

    res = strip(exported, tmp_path / "raw.onnx", conf=CONF)
    meta = dict(res.metadata)
    meta["original_output"] = dict(meta["original_output"], extra_at=6)
    x = deterministic_input((1, 3, 320, 320), seed=3)
    y = session(str(exported)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    allowed = Allowed.for_input(x.shape, np.float32)
    good = decode_check(y, original_output(r, res.metadata), allowed, Geometry.of(res.metadata))
    assert good.ok and good.max_abs_err_boxes <= 1e-3
    wrong = decode_check(y, original_output(r, Geometry.of(meta)), allowed, Geometry.of(res.metadata))
    assert not wrong.ok and wrong.max_abs_err > 1.0


PHOTO = Path(__file__).resolve().parents[2] / "samples" / "images" / "astronaut.jpg"


def test_detect_landmarks_original_and_raw(exported, tmp_path):
    """``detect`` on a photograph: the original and the raw model give the same boxes and landmarks (image
    pixels); --json carries them as [[x, y], ...]; the drawing has the dots."""
    from onnx_headcut.detect import detect as detect_image
    from onnx_headcut.detect import draw

    strip(exported, tmp_path / "raw.onnx", conf=CONF)
    orig = detect_image(exported, PHOTO, conf=CONF)
    raw = detect_image(tmp_path / "raw.onnx", PHOTO, conf=CONF)
    assert len(raw.detections) == len(orig.detections) > 0
    for a, b in zip(orig.detections, raw.detections):
        assert len(a.landmarks) == len(b.landmarks) == 5
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() <= 1e-2
    js = raw.to_json()["detections"][0]
    assert js["landmarks"] == [[round(x, 2), round(y, 2)] for x, y in raw.detections[0].landmarks]
    assert draw(PHOTO, raw, tmp_path / "drawn.png").stat().st_size > 0
