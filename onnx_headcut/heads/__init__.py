"""Head kinds: one module per decode formula, each with its matchers, raw blocks and numpy decode.

========================  ==========================================  =================================
module                    heads                                       decode
========================  ==========================================  =================================
:mod:`.grid_exp_obj`      YOLOv6 0.1.0, YOLOX                         (d + grid) * s, exp(d) * s, obj
:mod:`.dist_anchor`       YOLOv6 >= 0.2 anchor-free, YOLOv8 / YOLO11  l, t, r, b from cell centres, DFL
:mod:`.anchor_grid`       YOLOv5, YOLOv7                              (2σ - 0.5 + g) * s, (2σ)² · anchor
========================  ==========================================  =================================

Task heads (a detection head plus one extra branch per level) are in :mod:`.tasks`; the pose and OBB matchers
follow these in :data:`PATTERNS`.

Adding a head kind: write ``heads/<kind>.py`` (a :class:`~.base.Kind` and its ``match_*``
functions), add them to :data:`ALL` and :data:`PATTERNS` below, one generator in ``synth/`` and one
test file ``tests/heads/test_<kind>.py``.
"""

from __future__ import annotations

from . import anchor_grid, dist_anchor, grid_exp_obj, tasks
from ._match import MatchContext, group_levels
from .base import SCHEMA, Block, Branch, DynamicHW, Geometry, Head, Kind, Layout, Level, Rejection, grids_at

#: every decode kind, by the name recorded in the metadata
ALL: tuple[Kind, ...] = (grid_exp_obj.KIND, dist_anchor.KIND, anchor_grid.KIND)

#: the matchers, tried in this order; the first that returns a Head wins
PATTERNS = (grid_exp_obj.match_grid_exp_obj, dist_anchor.match_anchor_free, anchor_grid.match_anchor_grid,
            dist_anchor.match_ultralytics, *tasks.PATTERNS)

#: what the matchers look for, for the "no YOLO head" message
LOOKED_FOR = ("looked for per-level prediction convs (YOLOv6 0.1.0/YOLOX: box 4, obj 1, cls nc; YOLOv6 0.2+: "
              "reg 4 or 4*(reg_max+1), cls nc; YOLOv5/v7: one conv of 3*(5+nc); YOLOv8/11: box 4*reg_max, cls nc; "
              "YOLOv8/11 -pose and -obb: those plus a keypoint or 1-channel angle branch) "
              "whose outputs reach one decoded output only through decode ops (Sigmoid, Exp, Softmax, grid/anchor "
              "Add/Sub, stride Mul, Reshape/Transpose/Slice/Split/Concat/ScatterND)")


def kind(name: str) -> Kind:
    """The :class:`Kind` recorded as ``name`` in a raw model's metadata."""
    for k in ALL:
        if k.name == name:
            return k
    raise ValueError(f"unknown decode kind {name!r} (known: {', '.join(k.name for k in ALL)})")


__all__ = ["ALL", "LOOKED_FOR", "PATTERNS", "SCHEMA", "Block", "Branch", "DynamicHW", "Geometry", "Head", "Kind",
           "Layout", "Level", "MatchContext", "Rejection", "grids_at", "group_levels", "kind"]
