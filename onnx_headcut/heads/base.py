"""The frozen description of a detection head, shared by every head kind.

A :class:`Head` is what a kind's matcher (``heads/<kind>.py``) returns when it recognises the
decode of an export; every later step (cut, decode, verify, report) consumes it. :meth:`Head.to_json`
(with the :class:`Layout` chosen) is the metadata ``strip`` records beside the raw model and
:meth:`Geometry.from_json` reads it back: a C++ port of the decode needs nothing else.

A :class:`Kind` is one decode formula (``grid_exp_obj``, ``dist_anchor``, ``anchor_grid``): its raw
column blocks, its numpy decode and its formula text. A head carries its kind, so nothing here
looks kinds up by name; :mod:`onnx_headcut.heads` holds the explicit tuple of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import UsageError
from ..preprocess import Preprocess

#: version of the metadata schema written by :meth:`Head.to_json` (read by :meth:`Geometry.from_json`).
#: 3: ``reg_max`` is the family's own (Ultralytics: bins; YOLOv6: bins - 1) and the decode reads ``dfl_bins``;
#: 4: ``selection`` (an NMS-free top-k tail reproduced by the decode) and ``original_output.boxes`` (xyxy or xywh);
#: 5: ``task`` (detect, segment, face, ...) and its record (``protos``, ``landmarks``), the task's extra block
SCHEMA = 5

#: the one selection kind an original may apply after its decode (YOLOv10 / YOLO26 NMS-free exports)
SELECTIONS = ("topk",)

#: what the columns of a block hold: (as logits, with sigmoid applied in the graph)
COLUMNS = {
    "box": ("dx, dy, dw, dh", None),
    "obj": ("objectness logit", "objectness score (sigmoid applied)"),
    "cls": ("class logits", "class scores (sigmoid applied)"),
    "reg": ("l, t, r, b distances in stride units", None),
    "dfl": ("DFL bin logits grouped l, t, r, b", None),
    "mask": ("mask coefficients (raw; mask = sigmoid(coefficients @ protos))", None),
    "lmk": ("landmark offsets x, y per landmark, in stride units from the anchor point", None),
    "kpt": ("keypoints x, y[, visibility logit] per keypoint, interleaved, raw (before *2, grid, stride)", None),
    "angle": ("angle logit (before sigmoid, -0.25, *pi)", None),
}

#: the roles of a task head's extra block (one per level, after the detection blocks in a row)
TASK_ROLES = ("mask", "lmk", "kpt", "angle")

LAYOUTS = ("flat", "levels", "split", "flat-split")
#: layouts with outputs per level (stride ascending), and layouts with the box and score blocks in outputs of their own
PER_LEVEL, SPLIT = ("levels", "split"), ("split", "flat-split")
#: the output (part) of a split layout each block goes to: box values in ``_box``, objectness and classes in ``_cls``
PART = {"box": "box", "reg": "box", "dfl": "box", "obj": "cls", "cls": "cls", "mask": "mask", "lmk": "lmk",
        "kpt": "kpt", "angle": "angle"}
#: what the score-sum output of a split layout holds (as rknn_model_zoo's YOLOv8 export computes it)
SCORE_SUM = "clip(sum over the classes of sigmoid(cls), 0, 1): >= every class score, for early rejection"


def part_of(role: str) -> str:
    """The split-layout output (``box`` or ``cls``) the block ``role`` goes to."""
    return PART[role]


@dataclass(frozen=True)
class Layout:
    """How the raw output is laid out. ``flat``: one (1, N, C); ``levels``: one (1, C, h, w) per level;
    ``split``: per level a (1, box, h, w) and a (1, scores, h, w) output (and a (1, 1, h, w) score sum
    with ``score_sum``); ``flat-split``: one (1, N, box) and one (1, N, scores) output (and (1, N, 1))."""

    kind: str = "flat"
    keep_dfl: bool = False
    keep_sigmoid: bool = False
    score_sum: bool = False
    extra: tuple[str, ...] = ()  # a task head's extra roles (:data:`TASK_ROLES`): split layouts give each an output

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {self.kind!r}")
        if self.score_sum and self.kind not in SPLIT:
            raise UsageError(f"--score-sum needs --layout split or flat-split (the sum is an output of its own), "
                             f"not {self.kind}")

    @property
    def parts(self) -> tuple[str, ...]:
        """The outputs per level (per-level layouts) or in all (flat ones): ``("",)`` unless split."""
        if self.kind not in SPLIT:
            return ("",)
        return ("box", "cls", *(PART[r] for r in self.extra), *(("sum",) if self.score_sum else ()))


@dataclass(frozen=True)
class Branch:
    """One prediction conv output feeding the decode: a block of channels of the raw layout."""

    role: str  # "box" | "obj" | "cls" | "reg" (4 distances) | "dfl" (bin logits) | "pred" (all, anchor heads)
    tensor: str  # the conv output tensor in the source graph
    channels: int


@dataclass(frozen=True)
class Level:
    """One pyramid level: stride, grid (h, w) and the rows it occupies in the flat raw output."""

    stride: int
    grid: tuple[int, int]
    first_row: int
    branches: tuple[Branch, ...]

    @property
    def rows(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Block:
    """A block of columns of the raw output, after the layout options."""

    role: str
    size: int
    sigmoid: bool  # the graph applies sigmoid (scores) rather than leaving logits
    source: Branch | None = None  # the conv it comes from


#: what a dynamic record says of its levels, in words (also written into it)
DYNAMIC_RULE = ("levels[].grid and first_row are at input.shape; at an input of H x W (multiples of multiple_of) "
                "level i has grid (H / stride_i, W / stride_i) and the rows follow level by level as at input.shape")


@dataclass(frozen=True)
class DynamicHW:
    """A raw graph that keeps the input's symbolic height and width: grids follow the input size."""

    axes: tuple[str, str]  # the symbolic names of the input's height and width
    multiple: int  # every input side must be a multiple of it (the largest stride)
    verified: tuple[tuple[int, int], ...] = ()  # the sizes the cut was verified at

    def to_json(self) -> dict[str, Any]:
        return {"height": self.axes[0], "width": self.axes[1], "multiple_of": self.multiple,
                "verified_at": [list(s) for s in self.verified], "rule": DYNAMIC_RULE}


