"""Copies of a model rewritten around an engine converter's bug, handed to that converter only.

The model on disk is never changed, and ``convert``'s check (:func:`onnx_headcut.convert.check_converted`)
compares what the engine computes from the copy with the unchanged model in onnxruntime, so a rewrite
that were wrong would be refused like any other mismatch.

- :func:`maxpool_edge_pad` (nncase): measured with nncase 2.11, a padded ``MaxPool`` pads with 0 instead
  of -inf, so a window of negative values near the border takes 0 (a YOLO SPPF block after SiLU: 0.24 off,
  6.5 px on the trained sample's boxes). An explicit constant ``Pad`` of -inf is fused back into the pool
  with the same result; an ``edge`` ``Pad`` is not, and is exact: every window of a pool whose pads are
  smaller than its kernel holds at least one real value on each axis, and edge padding only repeats the
  nearest real one.
- :func:`constants_to_initializers` (TFLite): measured with onnx2tf 1.29, a ``Split`` whose sizes come from a
  ``Constant`` node (as onnxslim leaves YOLOv8's C2f chunks) becomes ``FlexSplitV``, a TensorFlow op the
  LiteRT interpreter does not have, so the model does not run; the same sizes as an initializer give the
  builtin ``SPLIT_V``. Moving a ``Constant`` node's tensor into an initializer of the same name changes no
  value.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attr(node: onnx.NodeProto, name: str, default=None):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def _rewritable(node: onnx.NodeProto) -> bool:
    pads = list(_attr(node, "pads", []) or [])
    kernel = list(_attr(node, "kernel_shape", []) or [])
    auto = _attr(node, "auto_pad", b"NOTSET")
    if node.op_type != "MaxPool" or len(node.output) != 1 or not any(pads) or not kernel:
        return False
    if (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET" or _attr(node, "ceil_mode", 0):
        return False
    r = len(kernel)
    dil = list(_attr(node, "dilations", [1] * r) or [1] * r)
    return len(pads) == 2 * r and all(d == 1 for d in dil) and \
        all(0 <= p < k for p, k in zip(pads, kernel + kernel))


def maxpool_edge_pad(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` with each padded ``MaxPool`` (stride any, no dilation, no ceil mode, no auto pad)
    preceded by an ``edge`` ``Pad`` of its pads and left unpadded; None when it has none."""
    if not any(_rewritable(n) for n in model.graph.node):
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    taken = {t.name for t in out.graph.initializer} | {o for n in out.graph.node for o in n.output}
    for k, node in enumerate(list(out.graph.node)):
        if _rewritable(node):
            pads = list(_attr(node, "pads"))
            r = len(pads) // 2
            name = f"headcut/edge_pad/{k}"
            while f"{name}/pads" in taken or f"{name}/out" in taken:
                name += "_"
            out.graph.initializer.append(numpy_helper.from_array(
                np.array([0, 0, *pads[:r], 0, 0, *pads[r:]], np.int64), f"{name}/pads"))
            nodes.append(helper.make_node("Pad", [node.input[0], f"{name}/pads"], [f"{name}/out"], mode="edge",
                                          name=name))
            node.input[0] = f"{name}/out"
            for a in node.attribute:
                if a.name == "pads":
                    a.ints[:] = [0] * len(pads)
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 11 for o in out.opset_import):
        return None  # Pad takes its pads as an input from opset 11
    return out


#: the ``Constant`` attributes :func:`constants_to_initializers` moves, and how each becomes a tensor
_CONSTANT_VALUES = {
    "value": lambda a: a.t,
    "value_float": lambda a: numpy_helper.from_array(np.array(a.f, np.float32)),
    "value_floats": lambda a: numpy_helper.from_array(np.array(list(a.floats), np.float32)),
    "value_int": lambda a: numpy_helper.from_array(np.array(a.i, np.int64)),
    "value_ints": lambda a: numpy_helper.from_array(np.array(list(a.ints), np.int64)),
}


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` whose main graph's ``Constant`` nodes are initializers of their output's name;
    None when it has none to move. A ``Constant`` that is a graph output, holds a sparse or string value, or
    is in a subgraph stays; so does every one of a model of IR version < 4, whose initializers must also be
    graph inputs."""
    outputs = {o.name for o in model.graph.output}

    def movable(n: onnx.NodeProto) -> bool:
        return n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1 and \
            n.attribute[0].name in _CONSTANT_VALUES and n.output[0] not in outputs and \
            (n.attribute[0].name != "value" or n.attribute[0].t.data_type != onnx.TensorProto.STRING)

    if model.ir_version < 4 or not any(movable(n) for n in model.graph.node):
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if not movable(node):
            nodes.append(node)
            continue
        t = onnx.TensorProto()
        t.CopyFrom(_CONSTANT_VALUES[node.attribute[0].name](node.attribute[0]))
        t.name = node.output[0]
        out.graph.initializer.append(t)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
