"""Ultralytics backbone blocks as the legacy exporter writes them (BN folded, SiLU as Sigmoid + Mul), for the
generators: what names a family from its structure (:mod:`onnx_headcut.heads.families`).

- ``C2f`` (``forward_split``, as the exporter sets it; YOLO11's ``C3k2`` with ``c3k=False`` is the same)::

      x ─► Conv 1x1 + SiLU ─► Split(c, c) ─► a, b ─► Bottleneck(Conv 3x3 + SiLU ×2, + b) ─► m
                                              Concat(a, b, m) ─► Conv 1x1 + SiLU

- ``SPPF``: Conv 1x1 + SiLU ─► MaxPool 5x5/1 ×3 (chained) ─► Concat of the four ─► Conv 1x1 + SiLU
- ``C2PSA`` with one ``PSABlock`` (``Attention`` with one head, its positional conv left out)::

      x ─► Conv 1x1 + SiLU ─► Split(c, c) ─► a, b;  qkv = Conv 1x1(b) ─► Reshape(1, 1, 2kd + hd, N) ─► Split
      attn = Softmax(MatMul(q^T, k) · kd^-0.5); o = Reshape(MatMul(v, attn^T)) ─► Conv 1x1 (proj) ─► + b
      Concat(a, b') ─► Conv 1x1 + SiLU
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from .builder import Builder


def _conv_silu(b: Builder, x: str, cin: int, cout: int, k: int, prefix: str) -> str:
    return b.silu(b.conv(x, cin, cout, k, 1, prefix), f"/{prefix}/act")


def _split(b: Builder, x: str, sizes: list[int], axis: int, opset: int, scope: str) -> list[str]:
    outs = [b.name(f"{scope}/Split") + f"_output_{i}" for i in range(len(sizes))]
    inputs = [x] if opset < 13 else [x, b.const(np.array(sizes, np.int64), scope=scope)]
    node = helper.make_node("Split", inputs, outs, name=outs[0][: -len("_output_0")], axis=axis)
    if opset < 13:
        node.attribute.append(helper.make_attribute("split", sizes))
    b.nodes.append(node)
    return outs


def c2f(b: Builder, x: str, c: int, prefix: str, opset: int) -> str:
    h = c // 2
    y = _conv_silu(b, x, c, c, 1, f"{prefix}.cv1")
    a, part = _split(b, y, [h, h], 1, opset, f"/{prefix}")
    m = _conv_silu(b, _conv_silu(b, part, h, h, 3, f"{prefix}.m.0.cv1"), h, h, 3, f"{prefix}.m.0.cv2")
    m = b.node("Add", [part, m], scope=f"/{prefix}/m.0")
    return _conv_silu(b, b.node("Concat", [a, part, m], scope=f"/{prefix}", axis=1), 3 * h, c, 1, f"{prefix}.cv2")


def sppf(b: Builder, x: str, c: int, prefix: str) -> str:
    y = [_conv_silu(b, x, c, c // 2, 1, f"{prefix}.cv1")]
    for _ in range(3):
        y.append(b.node("MaxPool", [y[-1]], scope=f"/{prefix}/m", kernel_shape=[5, 5], pads=[2, 2, 2, 2],
                        strides=[1, 1], dilations=[1, 1], ceil_mode=0))
    return _conv_silu(b, b.node("Concat", y, scope=f"/{prefix}", axis=1), 2 * c, c, 1, f"{prefix}.cv2")


def c2psa(b: Builder, x: str, c: int, hw: tuple[int, int], prefix: str, opset: int) -> str:
    h = c // 2
    kd = h // 2
    n = hw[0] * hw[1]
    y = _conv_silu(b, x, c, c, 1, f"{prefix}.cv1")
    a, part = _split(b, y, [h, h], 1, opset, f"/{prefix}")
    sc = f"/{prefix}/m.0/attn"
    qkv = b.conv(part, h, 2 * kd + h, 1, 1, f"{prefix}.m.0.attn.qkv.conv")
    qkv = b.node("Reshape", [qkv, b.const(np.array([1, 1, 2 * kd + h, n], np.int64), scope=sc)], scope=sc)
    q, k, v = _split(b, qkv, [kd, kd, h], 2, opset, sc)
    att = b.node("MatMul", [b.node("Transpose", [q], scope=sc, perm=[0, 1, 3, 2]), k], scope=sc)
    att = b.node("Softmax", [b.node("Mul", [att, b.const(np.array(kd ** -0.5, np.float32), scope=sc)], scope=sc)],
                 scope=sc, axis=-1)
    o = b.node("MatMul", [v, b.node("Transpose", [att], scope=sc, perm=[0, 1, 3, 2])], scope=sc)
    o = b.node("Reshape", [o, b.const(np.array([1, h, hw[0], hw[1]], np.int64), scope=sc)], scope=sc)
    o = b.node("Add", [part, b.conv(o, h, h, 1, 1, f"{prefix}.m.0.attn.proj.conv")], scope=f"/{prefix}/m.0")
    return _conv_silu(b, b.node("Concat", [a, o], scope=f"/{prefix}", axis=1), c, c, 1, f"{prefix}.cv2")
