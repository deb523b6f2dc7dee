"""mAP@0.5 of a decoded Ultralytics-style detector on scenes with known boxes (numpy + onnxruntime).

Used by ``scripts/train_sample.py`` and the tests to state how well the trained samples detect.
Matching as in Ultralytics' ``DetectionValidator`` at a single IoU threshold: detections sorted by
score, each matched to the unmatched ground-truth box of the same class it overlaps most (IoU ≥
``iou``); AP is the area under the monotone precision envelope sampled at 101 recall points
(``ultralytics/utils/metrics.py::compute_ap``, method ``interp``; as there, the curve is closed at
recall 1 with precision 0, so a perfect detector scores 0.995); mAP averages the classes that have
ground truth.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from .decode import postprocess
from .preprocess import letterbox, scale_boxes, to_input


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def match(det: np.ndarray, boxes: np.ndarray, classes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Which detections ``(K, 6)`` ``[x1, y1, x2, y2, score, class]`` are true positives (bool ``(K,)``)."""
    tp = np.zeros(len(det), dtype=bool)
    if not len(det) or not len(boxes):
        return tp
    ov = box_iou(det[:, :4], boxes)
    ov[det[:, 5, None].astype(np.int64) != classes[None]] = 0
    used = np.zeros(len(boxes), dtype=bool)
    for i in np.argsort(-det[:, 4], kind="stable"):
        cand = np.where(used, 0, ov[i])
        j = int(cand.argmax())
        if cand[j] >= iou:
            tp[i], used[j] = True, True
    return tp


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope at 101 recall points (Ultralytics ``compute_ap``, ``interp``)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


def mean_ap(detections: Iterable[np.ndarray], truths: Iterable[tuple[np.ndarray, np.ndarray]], nc: int,
            iou: float = 0.5) -> tuple[float, np.ndarray]:
    """``(mAP, per-class AP)`` over images: ``detections`` per image, ``truths`` = ``(boxes, classes)`` per image.

    A class without ground truth has AP ``nan`` and is left out of the mean.
    """
    scores, hits, labels, counts = [], [], [], np.zeros(nc, dtype=np.int64)
    for det, (boxes, classes) in zip(detections, truths):
        det = np.asarray(det, np.float32).reshape(-1, 6)
        scores.append(det[:, 4])
        hits.append(match(det, boxes, classes, iou))
        labels.append(det[:, 5].astype(np.int64))
        counts += np.bincount(np.asarray(classes, np.int64), minlength=nc)[:nc]
    s, tp, lab = (np.concatenate(x) if x else np.zeros(0) for x in (scores, hits, labels))
    ap = np.full(nc, np.nan)
    for c in range(nc):
        if counts[c] == 0:
            continue
        order = np.argsort(-s[lab == c], kind="stable")
        t = tp[lab == c][order].astype(np.float64)
        ctp, cfp = np.cumsum(t), np.cumsum(1 - t)
        ap[c] = average_precision(ctp / counts[c], ctp / np.maximum(ctp + cfp, 1e-9)) if len(t) else 0.0
    return (float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0), ap


def ultralytics_detections(output: np.ndarray, conf: float = 0.001, iou: float = 0.7,
                           max_det: int = 300) -> np.ndarray:
    """Detections ``(K, 6)`` from a decoded Ultralytics output ``(1, 4 + nc, N)`` (``[cx, cy, w, h, scores]``)."""
    rows = np.asarray(output, np.float32)[0].T
    rows = np.concatenate([rows[:, :4], np.ones((len(rows), 1), np.float32), rows[:, 4:]], 1)
    return postprocess(rows[None], conf, iou, max_det)


def onnx_detections(model: str | os.PathLike, images: Iterable[np.ndarray], conf: float = 0.001,
                    iou: float = 0.7) -> list[np.ndarray]:
    """Run a decoded Ultralytics-style ONNX file on HWC uint8 RGB ``images`` (letterboxed to its input
    size) with onnxruntime; detections per image in the image's own pixels."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    size = (int(inp.shape[2]), int(inp.shape[3]))
    out = []
    for image in images:
        padded, ratio, pad = letterbox(image, size)
        det = ultralytics_detections(sess.run(None, {inp.name: to_input(padded)})[0], conf, iou)
        det[:, :4] = scale_boxes(det[:, :4], ratio, pad)
        out.append(det)
    return out


def head_detections(model: str | os.PathLike, images: Iterable[np.ndarray], conf: float = 0.001,
                    iou: float = 0.7) -> list[np.ndarray]:
    """Like :func:`onnx_detections` for a decoded export of any located head: the image preprocessed as
    that head's family's predict does (e.g. YOLOX: BGR 0-255, image at the top left), the output read
    through :func:`onnx_headcut.decode.canonical`; detections per image in the image's own pixels."""
    import onnxruntime as ort

    from .decode import canonical
    from .pipeline import decoded_head

    head = decoded_head(model, "MODEL")
    pre = head.preprocess
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    size = (int(head.input_shape[-2]), int(head.input_shape[-1]))
    out = []
    for image in images:
        padded, ratio, pad = letterbox(image, size, pre)
        (y,) = sess.run([head.final_output], {head.input_name: to_input(padded, pre)})
        det = postprocess(canonical(y, head), conf, iou)
        det[:, :4] = scale_boxes(det[:, :4], ratio, pad)
        out.append(det)
    return out
