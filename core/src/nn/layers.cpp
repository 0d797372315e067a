// Layer implementations. See layers.hpp. Samples are columns; every layer loops over the
// columns of its block, so a block's results do not depend on how blocks are scheduled.

#include "layers.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

// Non-temporal stores for the per-sample outer products (x86-64: SSE2 and movnti for 64 bits).
#if defined(__SSE2__) && defined(__x86_64__)
#define QUADRA_STREAM_STORES 1
#include <emmintrin.h>
#endif

#include "../kernels/conv.hpp"
#include "../kernels/gemm.hpp"
#include "norm_layers.hpp"

namespace quadra::nn::detail {
namespace {

template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

// ---- activations -------------------------------------------------------------------------

template <class S>
class ActivationLayer final : public Layer<S> {
 public:
  using Layer<S>::Layer;

  void forward(const S*, CMatMap<S> x, MatMap<S> y) const override {
    const auto xa = x.array();
    auto ya = y.array();
    const S slope = static_cast<S>(this->spec_.negative_slope);
    switch (this->spec_.kind) {
      case LayerKind::kRelu: ya = xa.max(S(0)); break;
      case LayerKind::kLeakyRelu: ya = (xa > S(0)).select(xa, slope * xa); break;
      case LayerKind::kTanh: ya = xa.tanh(); break;
      case LayerKind::kSigmoid: ya = xa.logistic(); break;
      case LayerKind::kGelu:
        ya = xa.unaryExpr([](S v) { return S(0.5) * v * (S(1) + std::erf(v * S(M_SQRT1_2))); });
        break;
      case LayerKind::kSoftplus:
        // PyTorch's Softplus(beta=1, threshold=20): linear above the threshold.
        ya = xa.unaryExpr([](S v) { return v > S(20) ? v : std::log1p(std::exp(v)); });
        break;
      default: break;
    }
  }

  void backward(const S*, CMatMap<S> x, CMatMap<S> y, CMatMap<S> dy,
                MatMap<S> dx) const override {
    first_derivative_times(x, y, dy.data(), dx.data(), false);
  }

  void tangent(const S*, const S*, CMatMap<S> x, CMatMap<S> y, const S* xdot,
               MatMap<S> ydot) const override {
    if (xdot == nullptr) {
      ydot.setZero();
      return;
    }
    first_derivative_times(x, y, xdot, ydot.data(), false);
  }

  void backward_second(const S*, const S*, CMatMap<S> x, CMatMap<S> y, const S* xdot,
                       CMatMap<S> g, MatMap<S> dx) const override {
    if (xdot == nullptr) return;
    const Index n = x.size();
    const S* xv = x.data();
    const S* yv = y.data();
    const S* gv = g.data();
    S* out = dx.data();
    switch (this->spec_.kind) {
      case LayerKind::kTanh:
        for (Index i = 0; i < n; ++i) {
          const S t = yv[i];
          out[i] += S(-2) * t * (S(1) - t * t) * xdot[i] * gv[i];
        }
        break;
      case LayerKind::kSigmoid:
        for (Index i = 0; i < n; ++i) {
          const S s = yv[i];
          out[i] += s * (S(1) - s) * (S(1) - S(2) * s) * xdot[i] * gv[i];
        }
        break;
      case LayerKind::kGelu:
        for (Index i = 0; i < n; ++i) {
          const S v = xv[i];
          const S phi = std::exp(S(-0.5) * v * v) * S(0.3989422804014327);
          out[i] += phi * (S(2) - v * v) * xdot[i] * gv[i];
        }
        break;
      case LayerKind::kSoftplus:
        for (Index i = 0; i < n; ++i) {
          if (xv[i] > S(20)) continue;
          const S s = S(1) / (S(1) + std::exp(-xv[i]));
          out[i] += s * (S(1) - s) * xdot[i] * gv[i];
        }
        break;
      default: break;  // piecewise linear: no second derivative
    }
  }

