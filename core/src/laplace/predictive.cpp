// Predictive probabilities (MAP, probit, GLM Monte Carlo, weight-space Monte Carlo) and the
// choice of τ by validation NLL.

#include <quadra/laplace/predictive.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>

#include <Eigen/Eigenvalues>
#include <fmt/format.h>

#include <quadra/dist/communicator.hpp>
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

/// Welford's update of a running mean and sum of squared deviations with draw number k (from 1).
void welford(Eigen::Ref<Matrix<double>> mean, Eigen::Ref<Matrix<double>> m2,
             const Eigen::Ref<const Matrix<double>>& value, int k) {
  const Matrix<double> delta = value - mean;
  mean += delta / static_cast<double>(k);
  m2 += delta.cwiseProduct(value - mean);
}

double variance_divisor(int samples) { return samples > 1 ? samples - 1.0 : 1.0; }

/// Samples [begin, end): their inputs (features × n) and their labels (which only the binding
/// needs: outputs and Jacobians do not depend on them).
template <class S>
struct ChunkSource {
  std::function<Matrix<S>(std::int64_t, std::int64_t)> inputs;
  std::function<std::vector<std::int64_t>(std::int64_t, std::int64_t)> labels;
};

template <class S>
void linearised_chunk(const nn::Network& network, const Vector<S>& params,
                      const Posterior& posterior, const ChunkSource<S>& source, std::int64_t begin,
                      std::int64_t end, const PredictiveOptions& o, Prediction& out) {
  nn::BoundBatch<S> batch(network, params, source.inputs(begin, end),
                          nn::Targets<S>::from_labels(source.labels(begin, end)),
                          nn::Loss::kCrossEntropy);
  const Matrix<double> mean = batch.outputs().template cast<double>();
  const Matrix<double> covariances = posterior.functional_covariances(batch);
  const Index c = mean.rows();
  parallel_for_chunks(end - begin, 16, [&](const ChunkRange& r) {
    for (Index s = r.begin; s < r.end; ++s) {
      const auto sigma = covariances.middleCols(s * c, c);
      auto p = out.probabilities.col(begin + s);
      if (o.kind == PredictiveKind::kProbit) {
        constexpr double kScale = std::numbers::pi / 8.0;
        p = mean.col(s).array() / (1.0 + kScale * sigma.diagonal().array()).sqrt();
        softmax_in_place(p);
        if (o.variance) out.variance.col(begin + s) = sigma.diagonal();
        continue;
      }
      // glm-mc: f = mean + L z with L L' = Σ_f, L = V √Λ V' the symmetric square root (from the
      // eigendecomposition: Σ_f may be singular, and is for softmax, whose logits' covariance
      // annihilates the all-ones vector). Unlike V √Λ it does not depend on the signs the
      // eigensolver gives the eigenvectors, which the rounding of Σ_f can flip, nor on the basis
      // of a repeated eigenvalue: the draws are continuous in Σ_f.
      Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(sigma);
      const Matrix<double> root = eig.eigenvectors() *
                                  eig.eigenvalues().cwiseMax(0.0).cwiseSqrt().asDiagonal() *
                                  eig.eigenvectors().transpose();
      data::Rng rng(data::derive_seed(o.seed, kGlmStream, static_cast<std::uint64_t>(begin + s)));
      Vector<double> sum = Vector<double>::Zero(c);
      Vector<double> running = Vector<double>::Zero(c), m2 = Vector<double>::Zero(c);
      Vector<double> z(c), f(c);
      for (int k = 0; k < o.samples; ++k) {
        for (Index j = 0; j < c; ++j) z(j) = rng.normal();
        f = mean.col(s) + root * z;
        softmax_in_place(f);
        sum += f;
        if (o.variance) welford(running, m2, f, k + 1);
      }
      p = sum / static_cast<double>(o.samples);
      if (o.variance) out.variance.col(begin + s) = m2 / variance_divisor(o.samples);
    }
  });
}

/// Samples [begin, end) of a chunk of `total` that `rank` of `size` owns: Communicator::share_of
/// for any rank, so that every rank knows where the others' columns go.
dist::SampleShare share_for(std::int64_t total, int rank, int size) {
  const std::int64_t base = total / size, extra = total % size, r = rank;
  const std::int64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0), total};
}

