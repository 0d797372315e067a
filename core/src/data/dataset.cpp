// Dataset: layout helpers, gathers and invariants. See dataset.hpp.

#include <quadra/data/dataset.hpp>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {

std::int64_t detail::checked_sample_size(const std::vector<std::int64_t>& sample_shape,
                                         const std::string& what) {
  constexpr std::int64_t kLimit = std::int64_t{1} << 40;
  std::int64_t d = 1;
  for (std::int64_t s : sample_shape) {
    if (s < 1) {
      throw Error(fmt::format("{}: sample shape ({}) has a dimension < 1", what,
                              fmt::join(sample_shape, ", ")));
    }
    if (d > kLimit / s) {
      throw Error(fmt::format("{}: sample shape ({}) has more than 2^40 values per sample", what,
                              fmt::join(sample_shape, ", ")));
    }
    d *= s;
  }
  return d;
}

const char* to_string(Task task) {
  return task == Task::kClassification ? "classification" : "regression";
}

std::int64_t Dataset::feature_dim() const noexcept {
  std::int64_t d = 1;
  for (std::int64_t s : sample_shape) d *= s;
  return d;
}

std::int64_t Dataset::size() const noexcept {
  const std::int64_t d = feature_dim();
  return d > 0 ? static_cast<std::int64_t>(features.size()) / d : 0;
}

std::span<const float> Dataset::sample(std::int64_t i) const noexcept {
  return rows(i, i + 1);
}

std::span<const float> Dataset::rows(std::int64_t begin, std::int64_t end) const noexcept {
  assert(0 <= begin && begin <= end && end <= size());
  const auto d = static_cast<std::size_t>(feature_dim());
  return {features.data() + static_cast<std::size_t>(begin) * d,
          static_cast<std::size_t>(end - begin) * d};
}

void Dataset::gather_features(std::span<const std::int64_t> indices, float* out) const noexcept {
  const auto d = static_cast<std::size_t>(feature_dim());
  const float* base = features.data();
  for (std::int64_t i : indices) {
    assert(0 <= i && i < size());
    std::memcpy(out, base + static_cast<std::size_t>(i) * d, d * sizeof(float));
    out += d;
  }
}

void Dataset::gather_labels(std::span<const std::int64_t> indices, std::int64_t* out) const noexcept {
  assert(task == Task::kClassification);
  for (std::int64_t i : indices) *out++ = labels[static_cast<std::size_t>(i)];
}

void Dataset::gather_targets(std::span<const std::int64_t> indices, float* out) const noexcept {
  assert(task == Task::kRegression);
  const auto t = static_cast<std::size_t>(target_dim);
  for (std::int64_t i : indices) {
    std::memcpy(out, targets.data() + static_cast<std::size_t>(i) * t, t * sizeof(float));
    out += t;
  }
}

Dataset Dataset::subset(std::span<const std::int64_t> indices, std::string subset_name) const {
  Dataset out;
  out.name = std::move(subset_name);
  out.task = task;
  out.sample_shape = sample_shape;
  out.target_dim = target_dim;
  out.num_classes = num_classes;
  out.class_names = class_names;
  out.features.resize(indices.size() * static_cast<std::size_t>(feature_dim()));
  gather_features(indices, out.features.data());
  if (task == Task::kClassification) {
    out.labels.resize(indices.size());
    gather_labels(indices, out.labels.data());
  } else {
    out.targets.resize(indices.size() * static_cast<std::size_t>(target_dim));
    gather_targets(indices, out.targets.data());
  }
  return out;
}

std::vector<std::int64_t> Dataset::class_counts() const {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(std::max<std::int64_t>(num_classes, 0)), 0);
  for (std::int64_t label : labels) {
    if (label >= 0 && label < num_classes) ++counts[static_cast<std::size_t>(label)];
  }
  return counts;
}

void Dataset::validate() const {
  if (sample_shape.empty()) throw Error(fmt::format("data set '{}': empty sample shape", name));
  const std::int64_t d = detail::checked_sample_size(sample_shape, fmt::format("data set '{}'", name));
  if (static_cast<std::int64_t>(features.size()) % d != 0) {
    throw Error(fmt::format("data set '{}': {} feature values are not a whole number of samples of "
                            "{} features",
                            name, features.size(), d));
  }
  const std::int64_t n = size();
  for (std::size_t k = 0; k < features.size(); ++k) {
    if (!std::isfinite(features[k])) {
      throw Error(fmt::format("data set '{}': sample {}, feature {} is {}; expected a finite number",
                              name, static_cast<std::int64_t>(k) / d, static_cast<std::int64_t>(k) % d,
                              features[k]));
    }
  }
  if (task == Task::kClassification) {
    if (static_cast<std::int64_t>(labels.size()) != n || !targets.empty()) {
      throw Error(fmt::format("data set '{}': {} samples but {} labels", name, n, labels.size()));
    }
    if ((num_classes <= 0 && n > 0) || num_classes > kMaxClasses) {
      throw Error(fmt::format("data set '{}': classification with {} classes; expected 1 to {}",
                              name, num_classes, kMaxClasses));
    }
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0 || labels[i] >= num_classes) {
        throw Error(fmt::format("data set '{}': sample {} has label {}; expected a class in [0, {})",
                                name, i, labels[i], num_classes));
      }
    }
    if (!class_names.empty() && static_cast<std::int64_t>(class_names.size()) != num_classes) {
      throw Error(fmt::format("data set '{}': {} class names for {} classes", name,
                              class_names.size(), num_classes));
    }
  } else {
    if (target_dim <= 0 || static_cast<std::int64_t>(targets.size()) != n * target_dim ||
        !labels.empty()) {
      throw Error(fmt::format("data set '{}': {} samples but {} target values of dimension {}", name,
                              n, targets.size(), target_dim));
    }
    for (std::size_t k = 0; k < targets.size(); ++k) {
      if (!std::isfinite(targets[k])) {
        throw Error(fmt::format("data set '{}': sample {}, target {} is {}; expected a finite number",
                                name, static_cast<std::int64_t>(k) / target_dim,
                                static_cast<std::int64_t>(k) % target_dim, targets[k]));
      }
    }
  }
}

namespace {

Summary summarize(std::span<const float> values) {
  Summary s;
  s.count = static_cast<std::int64_t>(values.size());
  if (values.empty()) return s;
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  double sum = 0;
  for (float v : values) {
    lo = std::min<double>(lo, v);
    hi = std::max<double>(hi, v);
    sum += v;
  }
  const double mean = sum / static_cast<double>(values.size());
  // Two passes: the one-pass formula loses digits when |mean| >> std.
  double sq = 0;
  for (float v : values) sq += (v - mean) * (v - mean);
  s.min = lo;
  s.max = hi;
  s.mean = mean;
  s.std = std::sqrt(sq / static_cast<double>(values.size()));
  return s;
}

}  // namespace

Summary summarize_features(const Dataset& data) { return summarize(data.features); }
Summary summarize_targets(const Dataset& data) { return summarize(data.targets); }

}  // namespace quadra::data
