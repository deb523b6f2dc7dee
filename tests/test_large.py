"""External data (the .onnx.data side file), the >2 GB code paths, and atomic writes of every file."""

from __future__ import annotations

import onnx
import pytest
from conftest import build, digest

import onnx_headcut.graph as graph_mod
import onnx_headcut.io as io_mod
from onnx_headcut.graph import infer_shapes
from onnx_headcut.strip import read_metadata, strip


def test_input_with_external_data(tmp_path):
    m = build("legacy-inplace")
    onnx.save(m, str(tmp_path / "in.onnx"), save_as_external_data=True, location="in.onnx.data", size_threshold=0)
    assert (tmp_path / "in.onnx.data").stat().st_size > 100_000
    before = digest(tmp_path / "in.onnx.data")
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    assert res.verification.ok and digest(tmp_path / "in.onnx.data") == before


def test_missing_external_data_is_a_clear_error(tmp_path):
    from onnx_headcut.errors import InputError

    onnx.save(build("legacy"), str(tmp_path / "in.onnx"), save_as_external_data=True, location="w.data",
              size_threshold=0)
    (tmp_path / "w.data").unlink()
    with pytest.raises(InputError, match="external data file 'w.data' listed by 'in.onnx' is missing"):
        strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_large_output_goes_to_a_side_file_atomically(tmp_path, monkeypatch):
    """Above the protobuf limit the weights go to raw.onnx.data; both files appear together, after verification."""
    monkeypatch.setattr(io_mod, "_EXTERNAL_THRESHOLD", 0)
    onnx.save(build("legacy"), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["in.onnx", "raw.head.json", "raw.onnx", "raw.onnx.data"]
    assert {p.name for p in res.files} == {"raw.head.json", "raw.onnx", "raw.onnx.data"}
    m = onnx.load(str(tmp_path / "raw.onnx"))
    assert read_metadata(m)["family"] == "YOLOv6"
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(tmp_path / "raw.onnx"),
                                                                                 load_external_data=False).graph.initializer)


def test_path_based_shape_inference_matches(monkeypatch):
    """Models over 2 GB cannot be serialised in memory: shape inference then goes through files."""
    m = build("legacy-inplace")
    in_memory = infer_shapes(m)
    monkeypatch.setattr(graph_mod.shapes, "PROTOBUF_LIMIT", 0)
    via_path = infer_shapes(m)
    assert via_path == in_memory and len(via_path) > 100