/// After each rank filled its own columns of every chunk (chunks of `chunk` samples of `n`),
/// every rank receives all columns: one all-gather of the rank's columns in chunk order. Each
/// column is one rank's result as computed, so the matrices hold the bits of that rank.
void gather_columns(const dist::Communicator& comm, Index n, Index chunk,
                    std::vector<Matrix<double>*> matrices) {
  const int size = comm.size();
  const auto owned = [&](int rank, const auto& body) {
    for (Index begin = 0; begin < n; begin += chunk) {
      const dist::SampleShare s = share_for(std::min<Index>(n, begin + chunk) - begin, rank, size);
      if (s.size() > 0) body(begin + s.begin, s.size());
    }
  };
  std::vector<double> mine;
  for (const Matrix<double>* m : matrices) {
    owned(comm.rank(), [&](Index first, Index count) {
      const double* from = m->col(first).data();
      mine.insert(mine.end(), from, from + m->rows() * count);
    });
  }
  std::vector<std::int64_t> counts;
  const std::vector<double> all = comm.all_gather(mine, &counts);
  std::size_t at = 0;
  for (int rank = 0; rank < size; ++rank) {
    for (Matrix<double>* m : matrices) {
      owned(rank, [&](Index first, Index count) {
        const auto length = static_cast<std::size_t>(m->rows() * count);
        std::copy_n(all.data() + at, length, m->col(first).data());
        at += length;
      });
    }
  }
}

