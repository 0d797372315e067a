// The engine's pre-packed GEMM (gemm.hpp: PackedLhs, gemm_packed) against its plain GEMM, on
// shapes around the kernel's panel sizes and blocking depths, both orientations of A and of B,
// all betas.

#include <catch2/catch.hpp>

#include <Eigen/Core>

#include "gemm.hpp"

using quadra::kernels::gemm;
using quadra::kernels::gemm_packed;
using quadra::kernels::Index;
using quadra::kernels::Op;
using quadra::kernels::pack_block;
using quadra::kernels::PackedLhs;
using quadra::kernels::prepare_packing;

namespace {

template <class T>
using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <class T>
void check_shape(Op op_a, Index m, Index n, Index k, double tolerance) {
  // Leading dimension 3 more than the rows: a block of a larger matrix.
  const M<T> a = op_a == Op::kN ? M<T>::Random(m + 3, k) : M<T>::Random(k + 3, m);
  PackedLhs<T> packed;
  const Index blocks = prepare_packing(op_a, m, k, packed);
  for (Index b = blocks - 1; b >= 0; --b) pack_block(a.data(), a.rows(), b, packed);  // any order
  REQUIRE(packed.rows() == m);
  REQUIRE(packed.depth() == k);
  for (const Op op_b : {Op::kN, Op::kT}) {
    const M<T> b = op_b == Op::kN ? M<T>::Random(k + 2, n) : M<T>::Random(n + 2, k);
    for (const T beta : {T(0), T(1), T(0.5)}) {
      INFO("m " << m << " n " << n << " k " << k << " op_a " << (op_a == Op::kT) << " op_b "
                << (op_b == Op::kT) << " beta " << beta);
      const M<T> c0 = M<T>::Random(m + 1, n);
      M<T> plain = c0;
      M<T> fast = c0;
      gemm(op_a, op_b, m, n, k, T(0.75), a.data(), a.rows(), b.data(), b.rows(), beta, plain.data(), plain.rows());
      gemm_packed(packed, op_b, n, T(0.75), b.data(), b.rows(), beta, fast.data(), fast.rows());
      const double scale = std::max<double>(1.0, static_cast<double>(plain.norm()));
      CHECK(static_cast<double>((fast - plain).norm()) <= tolerance * scale);
      CHECK(fast.row(m) == c0.row(m));  // the row below C (inside its leading dimension) untouched
    }
  }
}

}  // namespace

TEST_CASE("products with a pre-packed left operand equal the plain GEMM", "[nn][gemm]") {
  const Index sizes[][3] = {{1, 1, 1},   {3, 2, 5},     {24, 4, 8},     {25, 5, 9},
                            {47, 13, 300}, {130, 129, 700}, {784, 128, 1030}, {10, 7, 0}};
  for (const auto& s : sizes) {
    for (const Op op_a : {Op::kN, Op::kT}) {
      check_shape<double>(op_a, s[0], s[1], s[2], 1e-14);
      check_shape<float>(op_a, s[0], s[1], s[2], 1e-5);
    }
  }
}

TEST_CASE("a packing can be reused for a smaller operand", "[nn][gemm]") {
  // The engine keeps one packing per layer input; a later, smaller batch reuses its memory.
  PackedLhs<double> packed;
  const M<double> big = M<double>::Random(40, 90);
  const M<double> small = M<double>::Random(30, 20);
  for (const M<double>* a : {&big, &small}) {
    const Index blocks = prepare_packing(Op::kN, a->rows(), a->cols(), packed);
    for (Index b = 0; b < blocks; ++b) pack_block(a->data(), a->rows(), b, packed);
    const M<double> x = M<double>::Random(a->cols(), 6);
    M<double> c(a->rows(), 6);
    gemm_packed(packed, Op::kN, 6, 1.0, x.data(), x.rows(), 0.0, c.data(), c.rows());
    CHECK(((*a) * x - c).norm() <= 1e-13 * std::max(1.0, c.norm()));
  }
}
