// `kfac`: Kronecker-factored natural gradient (Martens & Grosse 2015). Each Linear/Conv2d
// layer's curvature block is approximated by S ⊗ A (see KroneckerFactor in curvature.hpp); the
// proposal is one direction, the preconditioned negative gradient d = -(S ⊗ A + damping)^-1 g
// per layer, with own coefficient `learning_rate`, or with `rescale` the minimiser of the
// exact damped model along d, -g'd / d'(C + lambda I)d (one curvature product; Martens &
// Grosse §6.4 without the momentum direction).
//
// Factors are fetched every `inverse_interval` steps (always on the first), averaged
// exponentially (`factor_decay`; the first fetch is taken as it is) and eigendecomposed then;
// the steps in between reuse the decompositions. The loop's lambda is the damping:
//   eigen:  exact (S ⊗ A + lambda I)^-1 in the Kronecker eigenbasis, 1 / (s_i a_j + lambda)
//   pi:     factored Tikhonov (S + sqrt(lambda)/pi I) ⊗ (A + pi sqrt(lambda) I),
//           pi = sqrt((tr A / dim A) / (tr S / dim S))   (Martens & Grosse §6.3)
// Factor eigenvalues are clamped at 0: the factors are second moments, so negative ones are
// rounding. The loop's weight decay is in C but not in the factors; it enters the step only
// through `rescale`. Parameters outside every layer get the plain negative gradient (identity
// preconditioner), scaled by the same coefficient.
//
// Labels for the `mc` variant are drawn with a seed mixed from `seed` and the loop's step, so
// runs, and runs resumed from a checkpoint, draw the same labels.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>
#include <quadra/sdk.hpp>

namespace {

using quadra::Index;
using quadra::KroneckerFactor;
using quadra::Status;
using Vec = quadra::Vector<double>;
using Mat = quadra::Matrix<double>;
using RowMajorMap =
    Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
using ConstRowMajorMap =
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

constexpr double kStateVersion = 1.0;

Index columns_of(const KroneckerFactor& f) { return f.in + (f.bias ? 1 : 0); }

/// The layer's part of a parameter-sized vector as the matrix [W b] (out x (in + bias)).
Mat gather(const KroneckerFactor& f, const Vec& v) {
  Mat m(f.out, columns_of(f));
  m.leftCols(f.in) = ConstRowMajorMap(v.data() + f.offset, f.out, f.in);
  if (f.bias) m.col(f.in) = v.segment(f.offset + f.out * f.in, f.out);
  return m;
}

void scatter(const KroneckerFactor& f, const Mat& m, Vec& out) {
  RowMajorMap(out.data() + f.offset, f.out, f.in) = m.leftCols(f.in);
  if (f.bias) out.segment(f.offset + f.out * f.in, f.out) = m.col(f.in);
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31U);
}

/// Shapes and finiteness of one layer's factors; `where` names their origin in messages.
Status check_factor(const KroneckerFactor& f, std::size_t index, const std::string& where) {
  const std::string layer = "kfac: " + where + " layer " + std::to_string(index);
  if (f.offset < 0 || f.out < 1 || f.in < 1) {
    return Status::invalid_argument(layer + " has offset " + std::to_string(f.offset) + ", out " +
                                    std::to_string(f.out) + ", in " + std::to_string(f.in) +
                                    "; expected offset >= 0, out >= 1, in >= 1");
  }
  const Index dim = columns_of(f);
  if (f.a.rows() != dim || f.a.cols() != dim || f.s.rows() != f.out || f.s.cols() != f.out) {
    return Status::invalid_argument(
        layer + " has A " + std::to_string(f.a.rows()) + " x " + std::to_string(f.a.cols()) +
        " and S " + std::to_string(f.s.rows()) + " x " + std::to_string(f.s.cols()) +
        "; expected A " + std::to_string(dim) + " x " + std::to_string(dim) + " and S " +
        std::to_string(f.out) + " x " + std::to_string(f.out));
  }
  if (!f.a.allFinite() || !f.s.allFinite()) {
    return Status::numerical_issue(layer + " has non-finite factors");
  }
  return Status::ok();
}

