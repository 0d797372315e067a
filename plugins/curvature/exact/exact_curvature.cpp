// Exact curvature products as plugins: `ggn`, `hessian`, `empirical-fisher` and `mc-fisher`.
// Each is its own library (so each can be replaced on its own); this one source builds all
// four, QUADRA_CURVATURE_KIND selecting the product (plugins/CMakeLists.txt).
//
// The products themselves are the engine's (exact, no finite differences, mean over the batch):
//   ggn               G = (1/N) sum_n J_n' Lambda_n J_n        PSD for convex losses
//   hessian           H = nabla^2 L                             indefinite in general
//   empirical-fisher  F = (1/N) sum_n g_n g_n'                  PSD, rank <= N
//   mc-fisher         F = (1/N) sum_n (1/M) sum_m g_nm g_nm'    labels sampled from the model

#include <quadra/sdk.hpp>

namespace {

#if QUADRA_CURVATURE_KIND == 0
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kGgn;
constexpr const char* kName = "ggn";
constexpr const char* kLibrary = "ggn-curvature";
constexpr const char* kSummary = "generalised Gauss-Newton J'H_loss J (exact, matrix-free)";
#elif QUADRA_CURVATURE_KIND == 1
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kHessian;
constexpr const char* kName = "hessian";
constexpr const char* kLibrary = "hessian-curvature";
constexpr const char* kSummary = "Hessian of the mean loss (exact R-operator, matrix-free)";
#elif QUADRA_CURVATURE_KIND == 2
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kEmpiricalFisher;
constexpr const char* kName = "empirical-fisher";
constexpr const char* kLibrary = "empirical-fisher-curvature";
constexpr const char* kSummary = "empirical Fisher: mean of per-sample gradient outer products";
#elif QUADRA_CURVATURE_KIND == 3
constexpr quadra::CurvatureProduct kProduct = quadra::CurvatureProduct::kMcFisher;
constexpr const char* kName = "mc-fisher";
constexpr const char* kLibrary = "mc-fisher-curvature";
constexpr const char* kSummary = "Monte-Carlo Fisher with labels sampled from the model";
#else
#error "QUADRA_CURVATURE_KIND must be 0 (ggn), 1 (hessian), 2 (empirical-fisher) or 3 (mc-fisher)"
#endif
constexpr bool kSampled = kProduct == quadra::CurvatureProduct::kMcFisher;

class ExactCurvature final : public quadra::CurvatureEstimator {
 public:
  explicit ExactCurvature(const quadra::OptionValues& options) {
    if constexpr (kSampled) {
      samples_ = static_cast<int>(options.get_int("samples"));
      seed_ = static_cast<std::uint64_t>(options.get_int("seed"));
    }
  }

  quadra::Status bind(quadra::ICurvatureBackend& batch) override {
    batch_ = &batch;
    if constexpr (kSampled) return batch.set_mc_samples(samples_, seed_);
    return quadra::Status::ok();
  }
  quadra::Status apply(quadra::ConstVectorRef<double> v, quadra::VectorRef<double> out) override {
    return product(v, out);
  }
  quadra::Status apply(quadra::ConstVectorRef<float> v, quadra::VectorRef<float> out) override {
    return product(v, out);
  }
  quadra::Status solve(double, quadra::ConstVectorRef<double>, quadra::VectorRef<double>) override {
    return quadra::Status::unsupported(std::string(kName) +
                                       " is matrix-free: solve with CG or MINRES instead");
  }
  quadra::CurvatureStructure structure() const override {
    return quadra::CurvatureStructure::kMatrixFree;
  }
  quadra::Status diagonal(quadra::VectorRef<double>) const override {
    return quadra::Status::unsupported(std::string(kName) + " exposes no diagonal; use diag-ggn or diag-ef");
  }
  quadra::Status kronecker(std::vector<quadra::KroneckerEigen>&) const override {
    return quadra::Status::unsupported(std::string(kName) + " exposes no Kronecker factors; use kfac");
  }

 private:
  template <class Scalar>
  quadra::Status product(quadra::ConstVectorRef<Scalar> v, quadra::VectorRef<Scalar> out) {
    if (batch_ == nullptr) return quadra::Status::invalid_argument(std::string(kName) + ": not bound to a batch");
    return batch_->product(kProduct, v, out);
  }

  quadra::ICurvatureBackend* batch_ = nullptr;
  int samples_ = 1;
  std::uint64_t seed_ = 0;
};

void register_components(quadra::IRegistrar& registrar) {
  quadra::OptionSchema options;
  if constexpr (kSampled) {
    options.push_back(quadra::OptionSpec::integer("samples", 1, "labels sampled per example")
                          .in_range(1, 1000));
    options.push_back(quadra::OptionSpec::integer("seed", 0, "seed of the sampled labels")
                          .at_least(0));
  }
  registrar.add<ExactCurvature>({kName, kSummary, std::move(options)});
}

}  // namespace

QUADRA_PLUGIN(kLibrary, "1.0.0", register_components)
