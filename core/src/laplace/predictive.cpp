// Predictive probabilities (MAP, probit, GLM Monte Carlo, weight-space Monte Carlo) and the
// choice of τ by validation NLL.

#include <quadra/laplace/predictive.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include <Eigen/Eigenvalues>
#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

#include "names.hpp"

namespace quadra::laplace {

namespace {

/// derive_seed purposes of the predictive's streams.
constexpr std::uint64_t kGlmStream = 0x676c6d;  // "glm"
constexpr std::uint64_t kNnStream = 0x6e6e;     // "nn"

void softmax_in_place(Eigen::Ref<Vector<double>> f) {
  const double top = f.maxCoeff();
  f = (f.array() - top).exp().matrix();
  f /= f.sum();
}

/// Samples [begin, end) of `set` as engine inputs (features × n) and labels.
template <class S>
Matrix<S> chunk_inputs(const data::Dataset& set, std::int64_t begin, std::int64_t end) {
  const auto rows = set.rows(begin, end);
  return Eigen::Map<const Eigen::MatrixXf>(rows.data(), set.feature_dim(), end - begin)
      .template cast<S>();
}

std::vector<std::int64_t> chunk_labels(const data::Dataset& set, std::int64_t begin,
                                       std::int64_t end) {
  return {set.labels.begin() + begin, set.labels.begin() + end};
}

template <class S>
void linearised_chunk(const nn::Network& network, const Vector<S>& params,
                      const Posterior& posterior, const data::Dataset& set, std::int64_t begin,
                      std::int64_t end, const PredictiveOptions& o, Matrix<double>& out) {
  nn::BoundBatch<S> batch(network, params, chunk_inputs<S>(set, begin, end),
                          nn::Targets<S>::from_labels(chunk_labels(set, begin, end)),
                          nn::Loss::kCrossEntropy);
  const Matrix<double> mean = batch.outputs().template cast<double>();
  const Matrix<double> covariances = posterior.functional_covariances(batch);
  const Index c = mean.rows();
  parallel_for_chunks(end - begin, 16, [&](const ChunkRange& r) {
    for (Index s = r.begin; s < r.end; ++s) {
      const auto sigma = covariances.middleCols(s * c, c);
      auto p = out.col(begin + s);
      if (o.kind == PredictiveKind::kProbit) {
        constexpr double kScale = std::numbers::pi / 8.0;
        p = mean.col(s).array() / (1.0 + kScale * sigma.diagonal().array()).sqrt();
        softmax_in_place(p);
        continue;
      }
      // glm-mc: f = mean + L z with L L' = Σ_f (from the eigendecomposition: Σ_f may be singular).
      Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(sigma);
      const Matrix<double> root =
          eig.eigenvectors() * eig.eigenvalues().cwiseMax(0.0).cwiseSqrt().asDiagonal();
      data::Rng rng(data::derive_seed(o.seed, kGlmStream, static_cast<std::uint64_t>(begin + s)));
      Vector<double> sum = Vector<double>::Zero(c);
      Vector<double> z(c), f(c);
      for (int k = 0; k < o.samples; ++k) {
        for (Index j = 0; j < c; ++j) z(j) = rng.normal();
        f = mean.col(s) + root * z;
        softmax_in_place(f);
        sum += f;
      }
      p = sum / static_cast<double>(o.samples);
    }
  });
}

}  // namespace

const char* to_string(PredictiveKind kind) {
  switch (kind) {
    case PredictiveKind::kMap:
      return "map";
    case PredictiveKind::kProbit:
      return "probit";
    case PredictiveKind::kGlmMc:
      return "glm-mc";
    case PredictiveKind::kNnMc:
      return "nn-mc";
  }
  return "?";
}

PredictiveKind parse_predictive(std::string_view text) {
  return detail::parse_name<PredictiveKind>(text,
                                            {PredictiveKind::kMap, PredictiveKind::kProbit,
                                             PredictiveKind::kGlmMc, PredictiveKind::kNnMc},
                                            "predictive");
}

template <class S>
Matrix<double> predict(const nn::Network& network, const Vector<S>& params,
                       const Posterior* posterior, const data::Dataset& set,
                       const PredictiveOptions& o) {
  if (set.task != data::Task::kClassification) {
    throw Error(fmt::format("Laplace predictives are for classification; data '{}' is a {} set",
                            set.name, data::to_string(set.task)));
  }
  if (o.kind != PredictiveKind::kMap && posterior == nullptr) {
    throw Error(fmt::format("predictive {} needs a posterior", to_string(o.kind)));
  }
  if (o.samples < 1)
    throw Error(fmt::format("predictive samples {}; expected at least 1", o.samples));
  if (o.chunk < 1) throw Error(fmt::format("predictive chunk {}; expected at least 1", o.chunk));
  const Index n = set.size();
  const Index c = network.num_outputs();
  Matrix<double> out = Matrix<double>::Zero(c, n);
  auto for_chunks = [&](const auto& body) {
    for (std::int64_t begin = 0; begin < n; begin += o.chunk)
      body(begin, std::min<std::int64_t>(n, begin + o.chunk));
  };
  switch (o.kind) {
    case PredictiveKind::kMap:
      for_chunks([&](std::int64_t begin, std::int64_t end) {
        out.middleCols(begin, end - begin) =
            network.forward<S>(params, chunk_inputs<S>(set, begin, end)).template cast<double>();
      });
      for (Index s = 0; s < n; ++s) softmax_in_place(out.col(s));
      break;
    case PredictiveKind::kProbit:
    case PredictiveKind::kGlmMc:
      for_chunks([&](std::int64_t begin, std::int64_t end) {
        linearised_chunk(network, params, *posterior, set, begin, end, o, out);
      });
      break;
    case PredictiveKind::kNnMc:
      for (int k = 0; k < o.samples; ++k) {
        data::Rng rng(data::derive_seed(o.seed, kNnStream, static_cast<std::uint64_t>(k)));
        const Vector<S> theta =
            (posterior->map() + posterior->sample_deviation(rng)).template cast<S>();
        for_chunks([&](std::int64_t begin, std::int64_t end) {
          Matrix<double> f =
              network.forward<S>(theta, chunk_inputs<S>(set, begin, end)).template cast<double>();
          for (Index s = 0; s < f.cols(); ++s) softmax_in_place(f.col(s));
          out.middleCols(begin, end - begin) += f;
        });
      }
      out /= static_cast<double>(o.samples);
      break;
  }
  return out;
}

double mean_nll(const Matrix<double>& probabilities, const std::vector<std::int64_t>& labels) {
  double sum = 0.0;
  for (std::size_t n = 0; n < labels.size(); ++n) {
    sum -= std::log(std::max(probabilities(labels[n], static_cast<Index>(n)), 1e-300));
  }
  return labels.empty() ? 0.0 : sum / static_cast<double>(labels.size());
}

std::vector<double> log_grid(double low, double high, int count) {
  if (!(low > 0.0) || !(high > low) || !std::isfinite(high) || count < 2) {
    throw Error(fmt::format("prior grid {}:{}:{}; expected 0 < LOW < HIGH and COUNT >= 2", low,
                            high, count));
  }
  std::vector<double> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(std::exp(std::log(low) + (std::log(high) - std::log(low)) * i / (count - 1)));
  }
  return out;
}

