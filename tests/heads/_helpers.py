"""Helpers shared by the per-head-kind test files (``tests/heads/test_<kind>.py``).

A new head kind gets one new test file that uses these; nothing here names a kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import original_output
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.region import decode_region
from onnx_headcut.strip import inspect, strip

STRIDES = (8, 16, 32)


def dims(vi) -> list[int]:
    """The static dims of a value info (0 where symbolic)."""
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def torch_export(request, tmp_path_factory, name: str, export: str) -> Path:
    """A fixture's export by ``tests/torch_tasks.py``'s function ``export(path, dynamo=...)`` for the exporter
    ``request.param`` ("legacy" or "dynamo"; skipped without torch, or onnxscript for dynamo)."""
    needs_torch()
    if request.param == "dynamo":
        pytest.importorskip("onnxscript")
    import torch_tasks

    folder = tmp_path_factory.mktemp(f"{name}-{request.param}")
    return getattr(torch_tasks, export)(folder / f"{name}.onnx", dynamo=request.param == "dynamo")


def needs_torch():
    """Skip the calling test without torch (the torch fixtures import it lazily)."""
    return pytest.importorskip("torch")


def check_strip(src, dst, family, version, cols, na):
    """strip ``src`` to ``dst``: named right, one (1, rows, cols) output with only layout after the convs, verified,
    and the recorded metadata rebuilds the original output from the raw one."""
    res = strip(src, dst)
    assert (res.head.family, res.head.version) == (family, version)
    m = onnx.load(str(src))
    h, w = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][2:]
    rows = na * sum((h // s) * (w // s) for s in STRIDES)
    raw = onnx.load(str(dst))
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, rows, cols]
    tail = decode_region(GraphIndex(raw), out.name)  # everything between the convs and the output
    assert set(tail.ops) <= {"Concat", "Reshape", "Transpose"} and max_rank(infer_shapes(raw)) <= 4
    assert all(n.name.startswith("headcut/") for n in tail.nodes if n.op_type != "Constant")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    x = deterministic_input((1, 3, h, w), seed=9)
    y = session(str(src)).run(None, {m.graph.input[0].name: x})[0]
    r = session(str(dst)).run(None, {m.graph.input[0].name: x})[0]
    assert np.abs(original_output(r, res.metadata) - y).max() <= 1e-3
    return res


def check_generated(cases: dict, name: str, tmp_path: Path):
    """:func:`check_strip` on ``cases[name]`` = (model builder, family, version, raw columns, rows per cell)."""
    make, family, version, cols, na = cases[name]
    onnx.save(make(), str(tmp_path / "in.onnx"))
    return check_strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", family, version, cols, na)


def check_torch_export(cases: dict, name: str, tmp_path: Path):
    """:func:`check_strip` on a ``torch_families`` export, ``cases[name]`` = (exporter name, keywords, family,
    version, raw columns, rows per cell); dynamic exports (named ``*dynamic*``) are folded first."""
    needs_torch()
    import torch_families

    fn, kw, family, version, cols, na = cases[name]
    src = getattr(torch_families, fn)(tmp_path / "in.onnx", **kw)
    res = check_strip(src, tmp_path / "raw.onnx", family, version, cols, na)
    assert res.inspection.folded == ("dynamic" in name)
    return res


def check_inspect_names(generated: dict, tmp_path):
    """``generated``: name -> (builder, family, version, ...); inspect names each one and says why."""
    for name, (make, family, version, *_) in generated.items():
        onnx.save(make(), str(tmp_path / f"{name}.onnx"))
        insp = inspect(tmp_path / f"{name}.onnx")
        assert (insp.head.family, insp.head.version) == (family, version), name
        assert insp.head.reasons


# --- torch's new (torch.export-based, dynamo=True) exporter ---------------------------------------------
# The fixtures are the torch reproductions of the upstream heads in ``torch_fixtures.py`` (YOLOv6 0.1.0)
# and ``torch_families.py`` (YOLOv6 0.3.0 anchor-free, YOLOv5, YOLOv7, Ultralytics YOLOv8, YOLOX), exported
# with ``torch.onnx.export(..., dynamo=True, external_data=True)``: opset 18, weights in a ``.onnx.data``
# side file, no onnxsim/onnxslim. The graphs differ from the legacy exporter's (onnxscript's names, grids
# lifted as ``lifted_tensor`` initializers, identical initializers deduplicated and shared between levels,
# Split instead of Slice), and strip must still find, cut and verify the head.


def dynamo_export(fn, kw: dict, tmp_path: Path) -> Path:
    """``fn(path, dynamo=True, **kw)``; skips without torch or onnxscript."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    return fn(tmp_path / "in.onnx", dynamo=True, **kw)


def assert_dynamo(src: Path) -> onnx.ModelProto:
    """The file really comes from the new exporter: opset >= 18, weights in its ``.onnx.data`` side file."""
    m = onnx.load(str(src), load_external_data=False)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 18
    data = Path(str(src) + ".data")
    assert data.exists() and data.stat().st_size > 0
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    return onnx.load(str(src))


def check_dynamo_export(case: tuple, tmp_path: Path):
    """``case`` = (exporter, keywords, family, raw columns, rows per cell): exported by dynamo, stripped, verified."""
    fn, kw, family, cols, na = case
    src = dynamo_export(fn, kw, tmp_path)
    m = assert_dynamo(src)
    h, w = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][2:]

    res = strip(src, tmp_path / "raw.onnx")  # raises HeadcutError (VerificationError, NoHeadError, ...) on failure
    assert res.verification.ok
    assert res.verification.max_abs_err <= 1e-3

    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    assert len(dims) == 3 and dims == [1, na * sum((h // s) * (w // s) for s in STRIDES), cols]
    assert max_rank(infer_shapes(raw)) <= 4
    assert set(decode_region(GraphIndex(raw), out.name).ops) <= {"Concat", "Reshape", "Transpose"}
    assert res.head.family == family, f"named {res.head.family} {res.head.version}, expected {family}"
    return res
