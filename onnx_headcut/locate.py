"""Find the detection head of a decoded YOLO export by graph structure and constants.

How it works (no node or tensor names, no hard-coded sizes)::

    backbone ... ─► Conv(reg) ─┐                                     (prediction convs: the frontier)
                  ─► Conv(obj) ─► Sigmoid ─┤
                  ─► Conv(cls) ─► Sigmoid ─► Concat ─► Reshape(5-D) ─► Transpose ─► Slice/Add/Mul/Exp …
                                                                            … ─► Concat(levels) ─► output

1. :func:`~onnx_headcut.region.decode_region` walks back from the output through decode-only ops
   and stops at learned Conv nodes: the frontier; the visited nodes are the region to cut.
2. The frontier convs are grouped by feature-map size into levels; each level's stride is the
   input size divided by its grid, and must divide it exactly.
3. The refusals (:mod:`onnx_headcut.heads.refusals`) and then each matcher of
   :data:`onnx_headcut.heads.PATTERNS` check the rest: branch roles, channel counts, the ops of the
   decode, and the grid/stride/anchor constants. A matcher returns a Head or a Rejection saying why not.

:func:`locate` returns the first :class:`Head` or raises :class:`NoHeadError` listing every reason.
"""

from __future__ import annotations

import onnx

from .errors import AlreadyRawError, NoHeadError
from .graph import GraphIndex, Shape, infer_shapes, is_static
from .heads import LOOKED_FOR, PATTERNS, Head, MatchContext, group_levels, refusals, tasks
from .heads.anchor_raw import match_split_raw
from .heads.tasks import face, obb, pose, segment
from .metadata import METADATA_KEY
from .region import LAYOUT_OPS, RAW_OPS, decode_region


