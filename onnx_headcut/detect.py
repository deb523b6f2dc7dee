"""``headcut detect``: preprocess → run (ort, MNN or ncnn) → numpy decode → class-aware NMS → boxes.

The model may be the original decoded export or a raw model written by ``strip`` (``.onnx``, or a
converted ``.mnn``/``.param`` with its ``*.head.json``): which one it is is read from the model —
a raw model carries its head metadata, a decoded one is recognised by the locator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .convert import param_blobs
from .decode import canonical, decode, masks, original_output, postprocess, selected
from .engines import check_engine, engine_for, run, run_options
from .errors import InputError
from .graph import check_constant_sizes, check_input_size, infer_shapes
from .heads import Geometry
from .heads.tasks import task as task_of
from .images import image_format, read_rgb
from .io import dependencies, load
from .metadata import head_for, model_names
from .names import class_names
from .pipeline import decoded_reference
from .preprocess import Preprocess, letterbox, scale_boxes, to_input
from .staging import Staging, check_outputs


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the original image's pixels
    score: float
    cls: int
    name: str
    mask: np.ndarray | None = None  # segment heads: (h0, w0) bool, the original image's pixels
    landmarks: tuple[tuple[float, float], ...] = ()  # face heads: (x, y) per landmark, the original image's pixels
    extra: dict | None = None  # pose / OBB heads: {"keypoints": [[x, y(, visibility)], ...]} or {"rotated_box": ...}

    def to_json(self) -> dict:
        d = {"box": [round(v, 2) for v in self.box], "score": round(self.score, 5), "class": self.cls,
             "name": self.name}
        if self.mask is not None:
            d["mask"] = rle(self.mask)
        if self.landmarks:
            d["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in self.landmarks]
        return d | (self.extra or {})


def rle(mask: np.ndarray) -> dict:
    """A bool mask (h, w) as COCO's uncompressed RLE: ``{"size": [h, w], "counts": [...]}``, run lengths over the
    pixels in column-major (Fortran) order, starting with a run of zeros (0 when the first pixel is set)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts, "encoding": "rle-coco-uncompressed"}


