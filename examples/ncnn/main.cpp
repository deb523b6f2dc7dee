// Detect with a raw model converted for ncnn (headcut convert --to ncnn) and the header headcut
// codegen wrote for it. ncnn names the blobs in0 and out0, out1, ... (headcut convert prints them).
//   headcut strip yolov8n.onnx -o model.raw.onnx && headcut convert model.raw.onnx --to ncnn -o .
//   headcut codegen model.raw.onnx -o . && ./detect_ncnn model.raw.param model.raw.bin image.jpg
#include <net.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../common/image.hpp"
#include "model_raw_decode.hpp"

namespace dec = model_raw_decode;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s model.param model.bin image.jpg\n", argv[0]);
    return 2;
  }
  const cv::Mat image = cv::imread(argv[3], cv::IMREAD_COLOR);
  if (image.empty()) {
    std::fprintf(stderr, "cannot read %s\n", argv[3]);
    return 2;
  }
  const dec::Letterbox lb = dec::letterbox(image.cols, image.rows);
  const std::vector<float> input = HEADCUT_INPUT(dec, image, lb);

  ncnn::Net net;
  if (net.load_param(argv[1]) || net.load_model(argv[2])) {
    std::fprintf(stderr, "cannot load %s / %s\n", argv[1], argv[2]);
    return 2;
  }
  ncnn::Mat in(dec::kInputW, dec::kInputH, 3);  // channels are cstep apart, not h * w: copy plane by plane
  const std::size_t plane = std::size_t(dec::kInputW) * dec::kInputH;
  for (int c = 0; c < 3; ++c) std::memcpy(in.channel(c), input.data() + c * plane, plane * sizeof(float));
  ncnn::Extractor ex = net.create_extractor();
  ex.input("in0", in);

  // every output the layout has, in the header's order (out0, out1, ...: ncnn numbers them in the
  // model's output order): a flat or flat-split output is a 2-D Mat (w = C, h = N, contiguous), a
  // levels or split output a 3-D Mat whose channels are cstep apart; the header reads both as they are
  ncnn::Mat outs[dec::kNumOutputs];
  const float* raw[dec::kNumOutputs];
  std::size_t csteps[dec::kNumOutputs];
  for (int k = 0; k < dec::kNumOutputs; ++k) {
    ex.extract(("out" + std::to_string(k)).c_str(), outs[k]);
    raw[k] = static_cast<const float*>(outs[k].data);
    csteps[k] = outs[k].cstep;
  }
  std::vector<dec::Detection> dets = dec::decode_outputs(raw, csteps, {/*conf*/ 0.25f, /*iou*/ 0.45f});
  dec::to_image(dets, lb);
  for (const dec::Detection& d : dets) print_detection(d);
  return 0;
}
