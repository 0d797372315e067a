#pragma once
/// \file
/// Stochastic Lanczos quadrature (SLQ; Ubaru, Chen & Saad 2017; used for neural-network
/// Hessian spectra by Ghorbani, Krishnan & Xiao 2019): the spectral density
/// phi(t) = (1/n) sum_i delta(t - lambda_i) of a symmetric operator, smoothed by a Gaussian.
/// For each Rademacher probe z, m Lanczos steps (full reorthogonalisation) from v = z/||z||
/// give T_m = S diag(theta) S^T, and the nodes theta_j with weights tau_j = S_1j^2 form a Gauss
/// quadrature of the spectral measure of A seen from v: v^T f(A) v ~ sum_j tau_j f(theta_j).
/// Averaging over probes estimates (1/n) tr f(A); with f a Gaussian kernel of width sigma that
/// gives the smoothed density. A breakdown (invariant Krylov space) ends a probe early: its
/// quadrature is then exact.
///
/// Checks a caller can rely on: the weights sum to 1, so the density integrates to 1 over the
/// returned grid (up to the Gaussian tails cut at `padding` sigmas); its mean sum_j w_j theta_j
/// is the Hutchinson estimate of tr(A)/n with the same probes (first moments are exact in
/// Gauss quadrature).
///
/// Cost: at most num_probes * min(num_steps, n) products; memory n x min(num_steps, n) for
/// the basis, reused across probes. Probes are seeded per index (see hutchinson.hpp).

#include <cstdint>
#include <vector>

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg {

struct SlqOptions {
  Index num_probes = 10;   ///< >= 1
  Index num_steps = 80;    ///< Lanczos steps (products) per probe, >= 1; capped at n
  std::uint64_t seed = 0;
  Index num_points = 512;  ///< grid points, >= 2
  /// Kernel width. 0 selects relative_sigma * (largest node - smallest node), or
  /// relative_sigma * max(|node|, 1) when all nodes coincide.
  double sigma = 0.0;
  double relative_sigma = 0.01;  ///< > 0
  /// The grid spans [smallest node - padding sigma, largest node + padding sigma]; >= 0.
  double padding = 6.0;
};

/// One point of the smoothed density.
struct DensityPoint {
  double x = 0.0;
  double density = 0.0;
};

struct SpectralDensity {
  /// num_points equally spaced (x, density) pairs, x increasing. Empty if a product failed.
  std::vector<DensityPoint> points;
  /// All quadrature nodes theta and weights w (probe after probe); the weights sum to 1, so
  /// (1/n) tr f(A) ~ sum_j w_j f(theta_j) for any smooth f.
  std::vector<double> nodes;
  std::vector<double> weights;
  double sigma = 0.0;  ///< the kernel width used
  Index num_products = 0;
  Status status;  ///< ok, or the status of the product that failed (nothing else is set)
};

/// Gaussian-smoothed spectral density of the symmetric operator `op` by SLQ.
/// \pre options as documented in SlqOptions (violations throw quadra::Error); op.dim() >= 1.
/// \post num_products <= num_probes * min(num_steps, n).
template <class Scalar>
SpectralDensity stochastic_lanczos_quadrature(LinearOperator<Scalar>& op,
                                              const SlqOptions& options = {});

}  // namespace quadra::linalg