def image_masks(masks_in: np.ndarray, ratio: float, pad: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) masks on the letterboxed input → (K, h0, w0) on the original image (nearest input pixel of each
    image pixel's centre: ``x_in = (x + 0.5) * ratio + pad_x``)."""
    h0, w0 = size
    _, H, W = masks_in.shape
    ys = np.clip(np.floor((np.arange(h0) + 0.5) * ratio + pad[1]).astype(np.int64), 0, H - 1)
    xs = np.clip(np.floor((np.arange(w0) + 0.5) * ratio + pad[0]).astype(np.int64), 0, W - 1)
    return masks_in[:, ys][:, :, xs]


@dataclass(frozen=True)
class DetectResult:
    model: str
    kind: str  # "raw" or "decoded"
    engine: str
    image: str
    image_size: tuple[int, int]  # (w, h)
    detections: tuple[Detection, ...]
    note: str | None = None  # how the detections were made, when not by running the model as it is

    def to_json(self) -> dict:
        out = {"model": self.model, "kind": self.kind, "engine": self.engine, "image": self.image,
               "image_size": list(self.image_size), "detections": [d.to_json() for d in self.detections]}
        return out | ({"note": self.note} if self.note else {})


#: what ``detect`` says when it runs an end-to-end NMS export up to the decoded tensor that feeds its NMS
END2END_NOTE = ("an end-to-end NMS export: run up to the decoded tensor that feeds its NMS (onnxruntime has no "
                "EfficientNMS_TRT, and its NMS settings are its own), then headcut's class-aware NMS at --iou")


def _decoded_input(model: Path):
    """The head of an original decoded export, recognised by the locator, and what onnxruntime runs for it:
    the file, or for an end-to-end NMS export the model truncated at its decoded tensor."""
    if model.suffix.lower() != ".onnx":
        raise InputError(f"{model}: no {model.stem}.head.json beside it, so it is not a raw model from strip; "
                         "a decoded original must be given as .onnx")
    return decoded_reference(model, "a model without a head record")


def detect(model: str | os.PathLike, image: str | os.PathLike, engine: str | None = None, conf: float = 0.25,
           iou: float = 0.45, names: str | os.PathLike | None = None) -> DetectResult:
    """Detect objects in ``image`` with ``model`` (original decoded export or raw model).

    The image is preprocessed as the family's own predict does (the record's ``preprocess``; see
    :mod:`onnx_headcut.preprocess`). Class names: ``names`` (a names file, see
    :func:`~onnx_headcut.names.read_names`), else those the model records (a raw model's head record
    or sidecar, an original's ``metadata_props``), else COCO's when it has 80 classes, else ``classN``.
    """
    model = Path(model)
    if not model.exists():
        raise InputError(f"{model}: no such file")
    engine = engine or engine_for(model)
    check_engine(model, engine)
    rgb = read_rgb(image)
    head = head_for(model)
    runs: str | os.PathLike | bytes = model
    note = None
    if head is not None:
        g = Geometry.of(head)
        in_name, shape, nc = head["input"]["name"], tuple(head["input"]["shape"]), g.num_classes
        out_names = [o["name"] for o in head.get("raw_outputs", [])] or None
        pre, recorded = Preprocess.of(head), head.get("names")
        if model.suffix.lower() == ".onnx":  # onnxruntime would materialise any oversized constant
            m = load(model)
            check_constant_sizes(m, infer_shapes(m))
            del m
    else:
        located, reference = _decoded_input(model)
        in_name, shape, nc = located.input_name, located.input_shape, located.num_classes
        g, out_names = None, None
        if reference is not model:  # end-to-end NMS: the truncated model's one output is the decoded tensor
            runs, note = reference, END2END_NOTE
        elif Path(model).suffix.lower() == ".onnx":  # a dual head: the located output, not the first one
            import onnx

            outputs = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
            out_names = [located.output_name, *located.kept_outputs, *located.compared_outputs] \
                if len(outputs) > 1 and located.output_name in outputs else None
        pre, recorded = located.preprocess, (None if names is not None else model_names(model, nc))
    labels = class_names(nc, names, recorded)  # a bad names file fails before the model runs
    check_input_size(in_name, shape)
    if engine == "ncnn":
        ins, outs = param_blobs(model)
        in_name, out_names = ins[0], outs
    boxed, ratio, pad = letterbox(rgb, tuple(shape[-2:]), pre)
    x = to_input(boxed, pre)
    (ys,) = run(runs, [x], engine, in_name, out_names, options=run_options(engine, (head or {}).get("converted")))
    if g is not None and head is not None:  # g is set exactly when head is
        expected: list[tuple[int, ...] | None] = [tuple(o["shape"]) for o in head.get("raw_outputs", [])]
        ys = [_restore(y, e) for y, e in zip(ys, expected or [None] * len(ys))]
        if g.topk:  # NMS-free: the selection the original applies, then the threshold, as upstream
            dets = selected(original_output(ys, g), conf)
        else:
            dets = postprocess(decode(ys, g), conf, iou, num_classes=nc, task=g.task)
    elif located.selection is not None:
        dets = selected(ys[0], conf)
    else:
        g = Geometry.of(located)
        rows = canonical(ys[0], g)
        if located.coefficients:  # YOLOv6 seg: the coefficients after the level index of their own output
            rows = np.concatenate([rows, ys[-1][..., 1:]], -1)
        dets = postprocess(rows, conf, iou, num_classes=nc, task=g.task)
    h0, w0 = rgb.shape[:2]
    boxes = scale_boxes(dets[:, :4], ratio, pad) if len(dets) else dets[:, :4]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h0)
    protos = ys[-1] if head is not None else ys[1] if g is not None and g.protos else None
    masks_, points = _extras(dets, protos, g, ratio, pad, (h0, w0))
    task = task_of(g.task) if g is not None else None
    own = task if task is not None and hasattr(task, "to_json") else None  # pose keypoints, OBB rotated boxes

    def to_image(pts: np.ndarray) -> np.ndarray:  # (n, 2) input pixels → the image's
        return (pts - np.asarray(pad, np.float64)) / ratio

    out = tuple(Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(d[4]), int(d[5]),
                          labels[int(d[5])], masks_[k] if masks_ is not None else None, points[k] if points else (),
                          own.to_json(d, g, to_image) if own is not None and g is not None else None)
                for k, (b, d) in enumerate(zip(boxes, dets)))
    return DetectResult(str(model), "raw" if head is not None else "decoded", engine, str(image), (w0, h0), out,
                        note)


def _extras(dets: np.ndarray, protos, g: Geometry | None, ratio: float, pad, size) -> tuple[np.ndarray | None, list]:
    """A task head's extras of ``dets`` on the original image: segment masks (K, h0, w0), face landmarks."""
    if g is None or g.task == "detect" or not len(dets):
        return None, []
    if g.task == "segment":
        return image_masks(masks(dets, protos, g), ratio, pad, size), []
    if g.task == "face":
        pts = (dets[:, 6:].reshape(len(dets), -1, 2) - np.asarray(pad, np.float32)) / ratio
        return None, [tuple((float(x), float(y)) for x, y in p) for p in pts]
    return None, []


