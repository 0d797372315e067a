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

#include "norm_layers.hpp"

#include <cmath>
#include <vector>

#include <quadra/error.hpp>

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

  void reduce(Index task, Index n, Index chunk, const std::vector<Pair<S>>& pairs,
              ReduceMode mode, S alpha, bool /*overwrite: never, tasks are chunks*/,
              S* out) const override {
    const Index begin = task * chunk;
    const Index end = std::min(n, begin + chunk);
    const Index d = this->in_size_;
    Work w(*this);
    Vec<S> grad(2 * k_);
    for (const Pair<S>& p : pairs) {
      for (Index j = begin; j < end; ++j) {
        const S* dy = p.dy + j * d;
        if (p.x_primal != nullptr) {
          // x is the tangent ẋ of the forward input: the γ part is Σ dy ż with ż = J ẋ.
          normalize(p.x_primal + j * d, w);
          for (Index i = 0; i < d; ++i) w.zdot[i] = S(0);
          add_jacobian_times(w, p.x + j * d, w.zdot.data());
          sample_gradient(dy, w.zdot.data(), p.bias, grad.data());
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

  void per_sample(CMatMap<S> dy, CMatMap<S> x, S* out, Index ld) const override {
    if (!affine_) return;
    Work w(*this);
    for (Index j = 0; j < x.cols(); ++j) {
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

  bool batch_ = false;
  bool affine_ = true;
  double eps_ = 1e-5;
  Index k_ = 1;       // affine channels
  Index s_ = 1;       // values per affine channel
  Index groups_ = 1;  // normalisation groups (LayerNorm, GroupNorm)
  Index m_ = 1;       // values per group
  Vec<S> shift_;      // BatchNorm: running mean
  Vec<S> scale_;      // BatchNorm: 1/sqrt(running variance + eps)
};

}  // namespace

template <class S>
std::unique_ptr<Layer<S>> make_norm_layer(const Network& network, Index index) {
  return std::make_unique<NormLayer<S>>(network, index);
}

template std::unique_ptr<Layer<float>> make_norm_layer<float>(const Network&, Index);
template std::unique_ptr<Layer<double>> make_norm_layer<double>(const Network&, Index);

}  // namespace quadra::nn::detail
