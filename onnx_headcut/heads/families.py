"""Which Ultralytics-style detector a located DFL anchor-free head belongs to, read from the graph.

YOLOv8, YOLOv9, YOLOv10, YOLO11 and YOLO26 share one decode (``Detect``: box and class convs per level,
DFL, anchor points at +0.5, channel-first ``(1, 4+nc, N)``), so the decode cannot name them; the branches
above the prediction convs and the backbone blocks can (``ultralytics/nn/modules/head.py`` and
``block.py``; WongKinYiu/yolov9 ``models/yolo.py`` and ``models/common.py``):

=====================  ====================================================================================
class branch           ``Detect(legacy=True)`` (v8, v9): ``Conv 3x3 → Conv 3x3 → Conv2d 1x1(nc)``;
                       ``Detect`` (YOLO11, YOLO26) and ``v10Detect``: ``[DWConv 3x3 → Conv 1x1] × 2 →
                       Conv2d 1x1(nc)``, each conv followed by SiLU (Sigmoid + Mul)
box branch             WongKinYiu's ``DDetect``: ``Conv 3x3 → Conv 3x3 (g=4) → Conv2d 1x1 (groups=4)``
YOLOv9 (GELAN)         ``ADown``/``AConv``: ``avg_pool2d(k=2, s=1)`` before a stride-2 conv (directly or
                       through a channel split)
YOLOv10                ``SCDown``: a 1x1 conv + SiLU, then a depthwise stride-2 3x3 conv without activation
YOLO11                 ``C2PSA``: attention (MatMul → Softmax → MatMul) after ``SPPF`` (three chained
                       5x5 stride-1 MaxPools); no SCDown, no ADown
YOLOv8                 ``C2f``: a 1x1 conv's output split in two halves (Split, or two Slices), both
                       concatenated with the bottleneck outputs; no attention, no SCDown, no ADown
YOLO26                 no DFL: 4 box channels (``reg_max`` 1)
=====================  ====================================================================================

``PSA`` (YOLOv10) and ``C2PSA`` (YOLO11) export to the same attention subgraph, so attention alone names
neither. When the evidence is missing or contradicts itself the label is the head's own name,
:data:`DETECT_HEAD` ("Ultralytics Detect head"), and the reasons say what was and was not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..graph import GraphIndex, attr

#: the label when the structure cannot tell the Ultralytics families apart
DETECT_HEAD = "Ultralytics Detect head"
#: WongKinYiu's YOLOv9 ``DDetect`` head outside a recognisable GELAN backbone
DDETECT_HEAD = "WongKinYiu DDetect head"
#: every ``family`` an Ultralytics-layout head may carry
FAMILIES = ("YOLOv8", "YOLOv9", "YOLOv10", "YOLO11", "YOLO26", DETECT_HEAD, DDETECT_HEAD)
#: the longest conv chain walked above a prediction conv (YOLO11's class branch has 4)
MAX_CHAIN = 8


@dataclass(frozen=True)
class Family:
    """A family label, the project whose code wrote the head (``version``), and why."""

    name: str
    version: str
    reasons: tuple[str, ...]


def _silu_input(ix: GraphIndex, t: str) -> str | None:
    """``a`` when ``t = Mul(a, Sigmoid(a))`` (SiLU as both exporters write it), else None."""
    n = ix.producer.get(t)
    if n is None or n.op_type != "Mul" or len(n.input) != 2:
        return None
    for a, s in (tuple(n.input), tuple(reversed(n.input))):
        p = ix.producer.get(s)
        if p is not None and p.op_type == "Sigmoid" and p.input[0] == a:
            return a
    return None


def _weight_shape(ix: GraphIndex, conv: onnx.NodeProto) -> tuple[int, ...] | None:
    w = ix.const_value(conv.input[1]) if len(conv.input) > 1 else None
    return None if w is None else tuple(w.shape)


def _is_depthwise(ix: GraphIndex, conv: onnx.NodeProto) -> bool:
    """A conv with one input channel per group and as many groups as output channels (> 1)."""
    s = _weight_shape(ix, conv)
    g = attr(conv, "group", 1) or 1
    return s is not None and len(s) == 4 and g > 1 and s[1] == 1 and s[0] == g


def _kernel(ix: GraphIndex, conv: onnx.NodeProto) -> tuple[int, ...]:
    k = attr(conv, "kernel_shape")
    if k:
        return tuple(k)
    s = _weight_shape(ix, conv)
    return tuple(s[2:]) if s else ()


def _strides(conv: onnx.NodeProto) -> tuple[int, ...]:
    return tuple(attr(conv, "strides") or (1, 1))


def branch_convs(ix: GraphIndex, pred: str) -> list[onnx.NodeProto]:
    """The convs of the branch above the prediction conv producing ``pred``, nearest first.

    Walks up through SiLU activations from conv to conv and stops at the tensor the branch shares with
    others (the level's feature map, read by the box and the class branch), at anything that is not a
    conv, or after :data:`MAX_CHAIN` convs.
    """
    node = ix.producer.get(pred)
    convs: list[onnx.NodeProto] = []
    if node is None or node.op_type != "Conv":
        return convs
    x = node.input[0]
    while len(convs) < MAX_CHAIN and len(ix.consumers.get(x, [])) == 1:
        a = _silu_input(ix, x)
        p = ix.producer.get(a if a is not None else x)
        if p is None or p.op_type != "Conv":
            break
        convs.append(p)
        x = p.input[0]
    return convs


def class_branch(ix: GraphIndex, cls: str) -> tuple[str, str]:
    """(``"dw"`` | ``"plain"`` | ``"other"``, a description) of the class branch above ``cls``."""
    convs = branch_convs(ix, cls)
    dw = [_is_depthwise(ix, c) for c in convs]
    kinds = ["DW" + "x".join(map(str, _kernel(ix, c))) if d else "Conv" + "x".join(map(str, _kernel(ix, c)))
             for c, d in zip(convs, dw)]
    chain = " → ".join(reversed(kinds)) or "none"
    if len(convs) >= 2 and len(convs) % 2 == 0 and all(d == (k % 2 == 1) for k, d in enumerate(dw)) and \
            all(_kernel(ix, c) == (1, 1) for c in convs[0::2]):
        return "dw", (f"the class branch is {len(convs) // 2} depthwise + pointwise conv pairs ({chain}) before the "
                      "class prediction conv: the Detect of YOLO11 / YOLO26 or YOLOv10's v10Detect")
    if convs and not any(dw) and all((attr(c, "group", 1) or 1) == 1 and _kernel(ix, c) == (3, 3) for c in convs):
        return "plain", (f"the class branch is plain 3x3 convs ({chain}) before the class prediction conv: the "
                         "legacy Detect of YOLOv8 / YOLOv9")
    return "other", f"the class branch ({chain}) is neither plain 3x3 convs nor depthwise + pointwise pairs"


@dataclass(frozen=True)
class Backbone:
    """Counts of the blocks that tell the families apart (see the module docstring)."""

    attention: int = 0
    sppf: int = 0
    scdown: int = 0
    adown: int = 0
    c2f: int = 0

    def text(self) -> str:
        return (f"attention (MatMul → Softmax → MatMul) {self.attention}, SPPF {self.sppf}, SCDown {self.scdown}, "
                f"ADown/AConv {self.adown}, C2f-style split/concat {self.c2f}")


def _attention(ix: GraphIndex, sm: onnx.NodeProto) -> bool:
    """A Softmax over the product of two computed tensors (``q^T k``), read by a MatMul (``v @ attn^T``)."""
    t, steps = sm.input[0], 0
    while steps < 4 and (p := ix.producer.get(t)) is not None and p.op_type in ("Mul", "Div", "Add", "Reshape",
                                                                              "Transpose"):
        t, steps = p.input[0], steps + 1
    p = ix.producer.get(t)
    if p is None or p.op_type != "MatMul" or any(ix.const_value(i) is not None for i in p.input):
        return False
    stack, seen = [sm.output[0]], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for c in ix.consumers.get(x, []):
            if c.op_type == "MatMul":
                return True
            if c.op_type in ("Transpose", "Reshape", "Cast", "Identity"):
                stack.extend(c.output)
    return False


def _is_pool(n: onnx.NodeProto | None, op: str, k: tuple[int, ...], s: tuple[int, ...]) -> bool:
    return n is not None and n.op_type == op and tuple(attr(n, "kernel_shape") or ()) == k and \
        tuple(attr(n, "strides") or (1, 1)) == s


def _sppf(ix: GraphIndex, n: onnx.NodeProto) -> bool:
    """The last of three chained 5x5 stride-1 MaxPools (SPPF, or YOLOv9's SPPELAN)."""
    node: onnx.NodeProto | None = n
    for _ in range(3):
        if node is None or not _is_pool(node, "MaxPool", (5, 5), (1, 1)):
            return False
        node = ix.producer.get(node.input[0])
    return True


def _scdown(ix: GraphIndex, n: onnx.NodeProto) -> bool:
    """SCDown's second conv: depthwise, 3x3, stride 2, no activation after it, fed by a 1x1 conv + SiLU."""
    if n.op_type != "Conv" or not _is_depthwise(ix, n) or _strides(n) != (2, 2) or _kernel(ix, n) != (3, 3):
        return False
    if any(c.op_type == "Sigmoid" for c in ix.consumers.get(n.output[0], [])):
        return False
    a = _silu_input(ix, n.input[0])
    p = ix.producer.get(a) if a is not None else None
    return p is not None and p.op_type == "Conv" and _kernel(ix, p) == (1, 1) and (attr(p, "group", 1) or 1) == 1


def _adown(ix: GraphIndex, n: onnx.NodeProto) -> bool:
    """ADown/AConv: a 2x2 stride-1 AveragePool whose output reaches a stride-2 conv (through a Split/Slice)."""
    if not _is_pool(n, "AveragePool", (2, 2), (1, 1)):
        return False
    stack = list(n.output)
    for _ in range(3):
        nxt = []
        for x in stack:
            for c in ix.consumers.get(x, []):
                if c.op_type == "Conv" and _strides(c) == (2, 2):
                    return True
                if c.op_type in ("Split", "Slice", "Identity"):
                    nxt.extend(c.output)
        stack = nxt
    return False


def _c2f(ix: GraphIndex, n: onnx.NodeProto) -> bool:
    """A Concat of at least 3 tensors, two of them both halves of one Split, read by a 1x1 conv (C2f's ``cv2``)."""
    if n.op_type != "Concat" or len(n.input) < 3:
        return False
    parts = [ix.producer.get(i) for i in n.input]
    split = [id(p) for p in parts if p is not None and p.op_type == "Split" and len(p.output) == 2]
    sliced = [p.input[0] for p in parts if p is not None and p.op_type == "Slice"]  # ``chunk`` at some opsets
    if not any(split.count(k) == 2 for k in split) and not any(sliced.count(t) == 2 for t in sliced):
        return False
    return any(c.op_type == "Conv" and _kernel(ix, c) == (1, 1) for c in ix.consumers.get(n.output[0], []))


def backbone(ix: GraphIndex) -> Backbone:
    """Count the telling blocks over the whole graph."""
    counts = dict(attention=0, sppf=0, scdown=0, adown=0, c2f=0)
    for n in ix.graph.node:
        if n.op_type == "Softmax" and _attention(ix, n):
            counts["attention"] += 1
        elif n.op_type == "MaxPool" and _sppf(ix, n):
            counts["sppf"] += 1
        elif n.op_type == "Conv" and _scdown(ix, n):
            counts["scdown"] += 1
        elif n.op_type == "AveragePool" and _adown(ix, n):
            counts["adown"] += 1
        elif n.op_type == "Concat" and _c2f(ix, n):
            counts["c2f"] += 1
    return Backbone(**counts)


def ultralytics_family(ix: GraphIndex, box: str, cls: str, reg_max: int) -> Family:
    """Name the Ultralytics-style family of a head from its level-0 ``box`` and ``cls`` prediction conv
    outputs and its ``reg_max`` (Ultralytics' meaning: DFL bins; 1 = no DFL)."""
    kind, cls_text = class_branch(ix, cls)
    box_node = ix.producer.get(box)
    ddetect = box_node is not None and (attr(box_node, "group", 1) or 1) == 4
    bb = backbone(ix)
    seen = f"backbone blocks seen: {bb.text()}"
    if reg_max == 1:
        return Family("YOLO26", "Ultralytics", (cls_text, "no DFL (4 box channels, reg_max 1): YOLO26, the Ultralytics "
                                                         "Detect head without DFL", seen))
    if ddetect:
        box_text = ("the box prediction conv has groups=4 (after a g=4 3x3 conv): WongKinYiu's DDetect "
                    "(models/yolo.py)")
        if bb.adown and not (bb.scdown or bb.attention):
            return Family("YOLOv9", "WongKinYiu", (box_text, cls_text, f"ADown/AConv downsampling ({bb.adown}): a "
                                                                       "GELAN backbone, YOLOv9", seen))
        return Family(DDETECT_HEAD, "WongKinYiu", (box_text, cls_text, "no GELAN backbone (ADown/AConv) recognised, "
                                                                       "so no family is named", seen))
    if kind == "dw":
        if bb.scdown and not bb.adown:
            return Family("YOLOv10", "Ultralytics", (cls_text, f"SCDown (1x1 conv, then a depthwise stride-2 conv "
                                                               f"without activation) {bb.scdown}: YOLOv10", seen))
        if bb.attention and bb.sppf and not (bb.scdown or bb.adown):
            return Family("YOLO11", "Ultralytics", (cls_text, "C2PSA attention after SPPF and neither SCDown nor "
                                                              "ADown: YOLO11", seen))
    elif kind == "plain" and not (bb.attention or bb.scdown):
        if bb.adown:
            return Family("YOLOv9", "Ultralytics", (cls_text, f"ADown/AConv downsampling ({bb.adown}): a GELAN "
                                                              "backbone (RepNCSPELAN4), YOLOv9", seen))
        if bb.c2f:
            return Family("YOLOv8", "Ultralytics", (cls_text, f"C2f blocks ({bb.c2f}) and no attention, SCDown or "
                                                              "ADown: YOLOv8", seen))
    return Family(DETECT_HEAD, "Ultralytics", (cls_text, "the backbone does not tell YOLOv8, YOLOv9, YOLOv10 and "
                                                         "YOLO11 apart, so only the head is named", seen))
