// X.npy / y.npy pairs as data sets. See loaders.hpp.

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {

namespace {

using io::DType;

std::string shape_text(const std::vector<std::int64_t>& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);  // as numpy prints it
  return fmt::format("({})", fmt::join(shape, ", "));
}

/// The array as float32: uint8 scaled by 1/255 when `scale_bytes` (pixels, not values), the
/// rest converted; floats must be finite, and float64 within float32's range.
std::vector<float> to_float(const io::NpyArray& a, const std::string& name, bool scale_bytes) {
  if (a.dtype == DType::kUInt8 && scale_bytes) {
    std::vector<float> out(static_cast<std::size_t>(a.size()));
    detail::convert_bytes_scaled(a.bytes.data(), out.size(), out.data());
    return out;
  }
  io::require_finite(a, name);
  return a.to_vector<float>(name);
}

}  // namespace

Dataset npy_dataset(const io::NpyArray& x, const std::string& x_name, const io::NpyArray& y,
                    const std::string& y_name, NpyTask task, std::string dataset_name) {
  if (x.shape.empty()) {
    throw Error(fmt::format("{}: expected features of shape (N, ...), found a 0-d array", x_name));
  }
  if (y.shape.empty()) {
    throw Error(fmt::format("{}: expected targets of shape (N,) or (N, T), found a 0-d array", y_name));
  }
  const std::int64_t n = x.shape[0];
  if (y.shape[0] != n) {
    throw Error(fmt::format("sample counts disagree: {} has shape {} ({} samples) but {} has shape {} "
                            "({} samples)",
                            x_name, shape_text(x.shape), n, y_name, shape_text(y.shape), y.shape[0]));
  }
  Dataset data;
  data.name = std::move(dataset_name);
  if (x.shape.size() == 1) {
    data.sample_shape = {1};
  } else {
    data.sample_shape.assign(x.shape.begin() + 1, x.shape.end());
  }
  if (std::find(data.sample_shape.begin(), data.sample_shape.end(), 0) != data.sample_shape.end()) {
    throw Error(fmt::format("{}: features of shape {} have no values per sample", x_name,
                            shape_text(x.shape)));
  }
  detail::checked_sample_size(data.sample_shape, x_name);
  const bool integer_y = y.dtype != DType::kFloat32 && y.dtype != DType::kFloat64;
  const bool classification =
      task == NpyTask::kClassification || (task == NpyTask::kAuto && integer_y);
  data.features = to_float(x, x_name, /*scale_bytes=*/true);

  if (!classification) {
    data.task = Task::kRegression;
    const std::vector<std::int64_t> target_shape(y.shape.begin() + 1, y.shape.end());
    if (std::find(target_shape.begin(), target_shape.end(), 0) == target_shape.end()) {
      data.target_dim = detail::checked_sample_size(target_shape, y_name);
    }
    if (data.target_dim == 0) {
      throw Error(fmt::format("{}: targets of shape {} have no values per sample", y_name,
                              shape_text(y.shape)));
    }
    data.targets = to_float(y, y_name, /*scale_bytes=*/false);
    return data;
  }

  data.task = Task::kClassification;
  if (y.shape.size() > 2 || (y.shape.size() == 2 && y.shape[1] != 1)) {
    throw Error(fmt::format("{}: class labels must have shape (N,) or (N, 1), found {}", y_name,
                            shape_text(y.shape)));
  }
  std::vector<double> values = y.to_vector<double>();
  data.labels.resize(values.size());
  std::int64_t max_label = -1;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!(v >= 0) || v != std::floor(v)) {
      throw Error(fmt::format("{}: label {} is {}; expected a class index (an integer >= 0){}", y_name,
                              i, v, integer_y ? "" : "; use task=regression for real-valued targets"));
    }
    if (v >= static_cast<double>(kMaxClasses)) {
      throw Error(
          fmt::format("{}: label {} is {}; expected a class index below {} (labels must "
                      "be class indices 0..C-1 of at most {} classes); is this a "
                      "regression target? use task=regression",
                      y_name, i, v, kMaxClasses, kMaxClasses));
    }
    data.labels[i] = static_cast<std::int64_t>(v);
    max_label = std::max(max_label, data.labels[i]);
  }
  data.num_classes = max_label + 1;
  return data;
}

Dataset load_npy_pair(const std::filesystem::path& x, const std::filesystem::path& y, NpyTask task,
                      std::string dataset_name) {
  return npy_dataset(io::read_npy(x), x.string(), io::read_npy(y), y.string(), task,
                     std::move(dataset_name));
}

}  // namespace quadra::data