 private:
  /// out = σ'(x) ⊙ in. The piecewise-linear cases load `in` unconditionally so that the
  /// compiler turns the select into vector blends (a branch per element mispredicts on real data).
  void first_derivative_times(CMatMap<S> x, CMatMap<S> y, const S* __restrict in,
                              S* __restrict out, bool) const {
    const Index n = x.size();
    const S* xv = x.data();
    const S* yv = y.data();
    const S slope = static_cast<S>(this->spec_.negative_slope);
    switch (this->spec_.kind) {
      case LayerKind::kRelu:
        for (Index i = 0; i < n; ++i) {
          const S g = in[i];
          out[i] = xv[i] > S(0) ? g : S(0);
        }
        break;
      case LayerKind::kLeakyRelu:
        for (Index i = 0; i < n; ++i) {
          const S g = in[i];
          out[i] = xv[i] > S(0) ? g : slope * g;
        }
        break;
      case LayerKind::kTanh:
        for (Index i = 0; i < n; ++i) out[i] = (S(1) - yv[i] * yv[i]) * in[i];
        break;
      case LayerKind::kSigmoid:
        for (Index i = 0; i < n; ++i) out[i] = yv[i] * (S(1) - yv[i]) * in[i];
        break;
      case LayerKind::kGelu:
        for (Index i = 0; i < n; ++i) {
          const S v = xv[i];
          const S cdf = S(0.5) * (S(1) + std::erf(v * S(M_SQRT1_2)));
          const S pdf = std::exp(S(-0.5) * v * v) * S(0.3989422804014327);
          out[i] = (cdf + v * pdf) * in[i];
        }
        break;
      case LayerKind::kSoftplus:
        for (Index i = 0; i < n; ++i) {
          out[i] = xv[i] > S(20) ? in[i] : in[i] / (S(1) + std::exp(-xv[i]));
        }
        break;
      default: break;
    }
  }
};

// ---- flatten -----------------------------------------------------------------------------

template <class S>
class FlattenLayer final : public Layer<S> {
 public:
  using Layer<S>::Layer;
  void forward(const S*, CMatMap<S> x, MatMap<S> y) const override { y = x; }
  void backward(const S*, CMatMap<S>, CMatMap<S>, CMatMap<S> dy, MatMap<S> dx) const override {
    dx = dy;
  }
  void tangent(const S*, const S*, CMatMap<S>, CMatMap<S>, const S* xdot,
               MatMap<S> ydot) const override {
    if (xdot == nullptr) {
      ydot.setZero();
    } else {
      ydot = CMatMap<S>(xdot, ydot.rows(), ydot.cols());
    }
  }
};

// ---- global average pool -----------------------------------------------------------------

/// y_c = mean over the H·W positions of channel c. A sample's C-H-W column viewed as an
/// (H·W) × C matrix has one channel per column.
template <class S>
class GlobalAvgPoolLayer final : public Layer<S> {
 public:
  GlobalAvgPoolLayer(const LayerSpec& spec, const TensorShape& in, const TensorShape& out,
                     Index offset)
      : Layer<S>(spec, in, out, offset), channels_(in.dims[0]), area_(in.dims[1] * in.dims[2]) {}
  void forward(const S*, CMatMap<S> x, MatMap<S> y) const override { pool(x.data(), y); }
  void backward(const S*, CMatMap<S>, CMatMap<S>, CMatMap<S> dy, MatMap<S> dx) const override {
    const S scale = S(1) / static_cast<S>(area_);
    for (Index j = 0; j < dy.cols(); ++j) {
      MatMap<S> d(dx.col(j).data(), area_, channels_);
      d.rowwise() = scale * dy.col(j).transpose();
    }
  }
  void tangent(const S*, const S*, CMatMap<S>, CMatMap<S>, const S* xdot,
               MatMap<S> ydot) const override {
    if (xdot == nullptr) {
      ydot.setZero();
    } else {
      pool(xdot, ydot);
    }
  }

 private:
  void pool(const S* x, MatMap<S> y) const {
    const S scale = S(1) / static_cast<S>(area_);
    for (Index j = 0; j < y.cols(); ++j) {
      const CMatMap<S> xj(x + j * channels_ * area_, area_, channels_);
      y.col(j) = scale * xj.colwise().sum().transpose();
    }
  }

  Index channels_;
  Index area_;
};

// ---- pools -------------------------------------------------------------------------------

struct PoolGeometry {
  Index channels, h, w, ho, wo, k, stride, pad;
};

template <class S>
class PoolLayer final : public Layer<S> {
 public:
  PoolLayer(const LayerSpec& spec, const TensorShape& in, const TensorShape& out, Index offset)
      : Layer<S>(spec, in, out, offset),
        g_{in.dims[0], in.dims[1], in.dims[2], out.dims[1], out.dims[2], spec.kernel,
           spec.stride, spec.padding},
        max_(spec.kind == LayerKind::kMaxPool2d) {}

  void forward(const S*, CMatMap<S> x, MatMap<S> y) const override {
    for (Index j = 0; j < x.cols(); ++j) pool(x.col(j).data(), y.col(j).data());
  }
  void backward(const S*, CMatMap<S> x, CMatMap<S> y, CMatMap<S> dy, MatMap<S> dx) const override {
    if (max_ && tiles_exactly_by_2x2()) {
      for (Index j = 0; j < x.cols(); ++j) {
        scatter_2x2(x.col(j).data(), y.col(j).data(), dy.col(j).data(), dx.col(j).data());
      }
      return;
    }
    dx.setZero();
    for (Index j = 0; j < x.cols(); ++j) {
      scatter(x.col(j).data(), y.col(j).data(), dy.col(j).data(), dx.col(j).data());
    }
  }
  void tangent(const S*, const S*, CMatMap<S> x, CMatMap<S> y, const S* xdot,
               MatMap<S> ydot) const override {
    if (xdot == nullptr) {
      ydot.setZero();
      return;
    }
    const Index in = this->in_size_;
    for (Index j = 0; j < x.cols(); ++j) {
      if (max_) {
        gather_max(x.col(j).data(), y.col(j).data(), xdot + j * in, ydot.col(j).data());
      } else {
        pool(xdot + j * in, ydot.col(j).data());
      }
    }
  }

