"""A stride-2 backbone and the graph wrapper every generator shares."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import numeric
from .builder import Builder, check, onnxsim, onnxslim, to_half


def check_size(size: tuple[int, int], multiple: int = 32) -> tuple[int, int]:
    """(H, W) of ``size``, which must divide by the largest stride."""
    H, W = size
    if H % multiple or W % multiple:
        raise ValueError(f"input size {size} must be a multiple of {multiple}")
    return H, W


def backbone(b: Builder, x: str, width: int, levels: int = 3, act: str = "silu") -> list[tuple[str, int]]:
    """Stride-2 Conv stages; returns the (tensor, channels) of the stride 8, 16, 32 (, 64) maps."""
    chans = [width] * 2 + [width * 2 ** k for k in range(1, levels + 1)]
    feats, cin = [], 3
    for i, c in enumerate(chans):
        y = b.conv(x, cin, c, 3, 2, f"model.{i}.conv")
        x = b.silu(y, f"/model.{i}/act") if act == "silu" else b.node("Relu", [y], scope=f"/model.{i}")
        cin = c
        if i >= 2:
            feats.append((x, c))
    return feats


def finish(b: Builder, input_name: str, input_dims: list, outputs: list[tuple[str, list]], opset: int,
           ir_version: int | None = None, simplify: bool = False, slim: bool = False, half: bool = False,
           producer: str = "pytorch") -> onnx.ModelProto:
    """Wrap the built nodes into a checked model, then apply the export's post-steps in upstream order:
    onnxsim (``simplify``), onnxslim (``slim``), float16 (``half``)."""
    graph = helper.make_graph(b.nodes, "main_graph",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_dims)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer,
                              producer_version="2.13.0")
    model.ir_version = ir_version if ir_version is not None else 7 if opset <= 13 else 8 if opset <= 17 else 9
    check(model)
    if simplify:
        model = onnxsim(model)
    if slim:
        model = onnxslim(model)
    if half:
        to_half(model)
    return model


def cell_grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) cell indices (gx, gy): the decode's grid constants before flattening."""
    return numeric.cell_grid(h, w).reshape(h, w, 2)
