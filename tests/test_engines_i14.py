"""#14's rows on the engines: the raw model of each newer head converts to MNN and ncnn and matches the
original in all three layers (raw layer, decode, a non-empty set of detections), and the family is named.

Rows: YOLO11, YOLOv10 one-to-many, Ultralytics yolov9t and WongKinYiu GELAN (torch fixtures of
``tests/torch_ultralytics.py``, legacy exporter, 160x160), the un-reparameterised YOLOv9 dual head, and the
end-to-end NMS exports (YOLOv7 ONNX NMS with a dynamic batch and EfficientNMS_TRT: generators of
``synth.end2end``; GELAN under YOLOv9's EfficientNMS_TRT, static and dynamic batch:
``tests/torch_multiout.py``). YOLO26 / YOLOv10 NMS-free are in ``tests/heads/test_topk.py``, dynamic H/W
in ``tests/test_dynamic_hw.py``, YOLOv7 without ``--grid`` in ``tests/test_multiout.py``.

Random weights: the threshold is one the best 20 scores of the original reach (``conf_reached_by``; the
torch fixtures reach the default 0.25, the generators do not), passed explicitly; the count matched must be > 0.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

pytest.importorskip("MNN", reason="engines extra not installed")
pytest.importorskip("ncnn", reason="engines extra not installed")

from onnx_headcut.check.engine import conf_reached_by, verify_engine  # noqa: E402
from onnx_headcut.convert import convert  # noqa: E402
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.synth import yolov5  # noqa: E402
from onnx_headcut.synth.batch import dynamic_batch  # noqa: E402
from onnx_headcut.synth.end2end import end2end_yolov7  # noqa: E402

SIZE = (160, 160)
TORCH = {"yolo11": ("YOLO11", "Ultralytics"), "yolov10": ("YOLOv10", "Ultralytics"),
         "yolov9t": ("YOLOv9", "Ultralytics"), "gelan": ("YOLOv9", "WongKinYiu"), "dual": ("YOLOv9", "WongKinYiu")}
GENERATED = {  # name: (model, family)
    "yolov7-ort-dynamic-batch": (lambda: end2end_yolov7(dynamic_batch(yolov5(width=8, v7=True)), "ort"), "YOLOv7"),
    "yolov7-trt": (lambda: end2end_yolov7(yolov5(width=8, v7=True), "trt"), "YOLOv7"),
}
#: WongKinYiu's GELAN under YOLOv9's End2End/ONNX_TRT wrapper (``tests/torch_multiout.py``): the generator
#: ``end2end_yolov9`` wraps a YOLOv8 graph, so only the torch fixture names the row's family
TORCH_E2E = {"gelan-trt": False, "gelan-trt-dynamic-batch": True}
NMS = {"yolov7-ort-dynamic-batch": "NonMaxSuppression", "yolov7-trt": "EfficientNMS_TRT",
       "gelan-trt": "EfficientNMS_TRT", "gelan-trt-dynamic-batch": "EfficientNMS_TRT"}
CASES = {**{k: v[0] for k, v in TORCH.items()}, **{k: v[1] for k, v in GENERATED.items()},
         **dict.fromkeys(TORCH_E2E, "YOLOv9")}
VERSION = {**{k: v[1] for k, v in TORCH.items()}, **dict.fromkeys(TORCH_E2E, "WongKinYiu")}


def _original(name: str, d: Path) -> Path:
    if name in TORCH:
        pytest.importorskip("torch")
        import torch_ultralytics

        return torch_ultralytics.export(name, d / "original.onnx", size=SIZE)
    if name in TORCH_E2E:
        pytest.importorskip("torch")
        import torch_multiout

        return torch_multiout.export_gelan_end2end(d / "original.onnx", size=SIZE, dynamic_batch=TORCH_E2E[name],
                                                   gelan_backbone=True)
    onnx.save(GENERATED[name][0](), str(d / "original.onnx"))
    return d / "original.onnx"


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    """name -> (folder, conf, strip result), each original exported and stripped once, on demand."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            src = _original(name, d)
            conf = conf_reached_by(src)
            cache[name] = (d, conf, strip(src, d / "raw.onnx", conf=conf))
        return cache[name]

    return get


def _dets_nonempty(check) -> int:
    det = check.detections
    assert det is not None and det.ok and det.min_iou >= 0.99, det
    assert det.matched > 0, det  # a non-empty set compared, not 0 with 0
    return det.matched


@pytest.mark.parametrize("name", list(CASES))
def test_located_named_and_verified_on_ort(name, stripped):
    d, conf, res = stripped(name)
    assert res.head.family == CASES[name], res.head.reasons
    if name in VERSION:
        assert res.head.version == VERSION[name]
    (c,) = res.verification.checks  # batch pinned to 1: one check
    assert c.ok and c.engine == "ort" and c.layout.max_abs_err == 0 and c.decode.max_abs_err <= 1e-3
    assert c.detections.conf == conf <= 0.25
    _dets_nonempty(c)
    if name == "dual":
        assert any(n.startswith("dual head") for n in res.head.notes)
    if name in NMS:
        nms = NMS[name]
        assert any(nms in n and "removed with the decode" in n for n in res.metadata["notes"])
        assert any("pinned to 1" in n for n in res.head.notes) is ("dynamic-batch" in name)


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
@pytest.mark.parametrize("name", list(CASES))
def test_raw_model_converts_and_matches_on_engine(name, engine, stripped, tmp_path):
    d, conf, _ = stripped(name)
    res = convert(d / "raw.onnx", engine, tmp_path, force=True)
    (check,) = verify_engine(d / "original.onnx", res.model, conf=conf)
    assert check.engine == engine and check.ok, check.failure()
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-3
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3
    matched = _dets_nonempty(check)
    print(f"\n{name} {engine}: layer 1 {check.layout.max_abs_err:.3g}, boxes {check.max_abs_err_boxes:.3g}, "
          f"scores {check.max_abs_err_scores:.3g}, {matched} matched at conf {conf:.4g}")


@pytest.mark.parametrize("name", ["yolov7-trt", "gelan-trt"])
def test_verify_runs_a_tensorrt_original_truncated_at_the_decoded_tensor(name, stripped):
    """onnxruntime has no EfficientNMS_TRT: ``verify`` and ``conf_reached_by`` ran the original file and failed
    ("not a registered function/op"); they run it truncated where strip cut, as strip's own verification does."""
    d, conf, _ = stripped(name)
    (check,) = verify_engine(d / "original.onnx", d / "raw.onnx", conf=conf)
    assert check.engine == "ort" and check.ok and check.layout.max_abs_err == 0
    _dets_nonempty(check)
