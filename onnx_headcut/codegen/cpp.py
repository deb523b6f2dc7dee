"""Render the C++17 header ``<name>_decode.hpp`` from a :class:`Spec` (the harness is :mod:`.harness`).

The header is the model's constants (from the head record), the shared pieces (sigmoid, the gate,
class-aware NMS, letterbox undo: each the C++ of :mod:`onnx_headcut.decode` /
:mod:`onnx_headcut.preprocess`), the kind's ``decode_row`` (:mod:`.kinds`) and the layout's
``decode`` (:mod:`.layouts`). Nothing in it depends on anything but the C++ standard library.
"""

from __future__ import annotations

import textwrap

from .. import __version__
from ..heads import kind
from .kinds import row_decode
from .layouts import LAYOUTS, public
from .shared import CANDIDATES, LETTERBOX, NMS, TOPK
from .spec import Spec
from .tasks import constants, fill, member, to_image
from .tasks import role as extra_role

_BLOCK_TEXT = {"box": "box terms", "obj": "objectness", "cls": "classes", "reg": "distances l, t, r, b",
               "dfl": "DFL bin logits, l, t, r, b groups",
               "kpt": "keypoints x, y[, visibility logit], raw, interleaved", "lmk": "landmark offsets x, y, raw"}


def comment(text: str) -> str:
    """``text`` safe inside a ``//`` comment: printable ASCII on one line."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def wrap_comments(code: str, width: int = 110) -> str:
    """``code`` with every ``//`` comment line longer than ``width`` wrapped at spaces."""
    out = []
    for line in code.splitlines():
        head, sep, text = line.partition("// ")
        if len(line) <= width or not sep or head.strip():
            out.append(line)
            continue
        out += [head + sep + part for part in textwrap.wrap(text, width - len(head) - 3, break_long_words=False,
                                                          break_on_hyphens=False)]
    return "\n".join(out) + "\n"


def literal(text: str) -> str:
    """``text`` as a C++ string literal (UTF-8; every byte outside printable ASCII as an octal escape)."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 0x20 <= b < 0x7F and c != "?" else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _float(v: float) -> str:
    """``v`` as a C++ float literal that reads back to the same float32."""
    return repr(float(v)) + "f"


def _columns(spec: Spec) -> str:
    g, cols = spec.g, spec.columns
    lines = []
    for role, size, on in g.channels:
        what = _BLOCK_TEXT[role] + (" (sigmoid applied)" if on else " (logits)" if role in ("obj", "cls") else "")
        span = f"{cols[role]}" if size == 1 else f"{cols[role]} .. {cols[role] + size - 1}"
        lines.append(f"constexpr int k{role.capitalize()} = {cols[role]};  // columns {span}: {what}")
    if spec.dfl_bins:
        lines.append(f"constexpr int kDflBins = {spec.dfl_bins};  // bins per side: distance = sum_i softmax_i * i")
    if spec.split and extra_role(spec):
        lines.append(f"// {g.layout}: columns 0 .. kBoxWidth - 1 are the _box output's, the next kClsWidth the _cls "
                     f"output's, the rest the _{extra_role(spec)} output's")
        lines.append(f"constexpr int kBoxWidth = {spec.part_width('box')}, kClsWidth = {spec.part_width('cls')}, "
                     f"kExtraWidth = {spec.part_width(extra_role(spec))};")
    elif spec.split:
        lines.append(f"// {g.layout}: columns 0 .. kBoxWidth - 1 are the _box output's, the rest the _cls output's")
        lines.append(f"constexpr int kBoxWidth = {spec.part_width('box')}, kClsWidth = {spec.part_width('cls')};")
    return "\n".join(lines)


def _levels(spec: Spec) -> str:
    g = spec.g
    out = [f"constexpr int kNumLevels = {len(g.strides)};"]
    if spec.dynamic:
        out.append(f"""\
