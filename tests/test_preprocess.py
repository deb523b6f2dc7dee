"""Each project's own preprocessing, against references written here from the upstream code.

Ultralytics' predict (``LetterBox(auto=False)``; YOLOv5, YOLOv6 and YOLOv7 letterbox the same
way) and YOLOX's ``preproc`` are re-written below from their source. Their resize is
``cv2.resize(..., INTER_LINEAR)``: with OpenCV installed the references use it (and headcut must
equal it exactly); without, a float bilinear resize with OpenCV's rule (half-pixel centres, edge
clamping) stands in, which OpenCV's fixed-point arithmetic stays within one grey level of, and
OpenCV's exact output on two small images is recorded below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnx_headcut.check.ort import image_input, session
from onnx_headcut.detect import detect
from onnx_headcut.metadata import read_metadata
from onnx_headcut.preprocess import ULTRALYTICS, YOLOX, Preprocess, letterbox, resize_linear, to_input
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af, yolov8, yolox

PHOTOS = Path(__file__).resolve().parents[1] / "samples" / "images"

try:
    import cv2
except ImportError:
    cv2 = None

#: ``cv2.resize(img, (8, 6), interpolation=cv2.INTER_LINEAR)[..., 1]`` (OpenCV 4.10 and 5.0) of the
#: 4x5 image below: an upscale by 1.6 x 1.5
CV2_UP = [[37, 85, 139, 48, 38, 107, 176, 225], [59, 107, 160, 70, 59, 129, 126, 119],
          [87, 136, 189, 98, 88, 157, 82, 19], [116, 164, 218, 127, 116, 186, 111, 48],
          [145, 137, 126, 116, 145, 215, 140, 77], [166, 102, 28, 97, 167, 236, 161, 98]]
#: ``cv2.resize(big, (5, 3), interpolation=cv2.INTER_LINEAR)[..., 1]`` of the 7x13 image below: a downscale
CV2_DOWN = [[37, 148, 3, 69, 136], [80, 191, 46, 113, 128], [137, 163, 103, 170, 185]]


def _small():
    img = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 37 % 256).astype(np.uint8)
    return img, np.kron(img, np.ones((2, 3, 1), np.uint8))[:7, :13]


def _bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's INTER_LINEAR rule in floating point: source coordinate ``(d + 0.5) * n0 / n - 0.5``,
    clamped to the image, two-tap interpolation on each axis, rounded."""
    w, h = size

    def axis(n0, n):
        f = np.clip((np.arange(n) + 0.5) * n0 / n - 0.5, 0, n0 - 1)
        i0 = np.floor(f).astype(int)
        return i0, np.minimum(i0 + 1, n0 - 1), f - i0

    y0, y1, fy = axis(img.shape[0], h)
    x0, x1, fx = axis(img.shape[1], w)
    im = img.astype(np.float64)
    rows = im[:, x0] * (1 - fx)[None, :, None] + im[:, x1] * fx[None, :, None]
    out = rows[y0] * (1 - fy)[:, None, None] + rows[y1] * fy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _resize(img, size):
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) if cv2 is not None else _bilinear(img, size)