 private:
  /// Visits each output position with the valid input positions of its window.
  template <class F>
  void for_each_window(F&& f) const {
    // Without padding every window is whole; a 2×2 one is then unrolled (the common pool).
    if (g_.pad == 0 && g_.k == 2) {
      for (Index c = 0; c < g_.channels; ++c) {
        for (Index oh = 0; oh < g_.ho; ++oh) {
          const Index h0 = oh * g_.stride;
          for (Index ow = 0; ow < g_.wo; ++ow) {
            const Index w0 = ow * g_.stride;
            f((c * g_.ho + oh) * g_.wo + ow, c, h0, h0 + 2, w0, w0 + 2);
          }
        }
      }
      return;
    }
    for (Index c = 0; c < g_.channels; ++c) {
      for (Index oh = 0; oh < g_.ho; ++oh) {
        for (Index ow = 0; ow < g_.wo; ++ow) {
          const Index out = (c * g_.ho + oh) * g_.wo + ow;
          const Index h0 = oh * g_.stride - g_.pad;
          const Index w0 = ow * g_.stride - g_.pad;
          f(out, c, std::max<Index>(h0, 0), std::min(h0 + g_.k, g_.h), std::max<Index>(w0, 0),
            std::min(w0 + g_.k, g_.w));
        }
      }
    }
  }
  // Max pooling is written branch-free (selects the compiler turns into max/cmov): on real data
  // a compare-and-branch per element mispredicts about every other window, which cost 30 % of a
  // CNN gradient.
  /// The window's maximum; NaN when the window holds one (PyTorch propagates NaN).
  S window_max(const S* x, Index c, Index hb, Index he, Index wb, Index we) const {
    S top = x[(c * g_.h + hb) * g_.w + wb];
    bool nan = false;
    for (Index ih = hb; ih < he; ++ih) {
      const S* row = x + (c * g_.h + ih) * g_.w;
      for (Index iw = wb; iw < we; ++iw) {
        const S v = row[iw];
        top = top < v ? v : top;
        nan |= std::isnan(v);
      }
    }
    return nan ? std::numeric_limits<S>::quiet_NaN() : top;
  }
  /// Index of the entry the forward pass took, given its value `top`: the window's first
  /// maximum (PyTorch's choice on ties), or its last NaN.
  Index argmax(const S* x, S top, Index c, Index hb, Index he, Index wb, Index we) const {
    Index best = (c * g_.h + hb) * g_.w + wb;
    if (std::isnan(top)) {
      for (Index ih = hb; ih < he; ++ih) {
        const Index row = (c * g_.h + ih) * g_.w;
        for (Index iw = wb; iw < we; ++iw) best = std::isnan(x[row + iw]) ? row + iw : best;
      }
      return best;
    }
    for (Index ih = he - 1; ih >= hb; --ih) {
      const Index row = (c * g_.h + ih) * g_.w;
      for (Index iw = we - 1; iw >= wb; --iw) {
        // Arithmetic rather than a select: GCC turns `cond ? i : best` back into a branch here.
        const auto hit = static_cast<Index>(x[row + iw] == top);
        best += hit * (row + iw - best);
      }
    }
    return best;
  }
  void pool(const S* x, S* y) const {
    const S inv = S(1) / static_cast<S>(g_.k * g_.k);  // padding counts (PyTorch's default)
    for_each_window([&](Index out, Index c, Index hb, Index he, Index wb, Index we) {
      if (max_) {
        y[out] = window_max(x, c, hb, he, wb, we);
      } else {
        S sum = 0;
        for (Index ih = hb; ih < he; ++ih) {
          for (Index iw = wb; iw < we; ++iw) sum += x[(c * g_.h + ih) * g_.w + iw];
        }
        y[out] = sum * inv;
      }
    });
  }
  void gather_max(const S* x, const S* y, const S* xdot, S* ydot) const {
    for_each_window([&](Index out, Index c, Index hb, Index he, Index wb, Index we) {
      ydot[out] = xdot[argmax(x, y[out], c, hb, he, wb, we)];
    });
  }
  void scatter(const S* x, const S* y, const S* dy, S* dx) const {
    const S inv = S(1) / static_cast<S>(g_.k * g_.k);
    for_each_window([&](Index out, Index c, Index hb, Index he, Index wb, Index we) {
      if (max_) {
        dx[argmax(x, y[out], c, hb, he, wb, we)] += dy[out];
      } else {
        for (Index ih = hb; ih < he; ++ih) {
          for (Index iw = wb; iw < we; ++iw) dx[(c * g_.h + ih) * g_.w + iw] += dy[out] * inv;
        }
      }
    });
  }

  /// 2×2 windows with stride 2 and no padding that cover the input exactly: every input entry
  /// lies in one window, so the backward pass writes dx once per entry, without zeroing it first.
  [[nodiscard]] bool tiles_exactly_by_2x2() const {
    return g_.k == 2 && g_.stride == 2 && g_.pad == 0 && g_.h == 2 * g_.ho && g_.w == 2 * g_.wo;
  }
  /// scatter() for max pooling that tiles_exactly_by_2x2(): dy goes to the window's first
  /// maximum (its last NaN when it holds one), zero to the other three entries.
  void scatter_2x2(const S* x, const S* y, const S* dy, S* dx) const {
    for (Index c = 0; c < g_.channels; ++c) {
      for (Index oh = 0; oh < g_.ho; ++oh) {
        const Index top_row = (c * g_.h + 2 * oh) * g_.w;
        const Index bottom_row = top_row + g_.w;
        const Index out_row = (c * g_.ho + oh) * g_.wo;
        for (Index ow = 0; ow < g_.wo; ++ow) {
          const Index i0 = top_row + 2 * ow;
          const Index i2 = bottom_row + 2 * ow;
          const S top = y[out_row + ow];
          const S grad = dy[out_row + ow];
          if (std::isnan(top)) [[unlikely]] {
            dx[i0] = dx[i0 + 1] = dx[i2] = dx[i2 + 1] = S(0);
            dx[argmax(x, top, c, 2 * oh, 2 * oh + 2, 2 * ow, 2 * ow + 2)] = grad;
            continue;
          }
          // The first of the four (row-major) equal to the maximum takes the gradient. Bitwise
          // operators, not && and ?: on data, so that GCC emits no branches (they mispredict
          // on real data as in window_max).
          const unsigned e0 = x[i0] == top;
          const unsigned e1 = (x[i0 + 1] == top) & ~e0 & 1U;
          const unsigned e2 = (x[i2] == top) & ~(e0 | e1) & 1U;
          const unsigned e3 = ~(e0 | e1 | e2) & 1U;
          const S pick[2] = {S(0), grad};
          dx[i0] = pick[e0];
          dx[i0 + 1] = pick[e1];
          dx[i2] = pick[e2];
          dx[i2 + 1] = pick[e3];
        }
      }
    }
  }

