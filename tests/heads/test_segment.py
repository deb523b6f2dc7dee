"""Segmentation heads (``heads/tasks/segment.py``): Ultralytics YOLOv8 / YOLO11 ``Segment``, from the torch modules
written from upstream (``tests/torch_tasks.py``, legacy and dynamo exporters) and the generator
(``synth/segment.py``): located by structure, cut (coefficients after the detection blocks, prototypes kept as an
output), the three layers (prototypes bit for bit in layer 1, mask IoU in layer 3), the masks against upstream's
``process_mask`` in torch, and refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.layers import mask_agreement
from onnx_headcut.decode import canonical, detect, masks, original_output, protos
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region
from onnx_headcut.strip import strip
from onnx_headcut.synth.segment import yolov8_seg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NC, NM, ROWS = 3, 32, 2100  # the torch fixtures: 3 classes, 32 coefficients, 320x320 input


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def exported(request, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    if request.param == "dynamo":
        pytest.importorskip("onnxscript")
    import torch_tasks

    folder = tmp_path_factory.mktemp(f"seg-{request.param}")
    return torch_tasks.export("yolov8-seg", folder / "seg.onnx", dynamo=request.param == "dynamo")


def _dims(vi) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def _process_mask_torch(protos_, coeffs, boxes, shape):
    """Ultralytics ``ops.process_mask(..., upsample=True)`` as upstream writes it (``crop_mask`` then bilinear)."""
    import torch
    import torch.nn.functional as F

    p = torch.from_numpy(protos_[0])
    c, mh, mw = p.shape
    m = (torch.from_numpy(coeffs) @ p.float().view(c, -1)).view(-1, mh, mw)
    b = torch.from_numpy(boxes).clone()
    b[:, 0] *= mw / shape[1]
    b[:, 2] *= mw / shape[1]
    b[:, 3] *= mh / shape[0]
    b[:, 1] *= mh / shape[0]
    x1, y1, x2, y2 = torch.chunk(b[:, :, None], 4, 1)
    r = torch.arange(mw, dtype=x1.dtype)[None, None, :]
    cc = torch.arange(mh, dtype=x1.dtype)[None, :, None]
    m = m * ((r >= x1) * (r < x2) * (cc >= y1) * (cc < y2))
    m = F.interpolate(m[None], shape, mode="bilinear", align_corners=False)[0]
    return m.gt_(0.0).numpy()


def test_torch_segment_flat(exported, tmp_path):
    res = strip(exported, tmp_path / "raw.onnx")
    head = res.head
    assert (head.family, head.version, head.task) == ("YOLOv8", "Ultralytics", "segment")
    assert [(b.role, b.channels) for b in head.levels[0].branches] == [("dfl", 64), ("cls", NC), ("mask", NM)]
    assert head.protos == ("output1", (1, NM, 80, 80))
    meta = res.metadata
    assert meta["schema"] == 5 and meta["task"] == "segment"
    assert meta["protos"] == {"output": "output1", "shape": [1, NM, 80, 80]}
    assert [(c["name"], c["size"]) for c in meta["channels"]] == [("dfl", 64), ("cls", NC), ("mask", NM)]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, _dims(o)) for o in raw.graph.output] == [("output0", [1, ROWS, 64 + NC + NM]),
                                                              ("output1", [1, NM, 80, 80])]
    assert set(decode_region(GraphIndex(raw), "output0").ops) <= {"Concat", "Reshape", "Transpose"}
    assert max_rank(infer_shapes(raw)) <= 4
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0  # layer 1 exact, prototypes included
    assert check.layout.values == ROWS * (64 + NC + NM) + NM * 80 * 80
    assert check.decode.max_abs_err_boxes <= 1e-3 and check.decode.max_abs_err_scores <= 1e-6
    det = check.detections
    assert det.n_ref == det.n_got == det.matched > 20 and det.mask_iou == 1.0

    x = deterministic_input((1, 3, 320, 320), seed=4)
    y0, y1 = session(str(exported)).run(["output0", "output1"], {"images": x})
    outs = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert np.array_equal(outs[1], y1)  # the prototypes, untouched
    back = original_output(outs, meta)
    assert back.shape == y0.shape == (1, 4 + NC + NM, ROWS)
    assert np.abs(back[:, :4] - y0[:, :4]).max() <= 1e-3
    assert np.array_equal(back[:, 4 + NC:], y0[:, 4 + NC:])  # the coefficients, copied

    dets = detect(outs, meta)
    assert dets.shape[1] == 6 + NM and len(dets) > 20
    got = masks(dets, protos(outs, meta), meta)
    ref = _process_mask_torch(y1, dets[:, 6:], dets[:, :4].copy(), (320, 320))
    assert got.shape == ref.shape == (len(dets), 320, 320)
    assert got.any(axis=(1, 2)).sum() > len(dets) // 2  # most masks are not empty
    assert (got != ref).sum() <= 1e-4 * got.size  # the numpy port = upstream's torch (bilinear rounding at edges)


def test_torch_segment_levels(exported, tmp_path):
    res = strip(exported, tmp_path / "raw.onnx", layout=Layout("levels"))
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, _dims(o)) for o in raw.graph.output] == [
        ("output0_s8", [1, NC + 4 + NM, 40, 40]), ("output0_s16", [1, NC + 4 + NM, 20, 20]),
        ("output0_s32", [1, NC + 4 + NM, 10, 10]), ("output1", [1, NM, 80, 80])]
    assert [c["name"] for c in res.metadata["channels"]] == ["cls", "reg", "mask"]
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err <= 1e-5 and check.decode.max_abs_err_boxes <= 1e-3
    assert check.detections.matched > 20 and check.detections.mask_iou == 1.0


@pytest.mark.parametrize("yolo11", [False, True], ids=["yolov8", "yolo11"])
def test_generated_segment(yolo11, tmp_path):
    src = tmp_path / "seg.onnx"
    onnx.save(yolov8_seg(nc=5, yolo11=yolo11), str(src))
    res = strip(src, tmp_path / "raw.onnx", conf=0.05)
    assert (res.head.family, res.head.task) == ("YOLO11" if yolo11 else "YOLOv8", "segment")
    assert any("mask coefficients" in r for r in res.head.reasons)
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0 and check.decode.max_abs_err <= 1e-3
    assert check.detections.mask_iou is not None
    side = json.loads((tmp_path / "raw.onnx.head.json").read_text()) if (tmp_path / "raw.onnx.head.json").exists() \
        else res.metadata
    assert side["task"] == "segment"


@pytest.mark.parametrize("layout", [Layout("split", score_sum=True), Layout("flat-split")], ids=["split", "flat-split"])
def test_torch_segment_split(exported, layout, tmp_path):
    """The split layouts give the coefficients an output of their own, after _cls and before _sum."""
    res = strip(exported, tmp_path / "raw.onnx", layout=layout)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    names = [(o.name, _dims(o)) for o in raw.graph.output]
    if layout.kind == "split":
        assert names[:4] == [("output0_s8_box", [1, 64, 40, 40]), ("output0_s8_cls", [1, NC, 40, 40]),
                             ("output0_s8_mask", [1, NM, 40, 40]), ("output0_s8_sum", [1, 1, 40, 40])]
        assert len(names) == 3 * 4 + 1
    else:
        assert names == [("output0_box", [1, ROWS, 64]), ("output0_cls", [1, ROWS, NC]),
                         ("output0_mask", [1, ROWS, NM]), ("output1", [1, NM, 80, 80])]
    assert names[-1] == ("output1", [1, NM, 80, 80])
    assert [c["output"] for c in res.metadata["channels"]] == ["box", "cls", "mask"]
    assert len(res.metadata["raw_outputs"]) == len(names)
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err <= 1e-6 and check.decode.max_abs_err <= 1e-3
    assert check.detections.matched > 20 and check.detections.mask_iou == 1.0


def test_coefficients_not_last_are_refused():
    """The coefficients moved to the front of the output: the recorded layout would be wrong, so no head."""
    m = yolov8_seg(nc=5)
    out = next(n for n in m.graph.node if "output0" in n.output)
    ins = list(out.input)
    del out.input[:]
    out.input.extend([ins[-1], *ins[:-1]])
    with pytest.raises(NoHeadError, match=r"^no YOLO head: .*do not fill the output's last columns$"):
        locate(m)


def test_mask_layer_fails_on_other_prototypes(exported, tmp_path):
    """Layer 3's mask IoU is a real check: prototypes in another channel order give other masks."""
    from onnx_headcut.heads import Geometry

    res = strip(exported, tmp_path / "raw.onnx")
    g = res.metadata
    x = deterministic_input((1, 3, 320, 320), seed=1)
    y0, y1 = session(str(exported)).run(["output0", "output1"], {"images": x})
    rows = canonical(y0, res.head)
    other = np.ascontiguousarray(y1[:, ::-1])

    geo = Geometry.of(g)
    assert mask_agreement(rows, rows, y1, y1, geo, 0.25, 0.45) == 1.0
    assert mask_agreement(rows, rows, y1, other, geo, 0.25, 0.45) < 0.9