bool same_layout(const KroneckerFactor& a, const KroneckerFactor& b) {
  return a.offset == b.offset && a.out == b.out && a.in == b.in && a.bias == b.bias;
}

/// One layer: the averaged factors and their eigendecompositions.
struct Layer {
  KroneckerFactor factor;
  Vec a_values;
  Mat a_vectors;
  Vec s_values;
  Mat s_vectors;
};

Status eigendecompose(Layer& layer, std::size_t index) {
  const Eigen::SelfAdjointEigenSolver<Mat> a(layer.factor.a), s(layer.factor.s);
  if (a.info() != Eigen::Success || s.info() != Eigen::Success) {
    return Status::numerical_issue("kfac: the eigendecomposition of layer " +
                                   std::to_string(index) + "'s factors did not converge");
  }
  layer.a_values = a.eigenvalues().cwiseMax(0.0);
  layer.a_vectors = a.eigenvectors();
  layer.s_values = s.eigenvalues().cwiseMax(0.0);
  layer.s_vectors = s.eigenvectors();
  return Status::ok();
}

/// Reads a checkpoint state front to back, with one message for every shortfall.
class StateReader {
 public:
  explicit StateReader(const std::vector<double>& state) : state_(state) {}
  Status count(const char* what, Index& out) {
    if (Status s = need(1, what); !s.is_ok()) return s;
    const double v = state_[at_];
    if (!(v >= 0.0) || !(v <= 9007199254740992.0) || v != std::floor(v)) {
      return Status::invalid_argument("kfac: checkpoint state entry " + std::to_string(at_) +
                                      " (" + what + ") is " + std::to_string(v) +
                                      ", expected a non-negative integer");
    }
    out = static_cast<Index>(v);
    ++at_;
    return Status::ok();
  }
  Status matrix(const char* what, Index rows, Index cols, Mat& out) {
    Index r = 0, c = 0;
    if (Status s = count(what, r); !s.is_ok()) return s;
    if (Status s = count(what, c); !s.is_ok()) return s;
    if (r != rows || c != cols) {
      return Status::invalid_argument("kfac: checkpoint state has a " + std::to_string(r) + " x " +
                                      std::to_string(c) + " " + what + ", expected " +
                                      std::to_string(rows) + " x " + std::to_string(cols));
    }
    if (Status s = need(static_cast<std::size_t>(rows * cols), what); !s.is_ok()) return s;
    out = Eigen::Map<const Mat>(state_.data() + at_, rows, cols);
    at_ += static_cast<std::size_t>(rows * cols);
    return Status::ok();
  }
  [[nodiscard]] bool done() const { return at_ == state_.size(); }
  [[nodiscard]] std::size_t position() const { return at_; }

 private:
  Status need(std::size_t entries, const char* what) const {
    if (state_.size() - at_ < entries) {
      return Status::invalid_argument("kfac: checkpoint state ends after " +
                                      std::to_string(state_.size()) + " entries, expected " +
                                      std::to_string(entries) + " more for the " + what);
    }
    return Status::ok();
  }
  const std::vector<double>& state_;
  std::size_t at_ = 0;
};

class KfacSolver final : public quadra::Solver {
 public:
  explicit KfacSolver(const quadra::OptionValues& options)
      : variant_(parse_variant(options.get_string("variant"))),
        mc_samples_(static_cast<int>(options.get_int("mc_samples"))),
        seed_(static_cast<std::uint64_t>(options.get_int("seed"))),
        factor_decay_(options.get_real("factor_decay")),
        inverse_interval_(options.get_int("inverse_interval")),
        pi_damping_(options.get_string("damping_style") == "pi"),
        learning_rate_(options.get_real("learning_rate")),
        rescale_(options.get_bool("rescale")) {}

