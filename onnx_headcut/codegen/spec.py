"""What the generated decode needs, read from a head record and checked to be covered.

:func:`spec_of` turns a raw model's head record (or a :class:`~onnx_headcut.heads.Geometry`) into a
frozen :class:`Spec`; what the generator does not cover (a decode kind, a selection other than
top-k, a symbolic input size the record does not describe, an unexpected channel block, an OBB or
segment head) is an :class:`~onnx_headcut.errors.InputError` naming it, before anything is written.
Pose and face heads (:data:`COVERED_TASKS`) are covered: their points follow the detection columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..heads import Geometry
from ..heads.base import LAYOUTS, SELECTIONS, SPLIT, part_of
from ..preprocess import Preprocess

#: the column blocks each covered decode kind reads (one of the tuples, in any order)
BLOCKS = {
    "grid_exp_obj": ({"box", "obj", "cls"},),
    "anchor_grid": ({"box", "obj", "cls"},),
    "dist_anchor": ({"reg", "cls"}, {"dfl", "cls"}),
}
#: the task heads covered (the record's ``"task"``) → their extra block's role (after the detection blocks) and the
#: JSON key of its points; their NMS is the class-aware one
COVERED_TASKS = {"pose": ("kpt", "keypoints"), "face": ("lmk", "landmarks")}
#: the task heads refused, and why
REFUSED_TASKS = {"obb": "their rotated boxes and rotated NMS", "segment": "their mask coefficients and prototypes"}
#: the decode kinds whose originals may end in a top-k selection (they have an x1, y1, x2, y2 form)
TOPK_KINDS = ("dist_anchor",)


@dataclass(frozen=True)
class Spec:
    """Everything the C++ is generated from: the geometry plus what the record says around it."""

    name: str  # a C++ identifier: the header is ``<name>_decode.hpp``, the namespace ``<name>_decode``
    g: Geometry
    pre: Preprocess
    family: str = ""
    names: tuple[str, ...] = ()
    input_name: str = ""  # the ONNX (and MNN) input and raw output names, when the record has them
    output_names: tuple[str, ...] = ()

    @property
    def decode(self) -> str:
        return self.g.decode

    @property
    def columns(self) -> dict[str, int]:
        """First column of each block of a raw row."""
        return {role: s.start for role, s in self.g.columns().items()}

    @property
    def sigmoid(self) -> dict[str, bool]:
        """Whether the graph applied sigmoid to each block."""
        return {role: on for role, _, on in self.g.channels}

    @property
    def dfl_bins(self) -> int:
        return self.g.reg_max + 1 if self.g.reg_max else 0

    @property
    def dynamic(self) -> bool:
        """Grids follow the input size given at run time (the record's ``dynamic_hw``)."""
        return self.g.dynamic

    @property
    def topk(self) -> int:
        """k of the NMS-free top-k selection the original applies (0: class-aware NMS)."""
        return self.g.topk

    @property
    def split(self) -> bool:
        """The box blocks and the score blocks are outputs of their own (``split``, ``flat-split``)."""
        return self.g.layout in SPLIT

    def part_width(self, part: str) -> int:
        return self.g.part_width(part)

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.g.input_shape[-2:]
        return int(h), int(w)

    @property
    def rows(self) -> int:
        return self.g.na * sum(h * w for h, w in self.g.grids)


def identifier(stem: str) -> str:
    """``stem`` (a file name without its suffix) as a C identifier: ``yolov8n.raw`` → ``yolov8n_raw``."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", stem).strip("_") or "model"
    return "m_" + name if name[0].isdigit() else name


def spec_of(head: dict[str, Any] | Geometry, name: str) -> Spec:
    """The :class:`Spec` of a head record or geometry; :class:`InputError` for what is not covered."""
    meta = head if isinstance(head, dict) else {}
    if meta:
        _covered(meta)
    try:
        g = Geometry.of(head)
    except ValueError as e:
        raise InputError(f"codegen: {e}") from None
    _covered_geometry(g)
    names = meta.get("names") or ()
    outs = tuple(str(o["name"]) for o in meta.get("raw_outputs", []))
    expected = len(g.output_shapes())
    if outs and len(outs) != expected:
        raise InputError(f"codegen: the record lists {len(outs)} raw outputs, its {g.layout} layout has {expected}")
    return Spec(identifier(name), g, Preprocess.of(meta) if meta else Preprocess(), str(meta.get("family", "")),
                tuple(str(n) for n in names), str(meta.get("input", {}).get("name", "")), outs)


def _covered(meta: dict[str, Any]) -> None:
    """Refuse, naming it, what the record says that the generator has no code for."""
    shape = meta.get("input", {}).get("shape", [])
    if any(not isinstance(d, int) for d in shape[-2:]):
        raise InputError(f"codegen does not cover a symbolic input size without a dynamic_hw record (input shape "
                         f"{shape}); strip the model again with this headcut")
    sel = meta.get("selection")
    if sel is not None and (not isinstance(sel, dict) or sel.get("kind") not in SELECTIONS):
        raise InputError(f"codegen does not cover the selection {sel!r} (it covers {', '.join(SELECTIONS)})")
    if "dynamic_hw" in meta:
        return  # the raw outputs' sizes follow the input's (checked against the layout by spec_of)
    for k, o in enumerate(meta.get("raw_outputs", [])):
        if not all(isinstance(d, int) for d in o.get("shape", [])[1:]):
            raise InputError(f"codegen does not cover symbolic raw output sizes without a dynamic_hw record "
                             f"(raw output {k}: {o.get('shape')})")


def _covered_geometry(g: Geometry) -> None:
    if g.task in REFUSED_TASKS:
        raise InputError(f"codegen does not cover {g.task} heads yet ({REFUSED_TASKS[g.task]})")
    if g.task != "detect" and g.task not in COVERED_TASKS:
        raise InputError(f"codegen does not cover {g.task} heads (it covers detect, {', '.join(COVERED_TASKS)})")
    if g.decode not in BLOCKS:
        raise InputError(f"codegen does not cover the {g.decode!r} decode yet (it covers {', '.join(BLOCKS)})")
    if g.layout not in LAYOUTS:
        raise InputError(f"codegen does not cover the {g.layout!r} layout (it covers {', '.join(LAYOUTS)})")
    if g.topk and g.decode not in TOPK_KINDS:
        raise InputError(f"codegen does not cover a top-k selection after a {g.decode} decode (only after "
                         f"{', '.join(TOPK_KINDS)})")
    if g.topk and g.task != "detect":
        raise InputError(f"codegen does not cover a top-k selection in a {g.task} head (only class-aware NMS)")
    extra = {COVERED_TASKS[g.task][0]} if g.task in COVERED_TASKS else set()
    roles = [r for r, _, _ in g.channels]
    if len(set(roles)) != len(roles) or set(roles) not in [b | extra for b in BLOCKS[g.decode]]:
        raise InputError(f"codegen does not cover a {g.decode} head with the column blocks {roles} "
                         f"(expected {' or '.join(str(sorted(b | extra)) for b in BLOCKS[g.decode])})")
    parts = list(dict.fromkeys(part_of(r) for r in roles))
    if g.layout in SPLIT and parts != list(g.parts[:g.joined_parts]):  # a row is [box part, cls part(, extra)]
        raise InputError(f"codegen: a {g.layout} head whose column blocks {roles} do not follow its outputs "
                         f"{list(g.parts[:g.joined_parts])}")
    sizes = {r: n for r, n, _ in g.channels}
    if sizes.get("box", 4) != 4 or sizes.get("reg", 4) != 4 or sizes.get("obj", 1) != 1 or \
            sizes["cls"] != g.num_classes or ("dfl" in sizes and sizes["dfl"] != 4 * (g.reg_max + 1)):
        raise InputError(f"codegen: the column blocks {dict(sizes)} do not match a {g.decode} head with "
                         f"{g.num_classes} classes")
    dims = g.kpt_dims if g.task == "pose" else 2
    if extra and (dims not in (2, 3) or sizes[next(iter(extra))] % dims or not sizes[next(iter(extra))]):
        raise InputError(f"codegen: a {g.task} block of {sizes[next(iter(extra))]} columns is not points of "
                         f"{dims} values")
    if g.decode == "anchor_grid" and (not g.anchors or len(g.anchors) != len(g.strides)):
        raise InputError("codegen: an anchor_grid head needs the anchors of every level in its record")
