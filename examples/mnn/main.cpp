// Detect with a raw model converted for MNN (headcut convert --to mnn) and the header headcut codegen
// wrote for it. MNN keeps the ONNX tensor names, which the header records (kInputName, kOutputNames).
//   headcut strip yolov8n.onnx -o model.raw.onnx && headcut convert model.raw.onnx --to mnn -o .
//   headcut codegen model.raw.onnx -o . && ./detect_mnn model.raw.mnn image.jpg
#include <MNN/Interpreter.hpp>
#include <MNN/Tensor.hpp>

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "../common/image.hpp"
#include "model_raw_decode.hpp"

namespace dec = model_raw_decode;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s model.mnn image.jpg\n", argv[0]);
    return 2;
  }
  const cv::Mat image = cv::imread(argv[2], cv::IMREAD_COLOR);
  if (image.empty()) {
    std::fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }
  const dec::Letterbox lb = dec::letterbox(image.cols, image.rows);
  const std::vector<float> input = HEADCUT_INPUT(dec, image, lb);

  std::shared_ptr<MNN::Interpreter> net(MNN::Interpreter::createFromFile(argv[1]), MNN::Interpreter::destroy);
  if (!net) {
    std::fprintf(stderr, "cannot load %s\n", argv[1]);
    return 2;
  }
  MNN::ScheduleConfig config;
  config.numThread = 1;
  MNN::Session* session = net->createSession(config);
  MNN::Tensor* in = net->getSessionInput(session, dec::kInputName);
  MNN::Tensor host_in(in, MNN::Tensor::CAFFE);  // NCHW on the host, whatever MNN uses inside (NC4HW4)
  std::memcpy(host_in.host<float>(), input.data(), input.size() * sizeof(float));
  in->copyFromHostTensor(&host_in);
  net->runSession(session);

  // dense NCHW copies in the header's order, whatever the layout (flat, levels, split, flat-split)
  std::unique_ptr<MNN::Tensor> host_out[dec::kNumOutputs];
  const float* raw[dec::kNumOutputs];
  for (int k = 0; k < dec::kNumOutputs; ++k) {
    MNN::Tensor* out = net->getSessionOutput(session, dec::kOutputNames[k]);
    host_out[k].reset(new MNN::Tensor(out, MNN::Tensor::CAFFE));
    out->copyToHostTensor(host_out[k].get());
    raw[k] = host_out[k]->host<float>();
  }
  std::vector<dec::Detection> dets = dec::decode_outputs(raw, {/*conf*/ 0.25f, /*iou*/ 0.45f});
  dec::to_image(dets, lb);
  for (const dec::Detection& d : dets) print_detection(d);
  return 0;
}
