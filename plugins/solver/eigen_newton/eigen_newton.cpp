// `eigen-newton`: the damped Newton step within the top-k eigenspace of C (paper §1.4, V1/V2).
// The host's top_eigenpairs (Lanczos, or the Gram method for the GGN of Linear-layer networks)
// gives U = [u_1..u_k] and theta_1..theta_k; the proposal is the eigenvectors themselves with
// own coefficients c_i = -g'u_i / (theta_i + lambda), so a debiasing strategy can replace the
// theta_i and slopes by Rayleigh quotients and slopes from an independent batch.
//
// Non-positive theta_i (Hessian curvature) would make -g'u/(theta + lambda) an ascent step or
// blow up: `absolute` uses |theta_i| (saddle-free Newton), `drop` leaves those u_i out.
//
// Optional complement step: g_perp = g - U U'g (U: the eigenvectors kept), normalised, as one
// more column with coefficient -complement_step |g_perp|, i.e. a plain gradient step of length
// complement_step in everything the Newton part does not cover (dropped directions included).
// It is left out when |g_perp| <= 1e-10 |g|: then it is rounding noise, not a direction.
// Directions::iterations is the number of eigenpairs Lanczos returned (the SDK does not report
// how many products it used).

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

using quadra::Index;
using quadra::Status;
using Vec = quadra::Vector<double>;
using Mat = quadra::Matrix<double>;

constexpr double kNegligibleComplement = 1e-10;

class EigenNewton final : public quadra::Solver {
 public:
  explicit EigenNewton(const quadra::OptionValues& options)
      : rank_(static_cast<int>(options.get_int("rank"))),
        max_products_(static_cast<int>(options.get_int("max_products"))),
        tolerance_(options.get_real("tolerance")),
        complement_step_(options.get_real("complement_step")),
        drop_negative_(options.get_string("negative_curvature") == "drop"),
        eigensolver_(parse_eigensolver(options.get_string("eigensolver"))) {}

  bool uses_curvature() const override { return true; }

  Status propose(quadra::IQuadraticModel& model, double lambda, quadra::Directions& out) override {
    if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
      return Status::invalid_argument("eigen-newton: lambda must be finite and >= 0, found " +
                                      quadra::format_number(lambda));
    }
    const Index n = model.num_parameters();
    Vec g(n);
    if (Status s = model.gradient(g); !s.is_ok()) return s;
    if (!g.allFinite()) {
      return Status::numerical_issue("eigen-newton: the gradient has non-finite entries");
    }
    const int k = static_cast<int>(std::min<Index>(rank_, n));
    Vec values;
    Mat vectors;
    if (Status s =
            model.top_eigenpairs(k, max_products_, tolerance_, eigensolver_, values, vectors);
        !s.is_ok()) {
      return s;
    }
    if (values.size() > k || vectors.rows() != n || vectors.cols() != values.size()) {
      return Status::failed("eigen-newton: top_eigenpairs returned " +
                            std::to_string(values.size()) + " values and a " +
                            std::to_string(vectors.rows()) + " x " +
                            std::to_string(vectors.cols()) + " basis for k = " +
                            std::to_string(k) + ", n = " + std::to_string(n));
    }
    if (!values.allFinite() || !vectors.allFinite()) {
      return Status::numerical_issue("eigen-newton: non-finite eigenpairs");
    }

    std::vector<Index> kept;
    std::vector<double> curvatures;
    for (Index i = 0; i < values.size(); ++i) {
      if (drop_negative_ && !(values(i) > 0.0)) continue;
      const double curvature = std::abs(values(i)) + lambda;
      if (!(curvature > 0.0)) {
        return Status::numerical_issue("eigen-newton: eigenvalue " + std::to_string(i) +
                                       " is 0 and lambda = 0: no Newton step along it");
      }
      kept.push_back(i);
      curvatures.push_back(curvature);
    }
    const auto m = static_cast<Index>(kept.size());
    Mat u(n, m);
    for (Index j = 0; j < m; ++j) u.col(j) = vectors.col(kept[static_cast<std::size_t>(j)]);
    const Vec slopes = u.transpose() * g;

    Vec complement;
    if (complement_step_ > 0.0) {
      // Projected out twice: once is not orthogonal to rounding when g lies mostly in span(U).
      complement = g - u * slopes;
      complement -= u * (u.transpose() * complement);
      if (!(complement.norm() > kNegligibleComplement * g.norm())) complement.resize(0);
    }
    const Index columns = m + (complement.size() != 0 ? 1 : 0);
    out.basis.resize(n, columns);
    out.own_coefficients.resize(columns);
    out.basis.leftCols(m) = u;
    for (Index j = 0; j < m; ++j) {
      out.own_coefficients(j) = -slopes(j) / curvatures[static_cast<std::size_t>(j)];
    }
    if (complement.size() != 0) {
      const double norm = complement.norm();
      out.basis.col(m) = complement / norm;
      out.own_coefficients(m) = -complement_step_ * norm;
    }
    out.iterations = static_cast<int>(values.size());
    return Status::ok();
  }

 private:
  static quadra::Eigensolver parse_eigensolver(const std::string& name) {
    if (name == "lanczos") return quadra::Eigensolver::kLanczos;
    if (name == "gram") return quadra::Eigensolver::kGram;
    return quadra::Eigensolver::kAuto;  // the schema admits nothing else
  }

  int rank_;
  int max_products_;
  double tolerance_;
  double complement_step_;
  bool drop_negative_;
  quadra::Eigensolver eigensolver_;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<EigenNewton>(
      {"eigen-newton",
       "damped Newton step in the top-k eigenspace of the curvature (Lanczos)",
       {OptionSpec::integer("rank", 20, "k, the number of top eigenpairs").in_range(1, 10000),
        OptionSpec::integer("max_products", 100, "most curvature products Lanczos may use")
            .in_range(1, 1000000),
        OptionSpec::real("tolerance", 1e-3,
                         "Lanczos stops when every Ritz residual is below tolerance |theta_1|")
            .greater_than(0.0)
            .at_most(1.0),
        OptionSpec::real("complement_step", 0.0,
                         "gradient step length in the orthogonal complement of the eigenspace "
                         "(0: none)")
            .at_least(0.0),
        OptionSpec::choice("negative_curvature", "absolute", {"absolute", "drop"},
                           "eigenvalues <= 0: use |theta| (saddle-free) or leave the direction "
                           "out"),
        OptionSpec::choice("eigensolver", "auto", {"auto", "lanczos", "gram"},
                           "how the host finds the eigenpairs: Lanczos on C v, or the GGN's Gram "
                           "matrix (ggn curvature, Linear layers; the same eigenpairs from far "
                           "fewer operations at small batches); auto: gram where it applies and "
                           "pays")}});
}

}  // namespace

QUADRA_PLUGIN("eigen-newton-solver", "1.0.0", register_components)
