"""strip's generic options on a generated export: --no-lower, --simplify, verification on images, inspect.

What each head kind's raw graph, metadata and numbers are: ``tests/heads/test_<kind>.py``.
"""

from __future__ import annotations

import numpy as np

from onnx_headcut.strip import inspect, strip


def test_no_lower_and_simplify_flags(write, tmp_path):
    src = write("legacy-inplace")
    res = strip(src, tmp_path / "a.onnx", lower=False, verify=False)
    assert res.rewrite is None and res.verification is None
    res = strip(src, tmp_path / "b.onnx", simplify=True)
    assert res.simplified and res.verification.max_abs_err <= 1e-3


def test_verify_on_an_image(write, tmp_path):
    from PIL import Image

    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    res = strip(write("legacy"), tmp_path / "raw.onnx", images=(tmp_path / "img.png",))
    assert [c.input.endswith("img.png") for c in res.verification.checks] == [False, True]
    assert all(c.max_abs_err <= 1e-3 for c in res.verification.checks)


def test_inspect_writes_nothing(write, tmp_path):
    src = write("legacy-inplace")
    before = sorted(p.name for p in tmp_path.iterdir())
    insp = inspect(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert insp.decode_ops == {"Add": 3, "Concat": 10, "Exp": 3, "Expand": 6, "Mul": 6, "Reshape": 12,
                               "ScatterND": 6, "Shape": 12, "Sigmoid": 6, "Slice": 18, "Transpose": 3}
    assert insp.max_rank == 6
    j = insp.to_json()
    assert j["head"]["num_classes"] == 80 and j["would_remove"]["ops"]["ScatterND"] == 6