constexpr int kStrides[kNumLevels] = {{{", ".join(map(str, g.strides))}}};  // stride ascending
// The input size is dynamic: both sides a multiple of kMultipleOf, each level's grid (h / stride, w / stride).
constexpr int kMultipleOf = {g.multiple};
inline bool valid(Size input) {{
  return input.h > 0 && input.w > 0 && input.h % kMultipleOf == 0 && input.w % kMultipleOf == 0;
}}
struct Levels {{
  Level at[kNumLevels];
}};
inline Levels levels_at(Size input) {{
  Levels out{{}};
  for (int l = 0; l < kNumLevels; ++l) out.at[l] = {{kStrides[l], input.h / kStrides[l], input.w / kStrides[l]}};
  return out;
}}""")
    else:
        lv = ", ".join(f"{{{s}, {h}, {w}}}" for s, (h, w) in zip(g.strides, g.grids))
        out.append(f"constexpr Level kLevels[kNumLevels] = {{{lv}}};  // stride ascending")
    out.append(f"constexpr int kAnchorsPerCell = {g.na};")
    if spec.decode == "anchor_grid":
        per = ",\n    ".join("{" + ", ".join(f"{{{_float(w)}, {_float(h)}}}" for w, h in a) + "}" for a in g.anchors)
        out.append(f"// anchor (w, h) in input pixels, per level and anchor\n"
                   f"constexpr float kAnchors[kNumLevels][kAnchorsPerCell][2] = {{\n    {per}}};")
    return "\n".join(out)


def _blobs(spec: Spec) -> str:
    """The model's input and raw output names (ONNX Runtime and MNN bind by them; ncnn's are in0, out0..)."""
    if not spec.input_name or not spec.output_names:
        return "// (the head record names no input or raw outputs)\n"
    outs = ", ".join(literal(n) for n in spec.output_names)
    return (f"inline const char* const kInputName = {literal(spec.input_name)};  // the ONNX / MNN names\n"
            f"inline const char* const kOutputNames[kNumOutputs] = {{{outs}}};\n")


def _names(spec: Spec) -> str:
    if not spec.names:
        return "// (the head record carries no class names)"
    body = ",\n    ".join(literal(n) for n in spec.names)
    return f"inline const char* const kClassNames[kNumClasses] = {{\n    {body}}};"


def _preprocess(spec: Spec) -> str:
    p = spec.pre
    return f"""\
// the preprocessing this family's own predict applies (onnx_headcut.preprocess): resize by
// r = min(kInputH / h0, kInputW / w0) to ({"round" if p.size == "round" else "int"}(w0 r), \
{"round" if p.size == "round" else "int"}(h0 r)), bilinear; pad with {p.value} \
{"centred" if p.pad == "center" else "on the bottom and the right"}; {p.channels.upper()}; \
pixels * {p.scale:.9g}
constexpr bool kPadCentered = {str(p.pad == "center").lower()};
constexpr bool kRoundSize = {str(p.size == "round").lower()};  // false: truncate (YOLOX)
constexpr int kPadValue = {p.value};
constexpr bool kBgr = {str(p.channels == "bgr").lower()};
constexpr float kPixelScale = {_float(p.scale)};"""


def _gate_text(is_score: bool) -> str:
    return "scores: gate = conf" if is_score else "logits: gate = logit(conf)"


def _gate_role(spec: Spec) -> str:
    """The block rows are rejected on before decoding: the kind's own (``Kind.gate``, as detect uses it)."""
    return kind(spec.decode).gate


