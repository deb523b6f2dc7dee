// Detect with a raw model in ONNX Runtime's C++ API and the header headcut codegen wrote for it.
//   headcut strip yolov8n.onnx -o model.raw.onnx && headcut codegen model.raw.onnx -o .
//   ./detect_ort model.raw.onnx image.jpg
#include <onnxruntime_cxx_api.h>

#include <cstdio>
#include <vector>

#include "../common/image.hpp"
#include "model_raw_decode.hpp"

namespace dec = model_raw_decode;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s model.raw.onnx image.jpg\n", argv[0]);
    return 2;
  }
  const cv::Mat image = cv::imread(argv[2], cv::IMREAD_COLOR);
  if (image.empty()) {
    std::fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }
  const dec::Letterbox lb = dec::letterbox(image.cols, image.rows);
  std::vector<float> input = HEADCUT_INPUT(dec, image, lb);

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "headcut");
  Ort::SessionOptions options;
  Ort::Session session(env, argv[1], options);  // a wide-character path on Windows
  const int64_t shape[4] = {1, 3, dec::kInputH, dec::kInputW};
  const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  Ort::Value x = Ort::Value::CreateTensor<float>(cpu, input.data(), input.size(), shape, 4);
  const char* inputs[] = {dec::kInputName};
  std::vector<Ort::Value> outs = session.Run(Ort::RunOptions{nullptr}, inputs, &x, 1, dec::kOutputNames,
                                             dec::kNumOutputs);

  // dense buffers in the header's order, whatever the layout: (1, N, C) (flat), (1, C, h, w) per level
  // (levels), the box / scores (/ score sum) outputs per level (split) or of all rows (flat-split)
  const float* raw[dec::kNumOutputs];
  for (int k = 0; k < dec::kNumOutputs; ++k) raw[k] = outs[k].GetTensorData<float>();
  std::vector<dec::Detection> dets = dec::decode_outputs(raw, {/*conf*/ 0.25f, /*iou*/ 0.45f});
  dec::to_image(dets, lb);
  for (const dec::Detection& d : dets) print_detection(d);
  return 0;
}
