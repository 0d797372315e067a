// Diagonal curvature plugins, `diag-ggn` and `diag-ef`: C = diag(GGN) or diag(empirical
// Fisher), exact (the engine backpropagates the loss Hessian's symmetric factor for the GGN).
// One source, two libraries; QUADRA_DIAGONAL_KIND selects which (plugins/CMakeLists.txt).

#include <quadra/sdk.hpp>

namespace {

#if QUADRA_DIAGONAL_KIND == 0
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kGgn;
constexpr const char* kName = "diag-ggn";
constexpr const char* kLibrary = "diag-ggn-curvature";
constexpr const char* kSummary = "exact diagonal of the generalised Gauss-Newton matrix";
#elif QUADRA_DIAGONAL_KIND == 1
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kEmpiricalFisher;
constexpr const char* kName = "diag-ef";
constexpr const char* kLibrary = "diag-ef-curvature";
constexpr const char* kSummary = "exact diagonal of the empirical Fisher";
#else
#error "QUADRA_DIAGONAL_KIND must be 0 (diag-ggn) or 1 (diag-ef)"
#endif

class DiagonalCurvature final : public quadra::CurvatureEstimator {
 public:
  explicit DiagonalCurvature(const quadra::OptionValues&) {}

  quadra::Status bind(quadra::ICurvatureBackend& batch) override {
    diagonal_.resize(batch.num_parameters());
    quadra::Status status = batch.diagonal(kProduct, diagonal_);
    if (!status.is_ok()) diagonal_.resize(0);
    return status;
  }
  quadra::Status apply(quadra::ConstVectorRef<double> v, quadra::VectorRef<double> out) override {
    if (quadra::Status s = check(v.size()); !s.is_ok()) return s;
    out = diagonal_.cwiseProduct(v);
    return quadra::Status::ok();
  }
  quadra::Status apply(quadra::ConstVectorRef<float> v, quadra::VectorRef<float> out) override {
    if (quadra::Status s = check(v.size()); !s.is_ok()) return s;
    out = diagonal_.cast<float>().cwiseProduct(v);
    return quadra::Status::ok();
  }
  quadra::Status solve(double lambda, quadra::ConstVectorRef<double> v,
                       quadra::VectorRef<double> out) override {
    if (quadra::Status s = check(v.size()); !s.is_ok()) return s;
    if (!(lambda > 0.0) && (diagonal_.array() <= 0.0).any()) {
      return quadra::Status::numerical_issue(std::string(kName) +
                                             ": diagonal has zero entries; solve needs lambda > 0");
    }
    out = v.array() / (diagonal_.array() + lambda);
    return quadra::Status::ok();
  }
  quadra::CurvatureStructure structure() const override {
    return quadra::CurvatureStructure::kDiagonal;
  }
  quadra::Status diagonal(quadra::VectorRef<double> out) const override {
    if (quadra::Status s = check(out.size()); !s.is_ok()) return s;
    out = diagonal_;
    return quadra::Status::ok();
  }
  quadra::Status kronecker(std::vector<quadra::KroneckerEigen>&) const override {
    return quadra::Status::unsupported(std::string(kName) + " is diagonal, not Kronecker-factored");
  }

 private:
  quadra::Status check(quadra::Index size) const {
    if (diagonal_.size() == 0) return quadra::Status::invalid_argument(std::string(kName) + ": not bound to a batch");
    if (size != diagonal_.size()) return quadra::Status::invalid_argument(std::string(kName) + ": vector has the wrong size");
    return quadra::Status::ok();
  }

  quadra::Vector<double> diagonal_;
};

void register_components(quadra::IRegistrar& registrar) {
  registrar.add<DiagonalCurvature>({kName, kSummary, {}});
}

}  // namespace

QUADRA_PLUGIN(kLibrary, "1.0.0", register_components)
