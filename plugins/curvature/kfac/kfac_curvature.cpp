// `kfac`: Kronecker-factored curvature (Martens & Grosse 2015; Grosse & Martens 2016 for
// convolutions). Each Linear/Conv2d layer's block of the GGN (or Fisher) is approximated by
// S ⊗ A: A the second moment of the layer's (bias-augmented) inputs, S that of the
// backpropagated output gradients, so the block acts on the layer's weight matrix V as S V A.
// Blocks are independent: C is block-diagonal. Normalization layers (batchnorm, layernorm,
// groupnorm) get a diagonal block over their γ and β (as ASDL and Osawa et al. treat them),
// which the engine hands over as a Kronecker block with A = [1] and S diagonal: the exact GGN
// diagonal (type-2, mc) or empirical-Fisher diagonal (empirical); damping and inversion treat it
// like any block (its eigenbasis is the identity). With batchnorm's batch statistics the samples
// are coupled: mc and empirical take the batch loss's backward pass and the diagonal of the same
// moment, type-2 is refused.
//
// Inversion uses the factors' eigendecompositions, computed once per bind (two independent tasks
// per layer, which the host spreads over the processes of a data-parallel run):
//   exact:  (S ⊗ A + lambda I)^-1 = (Q_S ⊗ Q_A) diag(1 / (s_i a_j + lambda)) (Q_S ⊗ Q_A)'
//   pi:     factored Tikhonov damping (S + sqrt(lambda)/pi I) ⊗ (A + pi sqrt(lambda) I) with
//           pi = sqrt((tr A / dim A) / (tr S / dim S)) (Martens & Grosse 2015, §6.3), 1 when
//           that is not finite and positive (a zero factor)

#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>
#include <quadra/sdk.hpp>

namespace {

using quadra::Index;
using Mat = quadra::Matrix<double>;

class Kfac final : public quadra::CurvatureEstimator {
 public:
  explicit Kfac(const quadra::OptionValues& options)
      : variant_(parse_variant(options.get_string("type"))),
        mc_samples_(static_cast<int>(options.get_int("mc_samples"))),
        seed_(static_cast<std::uint64_t>(options.get_int("seed"))),
        style_(options.get_string("damping_style") == "pi" ? quadra::KroneckerDamping::kPi
                                                           : quadra::KroneckerDamping::kExact) {}

  quadra::Status bind(quadra::ICurvatureBackend& batch) override {
    blocks_.clear();
    dim_ = batch.num_parameters();
    std::vector<quadra::KroneckerFactor> factors;
    if (quadra::Status s = batch.kfac_factors(variant_, mc_samples_, seed_, factors); !s.is_ok()) {
      return s;
    }
    std::vector<quadra::KroneckerEigen> blocks;
    for (quadra::KroneckerFactor& f : factors) {
      if (!f.a.allFinite() || !f.s.allFinite()) {
        return quadra::Status::numerical_issue("kfac: non-finite factor for the layer at parameter " +
                                               std::to_string(f.offset));
      }
      blocks.emplace_back().factor = std::move(f);
    }
    // Spread over the processes of a data-parallel run by the host: each decomposes its share.
    if (quadra::Status s = quadra::eigendecompose_factors(batch, "kfac", blocks); !s.is_ok()) {
      return s;
    }
    blocks_ = std::move(blocks);
    return quadra::Status::ok();
  }

  quadra::Status apply(quadra::ConstVectorRef<double> v, quadra::VectorRef<double> out) override {
    if (quadra::Status s = check(v.size()); !s.is_ok()) return s;
    out.setZero();  // parameters outside every block have no curvature
    for (const quadra::KroneckerEigen& b : blocks_) {
      quadra::scatter_block(b.factor, b.factor.s * quadra::gather_block(b.factor, v) * b.factor.a,
                            out);
    }
    return quadra::Status::ok();
  }
  quadra::Status apply(quadra::ConstVectorRef<float> v, quadra::VectorRef<float> out) override {
    const quadra::Vector<double> vd = v.cast<double>();
    quadra::Vector<double> od(vd.size());
    quadra::Status status = apply(vd, od);
    if (status.is_ok()) out = od.cast<float>();
    return status;
  }

  quadra::Status solve(double lambda, quadra::ConstVectorRef<double> v,
                       quadra::VectorRef<double> out) override {
    if (quadra::Status s = check(v.size()); !s.is_ok()) return s;
    if (!(lambda >= 0.0)) {
      return quadra::Status::invalid_argument("kfac: lambda must be >= 0, found " +
                                              quadra::format_number(lambda));
    }
    out = v / lambda;  // parameters outside every block (curvature 0); overwritten below
    for (const quadra::KroneckerEigen& b : blocks_) {
      if (quadra::Status s = quadra::damped_kronecker_solve("kfac", b, lambda, style_, v, out);
          !s.is_ok()) {
        return s;
      }
    }
    return quadra::Status::ok();
  }

  quadra::CurvatureStructure structure() const override {
    return quadra::CurvatureStructure::kKronecker;
  }
  quadra::Status diagonal(quadra::VectorRef<double>) const override {
    return quadra::Status::unsupported("kfac is Kronecker-factored; use kronecker()");
  }
  quadra::Status kronecker(std::vector<quadra::KroneckerEigen>& out) const override {
    if (dim_ == 0) return quadra::Status::invalid_argument("kfac: not bound to a batch");
    out = blocks_;
    return quadra::Status::ok();
  }

 private:
  static quadra::KfacVariant parse_variant(const std::string& name) {
    if (name == "mc") return quadra::KfacVariant::kMc;
    if (name == "empirical") return quadra::KfacVariant::kEmpirical;
    return quadra::KfacVariant::kType2;
  }
  quadra::Status check(Index size) const {
    if (dim_ == 0) return quadra::Status::invalid_argument("kfac: not bound to a batch");
    if (size != dim_) return quadra::Status::invalid_argument("kfac: vector has the wrong size");
    return quadra::Status::ok();
  }

  quadra::KfacVariant variant_;
  int mc_samples_;
  std::uint64_t seed_;
  quadra::KroneckerDamping style_;
  Index dim_ = 0;
  std::vector<quadra::KroneckerEigen> blocks_;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<Kfac>(
      {"kfac",
       "Kronecker-factored GGN/Fisher blocks per Linear and Conv2d layer; normalization layers' "
       "weight and bias get a diagonal block (exact GGN diagonal, or empirical-Fisher diagonal "
       "for type=empirical); with batchnorm's batch statistics, mc and empirical take the batch "
       "loss's backward pass, as in PyTorch's train mode, and type-2 is refused",
       {OptionSpec::choice("type", "type-2", {"type-2", "mc", "empirical"},
                           "output-gradient moment: exact loss-Hessian factor, sampled labels, "
                           "or true labels"),
        OptionSpec::integer("mc_samples", 1, "labels sampled per example (type=mc)").in_range(1, 1000),
        OptionSpec::integer("seed", 0, "seed of the sampled labels (type=mc)").at_least(0),
        OptionSpec::choice("damping_style", "exact", {"exact", "pi"},
                           "solve with (S x A + lambda I) exactly, or with pi-factored damping")}});
}

}  // namespace

QUADRA_PLUGIN("kfac-curvature", "1.0.0", register_components)
