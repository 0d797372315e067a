#pragma once
/// \file
/// Quality of probabilistic classifiers: accuracy, negative log-likelihood, Brier score,
/// expected and maximum calibration error with reliability-diagram data, predictive entropy and
/// the area under the ROC curve of an out-of-distribution score.
///
/// Definitions (N samples, C classes, p_n the predicted class probabilities, y_n the label):
///   accuracy  mean of [argmax_c p_nc == y_n] (ties: the lowest class index, as torch.argmax)
///   NLL       mean of -log max(p_n,y_n, 1e-300)
///   Brier     mean of sum_c (p_nc - [c == y_n])^2   (the multi-class score, in [0, 2])
///   ECE       sum_b (n_b / N) |acc_b - conf_b| over `num_bins` equal-width bins of the
///             confidence max_c p_nc: bin b is [b/B, (b+1)/B), the last bin also holds 1.0
///             (edges are the doubles b/B reported in ReliabilityBin, so a confidence equal to an
///             interior edge b/B lands in bin b exactly; empty bins count for nothing)
///   MCE       max_b |acc_b - conf_b| over non-empty bins
/// All sums run in double precision in sample order, so results do not depend on threads.

#include <cstdint>
#include <span>
#include <vector>

#include <Eigen/Core>

namespace quadra::laplace {

/// One bin of a reliability diagram.
struct ReliabilityBin {
  double lower = 0;       ///< confidence interval [lower, upper)
  double upper = 0;
  std::int64_t count = 0;  ///< samples whose confidence falls in the bin
  double accuracy = 0;    ///< fraction of them classified correctly (0 when empty)
  double confidence = 0;  ///< their mean confidence (0 when empty)
};

struct ClassificationMetrics {
  std::int64_t count = 0;
  double accuracy = 0;
  double nll = 0;
  double brier = 0;
  double ece = 0;
  double mce = 0;
  std::vector<ReliabilityBin> bins;
};

/// Metrics of `probabilities` (C x N, one column per sample) against `labels` (N, in [0, C)).
/// Throws quadra::Error when the sizes disagree, a label is out of range, num_bins < 1, or a
/// column is not a probability vector (an entry negative or non-finite, or the sum off 1 by more
/// than 1e-3), naming the sample, the value found and what was expected. With no samples
/// (N = 0) every metric is 0 and the bins are laid out empty.
[[nodiscard]] ClassificationMetrics classification_metrics(const Eigen::MatrixXd& probabilities,
                                                           std::span<const std::int64_t> labels,
                                                           int num_bins = 15);

/// -sum_c p_c log p_c for every column (0 log 0 = 0), in nats. Unchecked: a negative or NaN
/// entry gives NaN for its column.
[[nodiscard]] Eigen::VectorXd predictive_entropy(const Eigen::MatrixXd& probabilities);

/// Area under the ROC curve of a score that should be larger for `positives` (e.g. predictive
/// entropy on out-of-distribution inputs) than for `negatives` (in-distribution): the
/// probability that a random positive scores higher than a random negative, ties counting one
/// half (the Mann-Whitney statistic). O((n + m) log(n + m)). Throws quadra::Error when either
/// set is empty or a score is not finite.
[[nodiscard]] double auroc(std::span<const double> negatives, std::span<const double> positives);

}  // namespace quadra::laplace
