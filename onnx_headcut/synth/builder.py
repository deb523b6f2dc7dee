"""The node builder and post-processing steps shared by the generators."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..io import weight_bytes
from ..numeric import cell_grid

INT64_MAX = 9223372036854775807


class Builder:
    def __init__(self, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.k = 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}_{self.k}"

    def node(self, op: str, inputs: list[str], scope: str = "/detect", **attrs) -> str:
        out = self.name(f"{scope}/{op}") + "_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out[: -len("_output_0")], **attrs))
        return out

    def const(self, value, dtype=None, scope: str = "/detect") -> str:
        arr = np.asarray(value, dtype=dtype)
        out = self.name(f"{scope}/Constant") + "_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], name=out[: -len("_output_0")],
                                           value=numpy_helper.from_array(arr)))
        return out

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, prefix: str, std: float | None = None,
             bias: float | np.ndarray | None = None) -> str:
        std = std if std is not None else np.sqrt(2.0 / (cin * k * k))
        w = self.init(f"{prefix}.weight", self.rng.normal(0, std, (cout, cin, k, k)))
        b = self.rng.normal(0, 0.1, cout) if bias is None else np.broadcast_to(np.asarray(bias, np.float32), (cout,))
        b_name = self.init(f"{prefix}.bias", np.asarray(b))
        return self.node("Conv", [x, w, b_name], scope=f"/{prefix}", kernel_shape=[k, k], pads=[k // 2] * 4,
                         strides=[stride, stride], dilations=[1, 1], group=1)

    def silu(self, x: str, scope: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x], scope=scope)], scope=scope)

    def slice_last(self, x: str, start: int, end: int) -> str:
        axes = self.const([4], np.int64)
        starts = self.const([start], np.int64)
        ends = self.const([end], np.int64)
        steps = self.const([1], np.int64)
        return self.node("Slice", [x, starts, ends, axes, steps])

    def scatter_last(self, data: str, cols: tuple[int, int], value: str, shape5: list[int]) -> str:
        """``data[..., a:b] = value`` as the legacy exporter lowers an in-place slice assignment."""
        like = self.slice_last(data, *cols)
        expanded = self.node("Expand", [value, self.node("Shape", [like])])
        _, na, h, w, _ = shape5
        index_values = [
            np.arange(cols[0], cols[1], dtype=np.int64),  # the written columns
            np.zeros((1, 1, 1, 1, 1), np.int64), np.zeros((1, 1, 1, 1), np.int64),  # batch, anchor
            np.arange(h, dtype=np.int64).reshape(h, 1, 1), np.arange(w, dtype=np.int64).reshape(w, 1),
        ]
        idx_names = [self.const(v) for v in index_values]
        bshape = self.const(np.array([1, na, h, w, cols[1] - cols[0]], np.int64))
        parts = []
        for src in idx_names[1:] + idx_names[:1]:  # batch, anchor, y, x, column
            ones = self.node("ConstantOfShape", [self.const([5], np.int64)],
                             value=numpy_helper.from_array(np.array([1], np.int64)))
            neg = self.node("Mul", [ones, self.const(np.array(-1, np.int64))])
            where = self.node("Where", [self.node("Equal", [bshape, neg]), ones, bshape])
            parts.append(self.node("Unsqueeze", [self.node("Expand", [src, where])], axes=[-1]))
        indices = self.node("Concat", parts, axis=-1)
        tail = self.node("Slice", [self.node("Shape", [data]), self.const([5], np.int64),
                                   self.const([INT64_MAX], np.int64), self.const([0], np.int64)])
        updates = self.node("Reshape", [expanded, self.node("Concat", [bshape, tail], axis=0)])
        return self.node("ScatterND", [data, indices, updates])


def cells(h: int, w: int) -> np.ndarray:
    """(h*w, 2) cell indices (gx, gy), row-major: :func:`onnx_headcut.numeric.cell_grid`."""
    return cell_grid(h, w)



def to_half(model: onnx.ModelProto) -> None:
    """float32 → float16 for weights, constants and I/O, as ``model.half()`` before export gives."""
    def half(t: onnx.TensorProto) -> None:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))

    for t in model.graph.initializer:
        half(t)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                half(a.t)
            elif n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    for v in list(model.graph.input) + list(model.graph.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16


def onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim, the simplifier Ultralytics and many users run instead of onnxsim (a test extra)."""
    import onnxslim

    return onnxslim.slim(model)


def onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:  # pragma: no cover - onnxsim's own check
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified




def check(model: onnx.ModelProto) -> None:
    """onnx's checker, in memory below the protobuf limit (it cannot serialise a larger model)."""
    if weight_bytes(model) < 1_800_000_000:
        onnx.checker.check_model(model)
