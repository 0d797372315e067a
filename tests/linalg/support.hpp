#pragma once
// Test matrices with a prescribed spectrum, built from a seeded Gaussian matrix: A = Q D Q^T
// with Q from a QR factorisation. The references the tests compare against are independent of
// quadra::linalg (Eigen's dense eigensolver and factorisations).

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Dense>

#include <quadra/sdk/types.hpp>

namespace quadra::linalg::testing {

using Mat = Matrix<double>;
using Vec = Vector<double>;

inline Mat gaussian_matrix(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Mat m(rows, cols);
  for (Index j = 0; j < cols; ++j) {
    for (Index i = 0; i < rows; ++i) m(i, j) = normal(rng);
  }
  return m;
}

inline Vec gaussian_vector(Index n, std::uint64_t seed) { return gaussian_matrix(n, 1, seed); }

inline Vec uniform_vector(Index n, double lo, double hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(lo, hi);
  Vec v(n);
  for (Index i = 0; i < n; ++i) v[i] = uniform(rng);
  return v;
}

inline Mat random_orthogonal(Index n, std::uint64_t seed) {
  const Mat q = Eigen::HouseholderQR<Mat>(gaussian_matrix(n, n, seed)).householderQ();
  return q;
}

/// Symmetric A = Q diag(eigenvalues) Q^T, symmetrised exactly.
inline Mat with_spectrum(const Vec& eigenvalues, std::uint64_t seed) {
  const Mat q = random_orthogonal(eigenvalues.size(), seed);
  const Mat a = q * eigenvalues.asDiagonal() * q.transpose();
  return 0.5 * (a + a.transpose());
}

/// Concatenation of spectra pieces.
inline Vec concat(std::initializer_list<Vec> parts) {
  Index n = 0;
  for (const auto& p : parts) n += p.size();
  Vec v(n);
  Index at = 0;
  for (const auto& p : parts) {
    v.segment(at, p.size()) = p;
    at += p.size();
  }
  return v;
}

inline Vec values(std::initializer_list<double> list) {
  Vec v(static_cast<Index>(list.size()));
  Index i = 0;
  for (double x : list) v[i++] = x;
  return v;
}

/// Eigen's dense reference: eigenvalues ascending, eigenvectors as columns.
struct Reference {
  Vec values;
  Mat vectors;
};

inline Reference reference_eigen(const Mat& a) {
  Eigen::SelfAdjointEigenSolver<Mat> solver(a);
  return {solver.eigenvalues(), solver.eigenvectors()};
}

/// True if the two scalars/vectors/matrices have bitwise identical storage.
template <class Derived>
bool bitwise_equal(const Eigen::DenseBase<Derived>& a, const Eigen::DenseBase<Derived>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index j = 0; j < a.cols(); ++j) {
    for (Index i = 0; i < a.rows(); ++i) {
      const auto x = a(i, j);
      const auto y = b(i, j);
      if (std::memcmp(&x, &y, sizeof(x)) != 0) return false;
    }
  }
  return true;
}

}  // namespace quadra::linalg::testing
