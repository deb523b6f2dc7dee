"""``verify --int8``: how closely int8 models detect what the fp32 original detects.

The fp32 original's detections on held-out images (at ``conf``, class-aware NMS at ``iou``) are the
reference. The original itself (decoded) and each raw model are quantized with
:func:`onnx_headcut.quantize.quantize` on the same calibration images and run on the same held-out
images; an int8 detection matches a reference detection of the same class with IoU ≥ 0.5 (one to
one, best score first, as :func:`onnx_headcut.evaluate.match`). For each model: recall (matched /
reference), precision (matched / int8 detections), and over the matched pairs the mean absolute
score error and mean IoU. Boxes are compared in the letterboxed input's pixels (IoU does not change
with the letterbox's scale). Task heads add, over the same pairs: pose the mean keypoint distance (px),
segment the mean and min IoU of the pair's masks (each side's from its own coefficients and prototypes),
OBB the mean angle error (radians, :func:`angle_error`). These are measurements: :func:`verify_int8` only
raises for bad input.

Raw models: the RAW files given, or (``layouts``) the original stripped into each layout in a
private temporary folder, each verified by :func:`onnx_headcut.strip.strip` before it is quantized.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..decode import canonical, detect, original_output, postprocess, selected
from ..decode import protos as decode_protos
from ..errors import InputError, UsageError
from ..evaluate import box_iou
from ..heads import Geometry, Layout
from ..metadata import head_for
from ..quantize import check_method, image_files, model_inputs, quantize
from .int8_tasks import angle_error, pair_mask_ious, paired_protos, segment_rows, task_options
from .results import check_options

#: the IoU at which an int8 detection matches a reference one
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Agreement:
    """One int8 model against the fp32 original's detections."""

    name: str  # "original (decoded)" or the raw layout, e.g. "split", "flat +dfl"
    reference: int  # fp32 original detections over all held-out images
    detections: int  # int8 detections
    matched: int
    score_error: float  # mean |score_int8 - score_fp32| over matched pairs (nan without any)
    mean_iou: float  # mean IoU over matched pairs (nan without any)
    keypoint_error: float = float("nan")  # pose: mean keypoint distance (px) over matched pairs (nan: not pose)
    mask_iou: float = float("nan")  # segment: mean IoU of the matched pairs' masks (nan: not segment, or no pair)
    min_mask_iou: float = float("nan")  # segment: the lowest of them
    angle_error: float = float("nan")  # obb: mean angle error (radians, :func:`angle_error`) over matched pairs

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else float("nan")

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else float("nan")


@dataclass(frozen=True)
class Int8Report:
    original: str
    method: str
    ort_version: str
    calib_images: int
    eval_images: int
    conf: float
    rows: tuple[Agreement, ...]  # the decoded original first, then each raw model
    task: str = "detect"  # the head's task: which task figures the report shows

    @property
    def best(self) -> Agreement | None:
        """The raw model to use: the highest min(recall, precision), then the lowest score error."""
        raw = [r for r in self.rows[1:] if r.reference and r.detections]
        if not raw:
            return None
        return max(raw, key=lambda r: (round(min(r.recall, r.precision), 4),
                                       -r.score_error if r.score_error == r.score_error else -math.inf))


def layout_name(layout: Layout) -> str:
    """``split``, ``flat +dfl`` (the DFL expectation kept in the graph, ``--keep-dfl``), ``split +sigmoid``
    (``--keep-sigmoid``), ``split +sum`` (``--score-sum``): how the report names a raw layout."""
    extra = [name for name, on in (("dfl", layout.keep_dfl), ("sigmoid", layout.keep_sigmoid),
                                   ("sum", layout.score_sum)) if on]
    return " ".join([layout.kind, *("+" + e for e in extra)])


def recorded_name(meta: dict) -> str:
    """The report's name of a raw model's layout, from its head record."""
    sigmoid = any(c.get("sigmoid") for c in meta.get("channels", []) if c.get("name") in ("obj", "cls"))
    return layout_name(Layout(str(meta.get("layout", "flat")), bool(meta.get("dfl_in_graph", False)), sigmoid,
                              bool(meta.get("score_sum", False))))