  PoolGeometry g_;
  bool max_;
};

// ---- linear ------------------------------------------------------------------------------

/// Row sums of rows [r0, r1) of a column-major rows×n matrix times alpha, added to out[0..) (or
/// written there, with `assign`).
template <class S>
void add_row_sums(const S* m, Index rows, Index n, Index r0, Index r1, S alpha, bool squared,
                  bool assign, S* out) {
  Vec<S> sum = Vec<S>::Zero(r1 - r0);
  for (Index j = 0; j < n; ++j) {
    const S* col = m + j * rows + r0;
    for (Index i = 0; i < r1 - r0; ++i) sum[i] += squared ? col[i] * col[i] : col[i];
  }
  for (Index i = 0; i < r1 - r0; ++i) out[i] = (assign ? S(0) : out[i]) + alpha * sum[i];
}

/// dst[i] += src[i] for i < n (restrict parameters: GCC ignores restrict on local pointers).
template <class S>
void add_to(S* __restrict dst, const S* __restrict src, Index n) {
  for (Index i = 0; i < n; ++i) dst[i] += src[i];
}

#if defined(QUADRA_STREAM_STORES)
/// One non-temporal scalar store (movnti). Mixing ordinary stores into lines that are being
/// written non-temporally costs a read and a flush of the line: half the bandwidth when the
/// caller's column stride leaves rows 8 bytes off 16-byte alignment.
template <class S>
void stream_one(S* dst, S value) {
  if constexpr (std::is_same_v<S, float>) {
    _mm_stream_si32(reinterpret_cast<int*>(dst), std::bit_cast<int>(value));
  } else {
    _mm_stream_si64(reinterpret_cast<long long*>(dst), std::bit_cast<long long>(value));
  }
}
#endif

/// dst[i] = a·src[i] for i < n, with non-temporal stores only, where the ISA has them.
template <class S>
void stream_scaled(S* dst, const S* src, S a, Index n) {
#if defined(QUADRA_STREAM_STORES)
  constexpr Index kWidth = 16 / static_cast<Index>(sizeof(S));
  Index i = 0;
  for (; i < n && (reinterpret_cast<std::uintptr_t>(dst + i) & 15U) != 0; ++i) stream_one(dst + i, a * src[i]);
  if constexpr (std::is_same_v<S, float>) {
    const __m128 va = _mm_set1_ps(a);
    for (; i + kWidth <= n; i += kWidth) _mm_stream_ps(dst + i, _mm_mul_ps(va, _mm_loadu_ps(src + i)));
  } else {
    const __m128d va = _mm_set1_pd(a);
    for (; i + kWidth <= n; i += kWidth) _mm_stream_pd(dst + i, _mm_mul_pd(va, _mm_loadu_pd(src + i)));
  }
  for (; i < n; ++i) stream_one(dst + i, a * src[i]);
#else
  for (Index i = 0; i < n; ++i) dst[i] = a * src[i];
#endif
}

/// Orders streaming stores before the task's completion is published.
inline void stream_fence() {
#if defined(QUADRA_STREAM_STORES)
  _mm_sfence();
#endif
}

template <class S>
class LinearLayer final : public Layer<S> {
 public:
  using Layer<S>::Layer;

  [[nodiscard]] Index num_params() const override {
    return this->in_size_ * this->out_size_ + (this->spec_.bias ? this->out_size_ : 0);
  }

  // Wt = W viewed column-major: in × out, column o is row o of W.
  void forward(const S* theta, CMatMap<S> x, MatMap<S> y) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    const S* w = theta + this->offset_;
    // With a bias, y starts as the bias and the GEMM accumulates onto it: one pass over y fewer
    // (the GEMM reads y either way).
    S beta = S(0);
    if (this->spec_.bias) {
      y.colwise() = CMatMap<S>(w + in * out, out, 1).col(0);
      beta = S(1);
    }
    gemm(Op::kT, Op::kN, out, x.cols(), in, S(1), w, in, x.data(), in, beta, y.data(), out);
  }

  void backward(const S* theta, CMatMap<S>, CMatMap<S>, CMatMap<S> dy,
                MatMap<S> dx) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    gemm(Op::kN, Op::kN, in, dy.cols(), out, S(1), theta + this->offset_, in, dy.data(), out, S(0),
         dx.data(), in);
  }

