// The direct 3×3 convolutions (conv.hpp) against a plain loop over the definition, in float and
// double, on image widths below, at and between the kernels' vector and segment widths, with
// accumulation, the input and the weight gradients (summed and per sample).

#include <Eigen/Core>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "conv.hpp"

using quadra::kernels::Index;

namespace {

template <class T>
using V = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// y[o][i][j] = Σ_c Σ_tap w[o][c][tap] x[c][i + ki − 1][j + kj − 1] (zero outside).
template <class T>
double at(const V<T>& x, Index c, Index h, Index w, const V<T>& wt, Index o, Index i, Index j) {
  double sum = 0;
  for (Index ch = 0; ch < c; ++ch) {
    for (Index ki = 0; ki < 3; ++ki) {
      for (Index kj = 0; kj < 3; ++kj) {
        const Index r = i + ki - 1;
        const Index s = j + kj - 1;
        if (r < 0 || r >= h || s < 0 || s >= w) continue;
        sum += static_cast<double>(wt[(o * c + ch) * 9 + ki * 3 + kj]) *
               static_cast<double>(x[(ch * h + r) * w + s]);
      }
    }
  }
  return sum;
}

template <class T>
void check(Index n, Index c, Index h, Index w, Index out, double tol) {
  INFO("n " << n << " c " << c << " h " << h << " w " << w << " out " << out);
  const V<T> x = V<T>::Random(n * c * h * w);
  const V<T> wt = V<T>::Random(out * c * 9);
  const V<T> dy = V<T>::Random(n * out * h * w);
  // Forward, assigned and accumulated.
  V<T> y = V<T>::Constant(n * out * h * w, T(7));
  quadra::kernels::conv3x3_forward(n, x.data(), c, h, w, wt.data(), out, y.data(), false);
  V<T> y2 = V<T>::Constant(n * out * h * w, T(1));
  quadra::kernels::conv3x3_forward(n, x.data(), c, h, w, wt.data(), out, y2.data(), true);
  double err = 0;
  double err2 = 0;
  for (Index s = 0; s < n; ++s) {
    const V<T> xs = x.segment(s * c * h * w, c * h * w);
    for (Index o = 0; o < out; ++o) {
      for (Index i = 0; i < h; ++i) {
        for (Index j = 0; j < w; ++j) {
          const Index k = ((s * out + o) * h + i) * w + j;
          const double ref = at<T>(xs, c, h, w, wt, o, i, j);
          err = std::max(err, std::abs(static_cast<double>(y[k]) - ref));
          err2 = std::max(err2, std::abs(static_cast<double>(y2[k]) - 1.0 - ref));
        }
      }
    }
  }
  CHECK(err <= tol);
  CHECK(err2 <= tol);
  // Input gradient: <dy, conv(x)> = <dx, x> for every x, so dx[e] = <dy, conv(e)>; checked
  // against the adjoint identity on random x (and accumulation onto a constant).
  V<T> dx = V<T>::Constant(n * c * h * w, T(3));
  quadra::kernels::conv3x3_input_grad(n, dy.data(), out, h, w, wt.data(), c, dx.data(), false);
  V<T> dx2 = V<T>::Constant(n * c * h * w, T(2));
  quadra::kernels::conv3x3_input_grad(n, dy.data(), out, h, w, wt.data(), c, dx2.data(), true);
  for (Index s = 0; s < n; ++s) {
    const double lhs = static_cast<double>(
        dy.segment(s * out * h * w, out * h * w).dot(y.segment(s * out * h * w, out * h * w)));
    const double rhs = static_cast<double>(
        dx.segment(s * c * h * w, c * h * w).dot(x.segment(s * c * h * w, c * h * w)));
    CHECK(std::abs(lhs - rhs) <= tol * std::max(1.0, std::abs(lhs)) * 10);
  }
  CHECK(static_cast<double>((dx2.array() - T(2) - dx.array()).abs().maxCoeff()) <= tol);
  // Weight gradient: dw[o][c][tap] = Σ dy[o][i][j] x[c][i + ki − 1][j + kj − 1].
  V<T> dw = V<T>::Constant(out * c * 9, T(1));
  quadra::kernels::conv3x3_weight_grad(n, x.data(), c, h, w, dy.data(), out, T(0.5), dw.data(), 0);
  const Index ld = out * c * 9 + 2;
  V<T> per = V<T>::Constant(ld * n, T(9));
  quadra::kernels::conv3x3_weight_grad(n, x.data(), c, h, w, dy.data(), out, T(1), per.data(), ld);
  double werr = 0;
  double perr = 0;
  for (Index o = 0; o < out; ++o) {
    for (Index ch = 0; ch < c; ++ch) {
      for (Index tap = 0; tap < 9; ++tap) {
        const Index ki = tap / 3;
        const Index kj = tap % 3;
        double total = 0;
        for (Index s = 0; s < n; ++s) {
          double sum = 0;
          for (Index i = 0; i < h; ++i) {
            for (Index j = 0; j < w; ++j) {
              const Index r = i + ki - 1;
              const Index q = j + kj - 1;
              if (r < 0 || r >= h || q < 0 || q >= w) continue;
              sum += static_cast<double>(dy[((s * out + o) * h + i) * w + j]) *
                     static_cast<double>(x[((s * c + ch) * h + r) * w + q]);
            }
          }
          total += sum;
          perr = std::max(
              perr, std::abs(static_cast<double>(per[s * ld + (o * c + ch) * 9 + tap]) - sum));
        }
        werr = std::max(
            werr, std::abs(static_cast<double>(dw[(o * c + ch) * 9 + tap]) - 1.0 - 0.5 * total));
      }
    }
  }
  CHECK(werr <= tol * static_cast<double>(n * h * w));
  CHECK(perr <= tol * static_cast<double>(h * w));
  for (Index s = 0; s < n; ++s) {  // the entries between per-sample columns untouched
    CHECK(per[s * ld + ld - 1] == T(9));
    CHECK(per[s * ld + ld - 2] == T(9));
  }
}

}  // namespace

TEST_CASE("direct 3x3 convolutions match their definition", "[kernels][conv]") {
  // c, h, w, out: the last two take the two-row tiles of narrow images with an odd last row
  // (forward and, with the channels swapped, input gradient).
  const Index shapes[][4] = {{3, 32, 32, 16}, {16, 8, 16, 32}, {2, 6, 6, 3},  {5, 7, 28, 9},
                             {4, 8, 8, 11},   {1, 5, 3, 2},    {2, 3, 17, 5}, {3, 4, 9, 1},
                             {3, 7, 5, 17},   {10, 5, 8, 9}};
  for (const auto& s : shapes) {
    check<double>(2, s[0], s[1], s[2], s[3], 1e-12);
    check<float>(2, s[0], s[1], s[2], s[3], 2e-4);
  }
}
