// Normalization layers. See norm_layers.hpp.
//
// Per sample x (D values, C-H-W order) the layer computes a normalised z and y = γ ⊙ z + β,
// with γ, β broadcast over K affine channels of s = D / K consecutive values (no γ, β without
// affine):
//   BatchNorm (running statistics): z = (x − μ_c) r_c, r_c = 1/sqrt(σ²_c + eps), per channel c
//     (K = C, a feature of a flat input is a channel of 1x1); z is affine in x, J = diag(r).
//   LayerNorm / GroupNorm: x splits into G groups of m = D / G consecutive values (LayerNorm:
//     G = 1, K = D); per group μ = mean(x), σ² = mean((x − μ)²) (biased, as PyTorch), r =
//     1/sqrt(σ² + eps), z = (x − μ) r. Its Jacobian is symmetric,
//       J ẋ = r (ẋ − mean(ẋ) − z·mean(z ⊙ ẋ)),
//     and the derivative of f = Jᵀ w (w fixed) along ẋ, with a = mean(z ⊙ ẋ), b = mean(z ⊙ w),
//     ż = J ẋ and ṙ = −r² a, is
//       ḟ = −r² a (w − mean(w) − z b) − r b ż − r z mean(ż ⊙ w).
// Parameter derivatives: ∂ℓ/∂γ_k = Σ_{i∈k} dy_i z_i, ∂ℓ/∂β_k = Σ_{i∈k} dy_i. The second-order
// terms of the Hessian's R-operator: on the input adjoint Jᵀ(v_γ ⊙ g) + ḟ with w = γ ⊙ g (the
// latter zero for BatchNorm); on γ the mixed term Σ g ż, which needs the forward input beside
// its tangent (Pair::x_primal).
//
// BatchNorm with batch statistics: per channel c the M values of all samples of the batch (and
// positions) share μ_c = mean(x), σ²_c = mean((x − μ)²) (biased), r_c = 1/sqrt(σ²_c + eps), and
// z = (x − μ) r. The formulas are LayerNorm's with the means taken over the batch, per channel:
//   ż = r (ẋ − mean(ẋ) − z mean(z ⊙ ẋ)),  Jᵀ w = r (w − mean(w) − z mean(z ⊙ w)),
//   ḟ = −r² a (w − mean(w) − z b) − r b ż − r z mean(ż ⊙ w), a = mean(z ⊙ ẋ), b = mean(z ⊙ w),
// so every tangent and adjoint needs sums over the batch: the engine calls batch_forward,
// batch_tangent and batch_backward at a barrier, with the whole batch. Their sums are partials
// per sample chunk added in chunk order (and across ranks), so thread-count independent.
// batch_forward keeps μ and r in shift_ and scale_, so the per-sample z of the reductions is the
// batch one; batch_tangent keeps mean(ẋ) and mean(z ⊙ ẋ) for the R-term's ż.

#include "norm_layers.hpp"

#include <cmath>
#include <vector>

#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

namespace quadra::nn::detail {
namespace {

template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

template <class S>
class NormLayer final : public Layer<S> {
 public:
  NormLayer(const Network& network, Index index)
      : Layer<S>(network.layers()[static_cast<std::size_t>(index)],
                 network.input_shape(index),
                 network.shapes()[static_cast<std::size_t>(index) + 1],
                 network.parameter_offset(index)) {
    const LayerSpec& spec = this->spec_;
    const Index d = this->in_size_;
    const Index channels = this->in_.dims[0];
    batch_ = spec.kind == LayerKind::kBatchNorm;
    batch_stats_ = batch_ && spec.mode == NormMode::kBatchStatistics;
    affine_ = spec.affine;
    eps_ = spec.eps;
    if (spec.kind == LayerKind::kLayerNorm) {
      k_ = d;
      groups_ = 1;
    } else {
      k_ = channels;
      groups_ = batch_ ? 1 : spec.groups;
    }
    s_ = d / k_;
    m_ = d / groups_;
    if (batch_) {
      // Running statistics folded into z = x r − μ r, in double and then rounded once.
      shift_.resize(k_);
      scale_.resize(k_);
      const auto& values = network.buffer_values();
      const BufferInfo* mean = nullptr;
      const BufferInfo* var = nullptr;
      for (const BufferInfo& b : network.buffers()) {
        if (b.layer != index) continue;
        if (b.name.ends_with(".running_mean")) mean = &b;
        if (b.name.ends_with(".running_var")) var = &b;
      }
      if (mean == nullptr || var == nullptr) {
        throw Error(fmt_missing(index));
      }
      for (Index c = 0; c < k_; ++c) {
        const double r = 1.0 / std::sqrt(values[static_cast<std::size_t>(var->offset + c)] + eps_);
        scale_[c] = static_cast<S>(r);
        shift_[c] = static_cast<S>(values[static_cast<std::size_t>(mean->offset + c)]);
      }
    }
  }

