"""The float16 engines' allowance (onnx_headcut/check/half.py): it grows with what each conv sums, Σ|w|·|x| + |b|,
computed in onnxruntime on a copy of the model; a value moved, swapped or dropped is still refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.check.half import HALF_GROWTH, U16, conv_magnitudes, laid_out_convs, output_magnitudes
from onnx_headcut.check.layers import layout_check
from onnx_headcut.convert import _compare
from onnx_headcut.errors import VerificationError


def _head(tmp_path: Path) -> tuple[Path, onnx.ModelProto, np.ndarray, np.ndarray]:
    """x -> Conv(w, b) -> Reshape -> Transpose -> y (laid out), and the same conv -> Sigmoid -> s (computed)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([1, 6, 25], np.int64), "shape")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "s")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], outs, initializer=inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx", m, w, b


def _by_hand(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ |w|·|x| + |b| of a 3x3 conv with pad 1, in float64."""
    xp = np.pad(np.abs(x[0]).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], x.shape[2], x.shape[3]))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            out[:, i, j] = np.tensordot(np.abs(w), xp[:, i:i + 3, j:j + 3], axes=3)
    return (out + np.abs(b)[:, None, None])[None]


def test_conv_magnitudes_are_the_sum_of_absolute_products(tmp_path):
    src, m, w, b = _head(tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    (got,) = conv_magnitudes(str(src), m, ["c"], [{"x": x}])
    np.testing.assert_allclose(got["c"], _by_hand(x, w, b), rtol=1e-5)
    assert conv_magnitudes(str(src), m, ["r"], [{"x": x}]) is None  # not a conv: no allowance
    assert [n.op_type for n in m.graph.node] == ["Conv", "Reshape", "Transpose", "Sigmoid"]  # untouched


def test_only_laid_out_outputs_get_magnitudes(tmp_path):
    src, m, w, b = _head(tmp_path)
    assert laid_out_convs(m) == {"y": ["c"]}  # s is computed (Sigmoid): the fixed allowance only
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    (mags,) = output_magnitudes(str(src), m, [x], "x")
    assert set(mags) == {"y"}
    np.testing.assert_allclose(mags["y"], _by_hand(x, w, b).reshape(1, 6, 25).transpose(0, 2, 1), rtol=1e-5)


def test_layout_check_allows_float16_growth_but_not_a_swap():
    """Measured on RKNN's fp16 build of the trained YOLOv8 raw head: 0.041 for 0.048 where the conv summed 28.5
    (4 float16 ulps of 1 + 4 of the value allow 0.0042). A swap of two values is refused with the growth too."""
    e = np.array([[0.048, 3.0, -1.5, 0.2]], np.float32)
    raw = np.array([[0.041, 3.001, -1.501, 0.2]], np.float32)
    m = np.array([[28.5, 4.0, 2.0, 0.3]], np.float32)
    exact = [np.zeros(e.shape)]
    tol = 4 * float(np.spacing(np.float16(1.0)))
    assert not layout_check([raw], [e], exact, tol, tol).ok
    grown = [HALF_GROWTH * U16 * m]
    assert layout_check([raw], [e], exact, tol, tol, grown).ok
    swapped = raw[:, [0, 2, 1, 3]]
    assert not layout_check([swapped], [e], exact, tol, tol, grown).ok
    assert not layout_check([raw * 1.05], [e], exact, tol, tol, grown).ok  # 5 % off: not float16 rounding


def test_convert_check_of_a_half_engine_uses_the_growth(tmp_path):
    ref = np.array([0.048, 3.0], np.float32)
    y = np.array([0.041, 3.0], np.float32)
    with pytest.raises(VerificationError, match=r"allowed 0.004 \+ 0.004·\|value\|\); nothing written"):
        _compare(tmp_path / "raw.onnx", "rknn", ["y"], [ref], [y], np.float32, "", half=True)
    _compare(tmp_path / "raw.onnx", "rknn", ["y"], [ref], [y], np.float32, "", half=True,
             mags={"y": np.array([28.5, 4.0])})
    with pytest.raises(VerificationError, match=r"\+ 8·u·4"):
        _compare(tmp_path / "raw.onnx", "rknn", ["y"], [ref], [y[::-1]], np.float32, "", half=True,
                 mags={"y": np.array([28.5, 4.0])})
