"""The C++ every generated header shares: :mod:`onnx_headcut.decode`'s class-aware NMS or, for an
NMS-free head, its top-k selection (:func:`~onnx_headcut.decode.select_topk`), and
:mod:`onnx_headcut.preprocess`'s letterbox (and its undo), each written to give the same numbers."""

from __future__ import annotations

#: what the row decode collects, for the NMS (decoded boxes) and for the top-k selection
CANDIDATES = {
    "nms": """\
// The rows that reached the gate, decoded, in raw row order.
using Candidates = std::vector<Detection>;
""",
    "topk": """\
// The rows that reached the gate, in raw row order: their corners (score = the best class score) and,
// kNumClasses per row, all their class scores.
struct Candidates {
  std::vector<Detection> rows;
  std::vector<float> scores;
};
""",
}

NMS = """\
// Class-aware greedy NMS as onnx_headcut.decode.postprocess and nms do it: every box is offset by
// class * span (span = 2 * max |coordinate| + 1, so boxes of different classes never overlap whatever
// their signs), candidates are sorted by score, highest first, ties in row order (a stable sort); a
// box is dropped when its IoU with a kept box is > iou, where
// IoU = inter / max(area_a + area_b - inter, 1e-9) and areas clamp negative sides at 0.
inline std::vector<Detection> nms(const std::vector<Detection>& cand, const Options& opt) {
  const std::size_t n = cand.size();
  float m = 0;
  for (const Detection& d : cand)
    m = std::max({m, std::fabs(d.x1), std::fabs(d.y1), std::fabs(d.x2), std::fabs(d.y2)});
  const float span = float(2.0 * double(m) + 1.0);
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

inline std::vector<Detection> finish(const Candidates& cand, const Options& opt) { return nms(cand, opt); }
"""

TOPK = """\
// The NMS-free selection of the original's tail (Ultralytics Detect.postprocess, YOLOv10 v10postprocess),
// as onnx_headcut.decode.select_topk and selected reproduce it; TopK is largest first, ties to the lower
// index, as onnxruntime sorts:
//   first = TopK(max_c score, k) over the rows;  pick = TopK(scores[first] flattened row-major, k)
//   detection j, p = pick_j: [corners of row first[p / nc], score flat[p], class p % nc], if >= conf
// Only rows that reached the gate are candidates: a row below it has every score below conf, ranks after
// every candidate in the first TopK and gives no pair >= conf to the second, so the detections are the same.
inline std::vector<Detection> finish(const Candidates& cand, const Options& opt) {
  const std::size_t n = cand.rows.size(), nc = kNumClasses;
  std::vector<std::size_t> first(n);
  std::iota(first.begin(), first.end(), std::size_t(0));
  std::stable_sort(first.begin(), first.end(),
                   [&](std::size_t i, std::size_t j) { return cand.rows[i].score > cand.rows[j].score; });
  first.resize(std::min<std::size_t>(kTopK, n));
  std::vector<std::size_t> pick;  // indices r * nc + c into the flattened scores of the first selection
  for (std::size_t r = 0; r < first.size(); ++r)
    for (std::size_t c = 0; c < nc; ++c)
      if (cand.scores[first[r] * nc + c] >= opt.conf) pick.push_back(r * nc + c);
  auto score = [&](std::size_t p) { return cand.scores[first[p / nc] * nc + p % nc]; };
  std::stable_sort(pick.begin(), pick.end(), [&](std::size_t p, std::size_t q) { return score(p) > score(q); });
  pick.resize(std::min<std::size_t>(kTopK, pick.size()));
  std::vector<Detection> out;
  for (std::size_t p : pick) {
    Detection d = cand.rows[first[p / nc]];
    d.score = score(p), d.cls = int(p % nc);
    out.push_back(d);
  }
  return out;
}
"""

LETTERBOX = """\
// Where an image_w x image_h image lands in an input of `input` size, as onnx_headcut.preprocess.letterbox puts it.
struct Letterbox {
  double ratio;          // input pixels per image pixel
  int new_w, new_h;      // the resized image
  int left, top;         // its offset in the input (the rest is kPadValue)
  int image_w, image_h;  // the original image
};

inline Letterbox letterbox(int image_w, int image_h, Size input = kInputSize) {
  const double r = std::min(double(input.h) / image_h, double(input.w) / image_w);
  // Python's round() rounds halves to even, as nearbyint does in the default rounding mode
  auto size = [](double v) { return int(kRoundSize ? std::nearbyint(v) : std::trunc(v)); };
  const int nw = std::min(input.w, std::max(1, size(image_w * r)));
  const int nh = std::min(input.h, std::max(1, size(image_h * r)));
  if (!kPadCentered) return {r, nw, nh, 0, 0, image_w, image_h};
  // half the padding on each side; the rest goes right and below: round(d - 0.1), round(d + 0.1)
  const int left = int(std::nearbyint((input.w - nw) / 2.0 - 0.1));
  const int top = int(std::nearbyint((input.h - nh) / 2.0 - 0.1));
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
