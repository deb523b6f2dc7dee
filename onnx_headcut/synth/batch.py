"""A symbolic batch on any generated export, written as the legacy exporter writes ``x.view(bs, ...)``.

With ``dynamic_axes={'images': {0: 'batch'}}`` the legacy exporter reads ``bs = x.shape[0]`` at run time: every
reshape target becomes ``Concat(Unsqueeze(Gather(Shape(x), 0)), [rest])`` instead of a constant::

    x ─► Shape ─► Gather(0) ─► Unsqueeze(0) ─┐
                          Constant [d1, ...] ─┴─► Concat(axis 0) ─► Reshape(x, ·)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .builder import check


def dynamic_batch(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """A copy of ``model`` (batch 1, constant reshape targets) whose batch axis is the symbol ``name``:
    the image input's and every output's axis 0, and each reshape target with a leading 1 read from
    its input's shape."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
               if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    nodes = []
    for k, n in enumerate(g.node):
        target = consts.get(n.input[1]) if n.op_type == "Reshape" else None
        if target is None or target.ndim != 1 or not len(target) or int(target[0]) != 1:
            nodes.append(n)
            continue
        p = f"/batch/{k}"

        def const(v, suffix, p=p):
            out = f"{p}/{suffix}"
            nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(v))))
            return out

        nodes.append(helper.make_node("Shape", [n.input[0]], [f"{p}/shape"]))
        nodes.append(helper.make_node("Gather", [f"{p}/shape", const(np.array(0, np.int64), "zero")], [f"{p}/bs"],
                                      axis=0))
        if opset >= 13:
            nodes.append(helper.make_node("Unsqueeze", [f"{p}/bs", const(np.array([0], np.int64), "axes")],
                                          [f"{p}/bs1"]))
        else:
            nodes.append(helper.make_node("Unsqueeze", [f"{p}/bs"], [f"{p}/bs1"], axes=[0]))
        rest = const(target[1:].astype(np.int64), "rest")
        nodes.append(helper.make_node("Concat", [f"{p}/bs1", rest], [f"{p}/target"], axis=0))
        n.input[1] = f"{p}/target"
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    inits = {t.name for t in g.initializer}
    for vi in [i for i in g.input if i.name not in inits][:1] + list(g.output):
        d = vi.type.tensor_type.shape.dim
        if d:
            d[0].Clear()
            d[0].dim_param = name
    del g.value_info[:]
    check(m)
    return m
