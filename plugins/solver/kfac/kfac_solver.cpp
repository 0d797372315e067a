// `kfac`: Kronecker-factored natural gradient (Martens & Grosse 2015). Each Linear/Conv2d
// layer's curvature block is approximated by S ⊗ A (see KroneckerFactor in curvature.hpp), a
// normalization layer's γ and β by a diagonal block (A = [1], S diagonal, from the engine); the
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
using quadra::KroneckerEigen;
using quadra::KroneckerFactor;
using quadra::Status;
using Vec = quadra::Vector<double>;
using Mat = quadra::Matrix<double>;

constexpr int kLayoutVersion = 1;
constexpr const char* kLayout =
    "{version 1, steps, layers, per layer: offset, out, in, bias (0/1), A rows, A cols, A, "
    "S rows, S cols, S}";

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
  const Index dim = quadra::block_columns(f);
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

/// One layer's averaged factors get their eigendecompositions.
Status eigendecompose(KroneckerEigen& layer, std::size_t index) {
  const Eigen::SelfAdjointEigenSolver<Mat> a(layer.factor.a), s(layer.factor.s);
  if (a.info() != Eigen::Success || s.info() != Eigen::Success) {
    return Status::numerical_issue("kfac: the eigendecomposition of layer " +
                                   std::to_string(index) + "'s factors did not converge");
  }
  layer.a_eigenvalues = a.eigenvalues().cwiseMax(0.0);
  layer.a_eigenvectors = a.eigenvectors();
  layer.s_eigenvalues = s.eigenvalues().cwiseMax(0.0);
  layer.s_eigenvectors = s.eigenvectors();
  return Status::ok();
}

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
                                      quadra::format_number(lambda));
    }
    const Index n = model.num_parameters();
    Vec g(n);
    if (Status s = model.gradient(g); !s.is_ok()) return s;
    if (!g.allFinite()) return Status::numerical_issue("kfac: the gradient has non-finite entries");
    // A failed proposal leaves no trace: fresh factors and the step count are committed last.
    const bool refreshing = steps_ % inverse_interval_ == 0;
    std::vector<KroneckerEigen> fresh;
    if (refreshing) {
      if (Status s = refresh(model, fresh); !s.is_ok()) return s;
    }
    const std::vector<KroneckerEigen>& layers = refreshing ? fresh : layers_;
    if (Status s = check_coverage(n, layers); !s.is_ok()) return s;

    Vec d = -g;  // parameters outside every layer: identity preconditioner
    const quadra::KroneckerDamping style =
        pi_damping_ ? quadra::KroneckerDamping::kPi : quadra::KroneckerDamping::kExact;
    for (const KroneckerEigen& layer : layers) {
      if (Status s = quadra::damped_kronecker_solve("kfac", layer, lambda, style, g, d,
                                                    quadra::KroneckerOutput::kNegated);
          !s.is_ok()) {
        return s;
      }
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
    if (refreshing) layers_ = std::move(fresh);
    ++steps_;
    return Status::ok();
  }

  // Layout: {version 1, steps, layers, then per layer: offset, out, in, bias (0/1),
  //          A rows, A cols, A (column-major), S rows, S cols, S (column-major)}.
  // Decompositions are recomputed on load: the same matrices give the same ones.
  Status save_state(std::vector<double>& out) const override {
    quadra::StateWriter writer(out, kLayoutVersion);
    writer.count(steps_).count(layers_.size());
    for (const KroneckerEigen& layer : layers_) {
      const KroneckerFactor& f = layer.factor;
      writer.count(f.offset).count(f.out).count(f.in).count(f.bias ? 1 : 0);
      writer.matrix(f.a).matrix(f.s);
    }
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("kfac", state, kLayoutVersion, kLayout);
    std::int64_t steps = 0;
    std::size_t count = 0;
    if (Status s = reader.count("step count", steps); !s.is_ok()) return s;
    if (Status s = reader.count("number of layers", count); !s.is_ok()) return s;
    std::vector<KroneckerEigen> layers;
    for (std::size_t l = 0; l < count; ++l) {
      KroneckerEigen layer;
      KroneckerFactor& f = layer.factor;
      const std::string name = "layer " + std::to_string(l);
      Index bias = 0;
      if (Status s = reader.count(name + " offset", f.offset); !s.is_ok()) return s;
      if (Status s = reader.count(name + " output size", f.out); !s.is_ok()) return s;
      if (Status s = reader.count(name + " input size", f.in); !s.is_ok()) return s;
      if (Status s = reader.count(name + " bias flag", bias, Index{1}); !s.is_ok()) return s;
      f.bias = bias == 1;
      const Index dim = quadra::block_columns(f);
      if (Status s = reader.matrix(name + " input factor A", dim, dim, f.a); !s.is_ok()) return s;
      if (Status s = reader.matrix(name + " output factor S", f.out, f.out, f.s); !s.is_ok()) {
        return s;
      }
      if (Status s = check_factor(f, l, "checkpoint state"); !s.is_ok()) return s;
      if (Status s = eigendecompose(layer, l); !s.is_ok()) return s;
      layers.push_back(std::move(layer));
    }
    if (Status s = reader.finish(); !s.is_ok()) return s;
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
  Status refresh(quadra::IQuadraticModel& model, std::vector<KroneckerEigen>& out) const {
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
    std::vector<KroneckerEigen> next(fresh.size());
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
    }
    // Spread over the processes of a data-parallel run by the host: each decomposes its share.
    if (Status s = quadra::eigendecompose_factors(model.engine(), "kfac", next); !s.is_ok()) {
      return s;
    }
    for (KroneckerEigen& layer : next) {
      layer.a_eigenvalues = layer.a_eigenvalues.cwiseMax(0.0);
      layer.s_eigenvalues = layer.s_eigenvalues.cwiseMax(0.0);
    }
    out = std::move(next);
    return Status::ok();
  }

  /// Every layer inside the parameter vector, no parameter in two layers.
  static Status check_coverage(Index n, const std::vector<KroneckerEigen>& layers) {
    std::vector<bool> covered(static_cast<std::size_t>(n), false);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const KroneckerFactor& f = layers[l].factor;
      const Index size = quadra::block_size(f);
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
  std::vector<KroneckerEigen> layers_;  // averaged factors; empty before the first fetch
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<KfacSolver>(
      {"kfac",
       "Kronecker-factored natural gradient (K-FAC, Martens & Grosse 2015); normalization "
       "layers' weight and bias get a diagonal block; with batchnorm's batch statistics, "
       "variant mc or empirical (the batch loss's backward pass, as in PyTorch's train mode)",
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