def locate(model: onnx.ModelProto, shapes: dict[str, Shape] | None = None, anchors: tuple | None = None) -> Head:
    """Find the detection head of ``model`` or raise :class:`NoHeadError` with every reason.

    Raises :class:`AlreadyRawError` when the outputs come from the prediction convs through layout
    ops only (for example a model ``strip`` already wrote), except for YOLOv5/v7 anchor heads split
    over 5-D outputs (:mod:`~onnx_headcut.heads.anchor_raw`), which are lowered to the raw layout with
    ``anchors`` (per level, per anchor (w, h) pixels; required there, as the graph holds none).
    """
    record = next((p for p in model.metadata_props if p.key == METADATA_KEY), None)
    if record is not None:  # a model carrying a headcut record is raw by definition
        raise AlreadyRawError(already_raw_written(record.value, model))
    ix = GraphIndex(model)
    if shapes is None:
        shapes = infer_shapes(model)
    inputs = [i for i in model.graph.input if i.name in ix.graph_inputs]
    if len(inputs) != 1:
        raise NoHeadError(f"no YOLO head: expected one image input, found {len(inputs)}; {LOOKED_FOR}")
    inp = inputs[0]
    in_shape = shapes.get(inp.name)
    if not is_static(in_shape) or len(in_shape) != 4:
        raise NoHeadError(f"no YOLO head: input '{inp.name}' has shape {in_shape}, expected static (1, 3, H, W)")
    outputs = [o.name for o in model.graph.output]
    protos = None  # a segmentation export: the prototypes output, kept as it is beside the raw head
    coefs = None  # a YOLOv6 seg export: its output of [level index, coefficients], reproduced by the decode
    if (pair := segment.outputs(ix, shapes, outputs, tuple(in_shape))) is not None:
        outputs, protos = [pair[0]], pair[1]
    elif (triple := segment.separate_outputs(ix, shapes, outputs, tuple(in_shape))) is not None:
        outputs, protos, coefs = [triple[0]], triple[1], triple[2]
    seg = refusals.segmentation(outputs, shapes)
    if seg:
        raise NoHeadError(seg)
    if len(outputs) != 1:
        regions = [decode_region(ix, o) for o in outputs]
        if all(len(shapes.get(o) or ()) == 5 for o in outputs):
            split = match_split_raw(ix, shapes, outputs, inp.name, tuple(in_shape), anchors)
            if isinstance(split, Head):
                return split
        if all(r.frontier and not r.blockers and set(r.ops) <= RAW_OPS for r in regions):
            raise AlreadyRawError(f"already raw: {len(outputs)} outputs ({', '.join(repr(o) for o in outputs[:6])}) "
                                  f"come from {sum(len(r.frontier) for r in regions)} convs through layout ops "
                                  f"only (one per level); there is no decode to cut")
        raise NoHeadError(f"no YOLO head: expected one decoded output, found {len(outputs)} "
                          f"({', '.join(outputs)}); {LOOKED_FOR}")
    region = decode_region(ix, outputs[0])
    # an Ultralytics pose / OBB export: its task matcher (in PATTERNS) must prove it, or it is refused as such
    extra = None if protos else refusals.extra_branch(ix, shapes, region, tuple(in_shape), shapes.get(outputs[0]))
    if region.blockers:
        raise NoHeadError(f"no YOLO head: output '{outputs[0]}' depends on ops outside a decode "
                          f"({'; '.join(region.blockers[:3])}); {LOOKED_FOR}")
    if not region.frontier:
        raise NoHeadError(f"no YOLO head: no conv feeds output '{outputs[0]}'; {LOOKED_FOR}")
    if set(region.ops) <= LAYOUT_OPS:
        raise AlreadyRawError(f"already raw: output '{outputs[0]}' comes from {len(region.frontier)} "
                              f"convs through layout ops only; there is no decode to cut")
    branch = region.branching()
    if branch:
        raise NoHeadError(f"no YOLO head: the decode of output '{outputs[0]}' branches on its values ({branch}), "
                          "so no single recorded formula reproduces it; headcut does not cut such a decode")
    ctx = MatchContext(ix, shapes, region, inp.name, tuple(in_shape), group_levels(shapes, region, in_shape))
    if protos is not None:
        found = segment.match(ctx, PATTERNS, protos) if coefs is None else \
            segment.match_separate(ctx, PATTERNS, protos, coefs)
        if isinstance(found, Head):
            return found
        raise NoHeadError(f"no YOLO head: {found}")
    landmarks = face.match(ctx, PATTERNS) if extra is None else None
    if isinstance(landmarks, Head):
        return landmarks
    if landmarks is not None:
        raise NoHeadError(f"no YOLO head: {landmarks}")
    rejections = []
    for pattern in PATTERNS:
        r = pattern(ctx)
        if isinstance(r, Head):
            return r
        rejections.append(r)
    if extra:  # a pose / OBB export the task matchers could not prove: say that, and why
        tried = {p.pattern for t, p in zip((pose, obb), tasks.PATTERNS) if extra.startswith(t.LABEL)}
        raise NoHeadError(f"{extra}, not proven: " + "; ".join(r.reason for r in rejections if r.pattern in tried))
    if set(region.ops) <= RAW_OPS:  # no decode matched, and nothing but a raw layout's own ops
        raise AlreadyRawError(f"already raw: output '{outputs[0]}' comes from {len(region.frontier)} convs through "
                              f"layout ops and at most sigmoid / the DFL expectation "
                              f"({', '.join(sorted(set(region.ops) - LAYOUT_OPS)) or 'none'}); "
                              "there is no decode to cut")
    raise NoHeadError("no YOLO head recognised (" + LOOKED_FOR + "): " + "; ".join(map(str, rejections)))


def already_raw_written(record: str, model: onnx.ModelProto) -> str:
    """The one-line refusal of a model carrying a headcut record (it is raw by definition)."""
    import json

    try:
        meta = json.loads(record)
        what = (f"{meta.get('family', '?')} {meta.get('version', '')}".strip()
                + f", {meta.get('layout', 'flat')} layout, headcut {meta.get('headcut_version', '?')}")
    except (ValueError, AttributeError):
        what = "unreadable record"
    outs = ", ".join(f"'{o.name}'" for o in model.graph.output[:6])
    return f"already raw: written by headcut ({what}; outputs {outs}); there is no decode to cut"
