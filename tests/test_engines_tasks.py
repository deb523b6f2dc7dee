"""headcut convert + verify on MNN and ncnn for the task heads: raw segment models (Ultralytics and YOLOv6 0.4.1;
prototypes as a second output, masks compared in layer 3), a raw face model (landmarks in pixels in layer 2), and
raw YOLOv8-pose and YOLOv8-obb models (flat, and a split layout with the extra output of its own)."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

pytest.importorskip("MNN", reason="engines extra not installed")
pytest.importorskip("ncnn", reason="engines extra not installed")

from conftest import model_conf  # noqa: E402

from onnx_headcut.check.engine import verify_engine  # noqa: E402
from onnx_headcut.convert import convert  # noqa: E402
from onnx_headcut.heads import Layout  # noqa: E402
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.synth import yolov6_af, yolov8_obb, yolov8_pose  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _segment(path: Path) -> None:
    """The torch YOLOv8-seg fixture (written from upstream's Segment/Proto), legacy exporter + onnxslim."""
    pytest.importorskip("torch")
    import torch_tasks

    torch_tasks.export("yolov8-seg", path)


def _yolov6_segment(path: Path) -> None:
    """The torch YOLOv6 0.4.1 seg fixture (upstream's eval path: detections, prototypes, coefficient output)."""
    pytest.importorskip("torch")
    import torch_tasks

    torch_tasks.export_yolov6_seg(path)


def _face(path: Path) -> None:
    onnx.save(yolov6_af(width=8, nc=1, landmarks=True), str(path))


TASKS = {"segment": (_segment, 2), "yolov6-segment": (_yolov6_segment, 2), "face": (_face, 1)}


@pytest.fixture(scope="module")
def raw_models(tmp_path_factory):
    out = {}
    for task, (make, _) in TASKS.items():
        d = tmp_path_factory.mktemp(task)
        make(d / "original.onnx")
        strip(d / "original.onnx", d / "raw.onnx")
        out[task] = d
    return out


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
@pytest.mark.parametrize("task", list(TASKS))
def test_task_head_on_engine(task, engine, raw_models):
    tmp_path, n_out = raw_models[task], TASKS[task][1]
    res = convert(tmp_path / "raw.onnx", engine, force=True)
    assert len(res.outputs) == n_out  # segment: the raw rows, then the prototypes
    (check,) = verify_engine(tmp_path / "original.onnx", res.model, conf=model_conf(tmp_path / "original.onnx"))
    assert check.engine == engine and check.ok
    assert check.layout is not None and check.layout.max_abs_err <= 1e-3
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 5
    if task.endswith("segment"):
        assert det.mask_iou is not None and det.mask_iou >= 0.99
    else:
        assert det.mask_iou is None


ULTRALYTICS_TASKS = {
    "pose": (yolov8_pose, Layout()),
    "pose-split": (yolov8_pose, Layout("split")),
    "obb": (yolov8_obb, Layout()),
    "obb-flat-split": (yolov8_obb, Layout("flat-split")),
}


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
@pytest.mark.parametrize("name", list(ULTRALYTICS_TASKS))
def test_pose_obb_raw_model_converts_and_verifies(name, engine, tmp_path):
    make, layout = ULTRALYTICS_TASKS[name]
    onnx.save(make(), str(tmp_path / "original.onnx"))
    res = strip(tmp_path / "original.onnx", tmp_path / "raw.onnx", layout=layout)
    n_out = len(res.metadata["raw_outputs"])
    conv = convert(tmp_path / "raw.onnx", engine, force=True)
    assert len(conv.outputs) == n_out == (1 if layout.kind == "flat" else 9 if layout.kind == "split" else 3)
    (check,) = verify_engine(tmp_path / "original.onnx", conv.model)
    assert check.engine == engine and check.ok, check.failure()
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-4
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3  # keypoints px with the boxes
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 10 and det.min_iou >= 0.99
