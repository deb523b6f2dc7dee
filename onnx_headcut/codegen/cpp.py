"""Render the C++17 header ``<name>_decode.hpp`` and its harness ``decode_main.cpp`` from a :class:`Spec`.

The header is the model's constants (from the head record), the shared pieces (sigmoid, the gate,
class-aware NMS, letterbox undo: each the C++ of :mod:`onnx_headcut.decode` /
:mod:`onnx_headcut.preprocess`), the kind's ``decode_row`` (:mod:`.kinds`) and the layout's
``decode`` (:mod:`.layouts`). Nothing in it depends on anything but the C++ standard library.
"""

from __future__ import annotations

import textwrap

from .. import __version__
from ..heads import kind
from .kinds import KINDS
from .layouts import LAYOUTS
from .spec import Spec

_BLOCK_TEXT = {"box": "box terms", "obj": "objectness", "cls": "classes", "reg": "distances l, t, r, b",
               "dfl": "DFL bin logits, l, t, r, b groups"}


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
    return "\n".join(lines)


def _levels(spec: Spec) -> str:
    g = spec.g
    lv = ", ".join(f"{{{s}, {h}, {w}}}" for s, (h, w) in zip(g.strides, g.grids))
    out = [f"constexpr int kNumLevels = {len(g.strides)};",
           f"constexpr Level kLevels[kNumLevels] = {{{lv}}};  // stride ascending",
           f"constexpr int kAnchorsPerCell = {g.na};"]
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

// One raw row: at(c) is its column c, contiguous (flat layout) or one plane per channel (levels).
struct FlatRow {
  const float* p;
  float operator()(int c) const { return p[c]; }
};
struct PlaneRow {
  const float* p;
  std::size_t cstep;
  float operator()(int c) const { return p[std::size_t(c) * cstep]; }
};

// The best gate column of a row. Eight running maxima rather than one: no chain of dependent
// max operations (4x faster on 80 classes, and the compiler makes vector instructions of them).
template <class Row>
inline float gate_value(const Row& at) {
  constexpr int kLanes = kGateWidth < 8 ? kGateWidth : 8;
  float m[kLanes];
  for (int k = 0; k < kLanes; ++k) m[k] = at(kGate + k);
  int c = kLanes;
  for (; c + kLanes <= kGateWidth; c += kLanes)
    for (int k = 0; k < kLanes; ++k) m[k] = std::max(m[k], at(kGate + c + k));
  for (; c < kGateWidth; ++c) m[0] = std::max(m[0], at(kGate + c));
  for (int k = 1; k < kLanes; ++k) m[0] = std::max(m[0], m[k]);
  return m[0];
}

