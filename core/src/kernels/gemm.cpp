// Run-time choice of the GEMM kernel. The default build targets baseline x86-64 (SSE2), where
// Eigen's GEMM is 3-4x slower than with AVX2/AVX-512; so the kernel is also compiled for
// x86-64-v3 and x86-64-v4 (gemm_avx2.cpp, gemm_avx512.cpp) and picked once by CPUID. A build
// with -march flags of its own (QUADRA_GEMM_DISPATCH off) uses the baseline file only.

#include "gemm.hpp"

#include <algorithm>
#include <new>
#include <type_traits>

#define QUADRA_GEMM_SUFFIX base
#include "gemm_kernel.inc"

namespace quadra::kernels {

#if defined(QUADRA_GEMM_DISPATCH)
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
#define QUADRA_DECLARE_PACKED(isa)                                                               \
  long packed_depth_##isa(long, long, bool);                                                     \
  void pack_lhs_block_##isa(bool, long, long, const float*, long, long, long, long, float*);     \
  void pack_lhs_block_##isa(bool, long, long, const double*, long, long, long, long, double*);   \
  void gemm_packed_##isa(long, long, long, long, const float*, bool, long, float, const float*,  \
                         long, float*, long);                                                    \
  void gemm_packed_##isa(long, long, long, long, const double*, bool, long, double,              \
                         const double*, long, double*, long);
QUADRA_DECLARE_PACKED(avx2)
QUADRA_DECLARE_PACKED(avx512)
#undef QUADRA_DECLARE_PACKED
#endif

namespace {

enum class Kernel { kBase, kAvx2, kAvx512 };

Kernel detect() {
#if defined(QUADRA_GEMM_DISPATCH)
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
#if defined(QUADRA_GEMM_DISPATCH)
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
#if defined(QUADRA_GEMM_DISPATCH)
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
#if defined(QUADRA_GEMM_DISPATCH)
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
#if defined(QUADRA_GEMM_DISPATCH)
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

template <class T>
Index prepare_packing(Op op_a, Index m, Index k, PackedLhs<T>& out) {
  constexpr bool kF64 = std::is_same_v<T, double>;
  long kc = 0;
  switch (kKernel) {
#if defined(QUADRA_GEMM_DISPATCH)
    case Kernel::kAvx512: kc = packed_depth_avx512(m, k, kF64); break;
    case Kernel::kAvx2: kc = packed_depth_avx2(m, k, kF64); break;
#endif
    default: kc = packed_depth_base(m, k, kF64); break;
  }
  // Every block starts on a 64-byte boundary: the kernels load packed panels aligned.
  constexpr Index kAlign = 64 / static_cast<Index>(sizeof(T));
  const Index block = (m * kc + kAlign - 1) / kAlign * kAlign;
  const Index blocks = k == 0 ? 0 : (k + kc - 1) / kc;
  const Index elements = std::max<Index>(blocks * block, kAlign);  // a multiple of 64 bytes
  if (out.capacity_ < elements) {
    out.data_.reset(static_cast<T*>(std::aligned_alloc(64, static_cast<std::size_t>(elements) * sizeof(T))));
    if (out.data_ == nullptr) throw std::bad_alloc();
    out.capacity_ = elements;
  }
  out.transposed_ = op_a == Op::kT;
  out.m_ = m;
  out.k_ = k;
  out.kc_ = kc;
  out.block_ = block;
  return blocks;
}

template <class T>
void pack_block(const T* a, Index lda, Index b, PackedLhs<T>& out) {
  switch (kKernel) {
#if defined(QUADRA_GEMM_DISPATCH)
    case Kernel::kAvx512:
      pack_lhs_block_avx512(out.transposed_, out.m_, out.k_, a, lda, out.kc_, out.block_, b, out.data_.get());
      return;
    case Kernel::kAvx2:
      pack_lhs_block_avx2(out.transposed_, out.m_, out.k_, a, lda, out.kc_, out.block_, b, out.data_.get());
      return;
#endif
    default: pack_lhs_block_base(out.transposed_, out.m_, out.k_, a, lda, out.kc_, out.block_, b, out.data_.get()); return;
  }
}

template <class T>
void gemm_packed(const PackedLhs<T>& a, Op op_b, Index n, T alpha, const T* b, Index ldb, T beta,
                 T* c, Index ldc) {
  const Index m = a.m_;
  if (m == 0 || n == 0) return;
  Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>, 0, Eigen::OuterStride<>> cm(
      c, m, n, Eigen::OuterStride<>(ldc));
  if (beta == T(0)) {
    cm.setZero();
  } else if (beta != T(1)) {
    cm *= beta;
  }
  if (a.k_ == 0) return;
  const bool tb = op_b == Op::kT;
  switch (kKernel) {
#if defined(QUADRA_GEMM_DISPATCH)
    case Kernel::kAvx512:
      gemm_packed_avx512(m, a.k_, a.kc_, a.block_, a.data_.get(), tb, n, alpha, b, ldb, c, ldc);
      return;
    case Kernel::kAvx2:
      gemm_packed_avx2(m, a.k_, a.kc_, a.block_, a.data_.get(), tb, n, alpha, b, ldb, c, ldc);
      return;
#endif
    default:
      gemm_packed_base(m, a.k_, a.kc_, a.block_, a.data_.get(), tb, n, alpha, b, ldb, c, ldc);
      return;
  }
}

template Index prepare_packing(Op, Index, Index, PackedLhs<float>&);
template Index prepare_packing(Op, Index, Index, PackedLhs<double>&);
template void pack_block(const float*, Index, Index, PackedLhs<float>&);
template void pack_block(const double*, Index, Index, PackedLhs<double>&);
template void gemm_packed(const PackedLhs<float>&, Op, Index, float, const float*, Index, float,
                          float*, Index);
template void gemm_packed(const PackedLhs<double>&, Op, Index, double, const double*, Index,
                          double, double*, Index);

const char* gemm_kernel_name() {
  switch (kKernel) {
    case Kernel::kAvx512: return "eigen-avx512";
    case Kernel::kAvx2: return "eigen-avx2";
    default: return "eigen-baseline";
  }
}

}  // namespace quadra::kernels
