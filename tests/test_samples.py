"""The bundled samples are what the generator makes, and the README's first command works on them."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from onnx_headcut.strip import strip
from onnx_headcut.synth import SAMPLES

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_is_current(name):
    committed = onnx.load(str(SAMPLES_DIR / name))
    make, kw = SAMPLES[name]
    assert committed.graph == make(**kw).graph


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_strips_and_verifies(name, tmp_path):
    res = strip(SAMPLES_DIR / name, tmp_path / "raw.onnx")
    assert res.verification.max_abs_err <= 1e-3 and res.max_rank_after <= 4


def test_sample_command_regenerates_one_family(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "sample", "--family", "yolov6-dfl", "-o", tmp_path],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["yolov6m-v0.3-dfl-320.onnx"]
    assert ((tmp_path / "yolov6m-v0.3-dfl-320.onnx").read_bytes()
            == (SAMPLES_DIR / "yolov6m-v0.3-dfl-320.onnx").read_bytes())
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "sample", "--family", "nope", "-o", tmp_path],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown family" in p.stderr