  [[nodiscard]] Index num_params() const override { return affine_ ? 2 * k_ : 0; }

  void forward(const S* theta, CMatMap<S> x, MatMap<S> y) const override {
    if (batch_) {  // one pass: z is per-channel affine in x
      const S* g = affine_ ? gamma(theta) : nullptr;
      for (Index j = 0; j < x.cols(); ++j) {
        const S* xj = x.col(j).data();
        S* yj = y.col(j).data();
        for (Index k = 0; k < k_; ++k) {
          const S mu = shift_[k];
          const S r = scale_[k];
          if (g == nullptr) {
            for (Index i = k * s_; i < (k + 1) * s_; ++i) yj[i] = (xj[i] - mu) * r;
          } else {
            const S gk = g[k];
            const S bk = g[k_ + k];
            for (Index i = k * s_; i < (k + 1) * s_; ++i) yj[i] = gk * ((xj[i] - mu) * r) + bk;
          }
        }
      }
      return;
    }
    Work w(*this);
    for (Index j = 0; j < x.cols(); ++j) {
      normalize(x.col(j).data(), w);
      S* yj = y.col(j).data();
      for (Index i = 0; i < this->in_size_; ++i) yj[i] = w.z[i];
      if (affine_) scale_shift(gamma(theta), gamma(theta) + k_, yj);
    }
  }

  void backward(const S* theta, CMatMap<S> x, CMatMap<S>, CMatMap<S> dy,
                MatMap<S> dx) const override {
    if (batch_) {  // J = diag(r): dx = r ⊙ (γ ⊙ dy) in one pass
      const S* g = affine_ ? gamma(theta) : nullptr;
      for (Index j = 0; j < x.cols(); ++j) {
        const S* dyj = dy.col(j).data();
        S* out = dx.col(j).data();
        for (Index k = 0; k < k_; ++k) {
          const S r = scale_[k];
          const S gk = g != nullptr ? g[k] : S(1);
          for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] = r * (gk * dyj[i]);
        }
      }
      return;
    }
    Work w(*this);
    Vec<S> a(this->in_size_);
    for (Index j = 0; j < x.cols(); ++j) {
      normalize(x.col(j).data(), w);
      times_gamma(theta, dy.col(j).data(), a.data());
      S* out = dx.col(j).data();
      for (Index i = 0; i < this->in_size_; ++i) out[i] = S(0);
      add_jacobian_times(w, a.data(), out);
    }
  }

