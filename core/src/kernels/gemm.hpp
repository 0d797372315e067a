#pragma once
// The matrix-product primitives of the numerical modules (nn, linalg, curvature): C =
// alpha·op(A)·op(B) + beta·C on column-major blocks with leading dimensions (BLAS conventions),
// and the tile product of a symmetric matrix stored by its lower triangle (the Gram method). Every large product goes through here, so the
// kernel can be chosen at run time for the CPU (see gemm.cpp) without touching the callers.
// Single-threaded: parallelism comes from the caller's tasks.

#include <cstdlib>
#include <memory>

#include <Eigen/Core>

namespace quadra::kernels {

using Index = Eigen::Index;

enum class Op { kN, kT };

void gemm(Op op_a, Op op_b, Index m, Index n, Index k, float alpha, const float* a, Index lda,
          const float* b, Index ldb, float beta, float* c, Index ldc);
void gemm(Op op_a, Op op_b, Index m, Index n, Index k, double alpha, const double* a, Index lda,
          const double* b, Index ldb, double beta, double* c, Index ldc);

/// A left operand op(A) (m × k; A column-major) packed once into the kernel's panel layout, for
/// many products with different right-hand sides: a layer's stored inputs X (in × N) in every
/// reduction C = X Dᵀ to its weights, for every row tile and every product on a bound batch;
/// a layer's weights W and a direction's block V in the tangent products W ẋ and V x, for every
/// chunk of samples. Each of those GEMMs would otherwise pack its left operand again (X: 8-9 %
/// of a gradient at N = 1024; W and V, transposed: 14-18 % of a GGN or Hessian product at
/// N = 128). The layout belongs to the kernel chosen at run time; only gemm_packed reads it.
template <class T>
class PackedLhs {
 public:
  [[nodiscard]] Index rows() const { return m_; }
  [[nodiscard]] Index depth() const { return k_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  template <class U>
  friend Index prepare_packing(Op, Index, Index, PackedLhs<U>&);
  template <class U>
  friend void pack_block(const U*, Index, Index, PackedLhs<U>&);
  template <class U>
  friend void gemm_packed(const PackedLhs<U>&, Op, Index, U, const U*, Index, U, U*, Index);

  Index m_ = 0;
  Index k_ = 0;
  Index kc_ = 0;     // depth of one packed block
  Index block_ = 0;  // elements from one block to the next (64-byte aligned)
  Index capacity_ = 0;
  bool transposed_ = false;
  std::unique_ptr<T, Free> data_;
};

/// Sizes `out` for an m × k operand op(A) and returns its number of blocks (each kc deep, all m
/// rows); pack_block(a, lda, b, out) then fills block b, in any order and from any thread. The
/// blocking depends on m, k and the CPU alone, never on the right-hand sides or the threads.
template <class T>
Index prepare_packing(Op op_a, Index m, Index k, PackedLhs<T>& out);
template <class T>
void pack_block(const T* a, Index lda, Index b, PackedLhs<T>& out);

/// C = alpha·A·op(B) + beta·C with A packed; op(B) is k × n (B column-major, leading dimension
/// ldb).
template <class T>
void gemm_packed(const PackedLhs<T>& a, Op op_b, Index n, T alpha, const T* b, Index ldb, T beta,
                 T* c, Index ldc);

/// One tile T (rows × cols, column-major, leading dimension ld) of a symmetric matrix stored by
/// its lower triangle: y_r += T x_c and, unless `diagonal` (then T is a diagonal tile stored in
/// full), y_c += Tᵀ x_r; accumulated in double. Same dispatch as gemm.
void symmetric_tile_product(const double* t, Index ld, Index rows, Index cols, const double* x_r,
                            const double* x_c, double* y_r, double* y_c, bool diagonal);

/// The same for two vectors stored ldx apart (x_r, x_r + ldx; likewise x_c, y_r, y_c): one pass
/// over the tile for both.
void symmetric_tile_product2(const double* t, Index ld, Index rows, Index cols, const double* x_r,
                             const double* x_c, double* y_r, double* y_c, Index ldx, bool diagonal);

/// A float tile with 1 to 4 float vectors stored ldx apart, in one pass over the tile: y_r[v] +=
/// T x_c[v] and, unless `diagonal`, y_c[v] += Tᵀ x_r[v]. Sums in float over this tile only
/// (callers add tiles in double); x_r and y_r should be small scratch vectors that stay in L1.
void symmetric_tile_block(const float* t, Index ld, Index rows, Index cols, const float* x_r,
                          const float* x_c, float* y_r, float* y_c, Index ldx, Index vectors,
                          bool diagonal);

/// Name of the kernel in use, e.g. "eigen-avx512" (for benchmarks and reports).
const char* gemm_kernel_name();

}  // namespace quadra::kernels
