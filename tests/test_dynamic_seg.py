"""Segment heads exported with dynamic axes (Ultralytics ``dynamic=True``: batch, height and width symbolic, the
prototypes ``output1`` ``{0: batch, 2: mask_height, 3: mask_width}``; or the batch only), from the torch ``Segment``
fixture of ``tests/torch_tasks.py`` (legacy exporter + onnxslim; the dynamo exporter with ``Dim.AUTO``): stripped,
verified at two sizes (and batch 2), the prototypes output kept with its dynamic dims, and the raw model decoding
to the original at a third size, masks included.

Before: a dynamic-size head's geometry at another size kept the prototypes' shape of the probe size, so verify at
the second size failed (``raw output 1 has shape [1, 32, 80, 120], the flat layout of this head gives [1, 32,
160, 160]``); and with the batch pinned the kept prototypes output still declared a symbolic batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.check.layers import mask_agreement
from onnx_headcut.decode import canonical, original_output, protos
from onnx_headcut.heads import Geometry
from onnx_headcut.heads.base import protos_at
from onnx_headcut.strip import strip

pytest.importorskip("torch")

THIRD = (224, 288)  # neither verified size (640x640 the probe, 320x480)


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch_tasks

    cache = {}

    def get(exporter: str):
        if exporter not in cache:
            cache[exporter] = torch_tasks.export("yolov8-seg", tmp_path_factory.mktemp(f"seg-{exporter}") / "dyn.onnx",
                                                 size=(256, 256), dynamic_hw=True, dynamo=exporter == "dynamo")
        return cache[exporter]
    return get


@pytest.fixture(scope="module")
def dynamic_hw(exported):
    return exported("legacy")


def _matches_at_third_size(src, raw, meta, batch: int = 1) -> None:
    x = deterministic_input((batch, 3, *THIRD), seed=3)
    y, p = session(str(src)).run(None, {"images": x})
    r = session(str(raw)).run(None, {"images": x})
    g = Geometry.of(meta).at(THIRD)
    assert r[-1].shape == (batch, 32, THIRD[0] // 4, THIRD[1] // 4) and np.array_equal(protos(r, g), p)
    got = original_output(r, meta, input_size=THIRD)
    assert got.shape == y.shape and np.abs(got - y).max() <= 1e-3
    assert mask_agreement(canonical(y, g), canonical(got, g), p, r[-1], g, 0.25, 0.45) >= 0.99


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_dynamic_size_and_batch_kept(exporter, exported, tmp_path):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    src = exported(exporter)
    res = strip(src, tmp_path / "raw.onnx", keep_dynamic_batch=True)
    h = res.head
    assert h.task == "segment" and h.dynamic_hw is not None and res.verification.ok
    assert [c.input for c in res.verification.checks] == [
        "random(seed=0) at 640x640", "random(seed=0), batch 2 at 640x640", "random(seed=0) at 320x480"]
    for c in res.verification.checks:
        assert c.layout.max_abs_err == 0 and c.decode.max_abs_err_boxes <= 1e-3
        assert c.detections.matched > 0 and c.detections.mask_iou is not None and c.detections.mask_iou >= 0.99
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    b, _, height, width = _dims(raw.graph.input[0])
    assert all(isinstance(d, str) for d in (b, height, width))  # legacy: batch, height, width; dynamo: s77, s53, s0
    protos_dims = _dims(onnx.load(str(src), load_external_data=False).graph.output[1])
    assert [_dims(o) for o in raw.graph.output] == [[b, "rows", 4 * 16 + 3 + 32], protos_dims]  # kept as they are
    assert protos_dims[:2] == [b, 32] and all(isinstance(d, str) for d in protos_dims[2:])
    if exporter == "legacy":
        assert protos_dims == ["batch", 32, "mask_height", "mask_width"]
    assert res.metadata["protos"] == {"output": "output1", "shape": [1, 32, 160, 160]}
    _matches_at_third_size(src, tmp_path / "raw.onnx", res.metadata, batch=2)


def test_dynamic_size_with_the_batch_pinned(dynamic_hw, tmp_path):
    res = strip(dynamic_hw, tmp_path / "raw.onnx")
    assert res.verification.ok and len(res.verification.checks) == 2
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [_dims(o) for o in raw.graph.output] == [[1, "rows", 99], [1, 32, "mask_height", "mask_width"]]
    _matches_at_third_size(dynamic_hw, tmp_path / "raw.onnx", res.metadata)


def test_dynamic_batch_only(tmp_path):
    import torch_tasks

    src = torch_tasks.export("yolov8-seg", tmp_path / "dyn.onnx", size=(256, 256), dynamic_batch=True)
    assert _dims(onnx.load(str(src)).graph.output[1]) == ["batch", 32, 64, 64]
    res = strip(src, tmp_path / "raw.onnx", keep_dynamic_batch=True)
    assert [c.input for c in res.verification.checks] == ["random(seed=0)", "random(seed=0), batch 2"]
    assert res.verification.ok and all(c.detections.mask_iou >= 0.99 for c in res.verification.checks)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [_dims(o) for o in raw.graph.output] == [["batch", 1344, 99], ["batch", 32, 64, 64]]
    x = deterministic_input((3, 3, 256, 256), seed=4)
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    y, p = session(str(src)).run(None, {"images": x})
    assert np.array_equal(r[-1], p) and np.abs(original_output(r, res.metadata) - y).max() <= 1e-3


def test_prototypes_follow_the_input_size():
    assert protos_at((1, 32, 160, 160), (640, 640), (320, 480)) == (1, 32, 80, 120)
    assert protos_at((), (640, 640), (320, 480)) == ()
    with pytest.raises(ValueError, match="has no prototype grid"):
        protos_at((1, 32, 160, 160), (640, 640), (322, 480))
    g = Geometry("dist_anchor", 3, (8, 16, 32), ((80, 80), (40, 40), (20, 20)), (1, 3, 640, 640),
                 (("dfl", 64, False), ("cls", 3, False), ("mask", 32, False)), "flat", 15, multiple=32,
                 task="segment", protos=(1, 32, 160, 160), coefficients=(1, 8400, 33))
    at = g.at((320, 480))
    assert at.protos == (1, 32, 80, 120) and at.coefficients == (1, 40 * 60 + 20 * 30 + 10 * 15, 33)
    assert at.output_shapes()[-1] == (1, 32, 80, 120)
