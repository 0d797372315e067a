#pragma once
/// \file
/// Hutchinson's stochastic trace estimator: tr(A) = E[z^T A z] for probes z with independent
/// entries of mean 0 and variance 1. quadra uses Rademacher probes (+-1 with probability 1/2),
/// which have the smallest variance of that family: Var[z^T A z] = 2 (||A||_F^2 - sum_i A_ii^2),
/// so the estimate is exact for a diagonal A. One product per probe.
///
/// Probes are seeded: probe i comes from its own RNG stream (seed, i), so it is the same
/// whatever the number of probes, and stochastic_lanczos_quadrature() with the same seed uses
/// the same probes (its density then has mean exactly this estimate / n, up to rounding).

#include <cstdint>
#include <vector>

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg {

struct HutchinsonOptions {
  Index num_probes = 100;  ///< >= 1; each costs one product
  std::uint64_t seed = 0;
};

struct TraceEstimate {
  double mean = 0.0;  ///< (1/N) sum_i z_i^T A z_i, the trace estimate
  /// Sample standard deviation of the z_i^T A z_i divided by sqrt(N): the standard error of
  /// `mean`. +infinity for N = 1.
  double standard_error = 0.0;
  std::vector<double> samples;  ///< z_i^T A z_i, one per probe, in probe order
  Index num_products = 0;
  /// ok, or the status of the product that failed (mean and standard_error then describe
  /// the probes before it, NaN if none).
  Status status;
};

/// Estimates tr(A) with options.num_probes Rademacher probes.
/// \pre options.num_probes >= 1 (else throws quadra::Error). \post num_products <= num_probes.
template <class Scalar>
TraceEstimate hutchinson_trace(LinearOperator<Scalar>& op, const HutchinsonOptions& options = {});

}  // namespace quadra::linalg