// best[k] = the best gate channel of pixels p[0 .. len - 1] of a level output (channel c at p + c * cstep),
// read plane by plane; a full block has a fixed length the compiler makes vector instructions of.
constexpr std::size_t kBlock = 256;
template <std::size_t N>
inline void gate_block(const float* p, std::size_t cstep, std::size_t len, float* best) {
  const std::size_t n = N ? N : len;
  for (std::size_t k = 0; k < n; ++k) best[k] = p[kGate * cstep + k];
  for (int c = 1; c < kGateWidth; ++c)
    for (std::size_t k = 0; k < n; ++k) best[k] = std::max(best[k], p[(kGate + c) * cstep + k]);
}
inline void gate_block(const float* p, std::size_t cstep, std::size_t len, float* best) {
  len == kBlock ? gate_block<kBlock>(p, cstep, len, best) : gate_block<0>(p, cstep, len, best);
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

_NMS = """\
// Class-aware greedy NMS as onnx_headcut.decode.postprocess and nms do it: every box is offset by
// class * span (span = max |coordinate| + 1), candidates are sorted by score, highest first, ties
// in row order (a stable sort); a box is dropped when its IoU with a kept box is > iou, where
// IoU = inter / max(area_a + area_b - inter, 1e-9) and areas clamp negative sides at 0.
inline std::vector<Detection> nms(const std::vector<Detection>& cand, const Options& opt) {
  const std::size_t n = cand.size();
  float m = 0;
  for (const Detection& d : cand)
    m = std::max({m, std::fabs(d.x1), std::fabs(d.y1), std::fabs(d.x2), std::fabs(d.y2)});
  const float span = float(double(m) + 1.0);
  std::vector<float> b(4 * n), area(n);  // the offset boxes
  for (std::size_t i = 0; i < n; ++i) {
    const float off = float(cand[i].cls) * span;
    float* q = &b[4 * i];
    q[0] = cand[i].x1 + off, q[1] = cand[i].y1 + off, q[2] = cand[i].x2 + off, q[3] = cand[i].y2 + off;
    area[i] = std::max(0.f, q[2] - q[0]) * std::max(0.f, q[3] - q[1]);
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t(0));
  auto higher = [&](std::size_t i, std::size_t j) { return cand[i].score > cand[j].score; };
  std::stable_sort(order.begin(), order.end(), higher);
  std::vector<char> dropped(n, 0);
  std::vector<Detection> keep;
  for (std::size_t k = 0; k < n && int(keep.size()) < opt.max_det; ++k) {
    const std::size_t i = order[k];
    if (dropped[i]) continue;
    keep.push_back(cand[i]);
    const float* p = &b[4 * i];
    for (std::size_t r = k + 1; r < n; ++r) {
      const std::size_t j = order[r];
      if (dropped[j]) continue;
      const float* q = &b[4 * j];
      const float iw = std::max(0.f, std::min(p[2], q[2]) - std::max(p[0], q[0]));
      const float ih = std::max(0.f, std::min(p[3], q[3]) - std::max(p[1], q[1]));
      const float inter = iw * ih;
      if (!(inter / std::max(area[i] + area[j] - inter, 1e-9f) <= opt.iou)) dropped[j] = 1;
    }
  }
  return keep;
}
"""

_LETTERBOX = """\
// Where an image_w x image_h image lands in the input, as onnx_headcut.preprocess.letterbox puts it.
struct Letterbox {
  double ratio;          // input pixels per image pixel
  int new_w, new_h;      // the resized image
  int left, top;         // its offset in the input (the rest is kPadValue)
  int image_w, image_h;  // the original image
};

inline Letterbox letterbox(int image_w, int image_h) {
  const double r = std::min(double(kInputH) / image_h, double(kInputW) / image_w);
  // Python's round() rounds halves to even, as nearbyint does in the default rounding mode
  auto size = [](double v) { return int(kRoundSize ? std::nearbyint(v) : std::trunc(v)); };
  const int nw = std::min(kInputW, std::max(1, size(image_w * r)));
  const int nh = std::min(kInputH, std::max(1, size(image_h * r)));
  if (!kPadCentered) return {r, nw, nh, 0, 0, image_w, image_h};
  // half the padding on each side; the rest goes right and below: round(d - 0.1), round(d + 0.1)
  const int left = int(std::nearbyint((kInputW - nw) / 2.0 - 0.1));
  const int top = int(std::nearbyint((kInputH - nh) / 2.0 - 0.1));
  return {r, nw, nh, left, top, image_w, image_h};
}

// Boxes from input pixels to image pixels, (x - left) / ratio, clipped to the image, as detect does.
inline void to_image(std::vector<Detection>& dets, const Letterbox& lb) {
  const float r = float(lb.ratio), left = float(lb.left), top = float(lb.top);
  const float w = float(lb.image_w), h = float(lb.image_h);
  for (Detection& d : dets) {
    d.x1 = std::clamp((d.x1 - left) / r, 0.f, w), d.x2 = std::clamp((d.x2 - left) / r, 0.f, w);
    d.y1 = std::clamp((d.y1 - top) / r, 0.f, h), d.y2 = std::clamp((d.y2 - top) / r, 0.f, h);
  }
}
"""


def header(spec: Spec, source: str) -> str:
    """The text of ``<name>_decode.hpp``."""
    return wrap_comments(_header(spec, source))


def _header(spec: Spec, source: str) -> str:
    g = spec.g
    h, w = spec.input_hw
    gate_role = _gate_role(spec)
    who = comment(f"{spec.family} " if spec.family else "") + g.decode
    shape = f"(1, {spec.rows}, {g.width})" if g.layout == "flat" else \
        ", ".join(f"(1, {g.na * g.width}, {gh}, {gw})" for gh, gw in g.grids)
    return f"""\
// {spec.name}_decode.hpp: the decode of the raw head of {comment(source)}, generated from its head record
// by headcut {__version__} codegen.
// {who}, input {w}x{h}, {g.num_classes} classes, {g.layout} layout: {shape}.
// Dependency-free C++17. Formula for formula what onnx_headcut.decode.detect computes (float32):
//   auto dets = {spec.name}_decode::decode(raw, {{/*conf*/ 0.25f, /*iou*/ 0.45f}});  // input pixels
//   {spec.name}_decode::to_image(dets, {spec.name}_decode::letterbox(image_w, image_h));  // image pixels
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace {spec.name}_decode {{

constexpr int kInputW = {w}, kInputH = {h};  // the network input, after letterbox
constexpr int kNumClasses = {g.num_classes};
constexpr int kWidth = {g.width};  // columns of one raw row
constexpr int kRows = {spec.rows};  // rows of the flat layout: level, anchor, y, x
{_columns(spec)}
struct Level {{
  int stride, h, w;
}};
{_levels(spec)}
// rows are rejected before decoding when the best of these columns ({gate_role}) is below the gate
constexpr int kGate = k{gate_role.capitalize()}, kGateWidth = {dict((r, n) for r, n, _ in g.channels)[gate_role]};
constexpr bool kGateIsScore = {str(spec.sigmoid[gate_role]).lower()};  // {_gate_text(spec.sigmoid[gate_role])}

{_preprocess(spec)}

{_names(spec)}

struct Detection {{
  float x1, y1, x2, y2, score;  // corners in input pixels (image pixels after to_image)
  int cls;
}};

struct Options {{
  float conf = 0.25f;  // score threshold
  float iou = 0.45f;   // NMS IoU threshold
  int max_det = 300;
}};

namespace detail {{

{_SHARED}
// Where a row sits: its cell (gx, gy) and the stride of its level{" and its anchor's size (pixels)"
                                                                  if spec.decode == "anchor_grid" else ""}.
struct Cell {{
  float gx, gy, stride;{" float aw, ah;" if spec.decode == "anchor_grid" else ""}
}};

{KINDS[g.decode](spec)}
{_NMS}
}}  // namespace detail

{LAYOUTS[g.layout](spec)}
{_blobs(spec)}
{_LETTERBOX}
}}  // namespace {spec.name}_decode
"""


def harness(spec: Spec) -> str:
    """The text of ``decode_main.cpp``: raw outputs from float32 files in, JSON lines out."""
    ns = f"{spec.name}_decode"
    return f"""\
// decode_main: run {ns} on raw outputs dumped as little-endian float32 files and print the
// detections as JSON lines {{"box": [x1, y1, x2, y2], "score": s, "class": c}}. Generated by headcut {__version__}.
//   decode_main OUT0.bin [OUT1.bin ...] [--conf 0.25] [--iou 0.45] [--max-det 300]
//               [--image-size W H]   boxes in the pixels of a W x H image letterboxed as headcut detect does
//                                    (default: input pixels)
//               [--repeat N]         also time N decodes; prints {{"ms_per_decode": median, "ms_fastest": min}}
//                                    on stderr
//   g++ -std=c++17 -O2 decode_main.cpp -o decode_main
#include "{spec.name}_decode.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {{

[[noreturn]] void fail(const std::string& message) {{
  std::fprintf(stderr, "decode_main: error: %s\\n", message.c_str());
  std::exit(2);
}}

std::vector<float> read_floats(const char* path, std::size_t count) {{
  std::FILE* f = std::fopen(path, "rb");
  if (!f) fail(std::string(path) + ": cannot open");
  std::vector<unsigned char> bytes(count * 4 + 1);
  const std::size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  if (got != count * 4)
    fail(std::string(path) + ": " + std::to_string(got) + " bytes, expected " + std::to_string(count * 4) +
         " (" + std::to_string(count) + " float32)");
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) {{  // little-endian on any host
    const unsigned char* b = &bytes[4 * i];
    const std::uint32_t u = std::uint32_t(b[0]) | std::uint32_t(b[1]) << 8 | std::uint32_t(b[2]) << 16 |
                            std::uint32_t(b[3]) << 24;
    std::memcpy(&out[i], &u, 4);
  }}
  return out;
}}

double number(int argc, char** argv, int i) {{
  if (i >= argc) fail(std::string(argv[i - 1]) + " needs a value");
  char* end = nullptr;
  const double v = std::strtod(argv[i], &end);
  if (end == argv[i] || *end) fail(std::string(argv[i - 1]) + ": not a number: " + argv[i]);
  return v;
}}

}}  // namespace

int main(int argc, char** argv) {{
  using namespace {ns};
  Options opt;
  std::vector<const char*> files;
  int image_w = 0, image_h = 0, repeat = 0;
  for (int i = 1; i < argc; ++i) {{
    const std::string a = argv[i];
    if (a == "--conf") opt.conf = float(number(argc, argv, ++i));
    else if (a == "--iou") opt.iou = float(number(argc, argv, ++i));
    else if (a == "--max-det") opt.max_det = int(number(argc, argv, ++i));
    else if (a == "--repeat") repeat = int(number(argc, argv, ++i));
    else if (a == "--image-size") {{
      image_w = int(number(argc, argv, ++i));
      image_h = int(number(argc, argv, ++i));
      if (image_w < 1 || image_h < 1) fail("--image-size needs a positive W and H");
    }} else if (a.size() > 1 && a[0] == '-') fail("unknown option " + a);
    else files.push_back(argv[i]);
  }}
  if (!(opt.conf > 0 && opt.conf < 1) || !(opt.iou > 0 && opt.iou <= 1))
    fail("--conf must be in (0, 1), --iou in (0, 1]");
  if (int(files.size()) != kNumOutputs)
    fail("expected " + std::to_string(kNumOutputs) + " raw output file(s), got " + std::to_string(files.size()));
  std::vector<std::vector<float>> bufs;
  std::vector<const float*> outputs;
  for (int k = 0; k < kNumOutputs; ++k) bufs.push_back(read_floats(files[k], kOutputSizes[k]));
  for (const auto& b : bufs) outputs.push_back(b.data());

  std::vector<Detection> dets = decode_outputs(outputs.data(), opt);
  if (repeat > 0) {{  // each decode timed on its own: the median and the fastest
    std::vector<double> ms(std::size_t(repeat), 0.0);
    std::size_t found = 0;
    for (double& t : ms) {{
      const auto t0 = std::chrono::steady_clock::now();
      found += decode_outputs(outputs.data(), opt).size();
      t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }}
    std::sort(ms.begin(), ms.end());
    std::fprintf(stderr, "{{\\"ms_per_decode\\": %.6f, \\"ms_fastest\\": %.6f, \\"detections\\": %zu}}\\n",
                 ms[ms.size() / 2], ms[0], found / ms.size());
  }}
  if (image_w > 0) to_image(dets, letterbox(image_w, image_h));
  for (const Detection& d : dets)
    std::printf("{{\\"box\\": [%.9g, %.9g, %.9g, %.9g], \\"score\\": %.9g, \\"class\\": %d}}\\n",
                d.x1, d.y1, d.x2, d.y2, d.score, d.cls);
  return 0;
}}
"""
