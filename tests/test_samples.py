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