def parse_layouts(text: str) -> tuple[Layout, ...]:
    """``"flat,split+dfl,flat-split"`` → layouts; ``+dfl`` keeps the DFL bins, ``+sigmoid`` the sigmoid."""
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        kind, *flags = item.split("+")
        bad = [f for f in flags if f not in ("dfl", "sigmoid", "sum")]
        if bad:
            raise UsageError(f"--layouts: unknown option +{bad[0]} in {item!r} (use +dfl, +sigmoid, +sum)"[:200])
        out.append(Layout(kind, "dfl" in flags, "sigmoid" in flags, "sum" in flags))
    if not out:
        raise UsageError("--layouts names no layout")
    return tuple(out)


def _pairs(det: np.ndarray, ref: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (det, ref) matches: same class, IoU ≥ 0.5, det best score first, each to its best ref."""
    if not len(det) or not len(ref):
        return []
    ov = box_iou(det[:, :4], ref[:, :4])
    ov[det[:, 5, None].astype(np.int64) != ref[None, :, 5].astype(np.int64)] = 0
    used = np.zeros(len(ref), dtype=bool)
    out = []
    for i in np.argsort(-det[:, 4], kind="stable"):
        cand = np.where(used, 0, ov[i])
        j = int(cand.argmax())
        if cand[j] >= MATCH_IOU:
            used[j] = True
            out.append((int(i), j))
    return out


def agreement(name: str, dets: list[np.ndarray], refs: list[np.ndarray], kpt_dims: int = 0, *, obb: bool = False,
              protos: list | None = None) -> Agreement:
    """Agreement of per-image detections ``dets`` with the reference ``refs`` (both ``(K, 6)`` per image; a task
    head's with its extra columns). Over the matched pairs, for a pose head (``kpt_dims`` values per keypoint) the
    mean keypoint distance in pixels; for an OBB head (``obb``: columns 6-10 are cx, cy, w, h, angle) the mean
    :func:`angle_error`; for a segment head (``protos``: per image ``(det prototypes, ref prototypes, (H, W))``,
    each side's rows ending in its mask coefficients) the mean and min IoU of the pairs' masks."""
    errs, ious, kpts, angles, masks, n_det, n_ref = [], [], [], [], [], 0, 0
    for k, (d, r) in enumerate(zip(dets, refs)):
        n_det, n_ref = n_det + len(d), n_ref + len(r)
        pairs = _pairs(d, r)
        for i, j in pairs:
            errs.append(abs(float(d[i, 4]) - float(r[j, 4])))
            ious.append(float(box_iou(d[i:i + 1, :4], r[j:j + 1, :4])[0, 0]))
            if kpt_dims:
                diff = (d[i, 6:] - r[j, 6:]).reshape(-1, kpt_dims)[:, :2].astype(np.float64)
                kpts.append(float(np.hypot(diff[:, 0], diff[:, 1]).mean()))
        if obb and pairs:
            angles.extend(angle_error(d[[i for i, _ in pairs], 6:11], r[[j for _, j in pairs], 6:11]).tolist())
        if protos is not None and pairs:
            dp, rp, shape = protos[k]
            masks.extend(pair_mask_ious(d, r, pairs, dp, rp, shape).tolist())
    nan = float("nan")

    def mean(v: list) -> float:
        return float(np.mean(v)) if v else nan

    return Agreement(name, n_ref, n_det, len(errs), mean(errs), mean(ious), mean(kpts), mean(masks),
                     float(np.min(masks)) if masks else nan, mean(angles))


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _decoded_dets(path: Path, located, inputs, conf: float, iou: float) -> list[np.ndarray]:
    """The decoded model's detections per input."""
    return _decoded_run(path, located, inputs, conf, iou)[0]


def _decoded_run(path: Path, located, inputs, conf: float, iou: float) -> tuple[list[np.ndarray], list | None]:
    """The decoded model's detections per input, and for a segment head (not NMS-free) its prototypes per input
    (else None)."""
    sess = _session(path)
    g = Geometry.of(located)
    seg = bool(located.protos) and located.selection is None
    names = [located.final_output, *((located.protos[0], *located.compared_outputs) if seg else ())]
    out, protos = [], []
    for x in inputs:
        y, *extra = sess.run(names, {located.input_name: x})
        if located.selection is not None:
            out.append(selected(y, conf))
            continue
        rows = canonical(y, g)
        if seg:
            rows = segment_rows(rows, extra[1] if len(extra) > 1 else None)
            protos.append(extra[0])
        out.append(postprocess(rows, conf, iou, num_classes=g.num_classes, task=g.task))
    return out, (protos if seg else None)


def _raw_dets(path: Path, meta: dict, inputs, conf: float, iou: float) -> list[np.ndarray]:
    """The raw model's detections per input."""
    return _raw_run(path, meta, inputs, conf, iou)[0]


def _raw_run(path: Path, meta: dict, inputs, conf: float, iou: float) -> tuple[list[np.ndarray], list | None]:
    """The raw model's detections per input, and for a segment head its prototypes (its last output) per input."""
    sess = _session(path)
    g = Geometry.of(meta)
    names = [o["name"] for o in meta.get("raw_outputs", [])] or None
    out, protos = [], []
    for x in inputs:
        ys = sess.run(names, {meta["input"]["name"]: x})
        out.append(selected(original_output(ys, g), conf) if g.topk else detect(ys, g, conf, iou))
        if g.protos and not g.topk:
            protos.append(decode_protos(ys, g))
    return out, (protos if g.protos and not g.topk else None)


def _split(files: list[Path]) -> tuple[list[Path], list[Path]]:
    if len(files) < 2:
        raise InputError(f"{files[0].parent}: without --eval the calibration folder needs at least 2 images "
                         "(every second one is held out)")
    return files[0::2], files[1::2]


def verify_int8(original: str | os.PathLike, raws: tuple[str | os.PathLike, ...] = (), *,
                calib: str | os.PathLike, eval_dir: str | os.PathLike | None = None, method: str = "minmax",
                layouts: tuple[Layout, ...] = (), conf: float = 0.25, iou: float = 0.45,
                max_calib: int | None = None) -> Int8Report:
    """Quantize ``original`` and each raw model (``raws``, and ``original`` stripped into each of
    ``layouts``) on the images of ``calib``, run them on the images of ``eval_dir`` and measure their
    detections against the fp32 original's. Without ``eval_dir`` the calibration folder's images are
    split: the 1st, 3rd, ... calibrate, the 2nd, 4th, ... are held out. ``max_calib`` caps the
    calibration images (the first ones)."""
    import onnxruntime as ort

    from ..pipeline import decoded_head
    from ..strip import strip

    original = Path(original)
    method = check_method(method)
    check_options(conf=conf, iou=iou)
    if not raws and not layouts:
        raise UsageError("verify --int8 needs a RAW model or --layouts")
    files = image_files(calib)
    cal, held = (files, image_files(eval_dir, "evaluation folder")) if eval_dir is not None else _split(files)
    cal = cal[:max_calib] if max_calib else cal
    located = decoded_head(original, "ORIGINAL")
    metas = []
    for r in raws:
        meta = head_for(r)
        if meta is None or not Path(r).suffix.lower() == ".onnx":
            raise InputError(f"{r}: RAW must be a raw .onnx model written by headcut strip (with its head record)")
        metas.append((Path(r), meta, recorded_name(meta)))
    size, pre = (int(located.input_shape[-2]), int(located.input_shape[-1])), located.preprocess
    cal_x, eval_x = model_inputs(cal, size, pre), model_inputs(held, size, pre)
    with tempfile.TemporaryDirectory(prefix="headcut-int8-") as tmp:
        work = Path(tmp)
        for k, lay in enumerate(layouts):
            dst = work / f"raw{k}.onnx"
            strip(original, dst, layout=lay, conf=conf, iou=iou)
            meta = head_for(dst)
            assert meta is not None  # strip wrote its head record
            metas.append((dst, meta, recorded_name(meta)))
        refs, ref_protos = _decoded_run(original, located, eval_x, conf, iou)
        q = quantize(original, work / "original.int8.onnx", located.input_name, cal_x, method)
        opts, shapes = task_options(located), [x.shape[-2:] for x in eval_x]
        dets, protos = _decoded_run(q, located, eval_x, conf, iou)
        rows = [agreement("original (decoded)", dets, refs, **opts, protos=paired_protos(protos, ref_protos, shapes))]
        for k, (path, meta, name) in enumerate(metas):
            q = quantize(path, work / f"m{k}.int8.onnx", meta["input"]["name"], cal_x, method)
            dets, protos = _raw_run(q, meta, eval_x, conf, iou)
            rows.append(agreement(name, dets, refs, **opts, protos=paired_protos(protos, ref_protos, shapes)))
    return Int8Report(str(original), method, ort.__version__, len(cal), len(held), conf, tuple(rows), located.task)