  void tangent(const S* theta, const S* v, CMatMap<S> x, CMatMap<S>, const S* xdot,
               MatMap<S> ydot) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    const Index n = x.cols();
    const S* vw = v + this->offset_;
    S beta = S(0);
    if (this->spec_.bias) {  // as in forward: start from the bias direction
      ydot.colwise() = CMatMap<S>(vw + in * out, out, 1).col(0);
      beta = S(1);
    }
    if (packed_v_ != nullptr && v == packed_v_source_) {
      gemm_packed(*packed_v_, Op::kN, n, S(1), x.data(), in, beta, ydot.data(), out);
    } else {
      gemm(Op::kT, Op::kN, out, n, in, S(1), vw, in, x.data(), in, beta, ydot.data(), out);
    }
    if (xdot != nullptr) {
      if (packed_w_ != nullptr) {
        gemm_packed(*packed_w_, Op::kN, n, S(1), xdot, in, S(1), ydot.data(), out);
      } else {
        gemm(Op::kT, Op::kN, out, n, in, S(1), theta + this->offset_, in, xdot, in, S(1),
             ydot.data(), out);
      }
    }
  }

  void use_packed(const PackedLhs<S>* weights, const PackedLhs<S>* direction, const S* v) override {
    packed_w_ = weights;
    packed_v_ = direction;
    packed_v_source_ = v;
  }

  void backward_second(const S*, const S* v, CMatMap<S>, CMatMap<S>, const S*, CMatMap<S> g,
                       MatMap<S> dx) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    gemm(Op::kN, Op::kN, in, g.cols(), out, S(1), v + this->offset_, in, g.data(), out, S(1),
         dx.data(), in);
  }

  [[nodiscard]] Index reduce_tasks(Index, Index) const override {
    return (this->out_size_ + kRowTile - 1) / kRowTile;
  }

  // Task t: rows [r0, r1) of W, i.e. columns of Wt, over all n samples (one GEMM with K = n).
  void reduce(Index task, Index n, Index, const std::vector<Pair<S>>& pairs, ReduceMode mode,
              S alpha, bool overwrite, S* out_params) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    const Index r0 = task * kRowTile;
    const Index r1 = std::min(out, r0 + kRowTile);
    S* w = out_params + r0 * in;
    S* b = this->spec_.bias ? out_params + in * out + r0 : nullptr;
    if (mode == ReduceMode::kSum) {
      bool assign_w = overwrite;  // until the first term is written
      bool assign_b = overwrite;
      for (const Pair<S>& p : pairs) {
        const S beta = assign_w ? S(0) : S(1);
        if (p.packed_x != nullptr) {
          gemm_packed(*p.packed_x, Op::kT, r1 - r0, alpha, p.dy + r0, out, beta, w, in);
        } else {
          gemm(Op::kN, Op::kT, in, r1 - r0, n, alpha, p.x, in, p.dy + r0, out, beta, w, in);
        }
        assign_w = false;
        if (b != nullptr && p.bias) {
          add_row_sums(p.dy, out, n, r0, r1, alpha, false, assign_b, b);
          assign_b = false;
        }
      }
      if (b != nullptr && assign_b) std::fill(b, b + (r1 - r0), S(0));  // no term had a bias
      return;
    }
    // Squared: Σ_n (dy_n ⊗ x_n)² = (dy ⊙ dy)(x ⊙ x)ᵀ, one GEMM instead of n outer products.
    const Pair<S>& p = pairs.front();
    const S beta = overwrite ? S(0) : S(1);
    const Mat<S> x2 = CMatMap<S>(p.x, in, n).array().square().matrix();
    if (mode == ReduceMode::kPreSquared) {
      gemm(Op::kN, Op::kT, in, r1 - r0, n, alpha, x2.data(), in, p.dy + r0, out, beta, w, in);
      if (b != nullptr) add_row_sums(p.dy, out, n, r0, r1, alpha, false, overwrite, b);
    } else {
      const Mat<S> dy2 =
          CMatMap<S>(p.dy, out, n).middleRows(r0, r1 - r0).array().square().matrix();
      gemm(Op::kN, Op::kT, in, r1 - r0, n, alpha, x2.data(), in, dy2.data(), r1 - r0, beta, w, in);
      if (b != nullptr) add_row_sums(p.dy, out, n, r0, r1, alpha, true, overwrite, b);
    }
  }

  // Outer products written with streaming stores: the N×P result is far larger than the caches,
  // and plain stores would first read every destination line (twice the memory traffic).
  void per_sample(CMatMap<S> dy, CMatMap<S> x, S* out_params, Index ld) const override {
    const Index in = this->in_size_;
    const Index out = this->out_size_;
    for (Index j = 0; j < x.cols(); ++j) {
      S* col = out_params + j * ld;
      const S* xj = x.col(j).data();
      const S* dj = dy.col(j).data();
      for (Index o = 0; o < out; ++o) stream_scaled(col + o * in, xj, dj[o], in);
      if (this->spec_.bias) stream_scaled(col + in * out, dj, S(1), out);
    }
    stream_fence();
  }

  [[nodiscard]] Index kfac_a_dim() const override {
    return this->in_size_ + (this->spec_.bias ? 1 : 0);
  }

 private:
  const PackedLhs<S>* packed_w_ = nullptr;
  const PackedLhs<S>* packed_v_ = nullptr;
  const S* packed_v_source_ = nullptr;
};