/// Several ranks (quadra/dist/communicator.hpp): every chunk is split by samples across the
/// ranks (Communicator::share_of), each rank computes its samples' columns, and the columns are
/// gathered at the end, so every rank returns the whole prediction. Every per-sample quantity
/// (the network's outputs, Σ_f, the glm-mc draws seeded by the sample's index, the nn-mc draws
/// of θ seeded by the draw's index) is the sample's own, so the result does not depend on the
/// number of ranks beyond the rounding of a chunk's matrix products.
template <class S>
Prediction predict_chunks(const nn::Network& network, const Vector<S>& params,
                          const Posterior* posterior, Index n, const ChunkSource<S>& source,
                          const PredictiveOptions& o) {
  if (o.kind != PredictiveKind::kMap && posterior == nullptr) {
    throw Error(fmt::format("predictive {} needs a posterior", to_string(o.kind)));
  }
  if (o.samples < 1)
    throw Error(fmt::format("predictive samples {}; expected at least 1", o.samples));
  if (o.chunk < 1) throw Error(fmt::format("predictive chunk {}; expected at least 1", o.chunk));
  const Index c = network.num_outputs();
  Prediction out;
  out.probabilities = Matrix<double>::Zero(c, n);
  const bool variance = o.variance && o.kind != PredictiveKind::kMap;
  if (variance) out.variance = Matrix<double>::Zero(c, n);
  PredictiveOptions options = o;
  options.variance = variance;
  const dist::Communicator& comm = dist::Communicator::world();
  // This rank's samples of each chunk (all of them with one rank).
  auto for_chunks = [&](const auto& body) {
    for (std::int64_t begin = 0; begin < n; begin += o.chunk) {
      const std::int64_t end = std::min<std::int64_t>(n, begin + o.chunk);
      const dist::SampleShare s = share_for(end - begin, comm.rank(), comm.size());
      if (s.size() > 0) body(begin + s.begin, begin + s.end);
    }
  };
  switch (o.kind) {
    case PredictiveKind::kMap:
      for_chunks([&](std::int64_t begin, std::int64_t end) {
        out.probabilities.middleCols(begin, end - begin) =
            network.forward<S>(params, source.inputs(begin, end)).template cast<double>();
      });
      for_chunks([&](std::int64_t begin, std::int64_t end) {
        for (Index s = begin; s < end; ++s) softmax_in_place(out.probabilities.col(s));
      });
      break;
    case PredictiveKind::kProbit:
    case PredictiveKind::kGlmMc:
      for_chunks([&](std::int64_t begin, std::int64_t end) {
        linearised_chunk(network, params, *posterior, source, begin, end, options, out);
      });
      break;
    case PredictiveKind::kNnMc: {
      Matrix<double> running, m2;
      if (variance) {
        running = Matrix<double>::Zero(c, n);
        m2 = Matrix<double>::Zero(c, n);
      }
      for (int k = 0; k < o.samples; ++k) {
        data::Rng rng(data::derive_seed(o.seed, kNnStream, static_cast<std::uint64_t>(k)));
        const Vector<S> theta =
            (posterior->map() + posterior->sample_deviation(rng)).template cast<S>();
        for_chunks([&](std::int64_t begin, std::int64_t end) {
          Matrix<double> f =
              network.forward<S>(theta, source.inputs(begin, end)).template cast<double>();
          for (Index s = 0; s < f.cols(); ++s) softmax_in_place(f.col(s));
          out.probabilities.middleCols(begin, end - begin) += f;
          if (variance) {
            welford(running.middleCols(begin, end - begin), m2.middleCols(begin, end - begin), f,
                    k + 1);
          }
        });
      }
      out.probabilities /= static_cast<double>(o.samples);
      if (variance) out.variance = m2 / variance_divisor(o.samples);
      break;
    }
  }
  if (comm.size() > 1) {
    std::vector<Matrix<double>*> matrices{&out.probabilities};
    if (variance) matrices.push_back(&out.variance);
    gather_columns(comm, n, o.chunk, matrices);
  }
  return out;
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
Prediction predict_set(const nn::Network& network, const Vector<S>& params,
                       const Posterior* posterior, const data::Dataset& set,
                       const PredictiveOptions& o) {
  if (set.task != data::Task::kClassification) {
    throw Error(fmt::format("Laplace predictives are for classification; data '{}' is a {} set",
                            set.name, data::to_string(set.task)));
  }
  ChunkSource<S> source;
  source.inputs = [&](std::int64_t begin, std::int64_t end) {
    return chunk_inputs<S>(set, begin, end);
  };
  source.labels = [&](std::int64_t begin, std::int64_t end) {
    return chunk_labels(set, begin, end);
  };
  return predict_chunks<S>(network, params, posterior, set.size(), source, o);
}

template <class S>
Matrix<double> predict(const nn::Network& network, const Vector<S>& params,
                       const Posterior* posterior, const data::Dataset& set,
                       const PredictiveOptions& o) {
  PredictiveOptions options = o;
  options.variance = false;
  return predict_set<S>(network, params, posterior, set, options).probabilities;
}

template <class S>
Prediction predict_inputs(const nn::Network& network, const Vector<S>& params,
                          const Posterior* posterior, const Matrix<S>& inputs,
                          const PredictiveOptions& o) {
  if (inputs.rows() != network.num_inputs()) {
    throw Error(fmt::format("predictive inputs have {} features; the model '{}' takes {}",
                            inputs.rows(), network.spec(), network.num_inputs()));
  }
  ChunkSource<S> source;
  source.inputs = [&](std::int64_t begin, std::int64_t end) {
    return Matrix<S>(inputs.middleCols(begin, end - begin));
  };
  source.labels = [](std::int64_t begin, std::int64_t end) {
    return std::vector<std::int64_t>(static_cast<std::size_t>(end - begin), 0);
  };
  return predict_chunks<S>(network, params, posterior, inputs.cols(), source, o);
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

#define QUADRA_LAPLACE_INSTANTIATE(S)                                                           \
  template Matrix<double> predict<S>(const nn::Network&, const Vector<S>&, const Posterior*,    \
                                     const data::Dataset&, const PredictiveOptions&);           \
  template Prediction predict_set<S>(const nn::Network&, const Vector<S>&, const Posterior*,    \
                                     const data::Dataset&, const PredictiveOptions&);           \
  template Prediction predict_inputs<S>(const nn::Network&, const Vector<S>&, const Posterior*, \
                                        const Matrix<S>&, const PredictiveOptions&);
QUADRA_LAPLACE_INSTANTIATE(float)
QUADRA_LAPLACE_INSTANTIATE(double)
#undef QUADRA_LAPLACE_INSTANTIATE
template PriorSearch tune_prior_by_validation<float>(Posterior&, const nn::Network&,
                                                     const Vector<float>&, const data::Dataset&,
                                                     const PredictiveOptions&,
                                                     const std::vector<double>&);
template PriorSearch tune_prior_by_validation<double>(Posterior&, const nn::Network&,
                                                      const Vector<double>&, const data::Dataset&,
                                                      const PredictiveOptions&,
                                                      const std::vector<double>&);

}  // namespace quadra::laplace