template <class S>
PriorSearch tune_prior_by_validation(Posterior& posterior, const nn::Network& network,
                                     const Vector<S>& params, const data::Dataset& validation,
                                     const PredictiveOptions& o, const std::vector<double>& grid) {
  if (grid.empty()) throw Error("prior grid is empty");
  PriorSearch search;
  search.taus = grid;
  double best = std::numeric_limits<double>::infinity();
  for (double tau : grid) {
    posterior.set_prior_precision(tau);
    const double nll =
        mean_nll(predict(network, params, &posterior, validation, o), validation.labels);
    search.objective.push_back(nll);
    if (nll < best) {
      best = nll;
      search.best = tau;
    }
  }
  posterior.set_prior_precision(search.best);
  return search;
}

template Matrix<double> predict<float>(const nn::Network&, const Vector<float>&, const Posterior*,
                                       const data::Dataset&, const PredictiveOptions&);
template Matrix<double> predict<double>(const nn::Network&, const Vector<double>&, const Posterior*,
                                        const data::Dataset&, const PredictiveOptions&);
template PriorSearch tune_prior_by_validation<float>(Posterior&, const nn::Network&,
                                                     const Vector<float>&, const data::Dataset&,
                                                     const PredictiveOptions&,
                                                     const std::vector<double>&);
template PriorSearch tune_prior_by_validation<double>(Posterior&, const nn::Network&,
                                                      const Vector<double>&, const data::Dataset&,
                                                      const PredictiveOptions&,
                                                      const std::vector<double>&);

}  // namespace quadra::laplace
