// Run-time choice of the GEMM kernel. The default build targets baseline x86-64 (SSE2), where
// Eigen's GEMM is 3-4x slower than with AVX2/AVX-512; so the kernel is also compiled for
// x86-64-v3 and x86-64-v4 (gemm_avx2.cpp, gemm_avx512.cpp) and picked once by CPUID. A build
// with -march flags of its own (QUADRA_NN_GEMM_DISPATCH off) uses the baseline file only.

#include "gemm.hpp"

#define QUADRA_GEMM_SUFFIX base
#include "gemm_kernel.inc"

namespace quadra::nn::detail {

#if defined(QUADRA_NN_GEMM_DISPATCH)
void gemm_avx2(bool, bool, long, long, long, float, const float*, long, const float*, long, float,
               float*, long);
void gemm_avx2(bool, bool, long, long, long, double, const double*, long, const double*, long,
               double, double*, long);
void gemm_avx512(bool, bool, long, long, long, float, const float*, long, const float*, long,
                 float, float*, long);
void gemm_avx512(bool, bool, long, long, long, double, const double*, long, const double*, long,
                 double, double*, long);
void symmetric_tile_avx2(const double*, long, long, long, const double*, const double*, double*,
                         double*, bool);
void symmetric_tile_avx512(const double*, long, long, long, const double*, const double*, double*,
                           double*, bool);
void symmetric_tile2_avx2(const double*, long, long, long, const double*, const double*, double*,
                          double*, long, bool);
void symmetric_tile2_avx512(const double*, long, long, long, const double*, const double*,
                            double*, double*, long, bool);
void symmetric_tile_block_avx2(const float*, long, long, long, const float*, const float*, float*,
                               float*, long, long, bool);
void symmetric_tile_block_avx512(const float*, long, long, long, const float*, const float*,
                                 float*, float*, long, long, bool);
#endif

namespace {

enum class Kernel { kBase, kAvx2, kAvx512 };

Kernel detect() {
#if defined(QUADRA_NN_GEMM_DISPATCH)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Kernel::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Kernel::kAvx2;
#endif
  return Kernel::kBase;
}

const Kernel kKernel = detect();

template <class T>
void dispatch(Op op_a, Op op_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
              const T* b, Index ldb, T beta, T* c, Index ldc) {
  const bool ta = op_a == Op::kT;
  const bool tb = op_b == Op::kT;
  if (m == 0 || n == 0) return;
  switch (kKernel) {
#if defined(QUADRA_NN_GEMM_DISPATCH)
    case Kernel::kAvx512:
      gemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    case Kernel::kAvx2:
      gemm_avx2(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
#endif
    default:
      gemm_base(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
  }
}

}  // namespace

void symmetric_tile_product2(const double* t, Index ld, Index rows, Index cols, const double* x_r,
                             const double* x_c, double* y_r, double* y_c, Index ldx,
                             bool diagonal) {
  switch (kKernel) {
#if defined(QUADRA_NN_GEMM_DISPATCH)
    case Kernel::kAvx512:
      symmetric_tile2_avx512(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, diagonal);
      return;
    case Kernel::kAvx2:
      symmetric_tile2_avx2(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, diagonal);
      return;
#endif
    default:
      symmetric_tile2_base(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, diagonal);
      return;
  }
}

void symmetric_tile_block(const float* t, Index ld, Index rows, Index cols, const float* x_r,
                          const float* x_c, float* y_r, float* y_c, Index ldx, Index vectors,
                          bool diagonal) {
  switch (kKernel) {
#if defined(QUADRA_NN_GEMM_DISPATCH)
    case Kernel::kAvx512:
      symmetric_tile_block_avx512(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, vectors, diagonal);
      return;
    case Kernel::kAvx2:
      symmetric_tile_block_avx2(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, vectors, diagonal);
      return;
#endif
    default:
      symmetric_tile_block_base(t, ld, rows, cols, x_r, x_c, y_r, y_c, ldx, vectors, diagonal);
      return;
  }
}

void symmetric_tile_product(const double* t, Index ld, Index rows, Index cols, const double* x_r,
                            const double* x_c, double* y_r, double* y_c, bool diagonal) {
  switch (kKernel) {
#if defined(QUADRA_NN_GEMM_DISPATCH)
    case Kernel::kAvx512:
      symmetric_tile_avx512(t, ld, rows, cols, x_r, x_c, y_r, y_c, diagonal);
      return;
    case Kernel::kAvx2:
      symmetric_tile_avx2(t, ld, rows, cols, x_r, x_c, y_r, y_c, diagonal);
      return;
#endif
    default:
      symmetric_tile_base(t, ld, rows, cols, x_r, x_c, y_r, y_c, diagonal);
      return;
  }
}

void gemm(Op op_a, Op op_b, Index m, Index n, Index k, float alpha, const float* a, Index lda,
          const float* b, Index ldb, float beta, float* c, Index ldc) {
  dispatch(op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Op op_a, Op op_b, Index m, Index n, Index k, double alpha, const double* a, Index lda,
          const double* b, Index ldb, double beta, double* c, Index ldc) {
  dispatch(op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char* gemm_kernel_name() {
  switch (kKernel) {
    case Kernel::kAvx512: return "eigen-avx512";
    case Kernel::kAvx2: return "eigen-avx2";
    default: return "eigen-baseline";
  }
}

}  // namespace quadra::nn::detail