// ---- conv --------------------------------------------------------------------------------

template <class S>
class ConvLayer final : public Layer<S> {
 public:
  ConvLayer(const LayerSpec& spec, const TensorShape& in, const TensorShape& out, Index offset)
      : Layer<S>(spec, in, out, offset), c_(in.dims[0]), h_(in.dims[1]), w_(in.dims[2]),
        ho_(out.dims[1]), wo_(out.dims[2]), k_(spec.kernel), s_(spec.stride), p_(spec.padding),
        t_(ho_ * wo_), q_(c_ * k_ * k_),
        direct_(kernels::conv3x3_applies(k_, s_, p_)) {}

  [[nodiscard]] Index num_params() const override {
    return this->spec_.out * q_ + (this->spec_.bias ? this->spec_.out : 0);
  }
  [[nodiscard]] Index positions() const override { return t_; }

  // Per sample: patches P (T × q, column-major), output Y = P · Wt (T × out) = C-H-W layout.
  void forward(const S* theta, CMatMap<S> x, MatMap<S> y) const override {
    const S* w = theta + this->offset_;
    const Index out = this->spec_.out;
    if (direct_) {
      kernels::conv3x3_forward(x.cols(), x.data(), c_, h_, w_, w, out, y.data(), false);
      if (this->spec_.bias) {
        for (Index j = 0; j < x.cols(); ++j) add_bias(w + q_ * out, y.col(j).data());
      }
      return;
    }
    Mat<S> cols(t_, q_);
    for (Index j = 0; j < x.cols(); ++j) {
      im2col(x.col(j).data(), cols.data());
      S* yj = y.col(j).data();
      gemm(Op::kN, Op::kN, t_, out, q_, S(1), cols.data(), t_, w, q_, S(0), yj, t_);
      if (this->spec_.bias) add_bias(w + q_ * out, yj);
    }
  }

  void backward(const S* theta, CMatMap<S>, CMatMap<S>, CMatMap<S> dy,
                MatMap<S> dx) const override {
    if (direct_) {
      kernels::conv3x3_input_grad(dy.cols(), dy.data(), this->spec_.out, h_, w_,
                                  theta + this->offset_, c_, dx.data(), false);
      return;
    }
    dx.setZero();
    add_input_grad(theta + this->offset_, dy, dx);
  }

  void tangent(const S* theta, const S* v, CMatMap<S> x, CMatMap<S>, const S* xdot,
               MatMap<S> ydot) const override {
    const S* w = theta + this->offset_;
    const S* vw = v + this->offset_;
    const Index out = this->spec_.out;
    if (direct_) {
      kernels::conv3x3_forward(x.cols(), x.data(), c_, h_, w_, vw, out, ydot.data(), false);
      if (xdot != nullptr) {
        kernels::conv3x3_forward(x.cols(), xdot, c_, h_, w_, w, out, ydot.data(), true);
      }
      if (this->spec_.bias) {
        for (Index j = 0; j < x.cols(); ++j) add_bias(vw + q_ * out, ydot.col(j).data());
      }
      return;
    }
    Mat<S> cols(t_, q_);
    for (Index j = 0; j < x.cols(); ++j) {
      S* yj = ydot.col(j).data();
      im2col(x.col(j).data(), cols.data());
      gemm(Op::kN, Op::kN, t_, out, q_, S(1), cols.data(), t_, vw, q_, S(0), yj, t_);
      if (xdot != nullptr) {
        im2col(xdot + j * this->in_size_, cols.data());
        gemm(Op::kN, Op::kN, t_, out, q_, S(1), cols.data(), t_, w, q_, S(1), yj, t_);
      }
      if (this->spec_.bias) add_bias(vw + q_ * out, yj);
    }
  }

  void backward_second(const S*, const S* v, CMatMap<S>, CMatMap<S>, const S*, CMatMap<S> g,
                       MatMap<S> dx) const override {
    add_input_grad(v + this->offset_, g, dx);
  }

  [[nodiscard]] Index reduce_tasks(Index n, Index chunk) const override {
    return (n + chunk - 1) / chunk;
  }
  [[nodiscard]] bool tasks_are_chunks() const override { return true; }

