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
- :func:`fold_constants` (TFLite): measured with onnx2tf 1.29, an ``Expand`` of constants (YOLOv6 0.3's
  anchor points in its decoded export) fails the conversion ("Output tensors of a Functional model must be the
  output of a TensorFlow Layer"), and hangs on an ``Expand`` to the ``Shape`` of a data tensor (the ``--inplace``
  export's grids). Each node whose inputs are all constants is computed once (onnx's reference evaluator), and
  each ``Shape`` of a tensor whose inferred shape is static is its dims; both become initializers. ``convert``'s
  check still compares the result with the unchanged model.
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


#: the largest tensor :func:`fold_constants` materialises (elements): folding never costs more than 16 MB a tensor
FOLD_MAX_ELEMENTS = 1 << 22
#: ops never folded: their value is not a function of their inputs
_UNFOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` whose main-graph nodes computed from constants only (initializers, ``Constant`` nodes,
    and what such nodes compute) are initializers holding their values; None when there is none to fold. Nodes
    with a subgraph, of another domain, whose output is a graph output, or larger than
    :data:`FOLD_MAX_ELEMENTS` stay; so does a model of IR version < 4. Initializers only folded nodes read go."""
    from onnx.reference import ReferenceEvaluator

    base = constants_to_initializers(model) or model
    if base.ir_version < 4:
        return None
    values = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    inputs = {i.name for i in base.graph.input}
    outputs = {o.name for o in base.graph.output}
    static = _static_shapes(base)
    kept, folded = [], []
    for node in base.graph.node:
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx") and node.input[0] in static and \
                node.output[0] not in outputs:  # a static tensor's shape is a constant (onnx2tf hangs on it)
            dims = static[node.input[0]]
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            values[node.output[0]] = np.array(dims[start:end], np.int64)
            folded.append(node)
            continue
        const = [i for i in node.input if i]
        ok = bool(const) and all(i in values and i not in inputs for i in const) and \
            node.domain in ("", "ai.onnx") and node.op_type not in _UNFOLDABLE and \
            not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute) and \
            not any(o in outputs for o in node.output)
        got = _evaluate(ReferenceEvaluator, node, values, base.opset_import) if ok else None
        if got is None:
            kept.append(node)
            continue
        values.update(got)
        folded.append(node)
    if not folded:
        return None if base is model else base
    out = onnx.ModelProto()
    out.CopyFrom(base)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | outputs
    made = [numpy_helper.from_array(values[o], o) for n in folded for o in n.output if o and o in used]
    keep = [t for t in out.graph.initializer if t.name in used or t.name in inputs]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep + made)
    return out


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The tensors whose shape onnx's shape inference finds fully static (every dim a positive number)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot take: no Shape is folded
        return {}
    out = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in t.shape.dim):
            out[v.name] = [d.dim_value for d in t.shape.dim]
    return out


def _evaluate(evaluator, node: onnx.NodeProto, values: dict, opsets) -> dict | None:
    """``node``'s outputs computed from ``values``, or None when the reference evaluator cannot or one is larger
    than :data:`FOLD_MAX_ELEMENTS`."""
    feeds = [numpy_helper.from_array(np.asarray(values[i]), i) for i in dict.fromkeys(i for i in node.input if i)]
    graph = helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                                   for o in node.output if o], initializer=feeds)
    try:
        got = evaluator(helper.make_model(graph, opset_imports=list(opsets))).run(None, {})
    except Exception:  # an op or attribute the reference evaluator lacks: the node stays
        return None
    names = [o for o in node.output if o]
    if len(got) != len(names) or any(np.asarray(v).size > FOLD_MAX_ELEMENTS for v in got):
        return None
    return {o: np.asarray(v) for o, v in zip(names, got)}
