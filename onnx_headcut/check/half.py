"""What an engine computing in float16 (RKNN's default build) may differ by on a raw output value.

A raw value is a prediction conv's output ``y = Σ w·x + b`` laid out. In float16 each ``w`` and ``x`` carries a
relative rounding error of up to ``u = 2^-11`` (``x`` more: the rounding of every layer before it, carried through
the weights), so the error of ``y`` grows with the magnitudes it sums, ``M = Σ |w|·|x| + |b|``, not with ``|y|``:
where the sum cancels (a trained head's small logits from large features), ``|y|`` is small and the error is not.
Measured on RKNN's fp16 simulator with the trained YOLOv8 sample: raw errors up to 0.022 at values of 0.048,
at most 5.2·u·M over every raw value (decoded boxes 0.075 px, scores 1.2e-3), where the allowance of 4 float16
ulps of 1 plus 4 of the value refused the conversion.

:func:`magnitudes` computes ``M`` in onnxruntime, on a copy of the model whose prediction convs take ``|x|`` and
``|w|``, ``|b|``; the allowance is :data:`HALF_GROWTH`·u·M for each value that is pure data movement of a conv
output (layer 1's exact values), beside the fixed float16 allowance. It is fixed by the model and the input,
never by the candidate's outputs, and a conversion that moves, swaps or drops values differs by the values
themselves, far beyond 0.4 % of the magnitudes they sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: the float16 unit roundoff
U16 = 2.0 ** -11
#: the allowance on a raw value, in units of ``u·M`` (measured at most 5.2 on the trained YOLOv8's fp16 RKNN build)
HALF_GROWTH = 8.0
#: a model copied larger than this is left with the fixed allowance (protobuf's limit; external data is loaded)
MAX_TWIN_BYTES = (1 << 31) - (1 << 24)
#: ops that only move values (a conv output reaching a graph output through these alone is laid out, not computed)
LAYOUT_OPS = {"Reshape", "Transpose", "Concat", "Split", "Slice", "Flatten", "Identity", "Squeeze", "Unsqueeze",
              "Gather"}


def magnitude_model(model: onnx.ModelProto, convs: list[str]) -> onnx.ModelProto | None:
    """A copy of ``model`` in which each Conv producing a tensor of ``convs`` computes ``Σ |w|·|x| + |b|``
    (an Abs before it, and its weight and bias initializers by their absolute values under new names); None when
    one of them is not a Conv with initializer weights."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    taken = set(inits) | set(producer) | {i.name for i in out.graph.input}
    targets = set()
    for name in dict.fromkeys(convs):
        node = producer.get(name)
        if node is None or node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or \
                any(i not in inits for i in node.input[1:] if i):
            return None
        targets.add(id(node))
    nodes = []
    for node in out.graph.node:
        if id(node) in targets:
            fresh = f"{node.output[0]}/headcut_abs"
            while any(f"{fresh}{s}" in taken for s in ("/x", "/w", "/b")):
                fresh += "_"
            taken.update(f"{fresh}{s}" for s in ("/x", "/w", "/b"))
            nodes.append(helper.make_node("Abs", [node.input[0]], [f"{fresh}/x"], name=f"{fresh}/x"))
            node.input[0] = f"{fresh}/x"
            for k, suffix in ((1, "/w"), (2, "/b")):
                if len(node.input) > k and node.input[k]:
                    w = np.abs(numpy_helper.to_array(inits[node.input[k]]))
                    out.graph.initializer.append(numpy_helper.from_array(w, f"{fresh}{suffix}"))
                    node.input[k] = f"{fresh}{suffix}"
        nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def laid_out_convs(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Per graph output that is prediction convs' values laid out (reached from Convs through :data:`LAYOUT_OPS`
    and their constant operands only), the convs it holds."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name for t in model.graph.initializer} | {n.output[0] for n in model.graph.node
                                                           if n.op_type == "Constant"}
    out = {}
    for o in model.graph.output:
        convs, stack, ok, seen = [], [o.name], True, set()
        while stack and ok:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            n = producer.get(t)
            if n is None:
                ok = False
            elif n.op_type == "Conv":
                convs.append(t)
            elif n.op_type in LAYOUT_OPS:
                stack.extend(i for i in n.input[:1] if i) if n.op_type != "Concat" else stack.extend(n.input)
                ok = all(i in consts for i in (n.input[1:] if n.op_type != "Concat" else []) if i)
            else:
                ok = False
        if ok and convs:
            out[o.name] = convs
    return out


def output_magnitudes(src: str, model: onnx.ModelProto, xs: list[np.ndarray], input_name: str) -> list[dict]:
    """Per input of ``xs``, ``M`` of each graph output of ``model`` (its file ``src``) that is prediction convs'
    values laid out (:func:`laid_out_convs`), by output name; empty when there is none or ``M`` cannot be built."""
    from .ort import session

    held = laid_out_convs(model)
    twin = magnitude_model(model, [c for cs in held.values() for c in cs]) if held else None
    if twin is None or twin.ByteSize() > MAX_TWIN_BYTES:
        return [{} for _ in xs]
    del twin.graph.output[:]
    twin.graph.output.extend(onnx.ValueInfoProto(name=n) for n in held)
    s = session(twin.SerializeToString(), external_folder=str(Path(src).parent))
    return [dict(zip(held, s.run(list(held), {input_name: x}))) for x in xs]


def conv_magnitudes(src: str, model: onnx.ModelProto, convs: list[str], feeds: list[dict]) -> list[dict] | None:
    """Per feed dict, ``M`` of each prediction conv of ``convs`` in ``model`` (its file ``src``), by name; None
    when it cannot be built (a conv without initializer weights, a model too large to copy)."""
    from .ort import session

    twin = magnitude_model(model, convs)
    if twin is None or twin.ByteSize() > MAX_TWIN_BYTES:
        return None
    del twin.graph.output[:]
    twin.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(convs))
    s = session(twin.SerializeToString(), external_folder=str(Path(src).parent))
    names = list(dict.fromkeys(convs))
    return [dict(zip(names, s.run(names, f))) for f in feeds]