def _draw_extra(d, det: Detection, color) -> None:
    """A pose / OBB head's drawing: the rotated box's polygon; keypoints and the COCO skeleton as Ultralytics draws
    them (a keypoint of visibility < 0.5 left out, a limb drawn when both ends are; 17 keypoints: the skeleton)."""
    from .heads.tasks.pose import SKELETON

    extra = det.extra or {}
    if "rotated_box" in extra:
        pts = [tuple(p) for p in extra["rotated_box"]["corners"]]
        d.line(pts + pts[:1], fill=color, width=2)
    kpts = extra.get("keypoints")
    if not kpts:
        return
    shown = [len(k) < 3 or k[2] >= 0.5 for k in kpts]
    if len(kpts) == 17:
        for a, b in SKELETON:
            if shown[a - 1] and shown[b - 1]:
                d.line([tuple(kpts[a - 1][:2]), tuple(kpts[b - 1][:2])], fill=(51, 153, 255), width=2)
    for k, ok in zip(kpts, shown):
        if ok:
            d.ellipse((k[0] - 3, k[1] - 3, k[0] + 3, k[1] + 3), fill=color)


def _restore(y: np.ndarray, shape: tuple | None) -> np.ndarray:
    """An engine's output in the recorded raw output shape (ncnn drops the batch axis); a shape with symbolic
    dims (a kept dynamic height and width) only gets its batch axis back."""
    if not shape:
        return y
    if all(isinstance(d, int) for d in shape):
        return y.reshape(shape) if y.size == int(np.prod(shape)) else y
    return y[None] if y.ndim == len(shape) - 1 else y


def _inputs(model, image, names) -> dict:
    """Every file ``detect`` reads: the model (and its external data or ``.bin``, and sidecar), image, names."""
    m = Path(model)
    files = {Path(image): "the input image", **dependencies(m), m.with_name(m.stem + ".head.json"):
             f"the head metadata of {m}"}
    if names is not None:
        files[Path(names)] = "the class names file"
    return files


def check_output(model: str | os.PathLike, image: str | os.PathLike, out: str | os.PathLike,
                 names: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Check, before detecting, that ``out`` may be written: not an input, not a link, new unless ``force``."""
    return check_outputs([out], _inputs(model, image, names), force)[0]


def draw(image: str | os.PathLike, result: DetectResult, out: str | os.PathLike, force: bool = False,
         names: str | os.PathLike | None = None) -> Path:
    """Draw labelled boxes (segment heads: their masks as overlays; face heads: their landmarks; pose heads: keypoints
    and skeleton; OBB heads: rotated boxes) on ``image`` and
    save it to ``out`` (written atomically).

    ``out`` is checked as by :func:`check_output` (``names``: the names file the detection read).
    """
    from PIL import Image, ImageDraw

    inputs = _inputs(result.model, image, names)
    check_outputs([out], inputs, force)
    fmt = image_format(out)
    im = Image.fromarray(read_rgb(image))
    d = ImageDraw.Draw(im)
    palette = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
               (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255)]
    for det in result.detections:
        color = palette[det.cls % len(palette)]
        x1, y1, x2, y2 = det.box  # an untrained head can predict x2 < x1: draw the box it spans
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        if det.mask is not None:  # the mask as a translucent overlay in the class colour
            tint = Image.new("RGB", im.size, color)
            im.paste(Image.blend(im, tint, 0.45), (0, 0), Image.fromarray((det.mask * 255).astype(np.uint8)))
            d = ImageDraw.Draw(im)
        d.rectangle(box, outline=color, width=1 if det.extra and "rotated_box" in det.extra else 2)
        _draw_extra(d, det, color)
        for x, y in det.landmarks:  # face landmarks as dots
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(0, 255, 255), outline=(0, 0, 0))
        label = f"{det.name} {det.score:.2f}" if det.score >= 0.01 else f"{det.name} {det.score:.1e}"
        tx, ty = box[0], max(0.0, box[1] - 11)
        d.rectangle((tx, ty, tx + 6 * len(label) + 4, ty + 11), fill=color)
        d.text((tx + 2, ty), label, fill=(255, 255, 255))
    out = Path(out)
    with Staging(out, protected=inputs, force=force) as st:
        im.save(st.path(out.name), format=fmt)
        st.commit()
    return out