  void tangent(const S* theta, const S* v, CMatMap<S> x, CMatMap<S>, const S* xdot,
               MatMap<S> ydot) const override {
    const Index d = this->in_size_;
    if (batch_) {  // ẏ = γ ⊙ (r ⊙ ẋ) + v_γ ⊙ z + v_β in one pass
      for (Index j = 0; j < x.cols(); ++j) {
        const S* xj = x.col(j).data();
        const S* xd = xdot != nullptr ? xdot + j * d : nullptr;
        S* out = ydot.col(j).data();
        for (Index k = 0; k < k_; ++k) {
          const S mu = shift_[k];
          const S r = scale_[k];
          const S gk = affine_ ? gamma(theta)[k] : S(1);
          const S vg = affine_ ? gamma(v)[k] : S(0);
          const S vb = affine_ ? gamma(v)[k_ + k] : S(0);
          for (Index i = k * s_; i < (k + 1) * s_; ++i) {
            S value = xd == nullptr ? S(0) : (affine_ ? gk * (r * xd[i]) : r * xd[i]);
            if (affine_) value += vg * ((xj[i] - mu) * r) + vb;
            out[i] = value;
          }
        }
      }
      return;
    }
    Work w(*this);
    for (Index j = 0; j < x.cols(); ++j) {
      S* out = ydot.col(j).data();
      normalize(x.col(j).data(), w);
      for (Index i = 0; i < d; ++i) out[i] = S(0);
      if (xdot != nullptr) {
        add_jacobian_times(w, xdot + j * d, out);
        if (affine_) scale_shift(gamma(theta), nullptr, out);
      }
      if (affine_) {
        const S* vg = gamma(v);
        const S* vb = vg + k_;
        for (Index k = 0; k < k_; ++k) {
          for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] += vg[k] * w.z[i] + vb[k];
        }
      }
    }
  }