  void reduce_block(Index count, const std::vector<Pair<S>>& pairs, ReduceMode mode, S alpha,
                    S* out_params) const override {
    const Index out = this->spec_.out;
    S* bias = this->spec_.bias ? out_params + q_ * out : nullptr;
    Mat<S> cols(direct_ ? 0 : t_, q_);
    Mat<S> g(q_, out);
    if (direct_) {
      for (const Pair<S>& p : pairs) {
        if (mode == ReduceMode::kSum) {
          kernels::conv3x3_weight_grad(count, p.x, c_, h_, w_, p.dy, out, alpha, out_params, Index{0});
        }
        for (Index j = 0; j < count; ++j) {
          const S* dy = p.dy + j * this->out_size_;
          const S* xj = p.x + j * this->in_size_;
          if (mode == ReduceMode::kSum) {
            if (bias != nullptr && p.bias) {
              for (Index o = 0; o < out; ++o) {
                bias[o] += alpha * CMatMap<S>(dy + o * t_, t_, 1).sum();
              }
            }
          } else {
            kernels::conv3x3_weight_grad(Index{1}, xj, c_, h_, w_, dy, out, S(1), g.data(),
                                         q_ * out);
            MatMap<S>(out_params, q_, out).array() += alpha * g.array().square();
            if (bias != nullptr) {
              for (Index o = 0; o < out; ++o) {
                const S sum = CMatMap<S>(dy + o * t_, t_, 1).sum();
                bias[o] += alpha * sum * sum;
              }
            }
          }
        }
      }
      return;
    }
    for (const Pair<S>& p : pairs) {
      for (Index j = 0; j < count; ++j) {
        const S* dy = p.dy + j * this->out_size_;
        im2col(p.x + j * this->in_size_, cols.data());
        if (mode == ReduceMode::kSum) {
          gemm(Op::kT, Op::kN, q_, out, t_, alpha, cols.data(), t_, dy, t_, S(1), out_params, q_);
          if (bias != nullptr && p.bias) {
            for (Index o = 0; o < out; ++o) bias[o] += alpha * CMatMap<S>(dy + o * t_, t_, 1).sum();
          }
        } else {
          gemm(Op::kT, Op::kN, q_, out, t_, S(1), cols.data(), t_, dy, t_, S(0), g.data(), q_);
          MatMap<S>(out_params, q_, out).array() += alpha * g.array().square();
          if (bias != nullptr) {
            for (Index o = 0; o < out; ++o) {
              const S sum = CMatMap<S>(dy + o * t_, t_, 1).sum();
              bias[o] += alpha * sum * sum;
            }
          }
        }
      }
    }
  }

  void per_sample(CMatMap<S> dy, CMatMap<S> x, S* out_params, Index ld) const override {
    const Index out = this->spec_.out;
    if (direct_) {
      kernels::conv3x3_weight_grad(x.cols(), x.data(), c_, h_, w_, dy.data(), out, S(1), out_params,
                                   ld);
      if (this->spec_.bias) {
        for (Index j = 0; j < x.cols(); ++j) {
          S* col = out_params + j * ld;
          for (Index o = 0; o < out; ++o) {
            col[q_ * out + o] = CMatMap<S>(dy.col(j).data() + o * t_, t_, 1).sum();
          }
        }
      }
      return;
    }
    Mat<S> cols(t_, q_);
    for (Index j = 0; j < x.cols(); ++j) {
      S* col = out_params + j * ld;
      im2col(x.col(j).data(), cols.data());
      gemm(Op::kT, Op::kN, q_, out, t_, S(1), cols.data(), t_, dy.col(j).data(), t_, S(0), col, q_);
      if (this->spec_.bias) {
        for (Index o = 0; o < out; ++o) col[q_ * out + o] = CMatMap<S>(dy.col(j).data() + o * t_, t_, 1).sum();
      }
    }
  }

  [[nodiscard]] Index kfac_a_dim() const override { return q_ + (this->spec_.bias ? 1 : 0); }

  void kfac_a_partial(CMatMap<S> x, S* a) const override {
    const Index dim = kfac_a_dim();
    Mat<S> cols(t_, q_);
    for (Index j = 0; j < x.cols(); ++j) {
      im2col(x.col(j).data(), cols.data());
      gemm(Op::kT, Op::kN, q_, q_, t_, S(1), cols.data(), t_, cols.data(), t_, S(1), a, dim);
      if (this->spec_.bias) {
        for (Index i = 0; i < q_; ++i) {
          const S sum = cols.col(i).sum();
          a[i * dim + q_] += sum;
          a[q_ * dim + i] += sum;
        }
        a[q_ * dim + q_] += static_cast<S>(t_);
      }
    }
  }

  void kfac_s_partial(CMatMap<S> dy, S* s) const override {
    const Index out = this->spec_.out;
    for (Index j = 0; j < dy.cols(); ++j) {
      gemm(Op::kT, Op::kN, out, out, t_, S(1), dy.col(j).data(), t_, dy.col(j).data(), t_, S(1), s,
           out);
    }
  }

 private:
  void add_bias(const S* b, S* y) const {
    for (Index o = 0; o < this->spec_.out; ++o) MatMap<S>(y + o * t_, t_, 1).array() += b[o];
  }

  /// dx += col2im(dY · Wtᵀ) for every sample of the block.
  void add_input_grad(const S* w, CMatMap<S> dy, MatMap<S> dx) const {
    const Index out = this->spec_.out;
    if (direct_) {
      kernels::conv3x3_input_grad(dy.cols(), dy.data(), out, h_, w_, w, c_, dx.data(), true);
      return;
    }
    Mat<S> cols(t_, q_);
    for (Index j = 0; j < dy.cols(); ++j) {
      gemm(Op::kN, Op::kT, t_, q_, out, S(1), dy.col(j).data(), t_, w, q_, S(0), cols.data(), t_);
      col2im(cols.data(), dx.col(j).data());
    }
  }

  /// Output columns [begin, end) whose input column ow·s + kj − p lies inside the image: the
  /// copy loops below then run without per-element bounds checks (and vectorise for stride 1).
  void valid_columns(Index kj, Index& begin, Index& end) const {
    const Index lo = p_ - kj;  // ow·s ≥ lo
    const Index hi = w_ + p_ - kj;  // ow·s < hi
    begin = lo <= 0 ? 0 : (lo + s_ - 1) / s_;
    end = hi <= 0 ? 0 : std::min(wo_, (hi + s_ - 1) / s_);
    begin = std::min(begin, end);
  }

