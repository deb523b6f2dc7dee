"""Shared fixtures: small decoded YOLO exports built by the project's own generator."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
import pytest

from onnx_headcut.synth import yolov6_v1

#: genuine upstream exports, present beside the repo on developer machines and in CI; optional.
REFERENCE = Path(os.environ.get("HEADCUT_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))

VARIANTS = {
    "legacy": dict(),
    "legacy-inplace": dict(inplace=True),
    "onnxsim": dict(simplify=True),
    "onnxsim-inplace": dict(inplace=True, simplify=True),
    "onnxslim-inplace": dict(inplace=True, slim=True),
    "640": dict(size=(640, 640)),
    "384x640": dict(size=(384, 640)),
    "nc3": dict(nc=3, size=(256, 320)),
    "fp16": dict(half=True),
}

_cache: dict[str, bytes] = {}


def build(name: str) -> onnx.ModelProto:
    """A variant from :data:`VARIANTS` (built once per session; a fresh copy each call)."""
    if name not in _cache:
        _cache[name] = yolov6_v1(width=8, **VARIANTS[name]).SerializeToString()
    m = onnx.ModelProto()
    m.ParseFromString(_cache[name])
    return m


@pytest.fixture
def write(tmp_path):
    """write(model_or_variant, name) -> Path of a saved model in tmp_path."""

    def _write(model, name: str = "in.onnx") -> Path:
        if isinstance(model, str):
            model = build(model)
        p = tmp_path / name
        onnx.save(model, str(p))
        return p

    return _write


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def model_conf(path, k: int = 20) -> float:
    """Random-weight fixtures score low: the threshold tests pass explicitly (see ``conf_reached_by``)."""
    from onnx_headcut.check.engine import conf_reached_by

    return conf_reached_by(path, k)
