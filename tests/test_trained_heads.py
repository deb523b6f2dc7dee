"""The trained samples of the other head kinds: ``shapes-yolox-320.onnx`` (objectness, ``grid_exp_obj``) and
``shapes-yolov5-320.onnx`` (anchors, ``anchor_grid``), made by ``scripts/train_sample.py --head yolox / v5``.

Training is not run here, only a smoke run of a few steps per head; the committed files are measured:
their export structure, mAP@0.5 on the script's held-out scenes, ``strip`` with all three layers on the
committed images, and ``verify --int8`` of the split layout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_headcut.check.int8 import parse_layouts, verify_int8
from onnx_headcut.evaluate import head_detections, mean_ap
from onnx_headcut.pipeline import decoded_head
from onnx_headcut.synth.scenes import CLASSES, IMAGES, save_scenes, scenes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_sample.py"
TRAINED = ROOT / "samples" / "trained"
#: the script's held-out scenes (as tests/test_trained_sample.py): seed 15 + 1_000_000, 200 scenes, shapes <= 106 px
TEST_SEED, TEST_COUNT, TEST_MAX = 15 + 1_000_000, 200, 320 // 3
#: sample -> (family, output name, rows, opset, mAP@0.5 floor, per-class AP floor, int8 split recall floor);
#: the floors sit just below what was measured (README: Samples; int8 tables)
SAMPLES = {
    "shapes-yolox-320.onnx": ("YOLOX", "output", 2100, 11, 0.79, 0.70, 0.9),  # measured 0.814, classes >= 0.724
    "shapes-yolov5-320.onnx": ("YOLOv5", "output0", 6300, 12, 0.39, 0.20, 0.9),  # measured 0.415, classes >= 0.222
}
CALIB_SEED, EVAL_SEED = 15 + 2_000_000, 15 + 3_000_000


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_export_structure(name):
    family, out, rows, opset, *_ = SAMPLES[name]
    path = TRAINED / name
    assert path.stat().st_size <= 2_000_000
    m = onnx.load(str(path))
    assert [o.name for o in m.graph.output] == [out] and m.opset_import[0].version == opset
    dims = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, rows, 5 + len(CLASSES)]  # decode baked in: (1, N, 5 + nc)
    head = decoded_head(path)  # YOLOv5's export keeps shape plumbing: inspect folds it (onnxsim) first
    assert head.family == family and head.num_classes == len(CLASSES) and not head.dfl


@pytest.mark.parametrize("name", list(SAMPLES))
def test_map_on_generated_scenes(name):
    *_, map_floor, class_floor, _ = SAMPLES[name]
    test = list(scenes(TEST_SEED, TEST_COUNT, (320, 320), max_size=TEST_MAX))
    m, per_class = mean_ap(head_detections(TRAINED / name, (s.image for s in test)),
                           ((s.boxes, s.classes) for s in test), len(CLASSES))
    assert m >= map_floor, (m, per_class)
    assert np.isfinite(per_class).all() and (per_class >= class_floor).all(), per_class


@pytest.mark.parametrize("layout", ["flat", "split"])
@pytest.mark.parametrize("name", list(SAMPLES))
def test_strip_verifies_with_real_detections(name, layout, tmp_path):
    args = [a for image in IMAGES for a in ("--image", ROOT / "samples" / "images" / image)]
    p = _cli("strip", TRAINED / name, "-o", tmp_path / "raw.onnx", "--layout", layout, "--conf", "0.25", *args)
    assert p.returncode == 0, p.stderr
    assert SAMPLES[name][0] in p.stdout and "max abs error 0 (exact)" in p.stdout
    assert "decode  max abs error" in p.stdout
    counts = re.findall(r"detect  conf 0.25, NMS IoU 0.45: (\d+) vs (\d+) detections(?:, (\d+) matched)?", p.stdout)
    assert len(counts) == 1 + len(IMAGES), p.stdout  # the random input, then each image
    for a, b, matched in counts[1:]:
        assert int(a) == int(b) == int(matched) >= 1, p.stdout  # real detections, every one matched


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8-scenes")
    save_scenes(root / "calib", CALIB_SEED, 32)
    save_scenes(root / "eval", EVAL_SEED, 32)
    return root


@pytest.mark.parametrize("name", list(SAMPLES))
def test_split_survives_int8(name, images):
    rep = verify_int8(TRAINED / name, calib=images / "calib", eval_dir=images / "eval", method="minmax",
                      layouts=parse_layouts("split"), conf=0.25)
    decoded, split = rep.rows
    assert split.name == "split" and split.reference >= 50  # real detections to agree with
    assert split.recall >= SAMPLES[name][-1] and split.precision >= SAMPLES[name][-1], rep.rows
    assert decoded.reference == split.reference and 0 <= decoded.recall <= 1


# --- the training script, one smoke run per head kind ------------------------------------------------------


@pytest.mark.parametrize("head,family", [("yolox", "YOLOX"), ("v5", "YOLOv5")])
def test_training_script_smoke_run(head, family, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "smoke.onnx"
    p = subprocess.run([sys.executable, str(SCRIPT), "--head", head, "--steps", "2", "--batch", "2", "--pool", "2",
                        "--test", "2", "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "step 2/2" in p.stdout and "mAP@0.5 on 2 held-out scenes" in p.stdout
    assert out.with_suffix(".pt").exists()
    assert ("YOLOv5 default anchors: best possible recall 1.0000" in p.stdout) == (head == "v5")
    located = decoded_head(out)
    assert located.family == family and located.num_classes == len(CLASSES) and not located.dfl
