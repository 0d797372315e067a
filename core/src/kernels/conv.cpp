// The direct 3×3 convolutions of conv.hpp: the ISA-independent part (zero-bordered copies of the
// inputs, the weights in the kernels' tap-major layout, per-thread scratch) and the run-time
// choice of the kernel, by the same CPUID test as the GEMM's.

#include "conv.hpp"

#include <algorithm>
#include <vector>

#define QUADRA_CONV_SUFFIX base
#define QUADRA_CONV_OB 2
#define QUADRA_CONV_WB 1
#include "conv_kernel.inc"
#undef QUADRA_CONV_SUFFIX
#undef QUADRA_CONV_OB
#undef QUADRA_CONV_WB

namespace quadra::kernels {

#if defined(QUADRA_GEMM_DISPATCH)
#define QUADRA_DECLARE_CONV(isa)                                                        \
  template <class T>                                                                    \
  void conv3_forward_##isa(const T*, long, long, long, long, const T*, long, T*, bool); \
  template <class T>                                                                    \
  void conv3_weight_##isa(const T*, long, long, long, long, const T*, long, T*);
QUADRA_DECLARE_CONV(avx2)
QUADRA_DECLARE_CONV(avx512)
#undef QUADRA_DECLARE_CONV
#endif

namespace {

enum class Isa { kBase, kAvx2, kAvx512 };

Isa detect() {
#if defined(QUADRA_GEMM_DISPATCH)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

const Isa kIsa = detect();

template <class T>
void run_forward(const T* xp, long cin, long h, long w, long xs, const T* wt, long cout, T* y,
                 bool accumulate) {
  switch (kIsa) {
#if defined(QUADRA_GEMM_DISPATCH)
    case Isa::kAvx512:
      conv3_forward_avx512<T>(xp, cin, h, w, xs, wt, cout, y, accumulate);
      return;
    case Isa::kAvx2:
      conv3_forward_avx2<T>(xp, cin, h, w, xs, wt, cout, y, accumulate);
      return;
#endif
    default:
      conv3_forward_base<T>(xp, cin, h, w, xs, wt, cout, y, accumulate);
      return;
  }
}

template <class T>
void run_weight(const T* xp, long cin, long h, long ds, long xs, const T* dy, long cout, T* part) {
  switch (kIsa) {
#if defined(QUADRA_GEMM_DISPATCH)
    case Isa::kAvx512:
      conv3_weight_avx512<T>(xp, cin, h, ds, xs, dy, cout, part);
      return;
    case Isa::kAvx2:
      conv3_weight_avx2<T>(xp, cin, h, ds, xs, dy, cout, part);
      return;
#endif
    default:
      conv3_weight_base<T>(xp, cin, h, ds, xs, dy, cout, part);
      return;
  }
}

template <class T>
constexpr long kLanes = 32 / static_cast<long>(sizeof(T));

long round_up(long v, long m) { return (v + m - 1) / m * m; }

/// Row stride of the zero-bordered planes (see conv_kernel.inc).
template <class T>
long padded_stride(long w) {
  const long segment = w > kLanes<T> ? 2 * kLanes<T> : kLanes<T>;
  return round_up(w, segment) + 2;
}

/// Per-thread scratch, grown as needed and kept: the kernels run inside the engine's chunk tasks,
/// each of which pads every sample of every layer.
template <class T>
T* scratch(int slot, std::size_t size) {
  thread_local std::vector<T> buffers[3];
  std::vector<T>& b = buffers[slot];
  if (b.size() < size) b.resize(size);
  return b.data();
}

/// Copies one sample's c × h × w planes into xp with a zero border (layout of conv_kernel.inc).
template <class T>
void pad(const T* x, long c, long h, long w, long xs, T* xp) {
  for (long ch = 0; ch < c; ++ch) {
    T* plane = xp + ch * (h + 2) * xs;
    std::fill(plane, plane + xs, T(0));
    for (long r = 0; r < h; ++r) {
      T* row = plane + (r + 1) * xs;
      row[0] = T(0);
      std::copy(x + (ch * h + r) * w, x + (ch * h + r + 1) * w, row + 1);
      std::fill(row + 1 + w, row + xs, T(0));
    }
    std::fill(plane + (h + 1) * xs, plane + (h + 2) * xs, T(0));
  }
}

}  // namespace

template <class T>
void conv3x3_forward(Index n, const T* x, Index c, Index h, Index w, const T* weights, Index out,
                     T* y, bool accumulate) {
  const long q = c * 9;
  const long xs = padded_stride<T>(w);
  T* wt = scratch<T>(0, static_cast<std::size_t>(q * out));
  for (long o = 0; o < out; ++o) {
    for (long i = 0; i < q; ++i) wt[i * out + o] = weights[o * q + i];
  }
  T* xp = scratch<T>(1, static_cast<std::size_t>(c * (h + 2) * xs));
  for (Index j = 0; j < n; ++j) {
    pad(x + j * c * h * w, c, h, w, xs, xp);
    run_forward<T>(xp, c, h, w, xs, wt, out, y + j * out * h * w, accumulate);
  }
}

template <class T>
void conv3x3_input_grad(Index n, const T* dy, Index out, Index h, Index w, const T* weights,
                        Index c, T* dx, bool accumulate) {
  // dx[c][i][j] = Σ_o Σ_tap w[o][c][tap] dy[o][i + 1 − ki][j + 1 − kj]: the forward convolution of
  // dy (out channels in) with the taps reversed and the channel roles swapped.
  const long q = c * 9;
  const long xs = padded_stride<T>(w);
  T* wt = scratch<T>(0, static_cast<std::size_t>(q * out));
  for (long o = 0; o < out; ++o) {
    for (long ch = 0; ch < c; ++ch) {
      for (long k = 0; k < 9; ++k) wt[(o * 9 + k) * c + ch] = weights[o * q + ch * 9 + (8 - k)];
    }
  }
  T* dyp = scratch<T>(1, static_cast<std::size_t>(out * (h + 2) * xs));
  for (Index j = 0; j < n; ++j) {
    pad(dy + j * out * h * w, out, h, w, xs, dyp);
    run_forward<T>(dyp, out, h, w, xs, wt, c, dx + j * c * h * w, accumulate);
  }
}

template <class T>
void conv3x3_weight_grad(Index n, const T* x, Index c, Index h, Index w, const T* dy, Index out,
                         T alpha, T* dw, Index ld) {
  const long xs = padded_stride<T>(w);
  const long ds = round_up(w, kLanes<T>);
  const long q = c * 9;
  const std::size_t part_size = static_cast<std::size_t>(out * q * kLanes<T>);
  T* part = scratch<T>(0, part_size);
  T* xp = scratch<T>(1, static_cast<std::size_t>(c * (h + 2) * xs));
  T* dyp = ds == w ? nullptr : scratch<T>(2, static_cast<std::size_t>(out * h * ds));
  // Lane sums over the block (or one sample, for per-sample gradients), reduced in a fixed
  // order at the end.
  const auto finish = [&](T* dst, bool assign) {
    for (long i = 0; i < out * q; ++i) {
      const T* lanes = part + i * kLanes<T>;
      T sum = 0;
      for (long l = 0; l < kLanes<T>; ++l) sum += lanes[l];
      dst[i] = assign ? alpha * sum : dst[i] + alpha * sum;
    }
  };
  std::fill(part, part + part_size, T(0));
  for (Index j = 0; j < n; ++j) {
    pad(x + j * c * h * w, c, h, w, xs, xp);
    const T* d = dy + j * out * h * w;
    if (dyp != nullptr) {  // rows of ds entries, zero past w
      for (long r = 0; r < out * h; ++r) {
        std::copy(d + r * w, d + (r + 1) * w, dyp + r * ds);
        std::fill(dyp + r * ds + w, dyp + (r + 1) * ds, T(0));
      }
      d = dyp;
    }
    run_weight<T>(xp, c, h, ds, xs, d, out, part);
    if (ld > 0) {
      finish(dw + j * ld, true);
      std::fill(part, part + part_size, T(0));
    }
  }
  if (ld == 0) finish(dw, false);
}

template void conv3x3_forward<float>(Index, const float*, Index, Index, Index, const float*, Index,
                                     float*, bool);
template void conv3x3_forward<double>(Index, const double*, Index, Index, Index, const double*,
                                      Index, double*, bool);
template void conv3x3_input_grad<float>(Index, const float*, Index, Index, Index, const float*,
                                        Index, float*, bool);
template void conv3x3_input_grad<double>(Index, const double*, Index, Index, Index, const double*,
                                         Index, double*, bool);
template void conv3x3_weight_grad<float>(Index, const float*, Index, Index, Index, const float*,
                                         Index, float, float*, Index);
template void conv3x3_weight_grad<double>(Index, const double*, Index, Index, Index, const double*,
                                          Index, double, double*, Index);

}  // namespace quadra::kernels
