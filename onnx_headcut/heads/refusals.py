"""Exports headcut recognises but does not strip, refused by name with one line.

Each check returns the one-line reason, or None. They run before the matchers, so that a
recognised variant is never reported as "no YOLO head" with every matcher's reason.
"""

from __future__ import annotations

from ..graph import Shape
from ._match import MatchContext


def face(ctx: MatchContext) -> str | None:
    """YOLOv6 0.3.1 face: a third, 10-channel landmark branch beside reg and cls on each level."""
    if isinstance(ctx.groups, str) or not ctx.groups:
        return None
    for _, _, convs in ctx.groups:
        if len(convs) != 3 or 10 not in sorted(ctx.shapes[t][1] for t in convs):
            return None
    out = ctx.out_shape or ()
    cols = out[2] if len(out) == 3 else "?"
    return (f"YOLOv6 face export (a 10-channel landmark branch per level, {cols} columns): "
            "headcut does not strip face heads")


def segmentation(outputs: list[str], shapes: dict[str, Shape]) -> str | None:
    """Mask prototypes (1, nm, h, w) beside per-anchor coefficients (1, N, 1 + nm); nm = 32 upstream."""
    if len(outputs) < 2:
        return None
    coef = {32} | {s[2] - 1 for n in outputs if len(s := shapes.get(n) or ()) == 3 and isinstance(s[2], int)}
    if not any(len(s := shapes.get(n) or ()) == 4 and s[1] in coef for n in outputs):
        return None
    desc = ", ".join(f"'{n}' {list(shapes.get(n) or [])}" for n in outputs)
    return f"segmentation export ({desc}: mask prototypes beside the detections): headcut strips detection heads only"