PHOTO = Path(__file__).resolve().parents[2] / "samples" / "images" / "astronaut.jpg"


def _unrle(r: dict) -> np.ndarray:
    h, w = r["size"]
    flat = np.zeros(h * w, bool)
    at, value = 0, False
    for c in r["counts"]:
        flat[at:at + c] = value
        at, value = at + c, not value
    return flat.reshape((h, w), order="F")


def test_detect_masks_original_and_raw(exported, tmp_path):
    """``detect`` on a photograph: the original and the raw model give the same boxes and masks; --json carries
    each mask as COCO uncompressed RLE of the image-sized mask; the drawing has the overlays."""
    import subprocess

    from onnx_headcut.detect import detect as detect_image
    from onnx_headcut.detect import draw

    strip(exported, tmp_path / "raw.onnx")
    orig = detect_image(exported, PHOTO, conf=0.25)
    raw = detect_image(tmp_path / "raw.onnx", PHOTO, conf=0.25)
    assert (orig.kind, raw.kind) == ("decoded", "raw")
    w0, h0 = raw.image_size
    # random weights on a photograph tie scores to 1e-7, where greedy NMS may keep another neighbour: pair by box
    pairs = [(a, b) for a in orig.detections for b in raw.detections
             if a.cls == b.cls and np.abs(np.subtract(a.box, b.box)).max() <= 1e-2]
    assert len(pairs) >= 20 and min(len(orig.detections), len(raw.detections)) > 20
    for a, b in pairs:
        assert a.mask is not None and b.mask is not None and b.mask.shape == (h0, w0)
        assert (a.mask != b.mask).sum() <= 1e-3 * a.mask.size
    assert any(d.mask.any() for d in raw.detections)
    js = raw.to_json()["detections"][0]
    assert js["mask"]["encoding"] == "rle-coco-uncompressed" and js["mask"]["size"] == [h0, w0]
    assert np.array_equal(_unrle(js["mask"]), raw.detections[0].mask)
    out = draw(PHOTO, raw, tmp_path / "drawn.png")
    plain = draw(PHOTO, type(raw)(**{**raw.__dict__, "detections": tuple(
        type(d)(d.box, d.score, d.cls, d.name) for d in raw.detections)}), tmp_path / "plain.png")
    from PIL import Image

    assert np.abs(np.asarray(Image.open(out), np.int16) - np.asarray(Image.open(plain), np.int16)).sum() > 0
    cli = subprocess.run([sys.executable, "-m", "onnx_headcut", "detect", str(tmp_path / "raw.onnx"), str(PHOTO),
                          "--json"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["detections"][0]["mask"] == js["mask"]


def test_codegen_refuses_segment_heads(tmp_path):
    from onnx_headcut.codegen.spec import spec_of
    from onnx_headcut.errors import InputError

    onnx.save(yolov8_seg(nc=5), str(tmp_path / "seg.onnx"))
    res = strip(tmp_path / "seg.onnx", tmp_path / "raw.onnx", verify=False)
    with pytest.raises(InputError, match=r"^codegen does not cover segment heads yet"):
        spec_of(res.metadata, "raw")


def test_match_detections_reads_the_first_six_columns():
    """Detections with a task's extra columns pair on [x1, y1, x2, y2, score, class] only."""
    from onnx_headcut.check import match_detections

    d = np.array([[0, 0, 10, 10, 0.9, 1, *np.arange(NM)]], np.float32)
    e = d.copy()
    e[0, 6:] = -1
    assert match_detections(d, e) == (1, 1.0)
    assert match_detections(np.zeros((0, 6 + NM)), d)[0] == 0