_SHARED = """\
inline float sigmoid(float x) {  // as onnx_headcut.numeric.sigmoid: no overflow for either sign
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const float e = std::exp(x);
  return e / (1 + e);
}

// The threshold the gate columns are compared with before anything is decoded.
inline float gate(float conf) {
  return kGateIsScore ? conf : float(std::log(double(conf) / (1 - double(conf))));
}

// One raw row: at(c) is its column c, contiguous (flat layout), one plane per channel (levels), or
// the box part and the score part in outputs of their own (split layouts: planes, or rows with step 1).
struct FlatRow {
  const float* p;
  float operator()(int c) const { return p[c]; }
};
struct PlaneRow {
  const float* p;
  std::size_t cstep;
  float operator()(int c) const { return p[std::size_t(c) * cstep]; }
};

// The best of the kGateWidth gate columns of a row, from its column `first`. Eight running maxima
// rather than one: no chain of dependent max operations (4x faster on 80 classes, and the compiler
// makes vector instructions of them).
template <class Row>
inline float gate_value(const Row& at, int first) {
  constexpr int kLanes = kGateWidth < 8 ? kGateWidth : 8;
  float m[kLanes];
  for (int k = 0; k < kLanes; ++k) m[k] = at(first + k);
  int c = kLanes;
  for (; c + kLanes <= kGateWidth; c += kLanes)
    for (int k = 0; k < kLanes; ++k) m[k] = std::max(m[k], at(first + c + k));
  for (; c < kGateWidth; ++c) m[0] = std::max(m[0], at(first + c));
  for (int k = 1; k < kLanes; ++k) m[0] = std::max(m[0], m[k]);
  return m[0];
}

// best[k] = the best gate channel (first .. first + kGateWidth - 1) of pixels p[0 .. len - 1] of an output
// (channel c at p + c * cstep), read plane by plane; a full block has a fixed length the compiler makes
// vector instructions of.
constexpr std::size_t kBlock = 256;
template <std::size_t N>
inline void gate_block(const float* p, std::size_t cstep, std::size_t len, float* best, int first) {
  const std::size_t n = N ? N : len;
  for (std::size_t k = 0; k < n; ++k) best[k] = p[first * cstep + k];
  for (int c = 1; c < kGateWidth; ++c)
    for (std::size_t k = 0; k < n; ++k) best[k] = std::max(best[k], p[(first + c) * cstep + k]);
}
inline void gate_block(const float* p, std::size_t cstep, std::size_t len, float* best, int first) {
  len == kBlock ? gate_block<kBlock>(p, cstep, len, best, first) : gate_block<0>(p, cstep, len, best, first);
}

// The class with the highest logit (the first one on ties, as numpy's argmax).
template <class Row>
inline int best_class(const Row& at) {
  int best = 0;
  float v = at(kCls);
  for (int c = 1; c < kNumClasses; ++c)
    if (at(kCls + c) > v) v = at(kCls + (best = c));
  return best;
}
"""

_SPLIT_ROW = """\
struct SplitRow {
  const float* box;
  const float* cls;
  std::size_t box_step, cls_step;
  float operator()(int c) const {
    return c < kBoxWidth ? box[std::size_t(c) * box_step] : cls[std::size_t(c - kBoxWidth) * cls_step];
  }
};
"""

_SPLIT_ROW_EXTRA = """\
struct SplitRow {  // [box part, score part, the task's extra part]
  const float* box;
  const float* cls;
  const float* ext;
  std::size_t box_step, cls_step, ext_step;
  float operator()(int c) const {
    return c < kBoxWidth ? box[std::size_t(c) * box_step]
           : c < kBoxWidth + kClsWidth ? cls[std::size_t(c - kBoxWidth) * cls_step]
                                       : ext[std::size_t(c - kBoxWidth - kClsWidth) * ext_step];
  }
};
"""


def _split_row(spec: Spec) -> str:
    return "" if not spec.split else _SPLIT_ROW_EXTRA if extra_role(spec) else _SPLIT_ROW


def header(spec: Spec, source: str) -> str:
    """The text of ``<name>_decode.hpp``."""
    return wrap_comments(_header(spec, source))


def _shapes(spec: Spec) -> str:
    """The raw output shapes, in words (``h``, ``w``: the input size of a dynamic head)."""
    g = spec.g
    if not spec.dynamic:
        return ", ".join(str(tuple(int(d) for d in s)) for s in g.output_shapes())
    per = [f"(1, {g.na * g.part_width(p)}, h/{s}, w/{s})" for s in g.strides for p in g.parts] \
        if g.layout in ("levels", "split") else [f"(1, rows, {g.part_width(p)})" for p in g.parts]
    return ", ".join(per)


def _rows(spec: Spec) -> str:
    if spec.dynamic:
        return ""
    return f"constexpr int kRows = {spec.rows};  // rows of the flat layout: level, anchor, y, x\n"


def _usage(spec: Spec) -> str:
    size = "{h, w}, " if spec.dynamic else ""
    return (f"auto dets = {spec.name}_decode::decode_outputs(outputs, {size}{{/*conf*/ 0.25f, /*iou*/ 0.45f}});"
            "  // input pixels\n"
            f"//   {spec.name}_decode::to_image(dets, {spec.name}_decode::letterbox(image_w, image_h"
            f"{', {h, w}' if spec.dynamic else ''}));  // image pixels")


