"""Exports headcut recognises but does not strip, refused by name with one line.

Each check returns the one-line reason, or None. They run before the matchers, so that a
recognised variant is never reported as "no YOLO head" with every matcher's reason.
"""

from __future__ import annotations

from ..graph import Shape
from ._match import group_levels
from .tasks import obb, pose

#: Ultralytics' box branch: 4 sides x 16 DFL bins
_ULTRALYTICS_BOX = 64


def segmentation(outputs: list[str], shapes: dict[str, Shape]) -> str | None:
    """YOLOv6 0.4.1 seg: mask prototypes (1, nm, h, w) beside per-anchor coefficients (1, N, 1 + nm) as outputs of
    their own (nm = 32 upstream). Ultralytics' segment exports, two outputs, are located by :mod:`.tasks.segment`."""
    if len(outputs) < 2:
        return None
    coef = {32} | {s[2] - 1 for n in outputs if len(s := shapes.get(n) or ()) == 3 and isinstance(s[2], int)}
    if not any(len(s := shapes.get(n) or ()) == 4 and s[1] in coef for n in outputs):
        return None
    desc = ", ".join(f"'{n}' {list(shapes.get(n) or [])}" for n in outputs)
    return (f"segmentation export ({desc}: mask prototypes beside the detections) whose mask branch headcut does not "
            "find by structure (per level one conv of as many coefficients as the prototypes, copied by layout ops "
            "only): headcut does not strip it")


def extra_branch(ix, shapes: dict[str, Shape], region, input_shape, out_shape) -> str | None:
    """What an Ultralytics pose or OBB export looks like when its task matcher (:mod:`.tasks`) refused it: a
    third prediction conv per level beside the 64-channel DFL box conv and the cls conv, feeding the one
    channel-first output ``(1, 4 + nc + extra, N)``. Returns the description; ``locate`` adds the reasons.

    Pose: a keypoint branch of nk x 3 (or x 2) channels (17 x 3 = 51 upstream, output (1, 56, N));
    OBB: an angle branch of 1 channel, with Sin/Cos in the decode (rotating the boxes): told by the Sin/Cos.
    """
    trig = sorted({n.op_type for n in ix.graph.node if n.op_type in ("Sin", "Cos")})
    groups = group_levels(shapes, region, input_shape)
    if isinstance(groups, str) or not groups:
        return None
    per_level = {tuple(sorted(shapes[t][1] for t in convs)) for _, _, convs in groups}
    if len(per_level) != 1:
        return None
    channels = list(per_level.pop())
    if len(channels) != 3 or _ULTRALYTICS_BOX not in channels:
        return None
    channels.remove(_ULTRALYTICS_BOX)
    a, b = channels
    out = tuple(out_shape or ())
    shown = f"output {list(out)}" if out else "one output"
    if len(out) != 3 or out[1] != 4 + a + b:
        return None
    if trig:  # upstream OBB rotates its boxes with Sin/Cos of the angle
        nc = b if a == 1 else a if b == 1 else max(a, b)
        return (f"{obb.LABEL} (an angle branch of 1 channel per level beside box 64 and cls {nc}"
                + (f", {'/'.join(trig)} in the decode" if trig else "") + f", {shown})")
    kpt = max((c for c in (a, b) if c % 3 == 0 and c >= 6), default=None) or \
        max((c for c in (a, b) if c % 2 == 0 and c >= 4), default=None)
    if kpt is None:
        return None
    nc = b if kpt == a else a
    per = 3 if kpt % 3 == 0 else 2
    return (f"{pose.LABEL} (a keypoint branch of {kpt} channels = {kpt // per} keypoints x {per} per level "
            f"beside box 64 and cls {nc}, {shown})")