def grids_at(strides, size, multiple: int) -> tuple[tuple[int, int], ...]:
    """Each level's grid at input ``size`` (H, W); :class:`ValueError` unless both sides are positive
    multiples of ``multiple``."""
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ValueError(f"input {h}x{w} is not a multiple of {multiple} (the largest stride) on both sides")
    return tuple((h // s, w // s) for s in strides)


def protos_at(shape: tuple, hw, size) -> tuple:
    """A segment head's prototypes shape ``(B, nm, h, w)`` at input ``hw`` (H, W), at input ``size``: the same
    fraction of the input (Ultralytics: 1/4, P3 upsampled x2); :class:`ValueError` when ``size`` is no multiple of
    it. ``()`` stays ``()``."""
    if not shape:
        return ()
    out = []
    for side, proto, new in zip(hw, shape[-2:], size):
        if int(side) % int(proto) or int(new) % (int(side) // int(proto)):
            raise ValueError(f"prototypes {list(shape)} at input {list(hw)}: input {list(size)} has no prototype grid")
        out.append(int(new) // (int(side) // int(proto)))
    return (*shape[:-2], *out)


@dataclass(frozen=True)
class Geometry:
    """What the numpy decode needs: built from a :class:`Head` and a :class:`Layout`, or read from
    the recorded metadata (:meth:`from_json`)."""

    decode: str
    num_classes: int
    strides: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    input_shape: tuple[int, ...]
    channels: tuple[tuple[str, int, bool], ...]  # (role, size, sigmoid applied)
    layout: str = "flat"
    reg_max: int = 0  # DFL bins - 1 left to the decode (read from ``dfl_bins``); 0 without DFL (or DFL kept)
    anchors: tuple = ()  # per level, per anchor (w, h) pixels (anchor_grid)
    ones_column: bool = True
    channel_first: bool = False
    original_decoded: bool = True
    xyxy: bool = False  # the original decodes x1, y1, x2, y2 (an NMS-free export) rather than cx, cy, w, h
    topk: int = 0  # the original selects the top ``topk`` (anchor, class) scores without NMS; 0: no selection
    multiple: int = 0  # a dynamic record: input sides are multiples of it and grids follow them (0: static)
    score_sum: bool = False  # split layouts: a score-sum output follows each cls output
    task: str = "detect"  # "segment", "face", "pose", "obb": the head has the task's extra block (:data:`TASK_ROLES`)
    protos: tuple[int, ...] = ()  # segment: the shape (1, nm, h, w) of the prototypes output kept after the raw ones
    extra_at: int = -1  # the column of the original's row where the task's extra block sits (-1: after the classes)
    coefficients: tuple[int, ...] = ()  # YOLOv6 seg: the shape (1, N, 1 + nm) of the original's coefficient output
    kpt_dims: int = 0  # pose: values per keypoint (2: x, y; 3: x, y, visibility)

    @property
    def na(self) -> int:
        return len(self.anchors[0]) if self.anchors else 1

    @property
    def dynamic(self) -> bool:
        return self.multiple > 0

    def at(self, size) -> Geometry:
        """This geometry at input ``size`` (H, W): itself when it is that size already; a dynamic one with the
        grids of that size; :class:`ValueError` for a static one of another size or a size the strides do not divide."""
        size = tuple(int(v) for v in size)
        if size == tuple(self.input_shape[-2:]):
            return self
        if not self.dynamic:
            raise ValueError(f"the head has a static input {list(self.input_shape[-2:])}, not {list(size)}")
        grids = grids_at(self.strides, size, self.multiple)
        return replace(self, grids=grids, input_shape=(*self.input_shape[:-2], *size),
                       protos=protos_at(self.protos, self.input_shape[-2:], size),
                       coefficients=(*self.coefficients[:1], self.na * sum(h * w for h, w in grids),
                                     *self.coefficients[2:]) if self.coefficients else ())

    @property
    def parts(self) -> tuple[str, ...]:
        extra = tuple(r for r, _, _ in self.channels if r in TASK_ROLES)
        return Layout(self.layout, score_sum=self.score_sum, extra=extra).parts

    @property
    def joined_parts(self) -> int:
        """How many of the outputs per level (split) or in all (flat-split) hold row columns: all but the sum."""
        return len(self.parts) - self.score_sum

    def part_width(self, part: str) -> int:
        """Channels per anchor of a split layout's ``part`` (``box``, ``cls``, ``sum``; ``""``: the whole row)."""
        if part == "sum":
            return 1
        return sum(n for r, n, _ in self.channels if not part or part_of(r) == part)

    def output_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        """The shapes of the raw outputs, in order, for a batch of ``batch``."""
        n = self.na * sum(h * w for h, w in self.grids)
        kept = [(batch, *self.protos[1:])] if self.protos else []  # the prototypes, after the raw outputs
        if self.layout in PER_LEVEL:
            return [(batch, self.na * self.part_width(p), h, w) for h, w in self.grids for p in self.parts] + kept
        return [(batch, n, self.part_width(p)) for p in self.parts] + kept

    def columns(self) -> dict[str, slice]:
        out, at = {}, 0
        for role, size, _ in self.channels:
            out[role] = slice(at, at + size)
            at += size
        return out

    def activated(self, role: str) -> bool:
        return any(r == role and s for r, _, s in self.channels)

    @property
    def width(self) -> int:
        return sum(n for _, n, _ in self.channels)

    @classmethod
    def of(cls, head: Head | dict | Geometry, layout: Layout | None = None) -> Geometry:
        """The geometry of a located head (with ``layout``), of recorded metadata, or itself."""
        if isinstance(head, Geometry):
            return head
        if isinstance(head, Head):
            return head.geometry(layout or Layout())
        return cls.from_json(head)

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> Geometry:
        """Read the metadata :meth:`Head.to_json` writes; :class:`ValueError` names what is malformed."""
        try:
            orig = meta.get("original_output", {})
            levels = meta["levels"]
            return cls(str(meta["decode"]), int(meta["num_classes"]),
                       tuple(int(lv["stride"]) for lv in levels),
                       tuple((int(lv["grid"][0]), int(lv["grid"][1])) for lv in levels),
                       tuple(int(d) for d in meta["input"]["shape"]),
                       tuple((str(c["name"]), int(c["size"]), bool(c.get("sigmoid", False))) for c in meta["channels"]),
                       str(meta.get("layout", "flat")),
                       int(meta["dfl_bins"]) - 1 if int(meta.get("dfl_bins", 0)) > 0 else 0,
                       tuple(tuple(tuple(float(v) for v in a) for a in lv["anchors"]) for lv in levels
                             if "anchors" in lv),
                       bool(meta.get("ones_column", True)), orig.get("layout") == "channels",
                       bool(orig.get("decoded", True)), orig.get("boxes") == "xyxy",
                       int(meta["selection"]["k"]) if "selection" in meta else 0,
                       int(meta["dynamic_hw"]["multiple_of"]) if "dynamic_hw" in meta else 0,
                       bool(meta.get("score_sum", False)), str(meta.get("task", "detect")),
                       tuple(int(d) for d in meta["protos"]["shape"]) if "protos" in meta else (),
                       int(orig.get("extra_at", -1)),
                       tuple(int(d) for d in orig["coefficients"]["shape"]) if "coefficients" in orig else (),
                       int(meta["keypoints"]["dims"]) if "keypoints" in meta else 0)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ValueError(f"malformed headcut metadata ({type(e).__name__}: {e})") from None


class Kind:
    """One decode kind: its name (recorded in the metadata), formula, raw blocks and numpy decode."""

    name = ""
    formula = ""
    gate = "cls"  # the block detect() thresholds on before decoding anything

    def blocks(self, head: Head, layout: Layout) -> tuple[Block, ...]:
        """Column blocks of one raw row (flat) or one level output (levels), in order."""
        raise NotImplementedError

    def effective(self, head: Head, layout: Layout) -> Layout:
        """The layout actually emitted for ``layout``."""
        return layout

    def decode(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray,
               sizes: np.ndarray | None) -> np.ndarray:
        """Decoded rows ``(B, K, 5 + nc)`` = ``[cx, cy, w, h, obj or 1, cls scores]`` of raw rows ``flat``
        whose cells (gx, gy), strides and anchor sizes are given."""
        raise NotImplementedError

    def corners(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
        """Decoded rows ``(B, K, 4 + nc)`` = ``[x1, y1, x2, y2, cls scores]``: only kinds whose originals may
        end in a top-k selection (``dist_anchor``) have it."""
        raise NotImplementedError(f"the {self.name} decode has no x1, y1, x2, y2 form")

    def __repr__(self) -> str:
        return f"<head kind {self.name}>"


def head_name(family: str, version: str) -> str:
    """``family version``, or the family alone when it already names the project ("Ultralytics Detect head")."""
    return family if version and version in family else f"{family} {version}".strip()


#: the head versions whose ``reg_max`` is the DFL bin count (WongKinYiu's YOLOv9 took Ultralytics' DFL)
BINS_REG_MAX = ("Ultralytics", "WongKinYiu")


@dataclass(frozen=True)
class Head:
    """A located head. ``reasons`` says, in words, why the matcher believes this is the head."""

    kind: Kind
    family: str
    version: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    num_classes: int
    levels: tuple[Level, ...]
    reasons: tuple[str, ...] = ()
    reg_max: int = 0  # DFL bins - 1 (internal; :attr:`upstream_reg_max` is the family's own); 0 without DFL
    notes: tuple[str, ...] = ()  # things the user should know (NMS removed, batch pinned, ...)
    anchors: tuple = ()  # anchor_grid: per level, per anchor (w, h) in pixels
    ones_column: bool = True  # dist_anchor: the decoded output has a constant 1 at column 4 (YOLOv6)
    channel_first: bool = False  # the decoded output is (1, C, N) (Ultralytics) rather than (1, N, C)
    original_decoded: bool = True  # False: the original output is the raw head with sigmoids (YOLOX undecoded)
    #: the original's outputs when they already are the raw head, split per level and 5-D (YOLOv7 without
    #: ``--grid``): ((name, shape), ...) in level order; there is no decoded output to compare with
    split_outputs: tuple = ()
    anchors_from: str = "graph"  # where the anchors came from: "graph" or "--anchors"
    xyxy: bool = False  # decoded boxes x1, y1, x2, y2 (Ultralytics end-to-end), not cx, cy, w, h
    selection: Selection | None = None  # the NMS-free top-k tail after the decode (YOLOv10 / YOLO26 end-to-end)
    dynamic_hw: DynamicHW | None = None  # the raw graph keeps the input's symbolic height and width
    task: str = "detect"  # "segment", "face", "pose", "obb": each level has the task's extra branch
    protos: tuple = ()  # segment: (output name, shape (1, nm, h, w)) of the prototypes, a graph output kept as is
    landmarks: int = 0  # face: landmarks per detection (x, y each)
    extra_at: int = -1  # the column of the original's row where the extra block sits (-1: after the classes)
    #: YOLOv6 seg: (name, shape (1, N, 1 + nm)) of the original's output of [level index, coefficients] per row,
    #: which the decode reproduces (compared in layer 2) and the raw model does not keep
    coefficients: tuple = ()
    keypoints: tuple[int, int] = (0, 0)  # pose: (count, dims per keypoint)

    @property
    def compared_outputs(self) -> tuple[str, ...]:
        """The original's outputs besides the decoded one that the verification compares (the coefficients)."""
        return (self.coefficients[0],) if self.coefficients else ()

    @property
    def kept_outputs(self) -> tuple[str, ...]:
        """The original's outputs the raw model keeps untouched, after the raw outputs (segment: the prototypes)."""
        return (self.protos[0],) if self.protos else ()

    @property
    def decode(self) -> str:
        return self.kind.name

    @property
    def na(self) -> int:
        """Anchors per cell (rows per cell of the raw output)."""
        return len(self.anchors[0]) if self.anchors else 1

    @property
    def rows(self) -> int:
        return sum(lv.rows for lv in self.levels) * self.na

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(lv.stride for lv in self.levels)

    @property
    def dfl(self) -> bool:
        return self.reg_max > 0

    @property
    def preprocess(self) -> Preprocess:
        """The image preprocessing of this family's own predict (letterbox, channel order, scale)."""
        return Preprocess.for_family(self.family)

    @property
    def dfl_bins(self) -> int:
        """DFL bins per box side (0 without DFL)."""
        return self.reg_max + 1 if self.dfl else 0

    @property
    def upstream_reg_max(self) -> int:
        """``reg_max`` as the family defines it: Ultralytics' is the bin count (16), YOLOv6's the bin
        count - 1 (16 for 17 bins: 4*(reg_max+1) = 68 channels)."""
        if self.version in BINS_REG_MAX:
            return self.dfl_bins if self.dfl else 1  # YOLO26: reg_max 1, one "bin" = the distance itself
        return self.reg_max

    @property
    def reg_max_meaning(self) -> str:
        return f"DFL bins ({self.version})" if self.version in BINS_REG_MAX else "DFL bins - 1 (YOLOv6)"

    @property
    def final_output(self) -> str:
        """The original's output the verification compares with: after the selection, when there is one."""
        return self.selection.output if self.selection is not None else self.output_name

    def blocks(self, layout: Layout = Layout()) -> tuple[Block, ...]:
        """The kind's blocks, then the task's extra block (raw, no activation) when the head has one."""
        extra = tuple(Block(b.role, b.channels, False, b) for b in self.levels[0].branches if b.role in TASK_ROLES)
        return self.kind.blocks(self, layout) + extra

    def check_layout(self, layout: Layout) -> None:
        """:class:`UsageError` (one line) when an option of ``layout`` does not apply to this head."""
        name = f"the {head_name(self.family, self.version)}" + ("" if self.family.endswith(" head") else " head")
        if layout.keep_dfl and not self.dfl:
            box = next((b.channels for b in self.levels[0].branches if b.role in ("box", "reg", "pred")), "?")
            raise UsageError(f"--keep-dfl does not apply: {name} has no DFL (box branch of {box} channels), "
                             "there is nothing to keep")
        if layout.keep_sigmoid and layout.kind == "levels" and self.decode == "anchor_grid":
            raise UsageError(f"--keep-sigmoid with --layout levels does not apply to {name} (the sigmoid would "
                             "reach the box columns); use the flat or split layout")
        if layout.score_sum and self.kind.gate == "obj":
            raise UsageError(f"--score-sum does not apply to {name}: its objectness (the first channel of each cls "
                             "output) already bounds every score, reject on it")

    def effective(self, layout: Layout) -> Layout:
        """The layout emitted for ``layout``: the kind's, with the task's extra roles (split: outputs of their own)."""
        extra = tuple(b.role for b in self.levels[0].branches if b.role in TASK_ROLES)
        return replace(self.kind.effective(self, layout), extra=extra)

    def at(self, size) -> Head:
        """This head at input ``size`` (H, W) (a dynamic one: grids and rows follow; see :meth:`Geometry.at`)."""
        g = self.geometry().at(size)
        if g.grids == tuple(lv.grid for lv in self.levels):
            return self
        levels, row = [], 0
        for lv, grid in zip(self.levels, g.grids):
            levels.append(replace(lv, grid=grid, first_row=row))
            row += grid[0] * grid[1] * self.na
        protos = (self.protos[0], g.protos) if self.protos else ()  # a segment head's prototypes follow the size
        coefs = (self.coefficients[0], g.coefficients) if self.coefficients else ()
        return replace(self, levels=tuple(levels), input_shape=tuple(g.input_shape), protos=protos,
                       coefficients=coefs)

    def width(self, layout: Layout = Layout()) -> int:
        return sum(b.size for b in self.blocks(layout))

    def geometry(self, layout: Layout = Layout()) -> Geometry:
        """What the decode of the raw model cut with ``layout`` needs."""
        layout = self.effective(layout)
        left = self.dfl and not layout.keep_dfl
        return Geometry(self.decode, self.num_classes, self.strides, tuple(lv.grid for lv in self.levels),
                        tuple(self.input_shape), tuple((b.role, b.size, b.sigmoid) for b in self.blocks(layout)),
                        layout.kind, self.reg_max if left else 0,
                        tuple(tuple((float(x), float(y)) for x, y in a) for a in self.anchors),
                        self.ones_column, self.channel_first, self.original_decoded, self.xyxy,
                        self.selection.k if self.selection is not None else 0,
                        self.dynamic_hw.multiple if self.dynamic_hw else 0, layout.score_sum, self.task,
                        tuple(self.protos[1]) if self.protos else (), self.extra_at,
                        tuple(self.coefficients[1]) if self.coefficients else (), self.keypoints[1])

    def to_json(self, layout: Layout = Layout(), **extra: Any) -> dict[str, Any]:
        """The metadata written next to the raw model (plain JSON types only)."""
        layout = self.effective(layout)
        left = self.dfl and not layout.keep_dfl
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "family": self.family,
            "version": self.version,
            "decode": self.decode,
            "formula": self.kind.formula,
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "preprocess": self.preprocess.to_json(),
            "num_classes": self.num_classes,
            "reg_max": self.upstream_reg_max if left or not self.dfl else 0,  # the family's meaning: reg_max_meaning
            "dfl_bins": self.dfl_bins if left else 0,  # what the decode uses
            "dfl_in_graph": bool(self.dfl and layout.keep_dfl),
            "layout": layout.kind,
            "rows": self.rows,
            "channels": [{"name": b.role, "size": b.size, "sigmoid": b.sigmoid,
                          "columns": "tx, ty, tw, th" if (b.role, self.decode) == ("box", "anchor_grid")
                          else COLUMNS[b.role][1 if b.sigmoid else 0]}
                         | ({"output": part_of(b.role)} if layout.kind in SPLIT else {})
                         for b in self.blocks(layout)],
            "levels": [
                {"stride": lv.stride, "grid": list(lv.grid), "first_row": lv.first_row, "rows": lv.rows * self.na}
                | ({"anchors": [list(a) for a in self.anchors[i]]} if self.anchors else {})
                for i, lv in enumerate(self.levels)
            ],
            "original_output": {"name": self.output_name, "shape": list(self.output_shape),
                                "decoded": self.original_decoded,
                                "layout": "channels" if self.channel_first else "rows"}
            | ({"boxes": "xyxy"} if self.xyxy else {})
            | ({"extra_at": self.extra_at} if self.extra_at >= 0 else {})
            | ({"coefficients": {"name": self.coefficients[0], "shape": list(self.coefficients[1]),
                                 "columns": "level index (0 for stride 8, 1, ...), then the mask coefficients"}}
               if self.coefficients else {}),
        }
        if layout.kind in SPLIT:
            d["score_sum"] = layout.score_sum
            d["outputs"] = _split_outputs(layout, self.na)
        if self.split_outputs:  # the original was the raw head already, one 5-D output per level
            d["original_output"] |= {"decoded": False, "layout": "5-D per level (1, na, h, w, 5+nc)",
                                     "outputs": [{"name": n, "shape": list(s)} for n, s in self.split_outputs]}
        if self.anchors:
            d["anchors_from"] = self.anchors_from
        if self.selection is not None:
            d["selection"] = self.selection.to_json()
        if self.decode == "dist_anchor":
            d["ones_column"] = self.ones_column
            if left:
                d["reg_max_meaning"] = self.reg_max_meaning
        if self.dynamic_hw is not None:
            d["dynamic_hw"] = self.dynamic_hw.to_json()
        if self.task != "detect":
            d["task"] = self.task
        if self.protos:
            d["protos"] = {"output": self.protos[0], "shape": list(self.protos[1])}
        if self.landmarks:
            d["landmarks"] = {"count": self.landmarks}
        if self.task == "pose":
            d["keypoints"] = {"count": self.keypoints[0], "dims": self.keypoints[1]}
        if self.notes:
            d["notes"] = list(self.notes)
        d.update(extra)
        return d


def _split_outputs(layout: Layout, na: int) -> str:
    """In words, what the outputs of a split layout are and in which order (recorded as ``outputs``)."""
    per = "per level (stride ascending) <output>_s<stride>_box, _cls" if layout.kind == "split" else \
        "<output>_box (1, N, box), <output>_cls (1, N, scores)"
    extra = "".join(f", _{PART[r]}" for r in layout.extra)
    text = per + extra + (", _sum" if layout.score_sum else "") + ": the channels named output 'box' in order, then "
    text += "those named 'cls' (objectness first where the head has it)"
    text += "".join(f", then the '{PART[r]}' block" for r in layout.extra)
    if na > 1:
        text += (f"; {na} anchors per cell: each output holds, per anchor, its own block of those channels"
                 if layout.kind == "split" else f"; rows ordered level, anchor, y, x ({na} anchors per cell)")
    return text + (f"; sum = {SCORE_SUM}" if layout.score_sum else "")


@dataclass(frozen=True)
class Selection:
    """An NMS-free top-k tail after the decode (Ultralytics ``Detect.postprocess`` / YOLOv10 ``v10postprocess``).

    The original keeps, of the decoded rows ``[x1, y1, x2, y2, scores...]``, the ``k`` anchors with the
    best class score, then the ``k`` best (anchor, class) pairs of those, as ``output`` of ``shape``
    ``(1, k, 6)`` = ``[x1, y1, x2, y2, score, class]``, without NMS.
    """

    k: int
    output: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "topk", "k": self.k, "nms": False, "output": {"name": self.output, "shape": list(self.shape)},
                "columns": "x1, y1, x2, y2, score, class"}


@dataclass(frozen=True)
class Rejection:
    """A failed match, carrying its reason."""

    pattern: str
    reason: str
    final: bool = False  # the model is recognised as a variant headcut refuses: say only this

    def __str__(self) -> str:
        return f"{self.pattern}: {self.reason}"
