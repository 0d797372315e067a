// Hutchinson trace estimation and stochastic Lanczos quadrature: the two estimators that
// average over seeded Rademacher probes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/linalg/hutchinson.hpp>
#include <quadra/linalg/spectral_density.hpp>

#include "krylov.hpp"
#include "random.hpp"

namespace quadra::linalg {
namespace {

detail::Rng probe_rng(std::uint64_t seed, Index probe) {
  return {seed, detail::kProbeStreamBase + static_cast<std::uint64_t>(probe)};
}

void validate(const SlqOptions& o) {
  auto fail = [](const char* name, auto value, const char* expected) {
    throw Error(fmt::format("slq: {} = {}; expected {}", name, value, expected));
  };
  if (o.num_probes < 1) fail("num_probes", o.num_probes, "a count >= 1");
  if (o.num_steps < 1) fail("num_steps", o.num_steps, "a count >= 1");
  if (o.num_points < 2) fail("num_points", o.num_points, "a count >= 2");
  if (!(o.sigma >= 0.0) || !std::isfinite(o.sigma)) fail("sigma", o.sigma, "a finite number >= 0");
  if (!(o.relative_sigma > 0.0) || !std::isfinite(o.relative_sigma)) {
    fail("relative_sigma", o.relative_sigma, "a finite number > 0");
  }
  if (!(o.padding >= 0.0) || !std::isfinite(o.padding)) {
    fail("padding", o.padding, "a finite number >= 0");
  }
}

}  // namespace

template <class Scalar>
TraceEstimate hutchinson_trace(LinearOperator<Scalar>& op, const HutchinsonOptions& options) {
  if (options.num_probes < 1) {
    throw Error(fmt::format("hutchinson: num_probes = {}; expected a count >= 1",
                            options.num_probes));
  }
  const Index n = op.dim();
  Vector<Scalar> z(n);
  Vector<Scalar> az(n);
  TraceEstimate estimate;
  estimate.samples.reserve(static_cast<std::size_t>(options.num_probes));
  for (Index i = 0; i < options.num_probes; ++i) {
    probe_rng(options.seed, i).fill_rademacher<Scalar>(z);
    Status status = op.apply(z, az);
    ++estimate.num_products;
    if (!status.is_ok()) {
      estimate.status = std::move(status);
      break;
    }
    estimate.samples.push_back(static_cast<double>(z.dot(az)));
  }
  const auto count = static_cast<double>(estimate.samples.size());
  if (estimate.samples.empty()) {
    estimate.mean = estimate.standard_error = std::numeric_limits<double>::quiet_NaN();
    return estimate;
  }
  double sum = 0.0;
  for (double s : estimate.samples) sum += s;
  estimate.mean = sum / count;
  if (estimate.samples.size() == 1) {
    estimate.standard_error = std::numeric_limits<double>::infinity();
    return estimate;
  }
  double squares = 0.0;
  for (double s : estimate.samples) squares += (s - estimate.mean) * (s - estimate.mean);
  estimate.standard_error = std::sqrt(squares / (count - 1.0) / count);
  return estimate;
}

template <class Scalar>
SpectralDensity stochastic_lanczos_quadrature(LinearOperator<Scalar>& op,
                                              const SlqOptions& options) {
  validate(options);
  const Index n = op.dim();
  if (n < 1) throw Error("slq: the operator has dimension 0; expected n >= 1");
  const Index max_steps = std::min(options.num_steps, n);
  const double breakdown = 100.0 * Eigen::NumTraits<Scalar>::epsilon();

  SpectralDensity result;
  Matrix<Scalar> basis(n, max_steps);
  Vector<Scalar> w(n);
  Vector<Scalar> scratch(max_steps);
  std::vector<double> alpha;
  std::vector<double> beta;
  alpha.reserve(static_cast<std::size_t>(max_steps));
  beta.reserve(static_cast<std::size_t>(max_steps));
  detail::TridiagonalEigen tridiagonal;
  const double probe_weight = 1.0 / static_cast<double>(options.num_probes);

  for (Index probe = 0; probe < options.num_probes; ++probe) {
    auto v0 = basis.col(0);
    probe_rng(options.seed, probe).fill_rademacher<Scalar>(v0);
    v0 /= static_cast<Scalar>(std::sqrt(static_cast<double>(n)));
    alpha.clear();
    beta.clear();
    double norm_estimate = 0.0;
    for (Index j = 0;; ++j) {
      Status status = op.apply(basis.col(j), w);
      ++result.num_products;
      if (!status.is_ok()) {
        const Index used = result.num_products;
        result = SpectralDensity{};
        result.num_products = used;
        result.status = std::move(status);
        return result;
      }
      norm_estimate = std::max(norm_estimate, static_cast<double>(w.norm()));
      const double beta_prev = j > 0 ? beta.back() : 0.0;
      alpha.push_back(detail::lanczos_orthogonalize(basis, j, beta_prev, w, scratch));
      const double b = static_cast<double>(w.norm());
      if (j + 1 == max_steps || b <= breakdown * norm_estimate) break;
      beta.push_back(b);
      basis.col(j + 1) = w / static_cast<Scalar>(b);
    }
    const auto m = static_cast<Index>(alpha.size());
    if (!tridiagonal.compute(alpha.data(), beta.data(), m,
                             detail::TridiagonalEigen::Rows::kFirst)) {
      const Index used = result.num_products;
      result = SpectralDensity{};
      result.num_products = used;
      result.status = Status::numerical_issue(fmt::format(
          "slq: the eigenvalues of the {0}x{0} tridiagonal matrix of probe {1} did not converge", m,
          probe));
      return result;
    }
    for (Index j = 0; j < m; ++j) {
      const double s = tridiagonal.rows()(0, j);
      result.nodes.push_back(tridiagonal.values()[j]);
      result.weights.push_back(probe_weight * s * s);
    }
  }

  const auto [lo_it, hi_it] = std::minmax_element(result.nodes.begin(), result.nodes.end());
  const double lo_node = *lo_it;
  const double hi_node = *hi_it;
  const double range = hi_node - lo_node;
  result.sigma = options.sigma > 0.0 ? options.sigma
                 : range > 0.0
                     ? options.relative_sigma * range
                     : options.relative_sigma * std::max(std::abs(hi_node), 1.0);
  const double lo = lo_node - options.padding * result.sigma;
  const double hi = hi_node + options.padding * result.sigma;
  const double step = (hi - lo) / static_cast<double>(options.num_points - 1);
  const double inv_two_sigma2 = 1.0 / (2.0 * result.sigma * result.sigma);
  const double normaliser = 1.0 / (result.sigma * std::sqrt(2.0 * std::numbers::pi));
  result.points.resize(static_cast<std::size_t>(options.num_points));
  for (Index i = 0; i < options.num_points; ++i) {
    const double x = lo + step * static_cast<double>(i);
    double density = 0.0;
    for (std::size_t j = 0; j < result.nodes.size(); ++j) {
      const double d = x - result.nodes[j];
      density += result.weights[j] * std::exp(-d * d * inv_two_sigma2);
    }
    result.points[static_cast<std::size_t>(i)] = {x, density * normaliser};
  }
  return result;
}

template TraceEstimate hutchinson_trace(LinearOperator<float>&, const HutchinsonOptions&);
template TraceEstimate hutchinson_trace(LinearOperator<double>&, const HutchinsonOptions&);
template SpectralDensity stochastic_lanczos_quadrature(LinearOperator<float>&,
                                                       const SlqOptions&);
template SpectralDensity stochastic_lanczos_quadrature(LinearOperator<double>&,
                                                       const SlqOptions&);

}  // namespace quadra::linalg
