// Quality of probabilistic classifiers. See quadra/laplace/metrics.hpp.

#include <quadra/laplace/metrics.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include <fmt/format.h>

#include <quadra/error.hpp>

namespace quadra::laplace {

namespace {

constexpr double kSumTolerance = 1e-3;
constexpr double kMinProbability = 1e-300;

/// Lower edge of bin b of B, the one value used both to assign samples and to report the bin.
double bin_edge(int b, int num_bins) { return static_cast<double>(b) / num_bins; }

/// The bin of a confidence: [b/B, (b+1)/B), the last bin also holding 1.0 (and the rounding
/// excess of a column that sums to just over 1). floor(conf * B) alone can be one off at an
/// edge (fl(1/49) * 49 < 1), so the guess is corrected against the reported edges.
int bin_of(double confidence, int num_bins) {
  const double scaled = std::floor(confidence * num_bins);
  int b = static_cast<int>(std::clamp(scaled, 0.0, static_cast<double>(num_bins - 1)));
  if (b > 0 && confidence < bin_edge(b, num_bins)) --b;
  if (b + 1 < num_bins && confidence >= bin_edge(b + 1, num_bins)) ++b;
  return b;
}

/// Throws unless column n is a probability vector.
void check_column(const Eigen::MatrixXd& probabilities, Eigen::Index n) {
  double sum = 0.0;
  for (Eigen::Index c = 0; c < probabilities.rows(); ++c) {
    const double p = probabilities(c, n);
    if (!(p >= 0.0) || !std::isfinite(p)) {
      throw Error(
          fmt::format("classification metrics: sample {}, class {} has probability {}; "
                      "expected a finite number >= 0",
                      n, c, p));
    }
    sum += p;
  }
  if (std::abs(sum - 1.0) > kSumTolerance) {
    throw Error(
        fmt::format("classification metrics: the probabilities of sample {} sum to {}; "
                    "expected 1 (within {})",
                    n, sum, kSumTolerance));
  }
}

}  // namespace

ClassificationMetrics classification_metrics(const Eigen::MatrixXd& probabilities,
                                             std::span<const std::int64_t> labels, int num_bins) {
  const Eigen::Index num_classes = probabilities.rows();
  const Eigen::Index n = probabilities.cols();
  if (static_cast<std::size_t>(n) != labels.size()) {
    throw Error(
        fmt::format("classification metrics: {} probability columns (samples) but {} "
                    "labels; expected one label per column",
                    n, labels.size()));
  }
  if (num_bins < 1) {
    throw Error(
        fmt::format("classification metrics: {} calibration bins; expected at least 1", num_bins));
  }
  // Validate everything first, so that a bad sample never leaves a half-computed result.
  for (Eigen::Index i = 0; i < n; ++i) {
    const std::int64_t y = labels[static_cast<std::size_t>(i)];
    if (y < 0 || y >= num_classes) {
      throw Error(
          fmt::format("classification metrics: sample {} has label {}; expected a class "
                      "in [0, {})",
                      i, y, num_classes));
    }
    check_column(probabilities, i);
  }

  ClassificationMetrics out;
  out.count = n;
  out.bins.resize(static_cast<std::size_t>(num_bins));
  std::vector<double> correct(static_cast<std::size_t>(num_bins), 0.0);
  std::vector<double> confidence_sum(static_cast<std::size_t>(num_bins), 0.0);
  double hits = 0.0;
  double nll = 0.0;
  double brier = 0.0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const std::int64_t y = labels[static_cast<std::size_t>(i)];
    // Strict '>' keeps the lowest index among ties, as torch.argmax.
    Eigen::Index predicted = 0;
    double confidence = probabilities(0, i);
    double squares = 0.0;
    for (Eigen::Index c = 0; c < num_classes; ++c) {
      const double p = probabilities(c, i);
      if (p > confidence) {
        confidence = p;
        predicted = c;
      }
      const double residual = p - (c == y ? 1.0 : 0.0);
      squares += residual * residual;
    }
    const double hit = predicted == y ? 1.0 : 0.0;
    hits += hit;
    nll -= std::log(std::max(probabilities(y, i), kMinProbability));
    brier += squares;
    const auto b = static_cast<std::size_t>(bin_of(confidence, num_bins));
    ++out.bins[b].count;
    correct[b] += hit;
    confidence_sum[b] += confidence;
  }
  if (n == 0) {
    // No samples: every mean is reported as 0 (count says why); the bins are still laid out.
    for (int b = 0; b < num_bins; ++b) {
      out.bins[static_cast<std::size_t>(b)].lower = bin_edge(b, num_bins);
      out.bins[static_cast<std::size_t>(b)].upper = bin_edge(b + 1, num_bins);
    }
    return out;
  }
  const auto total = static_cast<double>(n);
  out.accuracy = hits / total;
  out.nll = nll / total;
  out.brier = brier / total;
  for (int b = 0; b < num_bins; ++b) {
    ReliabilityBin& bin = out.bins[static_cast<std::size_t>(b)];
    bin.lower = bin_edge(b, num_bins);
    bin.upper = bin_edge(b + 1, num_bins);
    if (bin.count == 0) continue;
    const auto count = static_cast<double>(bin.count);
    bin.accuracy = correct[static_cast<std::size_t>(b)] / count;
    bin.confidence = confidence_sum[static_cast<std::size_t>(b)] / count;
    const double gap = std::abs(bin.accuracy - bin.confidence);
    out.ece += count / total * gap;
    out.mce = std::max(out.mce, gap);
  }
  return out;
}

Eigen::VectorXd predictive_entropy(const Eigen::MatrixXd& probabilities) {
  Eigen::VectorXd out(probabilities.cols());
  for (Eigen::Index n = 0; n < probabilities.cols(); ++n) {
    double h = 0.0;
    for (Eigen::Index c = 0; c < probabilities.rows(); ++c) {
      const double p = probabilities(c, n);
      if (p != 0.0) h -= p * std::log(p);  // 0 log 0 = 0; a bad entry propagates as NaN
    }
    out(n) = h;
  }
  return out;
}

double auroc(std::span<const double> negatives, std::span<const double> positives) {
  if (negatives.empty() || positives.empty()) {
    throw Error(
        fmt::format("auroc: {} negative and {} positive scores; expected at least one of "
                    "each",
                    negatives.size(), positives.size()));
  }
  const auto check = [](std::span<const double> scores, const char* which) {
    for (std::size_t i = 0; i < scores.size(); ++i) {
      if (!std::isfinite(scores[i])) {
        throw Error(
            fmt::format("auroc: {} score {} is {}; expected a finite number", which, i, scores[i]));
      }
    }
  };
  check(negatives, "negative");
  check(positives, "positive");
  std::vector<double> sorted(negatives.begin(), negatives.end());
  std::sort(sorted.begin(), sorted.end());
  // Twice the Mann-Whitney U in integers: 2 per negative below, 1 per tie. Exact, and free of
  // any dependence on summation order.
  std::uint64_t twice_u = 0;
  for (const double s : positives) {
    const auto [first, last] = std::equal_range(sorted.begin(), sorted.end(), s);
    const auto below = static_cast<std::uint64_t>(first - sorted.begin());
    const auto ties = static_cast<std::uint64_t>(last - first);
    twice_u += 2 * below + ties;
  }
  return static_cast<double>(twice_u) /
         (2.0 * static_cast<double>(negatives.size()) * static_cast<double>(positives.size()));
}

}  // namespace quadra::laplace