def _size(spec: Spec) -> str:
    h, w = spec.input_hw
    if spec.dynamic:
        return (f"// The network input is dynamic (a multiple of {spec.g.multiple} on both sides); the record was "
                f"verified at\n// {w}x{h}, the default of letterbox(). Every decode takes the input size.\n"
                f"constexpr int kInputW = {w}, kInputH = {h};")
    return f"constexpr int kInputW = {w}, kInputH = {h};  // the network input, after letterbox"


_CLIP = "    d.y1 = std::clamp((d.y1 - top) / r, 0.f, h), d.y2 = std::clamp((d.y2 - top) / r, 0.f, h);\n"


def _letterbox(spec: Spec) -> str:
    """The letterbox and its undo; a task head's ``to_image`` moves its points too."""
    assert _CLIP in LETTERBOX
    return LETTERBOX.replace(_CLIP, _CLIP + to_image(spec))


def _header(spec: Spec, source: str) -> str:
    g = spec.g
    h, w = spec.input_hw
    gate_role = _gate_role(spec)
    who = comment(f"{spec.family} " if spec.family else "") + g.decode
    after = f"top-k selection (k = {spec.topk}, no NMS)" if spec.topk else "class-aware NMS"
    size = f"dynamic input (verified at {w}x{h})" if spec.dynamic else f"input {w}x{h}"
    anchor = spec.decode == "anchor_grid"
    return f"""\
// {spec.name}_decode.hpp: the decode of the raw head of {comment(source)}, generated from its head record
// by headcut {__version__} codegen.
// {who}, {size}, {g.num_classes} classes, {g.layout} layout: {_shapes(spec)}; then {after}.
// Dependency-free C++17. Formula for formula what onnx_headcut.decode computes (float32):
//   {_usage(spec)}
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace {spec.name}_decode {{

{_size(spec)}
struct Size {{
  int h, w;  // a network input size
}};
constexpr Size kInputSize = {{kInputH, kInputW}};
constexpr int kNumClasses = {g.num_classes};
constexpr int kWidth = {g.width};  // columns of one raw row
{_rows(spec)}\
{_columns(spec)}
{constants(spec)}\
struct Level {{
  int stride, h, w;
}};
{_levels(spec)}
// rows are rejected before decoding when the best of these columns ({gate_role}) is below the gate
constexpr int kGate = k{gate_role.capitalize()}, kGateWidth = {dict((r, n) for r, n, _ in g.channels)[gate_role]};
constexpr bool kGateIsScore = {str(spec.sigmoid[gate_role]).lower()};  // {_gate_text(spec.sigmoid[gate_role])}
{f"constexpr int kTopK = {spec.topk};  // the NMS-free selection keeps the top k (row, class) scores{chr(10)}"
 if spec.topk else ""}
{_preprocess(spec)}

{_names(spec)}

struct Detection {{
  float x1, y1, x2, y2, score;  // corners in input pixels (image pixels after to_image)
  int cls;
{member(spec)}\
}};

struct Options {{
  float conf = 0.25f;  // score threshold
  float iou = 0.45f;   // NMS IoU threshold{" (unused: the head selects top-k without NMS)" if spec.topk else ""}
  int max_det = 300;{"  // (unused: kTopK bounds the detections)" if spec.topk else ""}
}};

namespace detail {{

{_SHARED}{_split_row(spec)}
// Where a row sits: its cell (gx, gy) and the stride of its level{" and its anchor's size (pixels)" if anchor else ""}.
struct Cell {{
  float gx, gy, stride;{" float aw, ah;" if anchor else ""}
}};

{CANDIDATES["topk" if spec.topk else "nms"]}
{fill(spec)}{row_decode(spec)}
{TOPK if spec.topk else NMS}
{LAYOUTS[g.layout](spec)}
}}  // namespace detail

{public(spec)}
{_blobs(spec)}
{_letterbox(spec)}
}}  // namespace {spec.name}_decode
"""
