#pragma once
/// \file
/// A data set in memory, laid out for cheap gathers.
///
/// Features are one contiguous row-major float32 buffer of N rows by D = product(sample_shape)
/// columns: sample i occupies features[i*D, (i+1)*D). Images are stored C x H x W within a row
/// (Fashion-MNIST: sample_shape {1, 28, 28}); tabular data has sample_shape {D}. The engine
/// reads rows as samples, so a batch is a gather of rows, and a contiguous range of samples is
/// a pointer into the buffer with no copy.
///
/// Targets are either N int64 class labels in [0, num_classes) (classification) or an N x T
/// row-major float32 matrix (regression); the other vector is empty.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace quadra::data {

enum class Task { kClassification, kRegression };

/// The most classes a classification data set may have. Labels are class indices 0..C-1 and
/// per-class tables (counts, outputs, calibration bins) are sized by C, so a stray huge label
/// (a regression target read as classes, a corrupt file) is refused by the loaders rather than
/// allocating gigabytes.
inline constexpr std::int64_t kMaxClasses = 100000;

/// "classification" or "regression".
const char* to_string(Task task);

struct Dataset {
  std::string name;  ///< e.g. "fashion-mnist/train"; names the data in messages
  Task task = Task::kClassification;
  std::vector<std::int64_t> sample_shape;  ///< shape of one sample, e.g. {1, 28, 28} or {D}
  std::vector<float> features;             ///< N x D, row-major
  std::vector<std::int64_t> labels;        ///< classification: N labels
  std::vector<float> targets;              ///< regression: N x target_dim, row-major
  std::int64_t target_dim = 0;             ///< regression: T
  std::int64_t num_classes = 0;            ///< classification: labels lie in [0, num_classes)
  std::vector<std::string> class_names;    ///< empty, or num_classes names

  /// N, the number of samples.
  [[nodiscard]] std::int64_t size() const noexcept;
  /// D, the number of features of one sample (product of sample_shape).
  [[nodiscard]] std::int64_t feature_dim() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

  /// Row i of the features: D floats.
  [[nodiscard]] std::span<const float> sample(std::int64_t i) const noexcept;
  /// Rows [begin, end), contiguous: (end - begin) * D floats, no copy.
  [[nodiscard]] std::span<const float> rows(std::int64_t begin, std::int64_t end) const noexcept;

  /// Copies the feature rows of `indices` to `out` (indices.size() x D floats).
  void gather_features(std::span<const std::int64_t> indices, float* out) const noexcept;
  /// Copies the labels of `indices` to `out` (classification only).
  void gather_labels(std::span<const std::int64_t> indices, std::int64_t* out) const noexcept;
  /// Copies the target rows of `indices` to `out` (regression only; indices.size() x T floats).
  void gather_targets(std::span<const std::int64_t> indices, float* out) const noexcept;

  /// A new data set holding the samples `indices`, in that order, named `subset_name`.
  [[nodiscard]] Dataset subset(std::span<const std::int64_t> indices, std::string subset_name) const;

  /// Samples per class (classification; num_classes entries).
  [[nodiscard]] std::vector<std::int64_t> class_counts() const;

  /// Checks the invariants: sizes agree with the shape, labels in range, every feature and
  /// target finite. Throws quadra::Error naming the data set and the first offending sample.
  void validate() const;
};

/// Minimum, maximum, mean and standard deviation (population) of a set of values, computed in
/// double precision in a fixed order (so deterministic).
struct Summary {
  std::int64_t count = 0;
  double min = 0;
  double max = 0;
  double mean = 0;
  double std = 0;
};

/// Summary over all features of all samples.
Summary summarize_features(const Dataset& data);
/// Summary over all regression targets.
Summary summarize_targets(const Dataset& data);

}  // namespace quadra::data