def ultralytics_letterbox(img, new_shape):
    """ultralytics.data.augment.LetterBox(new_shape, auto=False, scaleup=True, center=True)."""
    shape = img.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (new_shape[1] - new_unpad[0]) / 2, (new_shape[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        img = _resize(img, new_unpad)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return np.pad(img, ((top, bottom), (left, right), (0, 0)), constant_values=114), (top, bottom, left, right)


def yolox_preproc(img_bgr, input_size):
    """yolox.data.data_augment.preproc (legacy=False): 114 canvas, resized image at the top left, CHW, 0-255."""
    padded = np.ones((input_size[0], input_size[1], 3), dtype=np.uint8) * 114
    r = min(input_size[0] / img_bgr.shape[0], input_size[1] / img_bgr.shape[1])
    resized = _resize(img_bgr, (int(img_bgr.shape[1] * r), int(img_bgr.shape[0] * r))).astype(np.uint8)
    padded[: int(img_bgr.shape[0] * r), : int(img_bgr.shape[1] * r)] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), r


def _photo(size=None, crop=None) -> np.ndarray:
    im = Image.open(PHOTOS / "chelsea.jpg").convert("RGB")
    if crop:
        im = im.crop(crop)
    if size:
        im = im.resize(size, Image.BILINEAR)
    return np.asarray(im)


def test_resize_is_opencvs_fixed_point_inter_linear():
    img, big = _small()
    up, down = resize_linear(img, 8, 6), resize_linear(big, 5, 3)
    assert up.shape == (6, 8, 3) and down.shape == (3, 5, 3)
    assert up[..., 1].tolist() == CV2_UP and down[..., 1].tolist() == CV2_DOWN
    # within one grey level of the float rule, and not exactly it (the 11-bit weights show)
    diff = np.abs(up.astype(int) - _bilinear(img, (8, 6)))
    assert diff.max() == 1
    if cv2 is not None:
        for h0, w0, h, w in [(300, 451, 640, 963), (37, 91, 251, 617), (1080, 1920, 360, 640), (2, 3, 5, 7)]:
            x = np.random.default_rng(h0).integers(0, 256, (h0, w0, 3), dtype=np.uint8)
            assert np.array_equal(resize_linear(x, w, h), cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR))


# (image (w, h) or crop, model input (h, w)): upscale and downscale, landscape and portrait, odd padding
CASES = [((150, 100), None, (256, 320)), (None, None, (256, 320)), (None, (100, 0, 251, 300), (320, 256)),
         ((97, 61), None, (320, 320))]


@pytest.mark.parametrize("size,crop,shape", CASES)
def test_letterbox_is_ultralytics(size, crop, shape):
    img = _photo(size, crop)
    ours, r, (px, py) = letterbox(img, shape)
    ref, (top, bottom, left, right) = ultralytics_letterbox(img, shape)
    assert ours.shape == ref.shape == (*shape, 3)
    assert (px, py) == (left, top) and r == min(shape[0] / img.shape[0], shape[1] / img.shape[1])
    inner = np.zeros(shape, bool)
    inner[top:shape[0] - bottom, left:shape[1] - right] = True
    assert (ours[~inner] == 114).all() and not (ours[inner] == 114).all()
    diff = np.abs(ours.astype(int) - ref)
    assert diff.max() <= (0 if cv2 is not None else 1), diff.max()
    x = to_input(ours)
    assert x.shape == (1, 3, *shape) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(x[0, :, 0, 0] * 255, ours[0, 0].astype(np.float32))


@pytest.mark.parametrize("size,crop,shape", CASES[:3])
def test_yolox_preprocessing_is_yoloxs(size, crop, shape):
    img = _photo(size, crop)
    ours, r, pad = letterbox(img, shape, YOLOX)
    ref, r_ref = yolox_preproc(img[..., ::-1], shape)  # YOLOX reads BGR with cv2.imread
    x = to_input(ours, YOLOX)[0]
    assert pad == (0.0, 0.0) and r == r_ref and x.shape == ref.shape
    assert x.max() > 1 and np.abs(x - ref).max() <= (0 if cv2 is not None else 1)
    nh, nw = int(img.shape[0] * r), int(img.shape[1] * r)
    assert (x[:, nh:] == 114).all() and (x[:, :, nw:] == 114).all()
    np.testing.assert_array_equal(x[:, 0, 0], ours[0, 0, ::-1])  # channel 0 is blue