  void backward_second(const S* theta, const S* v, CMatMap<S> x, CMatMap<S>, const S* xdot,
                       CMatMap<S> g, MatMap<S> dx) const override {
    const Index d = this->in_size_;
    if (batch_) {  // J constant: only Jᵀ (v_γ ⊙ g)
      if (!affine_) return;
      for (Index j = 0; j < x.cols(); ++j) {
        const S* gj = g.col(j).data();
        S* out = dx.col(j).data();
        for (Index k = 0; k < k_; ++k) {
          const S r = scale_[k];
          const S vg = gamma(v)[k];
          for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] += r * (vg * gj[i]);
        }
      }
      return;
    }
    Work w(*this);
    Vec<S> a(d);
    for (Index j = 0; j < x.cols(); ++j) {
      normalize(x.col(j).data(), w);
      S* out = dx.col(j).data();
      const S* gj = g.col(j).data();
      if (affine_) {  // Jᵀ (v_γ ⊙ g)
        const S* vg = gamma(v);
        for (Index k = 0; k < k_; ++k) {
          for (Index i = k * s_; i < (k + 1) * s_; ++i) a[i] = vg[k] * gj[i];
        }
        add_jacobian_times(w, a.data(), out);
      }
      if (batch_ || xdot == nullptr) continue;  // BatchNorm's Jacobian is constant
      times_gamma(theta, gj, a.data());
      const S* xd = xdot + j * d;
      const S inv_m = S(1) / static_cast<S>(m_);
      for (Index grp = 0; grp < groups_; ++grp) {
        const Index b0 = grp * m_;
        const S r = w.r[grp];
        S xd_mean = 0, za = 0, wm = 0, zb = 0;
        for (Index i = b0; i < b0 + m_; ++i) {
          xd_mean += xd[i];
          za += w.z[i] * xd[i];
          wm += a[i];
          zb += w.z[i] * a[i];
        }
        xd_mean *= inv_m;
        za *= inv_m;
        wm *= inv_m;
        zb *= inv_m;
        S zdw = 0;  // mean(ż ⊙ w)
        for (Index i = b0; i < b0 + m_; ++i) {
          const S zdot = r * (xd[i] - xd_mean - w.z[i] * za);
          zdw += zdot * a[i];
        }
        zdw *= inv_m;
        for (Index i = b0; i < b0 + m_; ++i) {
          const S zdot = r * (xd[i] - xd_mean - w.z[i] * za);
          out[i] += -r * r * za * (a[i] - wm - w.z[i] * zb) - r * zb * zdot - r * w.z[i] * zdw;
        }
      }
    }
  }

  [[nodiscard]] Index reduce_tasks(Index n, Index chunk) const override {
    return affine_ ? (n + chunk - 1) / chunk : 0;
  }
  [[nodiscard]] bool tasks_are_chunks() const override { return true; }

  void reduce_block(Index count, const std::vector<Pair<S>>& pairs, ReduceMode mode, S alpha,
                    S* out) const override {
    const Index d = this->in_size_;
    Work w(*this);
    Vec<S> grad(2 * k_);
    for (const Pair<S>& p : pairs) {
      for (Index j = 0; j < count; ++j) {
        const S* dy = p.dy + j * d;
        if (p.x_primal != nullptr) {
          // x is the tangent ẋ of the forward input: the γ part is Σ dy ż with ż = J ẋ.
          normalize(p.x_primal + j * d, w);
          if (batch_stats_) {
            batch_zdot(w.z.data(), p.x + j * d, w.zdot.data());
          } else {
            for (Index i = 0; i < d; ++i) w.zdot[i] = S(0);
            add_jacobian_times(w, p.x + j * d, w.zdot.data());
          }
          sample_gradient(dy, w.zdot.data(), p.bias, grad.data());
        } else if (batch_) {
          batch_sample_gradient(dy, p.x + j * d, p.bias, grad.data());
        } else {
          normalize(p.x + j * d, w);
          sample_gradient(dy, w.z.data(), p.bias, grad.data());
        }
        if (mode == ReduceMode::kSum) {
          for (Index k = 0; k < 2 * k_; ++k) out[k] += alpha * grad[k];
        } else {  // kSquared: one pair, per-sample squares
          for (Index k = 0; k < 2 * k_; ++k) out[k] += alpha * grad[k] * grad[k];
        }
      }
    }
  }

  // ---- batch statistics ----------------------------------------------------------------------

  [[nodiscard]] bool couples_samples() const override { return batch_stats_; }
  [[nodiscard]] const Vec<S>* batch_mean() const override {
    return batch_stats_ ? &shift_ : nullptr;
  }
  [[nodiscard]] const Vec<S>* batch_variance() const override {
    return batch_stats_ ? &variance_ : nullptr;
  }

  void batch_forward(const BatchContext<S>& ctx, const S* theta, CMatMap<S> x,
                     MatMap<S> y) override {
    const Index n = x.cols();
    shift_ = channel_means(ctx, n, 1, [&](Index j, S* acc) {
      const S* xj = x.col(j).data();
      for (Index k = 0; k < k_; ++k) {
        for (Index i = k * s_; i < (k + 1) * s_; ++i) acc[k] += xj[i];
      }
    });
    variance_ = channel_means(ctx, n, 1, [&](Index j, S* acc) {
      const S* xj = x.col(j).data();
      for (Index k = 0; k < k_; ++k) {
        for (Index i = k * s_; i < (k + 1) * s_; ++i) {
          acc[k] += (xj[i] - shift_[k]) * (xj[i] - shift_[k]);
        }
      }
    });
    for (Index k = 0; k < k_; ++k) {
      scale_[k] = S(1) / std::sqrt(variance_[k] + static_cast<S>(eps_));
    }
    parallel_for_chunks(n, ctx.chunk, [&](const ChunkRange& r) {
      forward(theta, CMatMap<S>(x.col(r.begin).data(), x.rows(), r.size()),
              MatMap<S>(y.col(r.begin).data(), y.rows(), r.size()));
    });
  }

  void batch_tangent(const BatchContext<S>& ctx, const S* theta, const S* v, CMatMap<S> x,
                     const S* xdot, MatMap<S> ydot) override {
    const Index n = x.cols();
    const Index d = this->in_size_;
    tangent_mean_ = Vec<S>::Zero(k_);
    tangent_zmean_ = Vec<S>::Zero(k_);
    if (xdot != nullptr) {
      const Vec<S> means = channel_means(ctx, n, 2, [&](Index j, S* acc) {
        const S* xj = x.col(j).data();
        const S* tj = xdot + j * d;
        for (Index k = 0; k < k_; ++k) {
          for (Index i = k * s_; i < (k + 1) * s_; ++i) {
            acc[k] += tj[i];
            acc[k_ + k] += (xj[i] - shift_[k]) * scale_[k] * tj[i];
          }
        }
      });
      tangent_mean_ = means.head(k_);
      tangent_zmean_ = means.tail(k_);
    }
    parallel_for_chunks(n, ctx.chunk, [&](const ChunkRange& r) {
      Vec<S> z(d);
      for (Index j = r.begin; j < r.end; ++j) {
        const S* xj = x.col(j).data();
        S* out = ydot.col(j).data();
        for (Index k = 0; k < k_; ++k) {
          for (Index i = k * s_; i < (k + 1) * s_; ++i) z[i] = (xj[i] - shift_[k]) * scale_[k];
        }
        if (xdot != nullptr) {
          batch_zdot(z.data(), xdot + j * d, out);
          if (affine_) scale_shift(gamma(theta), nullptr, out);
        } else {
          for (Index i = 0; i < d; ++i) out[i] = S(0);
        }
        if (affine_) {
          const S* vg = gamma(v);
          const S* vb = vg + k_;
          for (Index k = 0; k < k_; ++k) {
            for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] += vg[k] * z[i] + vb[k];
          }
        }
      }
    });
  }

  void batch_backward(const BatchContext<S>& ctx, const S* theta, const S* v, CMatMap<S> x,
                      CMatMap<S> g, const S* xdot, const S* delta, MatMap<S> dx,
                      bool add) override {
    const Index n = x.cols();
    const Index d = this->in_size_;
    // w = γ ⊙ g (+ v_γ ⊙ δ for the R-operator: Jᵀ is linear in w); w1 = γ ⊙ δ for ḟ.
    const bool second = v != nullptr && xdot != nullptr;
    const S* gam = affine_ ? gamma(theta) : nullptr;
    const S* vg = affine_ && v != nullptr ? gamma(v) : nullptr;
    const auto w_at = [&](Index k, Index i, Index j) {
      S w = (gam != nullptr ? gam[k] : S(1)) * g(i, j);
      if (vg != nullptr) w += vg[k] * delta[j * d + i];
      return w;
    };
    const auto w1_at = [&](Index k, Index i, Index j) {
      return (gam != nullptr ? gam[k] : S(1)) * delta[j * d + i];
    };
    const auto z_at = [&](Index k, Index i, Index j) { return (x(i, j) - shift_[k]) * scale_[k]; };
    const Index q = second ? 6 : 2;
    const Vec<S> means = channel_means(ctx, n, q, [&](Index j, S* acc) {
      for (Index k = 0; k < k_; ++k) {
        for (Index i = k * s_; i < (k + 1) * s_; ++i) {
          const S z = z_at(k, i, j);
          const S w = w_at(k, i, j);
          acc[k] += w;
          acc[k_ + k] += z * w;
          if (!second) continue;
          const S xd = xdot[j * d + i];
          const S w1 = w1_at(k, i, j);
          acc[2 * k_ + k] += xd;
          acc[3 * k_ + k] += z * xd;
          acc[4 * k_ + k] += w1;
          acc[5 * k_ + k] += z * w1;
        }
      }
    });
    const auto zdot_at = [&](Index k, Index i, Index j) {
      return scale_[k] * (xdot[j * d + i] - means[2 * k_ + k] - z_at(k, i, j) * means[3 * k_ + k]);
    };
    Vec<S> zdw;  // mean(ż ⊙ w1)
    if (second) {
      zdw = channel_means(ctx, n, 1, [&](Index j, S* acc) {
        for (Index k = 0; k < k_; ++k) {
          for (Index i = k * s_; i < (k + 1) * s_; ++i) acc[k] += zdot_at(k, i, j) * w1_at(k, i, j);
        }
      });
    }
    parallel_for_chunks(n, ctx.chunk, [&](const ChunkRange& r) {
      for (Index j = r.begin; j < r.end; ++j) {
        for (Index k = 0; k < k_; ++k) {
          const S rk = scale_[k];
          for (Index i = k * s_; i < (k + 1) * s_; ++i) {
            const S z = z_at(k, i, j);
            S value = rk * (w_at(k, i, j) - means[k] - z * means[k_ + k]);
            if (second) {
              const S a = means[3 * k_ + k];
              const S b = means[5 * k_ + k];
              value += -rk * rk * a * (w1_at(k, i, j) - means[4 * k_ + k] - z * b) -
                       rk * b * zdot_at(k, i, j) - rk * z * zdw[k];
            }
            if (add) {
              dx(i, j) += value;
            } else {
              dx(i, j) = value;
            }
          }
        }
      }
    });
  }

  void per_sample(CMatMap<S> dy, CMatMap<S> x, S* out, Index ld) const override {
    if (!affine_) return;
    Work w(*this);
    for (Index j = 0; j < x.cols(); ++j) {
      if (batch_) {
        batch_sample_gradient(dy.col(j).data(), x.col(j).data(), true, out + j * ld);
        continue;
      }
      normalize(x.col(j).data(), w);
      sample_gradient(dy.col(j).data(), w.z.data(), true, out + j * ld);
    }
  }

 private:
  /// Per-sample scratch: z, the groups' r, and a tangent.
  struct Work {
    explicit Work(const NormLayer& layer)
        : z(layer.in_size_), zdot(layer.in_size_), r(layer.groups_) {}
    Vec<S> z;
    Vec<S> zdot;
    Vec<S> r;
  };

  static std::string fmt_missing(Index index) {
    return "batchnorm layer " + std::to_string(index) + " has no running statistics";
  }

  /// Per-channel means over the batch of q quantities: `add(j, acc)` adds sample j's values to
  /// acc[0..q·K); partials per chunk, added in chunk order, then across ranks, divided by the
  /// batch's values per channel.
  template <class F>
  Vec<S> channel_means(const BatchContext<S>& ctx, Index n, Index q, F&& add) const {
    const auto chunks = num_chunks(n, ctx.chunk);
    Mat<S> partial = Mat<S>::Zero(q * k_, chunks);
    parallel_for_chunks(n, ctx.chunk, [&](const ChunkRange& r) {
      S* acc = partial.col(r.index).data();
      for (Index j = r.begin; j < r.end; ++j) add(j, acc);
    });
    Vec<S> sum = Vec<S>::Zero(q * k_);
    for (Index c = 0; c < chunks; ++c) sum += partial.col(c);
    ctx.sum_over_ranks(sum.data(), sum.size());
    return sum / static_cast<S>(ctx.total * s_);
  }

  /// out = ż = r (ẋ − mean(ẋ) − z mean(z ⊙ ẋ)) of one sample with the last batch_tangent's means.
  void batch_zdot(const S* z, const S* xdot, S* out) const {
    for (Index k = 0; k < k_; ++k) {
      for (Index i = k * s_; i < (k + 1) * s_; ++i) {
        out[i] = scale_[k] * (xdot[i] - tangent_mean_[k] - z[i] * tangent_zmean_[k]);
      }
    }
  }

  const S* gamma(const S* theta) const { return theta + this->offset_; }

  /// z (and r per group) of one sample.
  void normalize(const S* x, Work& w) const {
    if (batch_) {
      for (Index k = 0; k < k_; ++k) {
        for (Index i = k * s_; i < (k + 1) * s_; ++i) w.z[i] = (x[i] - shift_[k]) * scale_[k];
      }
      return;
    }
    const S inv_m = S(1) / static_cast<S>(m_);
    for (Index grp = 0; grp < groups_; ++grp) {
      const Index b0 = grp * m_;
      S mean = 0;
      for (Index i = b0; i < b0 + m_; ++i) mean += x[i];
      mean *= inv_m;
      S var = 0;
      for (Index i = b0; i < b0 + m_; ++i) var += (x[i] - mean) * (x[i] - mean);
      var *= inv_m;
      const S r = S(1) / std::sqrt(var + static_cast<S>(eps_));
      w.r[grp] = r;
      for (Index i = b0; i < b0 + m_; ++i) w.z[i] = (x[i] - mean) * r;
    }
  }

  /// out += J u for the sample normalised in `w` (J is symmetric, so also Jᵀ u).
  void add_jacobian_times(const Work& w, const S* u, S* out) const {
    if (batch_) {
      for (Index k = 0; k < k_; ++k) {
        for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] += scale_[k] * u[i];
      }
      return;
    }
    const S inv_m = S(1) / static_cast<S>(m_);
    for (Index grp = 0; grp < groups_; ++grp) {
      const Index b0 = grp * m_;
      S mean = 0, zu = 0;
      for (Index i = b0; i < b0 + m_; ++i) {
        mean += u[i];
        zu += w.z[i] * u[i];
      }
      mean *= inv_m;
      zu *= inv_m;
      const S r = w.r[grp];
      for (Index i = b0; i < b0 + m_; ++i) out[i] += r * (u[i] - mean - w.z[i] * zu);
    }
  }

  /// out = γ ⊙ u (u itself without affine parameters).
  void times_gamma(const S* theta, const S* u, S* out) const {
    if (!affine_) {
      for (Index i = 0; i < this->in_size_; ++i) out[i] = u[i];
      return;
    }
    const S* g = gamma(theta);
    for (Index k = 0; k < k_; ++k) {
      for (Index i = k * s_; i < (k + 1) * s_; ++i) out[i] = g[k] * u[i];
    }
  }

  /// y = γ ⊙ y + β in place (β null: no shift).
  void scale_shift(const S* g, const S* b, S* y) const {
    for (Index k = 0; k < k_; ++k) {
      for (Index i = k * s_; i < (k + 1) * s_; ++i) y[i] = g[k] * y[i] + (b != nullptr ? b[k] : S(0));
    }
  }

  /// out[0..K) = Σ dy ⊙ z per channel, out[K..2K) = Σ dy per channel (zero without `bias`).
  void sample_gradient(const S* dy, const S* z, bool bias, S* out) const {
    for (Index k = 0; k < k_; ++k) {
      S sg = 0, sb = 0;
      for (Index i = k * s_; i < (k + 1) * s_; ++i) {
        sg += dy[i] * z[i];
        sb += dy[i];
      }
      out[k] = sg;
      out[k_ + k] = bias ? sb : S(0);
    }
  }

  /// sample_gradient of BatchNorm from x, with z formed on the fly (no pass writing z) and
  /// vector partial sums (a scalar sum is one long dependency chain).
  void batch_sample_gradient(const S* dy, const S* x, bool bias, S* out) const {
    using Seg = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;
    for (Index k = 0; k < k_; ++k) {
      const Seg d(dy + k * s_, s_);
      out[k] = (d * ((Seg(x + k * s_, s_) - shift_[k]) * scale_[k])).sum();
      out[k_ + k] = bias ? d.sum() : S(0);
    }
  }

  bool batch_ = false;
  bool affine_ = true;
  double eps_ = 1e-5;
  Index k_ = 1;       // affine channels
  Index s_ = 1;       // values per affine channel
  Index groups_ = 1;  // normalisation groups (LayerNorm, GroupNorm)
  Index m_ = 1;       // values per group
  bool batch_stats_ = false;  // BatchNorm with batch statistics
  Vec<S> shift_;      // BatchNorm: running (or batch) mean
  Vec<S> scale_;      // BatchNorm: 1/sqrt(running (or batch) variance + eps)
  Vec<S> variance_;       // batch statistics: the biased batch variance
  Vec<S> tangent_mean_;   // batch statistics: mean(ẋ) of the last batch_tangent
  Vec<S> tangent_zmean_;  // and mean(z ⊙ ẋ)
};

}  // namespace

template <class S>
std::unique_ptr<Layer<S>> make_norm_layer(const Network& network, Index index) {
  return std::make_unique<NormLayer<S>>(network, index);
}

template std::unique_ptr<Layer<float>> make_norm_layer<float>(const Network&, Index);
template std::unique_ptr<Layer<double>> make_norm_layer<double>(const Network&, Index);

}  // namespace quadra::nn::detail
