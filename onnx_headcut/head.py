"""The frozen description of a detection head: what the locator found and what the decode needs.

A :class:`Head` is produced by :func:`onnx_headcut.locate.locate` and consumed by every later step
(cut, decode, verify, report). :meth:`Head.to_json` (with the :class:`Layout` chosen) is what
``strip`` writes into the raw model's ``metadata_props`` (key ``headcut``) and into the
``*.head.json`` sidecar; a C++ port of the decode needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

#: Decode kinds. Each names a formula in :mod:`onnx_headcut.decode`.
GRID_EXP_OBJ = "grid_exp_obj"  # YOLOv6 0.1.0, YOLOX
DIST_ANCHOR = "dist_anchor"  # YOLOv6 >= 0.2.0 anchor-free, YOLOv8/YOLO11 (l, t, r, b distances, optional DFL)
ANCHOR_GRID = "anchor_grid"  # YOLOv5 / YOLOv7 (3 anchors per cell, sigmoid everywhere)

FORMULAS = {
    GRID_EXP_OBJ: (
        "per row [dx, dy, dw, dh, obj, cls*nc] of a level with stride s at cell (gx, gy): "
        "cx = (dx + gx) * s, cy = (dy + gy) * s, w = exp(dw) * s, h = exp(dh) * s, "
        "obj = sigmoid(obj), cls = sigmoid(cls); decoded row = [cx, cy, w, h, obj, cls*nc]; "
        "score = obj * max(cls)"
    ),
    DIST_ANCHOR: (
        "per row [l, t, r, b, cls*nc] of a level with stride s at cell (gx, gy) (with DFL each of "
        "l, t, r, b is sum_i softmax(bins)_i * i over reg_max+1 bin logits): ax = gx + 0.5, ay = gy + 0.5, "
        "x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b; cx = (x1 + x2) / 2 * s, cy = (y1 + y2) / 2 * s, "
        "w = (x2 - x1) * s, h = (y2 - y1) * s; decoded row = [cx, cy, w, h, 1, sigmoid(cls)*nc]; "
        "score = max(sigmoid(cls)); without a ones column (YOLOv8/11) the decoded row is [cx, cy, w, h, "
        "sigmoid(cls)*nc], laid out channel-first (1, 4+nc, N) when the original was"
    ),
    ANCHOR_GRID: (
        "per row [tx, ty, tw, th, obj, cls*nc] of anchor a (w_a, h_a in pixels) of a level with stride s at "
        "cell (gx, gy); rows ordered level, anchor, y, x: p = sigmoid(t); cx = (2 * px - 0.5 + gx) * s, "
        "cy = (2 * py - 0.5 + gy) * s, w = (2 * pw)^2 * w_a, h = (2 * ph)^2 * h_a; decoded row = "
        "[cx, cy, w, h, sigmoid(obj), sigmoid(cls)*nc]; score = obj * max(cls)"
    ),
}

#: what the columns of a block hold: (as logits, with sigmoid applied in the graph)
COLUMNS = {
    "box": ("dx, dy, dw, dh", None),
    "obj": ("objectness logit", "objectness score (sigmoid applied)"),
    "cls": ("class logits", "class scores (sigmoid applied)"),
    "reg": ("l, t, r, b distances in stride units", None),
    "dfl": ("DFL bin logits grouped l, t, r, b", None),
}


@dataclass(frozen=True)
class Layout:
    """How the raw output is laid out. ``flat``: one (1, N, C); ``levels``: one (1, C, h, w) per level."""

    kind: str = "flat"
    keep_dfl: bool = False
    keep_sigmoid: bool = False

    def __post_init__(self):
        if self.kind not in ("flat", "levels"):
            raise ValueError(f"layout must be 'flat' or 'levels', not {self.kind!r}")


@dataclass(frozen=True)
class Branch:
    """One prediction conv output feeding the decode: a block of channels of the raw layout."""

    role: str  # "box" | "obj" | "cls" | "reg" (4 distances) | "dfl" (4 * (reg_max + 1) bin logits)
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


@dataclass(frozen=True)
class Head:
    """A located head. ``reasons`` says, in words, why the locator believes this is the head."""

    family: str
    version: str
    decode: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    num_classes: int
    levels: tuple[Level, ...]
    region: frozenset = field(repr=False)  # output tensor names of the nodes to remove
    reasons: tuple[str, ...] = ()
    reg_max: int = 0  # DFL bins - 1; 0 without DFL
    notes: tuple[str, ...] = ()  # things the user should know (NMS removed, batch pinned, ...)
    anchors: tuple = ()  # ANCHOR_GRID: per level, per anchor (w, h) in pixels
    ones_column: bool = True  # DIST_ANCHOR: the decoded output has a constant 1 at column 4 (YOLOv6)
    channel_first: bool = False  # the decoded output is (1, C, N) (Ultralytics) rather than (1, N, C)
    original_decoded: bool = True  # False: the original output is the raw head with sigmoids (YOLOX undecoded)

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

    def blocks(self, layout: Layout = Layout()) -> tuple[Block, ...]:
        """Column blocks of one raw row (flat) or one level output (levels), in order."""
        branches = {b.role: b for b in self.levels[0].branches}
        sig = layout.keep_sigmoid
        if self.decode == GRID_EXP_OBJ:
            return (Block("box", 4, False, branches["box"]), Block("obj", 1, sig, branches["obj"]),
                    Block("cls", self.num_classes, sig, branches["cls"]))
        if self.decode == ANCHOR_GRID:
            pred = branches["pred"]
            return (Block("box", 4, False, pred), Block("obj", 1, sig, pred), Block("cls", self.num_classes, sig, pred))
        reg = branches.get("reg") or branches["dfl"]
        if layout.kind == "levels":  # YOLOv6's own ncnn Lite demo: [sigmoid(cls) * nc, l, t, r, b]
            return (Block("cls", self.num_classes, True, branches["cls"]), Block("reg", 4, False, reg))
        box = Block("reg", 4, False, reg) if (not self.dfl or layout.keep_dfl) else \
            Block("dfl", 4 * (self.reg_max + 1), False, reg)
        return (box, Block("cls", self.num_classes, sig, branches["cls"]))

    def effective(self, layout: Layout) -> Layout:
        """The layout actually emitted (levels for anchor-free heads implies DFL kept and sigmoid)."""
        if self.decode == DIST_ANCHOR and layout.kind == "levels":
            return Layout("levels", keep_dfl=True, keep_sigmoid=True)
        return layout

    def width(self, layout: Layout = Layout()) -> int:
        return sum(b.size for b in self.blocks(layout))

    def to_json(self, layout: Layout = Layout(), **extra) -> dict:
        """The metadata written next to the raw model (plain JSON types only)."""
        layout = self.effective(layout)
        blocks = self.blocks(layout)
        d = {
            "family": self.family,
            "version": self.version,
            "decode": self.decode,
            "formula": FORMULAS[self.decode],
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "num_classes": self.num_classes,
            "reg_max": self.reg_max if (self.dfl and not layout.keep_dfl) else 0,
            "dfl_bins": self.reg_max + 1 if (self.dfl and not layout.keep_dfl) else 0,
            "dfl_in_graph": bool(self.dfl and layout.keep_dfl),
            "layout": layout.kind,
            "rows": self.rows,
            "channels": [{"name": b.role, "size": b.size, "sigmoid": b.sigmoid,
                          "columns": "tx, ty, tw, th" if (b.role, self.decode) == ("box", ANCHOR_GRID)
                          else COLUMNS[b.role][1 if b.sigmoid else 0]} for b in blocks],
            "levels": [
                {"stride": lv.stride, "grid": list(lv.grid), "first_row": lv.first_row, "rows": lv.rows * self.na}
                | ({"anchors": [list(a) for a in self.anchors[i]]} if self.anchors else {})
                for i, lv in enumerate(self.levels)
            ],
            "original_output": {"name": self.output_name, "shape": list(self.output_shape),
                                "decoded": self.original_decoded,
                                "layout": "channels" if self.channel_first else "rows"},
        }
        if self.decode == DIST_ANCHOR:
            d["ones_column"] = self.ones_column
        if self.notes:
            d["notes"] = list(self.notes)
        d.update(extra)
        return d


@dataclass(frozen=True)
class Geometry:
    """What the numpy decode needs; built from a :class:`Head` (+ :class:`Layout`) or the recorded JSON."""

    decode: str
    num_classes: int
    strides: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    input_shape: tuple[int, ...]
    channels: tuple[tuple[str, int, bool], ...]  # (role, size, sigmoid applied)
    layout: str = "flat"
    reg_max: int = 0
    anchors: tuple = ()  # per level, per anchor (w, h) pixels (ANCHOR_GRID)
    ones_column: bool = True
    channel_first: bool = False
    original_decoded: bool = True

    @property
    def na(self) -> int:
        return len(self.anchors[0]) if self.anchors else 1

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
    def of(cls, head: "Head | dict | str | Geometry", layout: Layout = Layout()) -> "Geometry":
        if isinstance(head, Geometry):
            return head
        if isinstance(head, Head):
            head = head.to_json(layout)
        if isinstance(head, str):
            head = json.loads(head)
        orig = head.get("original_output", {})
        return cls(head["decode"], int(head["num_classes"]),
                   tuple(int(lv["stride"]) for lv in head["levels"]),
                   tuple((int(lv["grid"][0]), int(lv["grid"][1])) for lv in head["levels"]),
                   tuple(head["input"]["shape"]),
                   tuple((c["name"], int(c["size"]), bool(c.get("sigmoid", False))) for c in head["channels"]),
                   head.get("layout", "flat"), int(head.get("reg_max", 0)),
                   tuple(tuple(tuple(float(v) for v in a) for a in lv["anchors"]) for lv in head["levels"]
                         if "anchors" in lv),
                   bool(head.get("ones_column", True)), orig.get("layout") == "channels",
                   bool(orig.get("decoded", True)))


#: bounds on recorded numbers: a metadata record is input, and nothing it says may make headcut allocate wildly
_MAX_CLASSES, _MAX_GRID, _MAX_STRIDE, _MAX_CHANNELS = 1 << 16, 1 << 14, 1 << 12, 1 << 17


class _Bad(Exception):
    pass


def _int(v, where: str, lo: int = 1, hi: int = 1 << 31) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{where} must be an integer in [{lo}, {hi}], not {v!r}"[:200])
    return v


def _get(d: dict, key: str, where: str, kind: type):
    if key not in d:
        raise _Bad(f"{where}{key} is missing")
    v = d[key]
    if not isinstance(v, kind) or (kind in (list, dict) and isinstance(v, bool)):
        raise _Bad(f"{where}{key} must be a {kind.__name__}, not {type(v).__name__}")
    return v


def check_metadata(meta, source: str = "headcut metadata") -> dict:
    """``meta`` (parsed JSON) if it is a well-formed head record, else :class:`~onnx_headcut.errors.InputError`
    saying which field is wrong. Checks every key the decode, detect, verify and convert read."""
    from .errors import InputError

    try:
        if not isinstance(meta, dict):
            raise _Bad(f"the record must be a JSON object, not {type(meta).__name__}")
        decode = _get(meta, "decode", "", str)
        if decode not in FORMULAS:
            raise _Bad(f"decode {decode!r} is not one of {', '.join(FORMULAS)}"[:200])
        _int(meta.get("num_classes"), "num_classes", 1, _MAX_CLASSES)
        inp = _get(meta, "input", "", dict)
        _get(inp, "name", "input.", str)
        shape = _get(inp, "shape", "input.", list)
        if not 3 <= len(shape) <= 4 or not all(isinstance(d, str) or _int(d, "input.shape[]", 1, 1 << 16)
                                                for d in shape):
            raise _Bad(f"input.shape must be 3 or 4 dims, not {shape!r}"[:200])
        levels = _get(meta, "levels", "", list)
        if not levels:
            raise _Bad("levels is empty")
        for k, lv in enumerate(levels):
            w = f"levels[{k}]."
            if not isinstance(lv, dict):
                raise _Bad(f"levels[{k}] must be an object")
            _int(lv.get("stride"), w + "stride", 1, _MAX_STRIDE)
            grid = _get(lv, "grid", w, list)
            if len(grid) != 2:
                raise _Bad(f"{w}grid must be [h, w], not {grid!r}"[:200])
            for d in grid:
                _int(d, w + "grid[]", 1, _MAX_GRID)
            if "anchors" in lv:
                anchors = _get(lv, "anchors", w, list)
                if not anchors or not all(isinstance(a, list) and len(a) == 2 and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in a) for a in anchors):
                    raise _Bad(f"{w}anchors must be a list of [w, h] numbers")
        channels = _get(meta, "channels", "", list)
        if not channels:
            raise _Bad("channels is empty")
        for k, c in enumerate(channels):
            w = f"channels[{k}]."
            if not isinstance(c, dict):
                raise _Bad(f"channels[{k}] must be an object")
            _get(c, "name", w, str)
            _int(c.get("size"), w + "size", 1, _MAX_CHANNELS)
            if "sigmoid" in c and not isinstance(c["sigmoid"], bool):
                raise _Bad(f"{w}sigmoid must be true or false")
        if meta.get("layout", "flat") not in ("flat", "levels"):
            raise _Bad(f"layout must be 'flat' or 'levels', not {meta.get('layout')!r}"[:200])
        _int(meta.get("reg_max", 0), "reg_max", 0, 1 << 10)
        for k in ("ones_column",):
            if k in meta and not isinstance(meta[k], bool):
                raise _Bad(f"{k} must be true or false")
        if "original_output" in meta:
            _get(meta, "original_output", "", dict)
        for k, o in enumerate(meta.get("raw_outputs", []) if isinstance(meta.get("raw_outputs", []), list)
                              else [None]):
            if not isinstance(o, dict):
                raise _Bad("raw_outputs must be a list of {name, shape} objects")
            _get(o, "name", f"raw_outputs[{k}].", str)
            _get(o, "shape", f"raw_outputs[{k}].", list)
    except _Bad as e:
        raise InputError(f"{source}: malformed headcut metadata: {e}") from None
    return meta


def parse_metadata(text, source: str = "headcut metadata") -> dict:
    """Parse and check a head record (the ``headcut`` metadata value or a ``*.head.json`` file's text)."""
    from .errors import InputError

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: malformed headcut metadata: not UTF-8 (byte {e.start})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{source}: malformed headcut metadata: not JSON ({str(e).splitlines()[0][:120]})") from None
    return check_metadata(meta, source)
