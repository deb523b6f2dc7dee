"""YOLOv6 0.4.1 seg (``heads/tasks/segment.py``, ``separate_outputs``): the torch module written from upstream's
``effidehead_fuseab_seg.py`` eval path (``tests/torch_tasks.py``, legacy and dynamo exporters) and the generator
(``synth.segment.yolov6_seg``): three outputs (detections, prototypes, [level index, coefficients]); the raw model
keeps the prototypes, the decode rebuilds the coefficient output (layer 2), masks compared in layer 3."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from _helpers import dims, torch_export

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.layers import _with_coefficients, decode_check
from onnx_headcut.check.results import Allowed
from onnx_headcut.decode import detect, original_coefficients, original_output
from onnx_headcut.graph import GraphIndex
from onnx_headcut.heads import Geometry
from onnx_headcut.region import decode_region
from onnx_headcut.strip import strip
from onnx_headcut.synth.segment import yolov6_seg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NC, NM, ROWS = 3, 32, 2100


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def exported(request, tmp_path_factory) -> Path:
    return torch_export(request, tmp_path_factory, "v6seg", "export_yolov6_seg")


def test_torch_yolov6_seg(exported, tmp_path):
    res = strip(exported, tmp_path / "raw.onnx")
    head = res.head
    assert (head.family, head.task) == ("YOLOv6", "segment")
    assert [(b.role, b.channels) for b in head.levels[0].branches] == [("reg", 4), ("cls", NC), ("mask", NM)]
    assert head.protos == ("protos", (1, NM, 80, 80)) and head.coefficients == ("coefficients", (1, ROWS, 1 + NM))
    meta = res.metadata
    assert meta["original_output"]["coefficients"]["shape"] == [1, ROWS, 1 + NM]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, dims(o)) for o in raw.graph.output] == [("outputs", [1, ROWS, 4 + NC + NM]),
                                                              ("protos", [1, NM, 80, 80])]
    assert set(decode_region(GraphIndex(raw), "outputs").ops) <= {"Concat", "Reshape", "Transpose"}
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0 and check.decode.max_abs_err <= 1e-3
    assert check.detections.matched == check.detections.n_ref > 20 and check.detections.mask_iou == 1.0

    x = deterministic_input((1, 3, 320, 320), seed=5)
    y0, y1, y2 = session(str(exported)).run(["outputs", "protos", "coefficients"], {"images": x})
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert np.array_equal(r[1], y1)
    assert np.abs(original_output(r, meta) - y0).max() <= 1e-3
    assert np.array_equal(original_coefficients(r, meta), y2)  # level index and coefficients, copied
    dets = detect(r, meta)
    assert dets.shape[1] == 6 + NM and len(dets) > 20


def test_generated_yolov6_seg(tmp_path):
    onnx.save(yolov6_seg(nc=5), str(tmp_path / "seg.onnx"))
    res = strip(tmp_path / "seg.onnx", tmp_path / "raw.onnx", conf=0.0105)
    assert res.head.task == "segment" and res.head.coefficients[0] == "coefficients"
    (check,) = res.verification.checks
    assert check.ok and check.layout.max_abs_err == 0 and check.decode.max_abs_err <= 1e-3


def test_coefficient_output_is_checked(tmp_path):
    """Layer 2 compares the rebuilt coefficient output: another level index or coefficient fails it."""
    onnx.save(yolov6_seg(nc=5), str(tmp_path / "seg.onnx"))
    res = strip(tmp_path / "seg.onnx", tmp_path / "raw.onnx", conf=0.0105)
    x = deterministic_input((1, 3, 320, 320), seed=1)
    y0, y2 = session(str(tmp_path / "seg.onnx")).run(["outputs", "coefficients"], {"images": x})
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    g = Geometry.of(res.metadata)
    allowed = Allowed.for_input(x.shape, np.float32)
    dec = decode_check(y0, original_output(r, g), allowed, g)
    assert _with_coefficients(dec, y2, r, g, allowed).ok
    for col, delta in ((0, 1.0), (7, 0.01)):
        bad = y2.copy()
        bad[0, 1700, col] += delta
        got = _with_coefficients(dec, bad, r, g, allowed)
        assert not got.ok and "the coefficients output at row 1700" in got.worst
    assert not replace(dec, ok=True).worst


def test_detect_reads_the_coefficient_output(exported, tmp_path):
    """``detect`` on the decoded original takes the coefficients from their own output: the same masks as the raw."""
    from onnx_headcut.detect import detect as detect_image

    photo = Path(__file__).resolve().parents[2] / "samples" / "images" / "astronaut.jpg"
    strip(exported, tmp_path / "raw.onnx")
    orig = detect_image(exported, photo, conf=0.1)
    raw = detect_image(tmp_path / "raw.onnx", photo, conf=0.1)
    assert orig.kind == "decoded" and len(orig.detections) > 5
    a, b = orig.detections[0], raw.detections[0]
    assert np.abs(np.subtract(a.box, b.box)).max() <= 1e-2 and a.mask is not None and b.mask is not None
    assert a.mask.any() and (a.mask != b.mask).sum() <= 1e-3 * a.mask.size
