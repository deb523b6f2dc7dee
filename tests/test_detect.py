"""headcut detect: the original and the raw model give the same detections on a sample photograph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_headcut.check import gap_threshold, match_detections
from onnx_headcut.detect import detect, draw
from onnx_headcut.errors import InputError
from onnx_headcut.heads import Layout
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8
from onnx_headcut.synth.end2end import end2end, end2end_yolov7

PHOTOS = Path(__file__).resolve().parents[1] / "samples" / "images"


def _arr(res):
    return np.array([[*d.box, d.score, d.cls] for d in res.detections]).reshape(-1, 6)


@pytest.mark.parametrize("make,kw,layout", [(yolov6_v1, {}, Layout()), (yolov6_af, {"reg_max": 16}, Layout()),
                                            (yolov6_af, {"levels": 4, "size": (192, 320), "width": 4},
                                             Layout("levels")),
                                            # seed 1: with seed 0, chelsea.jpg has an anchor whose two best classes
                                            # tie to 2e-9 (5.3349e-5 / 5.3351e-5), which argmax breaks differently
                                            # in onnxruntime and numpy (layer 3 allows that: test_adversarial.py)
                                            (yolov8, {"seed": 1}, Layout("split", score_sum=True)),
                                            (yolov5, {}, Layout("flat-split", keep_sigmoid=True))])
@pytest.mark.parametrize("photo", ["chelsea.jpg", "astronaut.jpg"])
def test_original_and_raw_detect_the_same(make, kw, layout, photo, tmp_path):
    onnx.save(make(**{"width": 8, **kw}), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx", layout=layout)
    every = detect(tmp_path / "original.onnx", PHOTOS / photo, conf=0.0)
    conf = gap_threshold(np.array([d.score for d in every.detections]), 0.25, k=20)
    a = detect(tmp_path / "original.onnx", PHOTOS / photo, conf=conf)
    b = detect(tmp_path / "raw.onnx", PHOTOS / photo, conf=conf)
    assert (a.kind, b.kind) == ("decoded", "raw")
    matched, worst = match_detections(_arr(a), _arr(b))
    assert len(a.detections) == len(b.detections) == matched >= 20 and worst >= 0.99
    w, h = a.image_size
    assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in b.detections)


@pytest.mark.parametrize("make", [lambda: end2end_yolov7(yolov5(width=8, v7=True), "trt"),
                                  lambda: end2end_yolov7(yolov5(width=8, v7=True), "ort"),
                                  lambda: end2end(yolov8(width=8), "trt")], ids=["yolov7-trt", "yolov7-ort", "v8-trt"])
def test_end2end_originals_detect_through_their_decoded_tensor(make, tmp_path):
    """detect on an end-to-end NMS export crashed (exit 1): onnxruntime has no EfficientNMS_TRT, and the ONNX-NMS
    output (N, 7) was read as a decoded (1, N, 85) tensor (IndexError). It now runs the model up to the decoded
    tensor feeding the NMS, says so, and detects what the raw model detects."""
    onnx.save(make(), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx")
    every = detect(tmp_path / "original.onnx", PHOTOS / "astronaut.jpg", conf=0.0)
    conf = gap_threshold(np.array([d.score for d in every.detections]), 0.25, k=20)
    a = detect(tmp_path / "original.onnx", PHOTOS / "astronaut.jpg", conf=conf)
    b = detect(tmp_path / "raw.onnx", PHOTOS / "astronaut.jpg", conf=conf)
    assert a.note is not None and "end-to-end NMS" in a.note and b.note is None
    matched, worst = match_detections(_arr(a), _arr(b))
    assert len(a.detections) == len(b.detections) == matched >= 20 and worst >= 0.99
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "detect", str(tmp_path / "original.onnx"),
                        str(PHOTOS / "astronaut.jpg"), "--conf", str(conf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "note: an end-to-end NMS export" in p.stdout


def test_cli_detect_json_png_and_names(tmp_path):
    onnx.save(yolov6_af(width=8), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"thing{i}" for i in range(80)))

    def headcut(*args):
        return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)

    p = headcut("detect", tmp_path / "raw.onnx", PHOTOS / "chelsea.jpg", "--conf", "0.005", "--names", names,
                "--json", "-o", tmp_path / "out.png")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["kind"] == "raw" and j["image_size"] == [451, 300] and j["detections"]
    assert all(d["name"].startswith("thing") for d in j["detections"])
    from PIL import Image

    assert Image.open(tmp_path / "out.png").size == (451, 300)
    p = headcut("detect", tmp_path / "original.onnx", PHOTOS / "chelsea.jpg", "--conf", "0.005")
    assert p.returncode == 0 and "decoded model on ort" in p.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    p = headcut("detect", tmp_path / "raw.onnx", PHOTOS / "chelsea.jpg", "--names", bad)
    assert p.returncode == 2 and "2 names for a model with 80 classes" in p.stderr
    p = headcut("detect", tmp_path / "raw.onnx", tmp_path / "nope.jpg")
    assert p.returncode == 2 and "no such image" in p.stderr


def test_draw_writes_atomically(tmp_path):
    onnx.save(yolov6_v1(width=8), str(tmp_path / "m.onnx"))
    res = detect(tmp_path / "m.onnx", PHOTOS / "astronaut.jpg", conf=0.001)
    out = draw(PHOTOS / "astronaut.jpg", res, tmp_path / "boxes.png")
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["boxes.png", "m.onnx"]


def test_draw_accepts_inverted_boxes(tmp_path):
    """Issue 13: a random-weight YOLOv6 0.4.0 export predicted boxes with x2 < x1 / y2 < y1 and drawing
    them raised ``ValueError: y1 must be greater than or equal to y0`` (exit 1). They are drawn as spans."""
    from dataclasses import replace

    from onnx_headcut.detect import Detection

    onnx.save(yolov6_v1(width=8), str(tmp_path / "m.onnx"))
    res = detect(tmp_path / "m.onnx", PHOTOS / "astronaut.jpg", conf=0.001)
    inverted = (Detection((200.0, 150.0, 40.0, 20.0), 0.5, 0, "person"),
                Detection((10.0, 90.0, 60.0, 30.0), 0.4, 1, "x"))
    out = draw(PHOTOS / "astronaut.jpg", replace(res, detections=inverted), tmp_path / "inv.png")
    from PIL import Image

    px = np.asarray(Image.open(out).convert("RGB")).astype(int)
    src = np.asarray(Image.open(PHOTOS / "astronaut.jpg").convert("RGB")).astype(int)
    changed = np.abs(px - src).sum(-1) > 60
    assert changed[20:151, 40].any() and changed[20:151, 200].any()  # both vertical edges of the first box
    assert not changed[300:, 300:].any()


def test_unknown_model_is_refused(tmp_path):
    (tmp_path / "x.mnn").write_bytes(b"junk")
    with pytest.raises(InputError, match="decoded original must be given as .onnx"):
        detect(tmp_path / "x.mnn", PHOTOS / "chelsea.jpg")


def test_draw_puts_each_task_element_where_it_belongs(tmp_path):
    """The task drawings, checked by their pixels on a black image (before: only that a PNG was written): a mask
    tints exactly its pixels (box lines and label aside), a rotated box's outline runs through its corners and
    not the corners of the box enclosing it, visible keypoints are dots and one of visibility < 0.5 is not
    drawn, the COCO skeleton joins two visible keypoints, face landmarks are dots."""
    from PIL import Image

    from onnx_headcut.detect import Detection, DetectResult
    from onnx_headcut.heads.tasks.pose import SKELETON

    img = tmp_path / "black.png"
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(img)
    mask = np.zeros((200, 300), bool)
    mask[120:160, 30:90] = True
    c, r = np.array([220.0, 60.0]), 40.0  # a square turned by 45°: corners on the axes through its centre
    corners = [[c[0] + r, c[1]], [c[0], c[1] + r], [c[0] - r, c[1]], [c[0], c[1] - r]]
    kpts = [[110.0 + 10 * k, 180.0, 0.9] for k in range(17)]
    kpts[3] = [280.0, 150.0, 0.1]  # hidden, away from every other element
    a, b = SKELETON[0]  # a limb both of whose ends are visible, drawn between them
    kpts[a - 1][:2], kpts[b - 1][:2] = [120.0, 20.0], [120.0, 100.0]
    dets = (Detection((20.0, 110.0, 100.0, 170.0), 0.9, 0, "seg", mask=mask),
            Detection((180.0, 20.0, 260.0, 100.0), 0.8, 1, "obb",
                      extra={"rotated_box": {"cx": 220.0, "cy": 60.0, "w": 56.6, "h": 56.6, "angle": 0.785,
                                             "corners": corners}}),
            Detection((110.0, 10.0, 290.0, 190.0), 0.7, 2, "pose", extra={"keypoints": kpts}),
            Detection((5.0, 5.0, 60.0, 60.0), 0.6, 3, "face", landmarks=((30.0, 30.0), (45.0, 40.0))))
    res = DetectResult("m.onnx", "raw", "ort", str(img), (300, 200), dets)
    px = np.asarray(Image.open(draw(img, res, tmp_path / "out.png")).convert("RGB")).astype(int)
    lit = px.sum(-1) > 0

    inner = np.zeros_like(mask)
    inner[125:155, 35:85] = True  # the mask away from its box's lines
    assert lit[inner].all() and (px[inner] == px[140, 60]).all()  # one tint over the whole mask
    assert np.abs(px[140, 60] - np.array([255, 56, 56]) * 0.45).max() <= 1  # class 0's colour at 45 %
    assert not lit[125:155, 92:98].any()  # beside the mask, inside the box: untouched

    for x, y in corners:  # the rotated outline passes through each corner...
        assert lit[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].any(), (x, y)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):  # ...and each edge's midpoint (inside the
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2  # enclosing box: only the rotated outline reaches it)
        assert lit[int(my) - 1:int(my) + 2, int(mx) - 1:int(mx) + 2].any(), (mx, my)
    assert not lit[28:34, 188:194].any()  # ...and not near the enclosing box's corner region inside it
    assert not lit[60, 205:236].any()  # the square's centre row, inside the rotated box: empty

    def dot(x, y):
        return lit[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].all()

    shown = [k for i, k in enumerate(kpts) if i != 3 and i not in (a - 1, b - 1)]
    assert all(dot(x, y) for x, y, _ in shown)
    assert not lit[145:156, 275:286].any()  # the hidden keypoint: no dot, no limb
    assert lit[40:80, 118:123].any(axis=1).all()  # the limb between (120, 20) and (120, 100)
    assert dot(30, 30) and dot(45, 40)  # the face landmarks