def test_preprocess_is_recorded_and_used_by_verify_image(tmp_path):
    onnx.save(yolox(width=4), str(tmp_path / "x.onnx"))
    onnx.save(yolov6_af(width=4), str(tmp_path / "v6.onnx"))
    rx = strip(tmp_path / "x.onnx", tmp_path / "x.raw.onnx", images=(PHOTOS / "chelsea.jpg",))
    r6 = strip(tmp_path / "v6.onnx", tmp_path / "v6.raw.onnx")
    assert rx.metadata["preprocess"] == {"scale": 1.0, "pad": "bottom_right", "value": 114, "channels": "bgr",
                                         "size": "floor"}
    assert r6.metadata["preprocess"] == {"scale": 1 / 255, "pad": "center", "value": 114, "channels": "rgb",
                                         "size": "round"}
    assert json.loads((tmp_path / "x.raw.head.json").read_text())["preprocess"] == rx.metadata["preprocess"]
    assert Preprocess.of(read_metadata(tmp_path / "x.raw.onnx")) == YOLOX
    legacy = {k: v for k, v in rx.metadata.items() if k != "preprocess"}  # records written before #13
    assert Preprocess.of(legacy) == YOLOX and Preprocess.of({"family": "YOLOv8"}) == ULTRALYTICS
    x = image_input(PHOTOS / "chelsea.jpg", (1, 3, 320, 320), pre=Preprocess.of(rx.metadata))
    ref, _ = yolox_preproc(np.asarray(Image.open(PHOTOS / "chelsea.jpg").convert("RGB"))[..., ::-1], (320, 320))
    assert np.abs(x[0] - ref).max() <= (0 if cv2 is not None else 1)
    assert [c.input for c in rx.verification.checks][-1] == str(PHOTOS / "chelsea.jpg")
    assert rx.verification.ok


def _nms(boxes, scores, iou):
    """torchvision.ops.nms: greedy, best score first."""
    order, keep = np.argsort(-scores, kind="stable"), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), 1)
        order = rest[inter / (area[i] + area[rest] - inter) <= iou]
    return np.asarray(keep, int)


def ultralytics_predict(original: Path, img: np.ndarray, conf: float, iou: float = 0.45):
    """Ultralytics' predict on an ONNX export: letterbox, RGB / 255, run, non_max_suppression, scale_boxes."""
    s = session(original)
    shape = tuple(s.get_inputs()[0].shape[2:])
    boxed, _ = ultralytics_letterbox(img, shape)
    x = boxed.transpose(2, 0, 1)[None].astype(np.float32) / 255
    out = s.run(None, {s.get_inputs()[0].name: x})[0][0].T  # (N, 4 + nc)
    score, cls = out[:, 4:].max(1), out[:, 4:].argmax(1)
    keep = score > conf
    xywh, score, cls = out[keep, :4], score[keep], cls[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    k = _nms(boxes + cls[:, None] * 7680.0, score, iou)
    boxes, score, cls = boxes[k], score[k], cls[k]
    h0, w0 = img.shape[:2]
    gain = min(shape[0] / h0, shape[1] / w0)
    pad = round((shape[1] - w0 * gain) / 2 - 0.1), round((shape[0] - h0 * gain) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / gain).clip(0, w0)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / gain).clip(0, h0)
    return boxes, score, cls


@pytest.mark.parametrize("size,crop", [((150, 100), None), (None, None), (None, (100, 0, 251, 300))])
def test_detect_scores_are_ultralytics_predicts(tmp_path, size, crop):
    """detect on the raw model of a YOLOv8 export (non-square input) gives Ultralytics' predict."""
    onnx.save(yolov8(nc=3, size=(256, 320), width=8), str(tmp_path / "v8.onnx"))
    strip(tmp_path / "v8.onnx", tmp_path / "raw.onnx")
    img = _photo(size, crop)
    Image.fromarray(img).save(tmp_path / "photo.png")
    boxes, score, cls = ultralytics_predict(tmp_path / "v8.onnx", img, conf=0.0)
    conf = float(np.sort(score)[-20] - 1e-4)  # about 20 detections
    res = detect(tmp_path / "raw.onnx", tmp_path / "photo.png", conf=conf)
    keep = score >= conf
    got = np.array([[*d.box, d.score, d.cls] for d in res.detections])
    ref = np.concatenate([boxes[keep], score[keep, None], cls[keep, None]], 1)
    assert len(got) == len(ref) >= 15
    # scores within 1e-3 (relative: random weights score ~0.006); near-equal scores may swap places
    np.testing.assert_allclose(np.sort(got[:, 4]), np.sort(ref[:, 4]), rtol=1e-3, atol=0)
    unmatched = list(range(len(got)))
    for r in ref:  # every reference detection has its own: same class, box within half a pixel
        j = next(j for j in unmatched if got[j, 5] == r[5] and np.abs(got[j, :4] - r[:4]).max() <= 0.5
                 and abs(got[j, 4] - r[4]) <= 1e-3 * r[4])
        unmatched.remove(j)
