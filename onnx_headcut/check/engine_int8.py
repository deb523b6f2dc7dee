"""``verify`` of an int8 converted model: detection agreement with the fp32 original, not the three layers.

An int8 model cannot reproduce the original's values (layer 1 and 2 would fail by design), so
:func:`agreement_check` measures what a user sees instead: over every input (verify's deterministic
random input, the ``--image`` files, and :data:`SCENES` generated scenes of :mod:`onnx_headcut.synth.scenes`
at the model's input size), the fp32 original's detections in onnxruntime (at ``conf``, class-aware
NMS at ``iou``) are the reference, and the int8 model's detections on the engine must keep at least
``min_recall`` of them (recall) with at least ``min_recall`` of its own detections matching one
(precision): same class, IoU >= 0.5, one to one (:func:`onnx_headcut.check.int8.agreement`). Without a
single reference detection there is nothing to agree on and the check fails (never certified). The
decoded outputs' max box and score errors against the original's, over every row whose reference values are
finite, are reported but do not gate (a random-weight YOLOX head's fp32 ``exp`` overflows to inf on scenes,
and inf - inf would make the whole figure nan); neither do a task head's figures over the matched pairs
(keypoint distance, mask IoU, angle error; see :class:`~onnx_headcut.check.results.AgreementCheck`).
"""

from __future__ import annotations

import math

import numpy as np

from ..decode import canonical, decode, detect, original_output, postprocess, selected
from ..heads import Geometry
from ..preprocess import Preprocess, letterbox, to_input
from .int8 import agreement
from .int8_tasks import paired_protos, segment_rows, task_options
from .results import DEFAULT_MIN_RECALL, AgreementCheck, Check

#: generated scenes an int8 model is verified on besides the random input and ``--image`` files, and their seed
#: (apart from the trained sample's training, mAP, calibration and evaluation seeds)
SCENES, SCENE_SEED = 8, 15 + 4_000_000


def scene_inputs(shape, pre: Preprocess, count: int = SCENES, seed: int = SCENE_SEED) -> list[tuple[str, np.ndarray]]:
    """``count`` generated scenes at the input's size, as the model takes them: ``(label, NCHW float32)``."""
    from ..synth.scenes import scenes

    h, w = int(shape[-2]), int(shape[-1])
    return [(f"scene({seed}, {k})", to_input(letterbox(s.image, (h, w), pre)[0], pre))
            for k, s in enumerate(scenes(seed, count, (h, w)))]


def _max_errors(got: np.ndarray | None, ref: np.ndarray | None) -> tuple[float, float]:
    if got is None or ref is None or got.shape != ref.shape:
        return math.nan, math.nan
    ref = ref.astype(np.float32)
    rows = np.isfinite(ref).all(-1)  # a row the fp32 original overflows in says nothing of the int8 model
    if not rows.any():
        return math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(got.astype(np.float32)[rows] - ref[rows])
    d = np.where(np.isnan(d), np.inf, d)  # a nan where the reference is finite is an infinite error
    return float(d[..., :4].max()), float(d[..., 4:].max())


def _candidate_extras(ys: list, head) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A converted decoded segment original's (prototypes, coefficient output) among its outputs after the
    first, found by shape (the prototypes' (1, nm, h, w); YOLOv6's (1, N, 1 + nm) coefficients), None where absent."""
    rest = [np.asarray(y) for y in ys[1:]]
    protos = next((y for y in rest if y.shape[1:] == tuple(head.protos[1][1:])), None)
    coefs = next((y for y in rest if y.shape[1:] == tuple(head.coefficients[1][1:])), None) \
        if head.coefficients else None
    return protos, coefs


def agreement_check(head, meta: dict | None, xs: list[np.ndarray], refs: list, results: list, conf: float,
                    iou: float, engine: str, quantizer: str, min_recall: float = DEFAULT_MIN_RECALL,
                    label: str = "", extras: list[dict] | None = None) -> Check:
    """One :class:`Check` holding the :class:`AgreementCheck` of the int8 ``results`` (per input, the
    engine's outputs: the raw outputs when ``meta`` is given, else the decoded model's) against the fp32
    ``refs`` (per input, the original's decoded tensor first: for an NMS-free export the pair
    (selected, decoded)). ``extras``: per input the original's other outputs by name — a segment head's
    prototypes (and YOLOv6's coefficient output), for the masks of the matched pairs; without them (or when the
    candidate's prototypes are not found) the mask IoU is not measured (nan)."""
    g_any = Geometry.of(head)
    seg = bool(head.protos) and head.selection is None
    dets, ref_dets, errors, got_protos, ref_protos = [], [], [], [], []
    for k, (x, ref, ys) in enumerate(zip(xs, refs, results)):
        hw = tuple(x.shape[-2:])
        h = head.at(hw) if meta is not None else head
        g_head = Geometry.of(h)
        nms_free = head.selection is not None
        final, dec = ref[0] if nms_free else (ref[0], ref[0])
        ext = (extras[k] if extras is not None else {}) if seg else {}
        coefs = ext.get(head.coefficients[0]) if head.coefficients else None
        if nms_free:
            ref_dets.append(selected(final, conf))
        else:  # a task's extra columns are no class scores: num_classes and the task's own NMS (OBB: rotated)
            ref_dets.append(postprocess(segment_rows(canonical(dec, g_head), coefs), conf, iou,
                                        num_classes=g_head.num_classes, task=g_head.task))
        rp, gp = (ext.get(head.protos[0]) if seg else None), None
        if meta is not None:
            g = Geometry.of(meta).at(hw)
            dets.append(selected(original_output(list(ys), g), conf) if g.topk else detect(list(ys), g, conf, iou))
            rows = None if g.topk else decode(list(ys), g)
            if seg and len(ys) == len(g.output_shapes()) and np.shape(ys[-1])[1:] == g.protos[1:]:
                gp = np.asarray(ys[-1])  # the prototypes, after the raw outputs (at this input's size)
        elif nms_free:  # a converted NMS-free original: its first output is the selection
            dets.append(selected(ys[0], conf))
            rows = None
        else:
            rows = canonical(ys[0], g_head)
            gp, got_coefs = _candidate_extras(list(ys), head) if seg else (None, None)
            if head.coefficients and got_coefs is None:
                gp = None  # a YOLOv6 row without its coefficient output has no mask
            dets.append(postprocess(segment_rows(rows, got_coefs), conf, iou, num_classes=g_head.num_classes,
                                    task=g_head.task))
        got_protos.append(gp)
        ref_protos.append(rp)
        # NMS-free: the selection's rows are not the decoded tensor's, so no row-wise error
        errors.append(_max_errors(rows, None if nms_free else canonical(dec, g_head)))
    have = seg and all(p is not None for p in got_protos + ref_protos)
    a = agreement("int8", dets, ref_dets, **task_options(g_any),
                  protos=paired_protos(got_protos, ref_protos, [x.shape[-2:] for x in xs]) if have else None)
    box_err, score_err = (max(e[k] for e in errors) if errors and not any(math.isnan(e[k]) for e in errors)
                          else math.nan for k in (0, 1))
    chk = AgreementCheck(quantizer, len(xs), conf, a.reference, a.detections, a.matched, a.mean_iou, a.score_error,
                         box_err, score_err, min_recall, g_any.task, a.keypoint_error, a.mask_iou, a.min_mask_iou,
                         a.angle_error)
    return Check(label or f"{len(xs)} inputs", None, None, None, engine, agreement=chk)