  /// Patches of one sample: column (c, ki, kj) holds the input pixel under that kernel entry
  /// for every output position (zero in the padding).
  void im2col(const S* x, S* cols) const {
    for (Index c = 0; c < c_; ++c) {
      for (Index ki = 0; ki < k_; ++ki) {
        for (Index kj = 0; kj < k_; ++kj) {
          S* col = cols + ((c * k_ + ki) * k_ + kj) * t_;
          Index begin = 0;
          Index end = 0;
          valid_columns(kj, begin, end);
          for (Index oh = 0; oh < ho_; ++oh) {
            const Index ih = oh * s_ + ki - p_;
            S* row = col + oh * wo_;
            if (ih < 0 || ih >= h_) {
              std::fill(row, row + wo_, S(0));
              continue;
            }
            const S* xrow = x + (c * h_ + ih) * w_ + kj - p_;
            std::fill(row, row + begin, S(0));
            if (s_ == 1) {
              std::copy(xrow + begin, xrow + end, row + begin);
            } else if (s_ == 2) {  // a constant stride: the compiler deinterleaves vectors
              for (Index ow = begin; ow < end; ++ow) row[ow] = xrow[2 * ow];
            } else {
              for (Index ow = begin; ow < end; ++ow) row[ow] = xrow[ow * s_];
            }
            std::fill(row + end, row + wo_, S(0));
          }
        }
      }
    }
  }

  /// Adjoint of im2col: dx += scatter of the patch gradients.
  void col2im(const S* cols, S* dx) const {
    for (Index c = 0; c < c_; ++c) {
      for (Index ki = 0; ki < k_; ++ki) {
        for (Index kj = 0; kj < k_; ++kj) {
          const S* col = cols + ((c * k_ + ki) * k_ + kj) * t_;
          Index begin = 0;
          Index end = 0;
          valid_columns(kj, begin, end);
          for (Index oh = 0; oh < ho_; ++oh) {
            const Index ih = oh * s_ + ki - p_;
            if (ih < 0 || ih >= h_) continue;
            const S* row = col + oh * wo_;
            S* xrow = dx + (c * h_ + ih) * w_ + kj - p_;
            if (s_ == 1) {
              add_to(xrow + begin, row + begin, end - begin);
            } else {
              for (Index ow = begin; ow < end; ++ow) xrow[ow * s_] += row[ow];
            }
          }
        }
      }
    }
  }

  Index c_, h_, w_, ho_, wo_, k_, s_, p_, t_, q_;
  bool direct_;  ///< 3×3, stride 1, padding 1: the direct kernels of kernels/conv.hpp
};

}  // namespace

template <class S>
std::vector<std::unique_ptr<Layer<S>>> make_layers(const Network& network) {
  std::vector<std::unique_ptr<Layer<S>>> layers;
  const auto& specs = network.layers();
  const auto& shapes = network.shapes();
  for (std::size_t l = 0; l < specs.size(); ++l) {
    const LayerSpec& spec = specs[l];
    const TensorShape& in = network.input_shape(static_cast<Index>(l));
    const TensorShape& out = shapes[l + 1];
    const Index offset = network.parameter_offset(static_cast<Index>(l));
    switch (spec.kind) {
      case LayerKind::kLinear:
        layers.push_back(std::make_unique<LinearLayer<S>>(spec, in, out, offset));
        break;
      case LayerKind::kConv2d:
        layers.push_back(std::make_unique<ConvLayer<S>>(spec, in, out, offset));
        break;
      case LayerKind::kMaxPool2d:
      case LayerKind::kAvgPool2d:
        layers.push_back(std::make_unique<PoolLayer<S>>(spec, in, out, offset));
        break;
      case LayerKind::kFlatten:
      case LayerKind::kDropout:  // the identity (see network.hpp)
      case LayerKind::kAdd:      // per input the identity; the engine sums the inputs
        layers.push_back(std::make_unique<FlattenLayer<S>>(spec, in, out, offset));
        break;
      case LayerKind::kGlobalAvgPool:
        layers.push_back(std::make_unique<GlobalAvgPoolLayer<S>>(spec, in, out, offset));
        break;
      case LayerKind::kBatchNorm:
      case LayerKind::kLayerNorm:
      case LayerKind::kGroupNorm:
        layers.push_back(make_norm_layer<S>(network, static_cast<Index>(l)));
        break;
      default:
        layers.push_back(std::make_unique<ActivationLayer<S>>(spec, in, out, offset));
        break;
    }
  }
  return layers;
}

template <class S>
void gram_tile(const S* x, Index rows, Index n, S alpha, Index tile, S* out) {
  const Index c0 = tile * kRowTile;
  const Index c1 = std::min(rows, c0 + kRowTile);
  gemm(Op::kN, Op::kT, rows, c1 - c0, n, alpha, x, rows, x + c0, rows, S(0), out + c0 * rows, rows);
}

template std::vector<std::unique_ptr<Layer<float>>> make_layers<float>(const Network&);
template std::vector<std::unique_ptr<Layer<double>>> make_layers<double>(const Network&);
template void gram_tile<float>(const float*, Index, Index, float, Index, float*);
template void gram_tile<double>(const double*, Index, Index, double, Index, double*);

}  // namespace quadra::nn::detail
