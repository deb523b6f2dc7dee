// The model's input from an image, exactly as headcut detect makes it (onnx_headcut.preprocess):
// letterbox with the generated header's geometry, channel order and pixel scale. Needs OpenCV
// (cv::resize with INTER_LINEAR is the resize headcut reproduces bit for bit).
#pragma once

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

template <class Letterbox>
std::vector<float> to_input(const cv::Mat& bgr, const Letterbox& lb, int input_w, int input_h, int pad_value,
                            bool model_bgr, float pixel_scale) {
  cv::Mat resized;
  cv::resize(bgr, resized, cv::Size(lb.new_w, lb.new_h), 0, 0, cv::INTER_LINEAR);
  cv::Mat boxed(input_h, input_w, CV_8UC3, cv::Scalar::all(pad_value));
  resized.copyTo(boxed(cv::Rect(lb.left, lb.top, lb.new_w, lb.new_h)));
  // NCHW float; headcut divides by 1 / scale when that is a whole number (255), else multiplies
  const double inverse = 1.0 / pixel_scale;
  const bool divide = std::fabs(inverse - std::round(inverse)) < 1e-4;
  const float by = float(std::round(inverse));
  std::vector<float> x(3 * std::size_t(input_h) * input_w);
  for (int y = 0; y < input_h; ++y)
    for (int xx = 0; xx < input_w; ++xx) {
      const cv::Vec3b px = boxed.at<cv::Vec3b>(y, xx);  // OpenCV reads BGR
      for (int c = 0; c < 3; ++c) {
        const float v = px[model_bgr ? c : 2 - c];
        x[(std::size_t(c) * input_h + y) * input_w + xx] = divide ? v / by : v * pixel_scale;
      }
    }
  return x;
}

// The input of the generated header's model for an image: to_input(image, letterbox) with its constants.
#define HEADCUT_INPUT(NS, image, lb) \
  to_input((image), (lb), NS::kInputW, NS::kInputH, NS::kPadValue, NS::kBgr, NS::kPixelScale)

// One JSON line per detection, in image pixels, with the class name when the header has them.
template <class Detection>
void print_detection(const Detection& d) {
  std::printf("{\"box\": [%.2f, %.2f, %.2f, %.2f], \"score\": %.5f, \"class\": %d}\n", d.x1, d.y1, d.x2, d.y2,
              d.score, d.cls);
}
