"""headcut convert + verify on MNN and ncnn for the task heads: raw segment models (Ultralytics and YOLOv6 0.4.1;
prototypes as a second output, masks compared in layer 3) and a raw face model (landmarks in pixels in layer 2)."""

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
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.synth import yolov6_af  # noqa: E402

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