  bool uses_curvature() const override { return true; }

  Status propose(quadra::IQuadraticModel& model, double lambda, quadra::Directions& out) override {
    if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
      return Status::invalid_argument("kfac: lambda must be finite and >= 0, found " +
                                      std::to_string(lambda));
    }
    const Index n = model.num_parameters();
    Vec g(n);
    if (Status s = model.gradient(g); !s.is_ok()) return s;
    if (!g.allFinite()) return Status::numerical_issue("kfac: the gradient has non-finite entries");
    if (steps_ % inverse_interval_ == 0) {
      if (Status s = refresh(model); !s.is_ok()) return s;  // state unchanged on failure
    }
    ++steps_;
    if (Status s = check_coverage(n); !s.is_ok()) return s;

    Vec d = -g;  // parameters outside every layer: identity preconditioner
    const double root = std::sqrt(lambda);
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      double pi = 1.0;
      if (pi_damping_) {
        pi = std::sqrt((layer.factor.a.trace() / static_cast<double>(layer.a_values.size())) /
                       (layer.factor.s.trace() / static_cast<double>(layer.s_values.size())));
        if (!(pi > 0.0) || !std::isfinite(pi)) pi = 1.0;  // a zero factor: no balance to keep
      }
      Mat rotated = layer.s_vectors.transpose() * gather(layer.factor, g) * layer.a_vectors;
      for (Index j = 0; j < rotated.cols(); ++j) {
        for (Index i = 0; i < rotated.rows(); ++i) {
          const double eigenvalue =
              pi_damping_ ? (layer.s_values(i) + root / pi) * (layer.a_values(j) + pi * root)
                          : layer.s_values(i) * layer.a_values(j) + lambda;
          if (!(eigenvalue > 0.0)) {
            return Status::numerical_issue("kfac: damped eigenvalue " + std::to_string(eigenvalue) +
                                           " of layer " + std::to_string(l) +
                                           " is not positive; increase lambda");
          }
          rotated(i, j) /= eigenvalue;
        }
      }
      scatter(layer.factor, -(layer.s_vectors * rotated * layer.a_vectors.transpose()), d);
    }
    if (!d.allFinite()) return Status::numerical_issue("kfac: the direction has non-finite entries");

    double coefficient = learning_rate_;
    if (rescale_) {
      Vec product(n);
      if (Status s = model.curvature_times(d, product); !s.is_ok()) return s;
      if (!product.allFinite()) {
        return Status::numerical_issue("kfac: the curvature product along the direction has "
                                       "non-finite entries");
      }
      const double curvature = d.dot(product) + lambda * d.squaredNorm();
      const double minimiser = -g.dot(d) / curvature;
      if (curvature > 0.0 && std::isfinite(minimiser)) coefficient = minimiser;
    }
    out.basis = d;
    out.own_coefficients = Vec::Constant(1, coefficient);
    out.iterations = 0;
    return Status::ok();
  }

  // Layout: {version 1, steps, layers, then per layer: offset, out, in, bias (0/1),
  //          A rows, A cols, A (column-major), S rows, S cols, S (column-major)}.
  // Decompositions are recomputed on load: the same matrices give the same ones.
  Status save_state(std::vector<double>& out) const override {
    out.clear();
    out.push_back(kStateVersion);
    out.push_back(static_cast<double>(steps_));
    out.push_back(static_cast<double>(layers_.size()));
    for (const Layer& layer : layers_) {
      const KroneckerFactor& f = layer.factor;
      out.insert(out.end(), {static_cast<double>(f.offset), static_cast<double>(f.out),
                             static_cast<double>(f.in), f.bias ? 1.0 : 0.0});
      for (const Mat* m : {&f.a, &f.s}) {
        out.push_back(static_cast<double>(m->rows()));
        out.push_back(static_cast<double>(m->cols()));
        out.insert(out.end(), m->data(), m->data() + m->size());
      }
    }
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    StateReader reader(state);
    if (state.empty() || state[0] != kStateVersion) {
      return Status::invalid_argument(
          "kfac: checkpoint state has layout version " +
          (state.empty() ? std::string("(none, the state is empty)") : std::to_string(state[0])) +
          ", expected 1");
    }
    Index version = 0, steps = 0, count = 0;
    if (Status s = reader.count("layout version", version); !s.is_ok()) return s;
    if (Status s = reader.count("step count", steps); !s.is_ok()) return s;
    if (Status s = reader.count("number of layers", count); !s.is_ok()) return s;
    std::vector<Layer> layers;
    for (Index l = 0; l < count; ++l) {
      Layer layer;
      KroneckerFactor& f = layer.factor;
      Index bias = 0;
      if (Status s = reader.count("layer offset", f.offset); !s.is_ok()) return s;
      if (Status s = reader.count("layer output size", f.out); !s.is_ok()) return s;
      if (Status s = reader.count("layer input size", f.in); !s.is_ok()) return s;
      if (Status s = reader.count("layer bias flag", bias); !s.is_ok()) return s;
      if (bias > 1) {
        return Status::invalid_argument("kfac: checkpoint state has bias flag " +
                                        std::to_string(bias) + " for layer " + std::to_string(l) +
                                        ", expected 0 or 1");
      }
      f.bias = bias == 1;
      const Index dim = columns_of(f);
      if (Status s = reader.matrix("input factor A", dim, dim, f.a); !s.is_ok()) return s;
      if (Status s = reader.matrix("output factor S", f.out, f.out, f.s); !s.is_ok()) return s;
      const auto index = static_cast<std::size_t>(l);
      if (!f.a.allFinite() || !f.s.allFinite()) {
        return Status::invalid_argument("kfac: checkpoint state has non-finite factors for layer " +
                                        std::to_string(l));
      }
      if (Status s = check_factor(f, index, "checkpoint state"); !s.is_ok()) return s;
      if (Status s = eigendecompose(layer, index); !s.is_ok()) return s;
      layers.push_back(std::move(layer));
    }
    if (!reader.done()) {
      return Status::invalid_argument("kfac: checkpoint state has " + std::to_string(state.size()) +
                                      " entries, expected " + std::to_string(reader.position()) +
                                      " for " + std::to_string(count) + " layers");
    }
    steps_ = steps;
    layers_ = std::move(layers);
    return Status::ok();
  }

 private:
  static quadra::KfacVariant parse_variant(const std::string& name) {
    if (name == "mc") return quadra::KfacVariant::kMc;
    if (name == "empirical") return quadra::KfacVariant::kEmpirical;
    return quadra::KfacVariant::kType2;  // the schema admits nothing else
  }

  /// Fetches factors, folds them into the averages and decomposes; commits only on success.
  Status refresh(quadra::IQuadraticModel& model) {
    const std::uint64_t seed =
        splitmix64(seed_ ^ splitmix64(static_cast<std::uint64_t>(model.step())));
    std::vector<KroneckerFactor> fresh;
    if (Status s = model.engine().kfac_factors(variant_, mc_samples_, seed, fresh); !s.is_ok()) {
      return s;
    }
    if (!layers_.empty() && fresh.size() != layers_.size()) {
      return Status::invalid_argument("kfac: the engine returned factors for " +
                                      std::to_string(fresh.size()) + " layers, the averages hold " +
                                      std::to_string(layers_.size()));
    }
    std::vector<Layer> next(fresh.size());
    for (std::size_t l = 0; l < fresh.size(); ++l) {
      if (Status s = check_factor(fresh[l], l, "engine"); !s.is_ok()) return s;
      KroneckerFactor& f = next[l].factor;
      if (layers_.empty()) {
        f = std::move(fresh[l]);
      } else {
        const KroneckerFactor& old = layers_[l].factor;
        if (!same_layout(old, fresh[l])) {
          return Status::invalid_argument(
              "kfac: the engine's layer " + std::to_string(l) + " (offset " +
              std::to_string(fresh[l].offset) + ", " + std::to_string(fresh[l].out) + " x " +
              std::to_string(fresh[l].in) + ") differs from the averaged one (offset " +
              std::to_string(old.offset) + ", " + std::to_string(old.out) + " x " +
              std::to_string(old.in) + ")");
        }
        f.offset = old.offset;
        f.out = old.out;
        f.in = old.in;
        f.bias = old.bias;
        f.a = factor_decay_ * old.a + (1.0 - factor_decay_) * fresh[l].a;
        f.s = factor_decay_ * old.s + (1.0 - factor_decay_) * fresh[l].s;
      }
      if (Status s = eigendecompose(next[l], l); !s.is_ok()) return s;
    }
    layers_ = std::move(next);
    return Status::ok();
  }

  /// Every layer inside the parameter vector, no parameter in two layers.
  Status check_coverage(Index n) const {
    std::vector<bool> covered(static_cast<std::size_t>(n), false);
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const KroneckerFactor& f = layers_[l].factor;
      const Index size = f.out * columns_of(f);
      if (f.offset + size > n) {
        return Status::invalid_argument("kfac: layer " + std::to_string(l) + " spans parameters " +
                                        std::to_string(f.offset) + ".." +
                                        std::to_string(f.offset + size - 1) + ", the model has " +
                                        std::to_string(n));
      }
      for (Index i = f.offset; i < f.offset + size; ++i) {
        if (covered[static_cast<std::size_t>(i)]) {
          return Status::invalid_argument("kfac: layer " + std::to_string(l) +
                                          " overlaps another layer at parameter " +
                                          std::to_string(i));
        }
        covered[static_cast<std::size_t>(i)] = true;
      }
    }
    return Status::ok();
  }

  quadra::KfacVariant variant_;
  int mc_samples_;
  std::uint64_t seed_;
  double factor_decay_;
  std::int64_t inverse_interval_;
  bool pi_damping_;
  double learning_rate_;
  bool rescale_;
  std::int64_t steps_ = 0;    // proposals so far
  std::vector<Layer> layers_;  // averaged factors; empty before the first fetch
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<KfacSolver>(
      {"kfac", "Kronecker-factored natural gradient (K-FAC, Martens & Grosse 2015)",
       {OptionSpec::choice("variant", "type-2", {"type-2", "mc", "empirical"},
                           "output-gradient moment: exact loss-Hessian factor, sampled labels, "
                           "or true labels"),
        OptionSpec::integer("mc_samples", 1, "labels sampled per example (variant=mc)")
            .in_range(1, 1000),
        OptionSpec::integer("seed", 0, "seed of the sampled labels, mixed with the step (variant=mc)")
            .at_least(0),
        OptionSpec::real("factor_decay", 0.95,
                         "weight of the old average when new factors arrive (0: no averaging)")
            .in_range(0.0, 1.0),
        OptionSpec::integer("inverse_interval", 10,
                            "steps between fetching factors and refreshing their eigenbases")
            .in_range(1, 1000000),
        OptionSpec::choice("damping_style", "exact", {"exact", "pi"},
                           "exact (S x A + lambda I)^-1 in the eigenbasis, or pi-factored "
                           "Tikhonov damping"),
        OptionSpec::real("learning_rate", 1.0, "own coefficient when rescale is off")
            .greater_than(0.0),
        OptionSpec::boolean("rescale", true,
                            "own coefficient: minimiser of the damped model along the direction "
                            "(falls back to learning_rate if the curvature is not positive)")}});
}

}  // namespace

QUADRA_PLUGIN("kfac-solver", "1.0.0", register_components)
