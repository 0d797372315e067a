// The solver plugins through the host, against dense float64 references: CG, eigen-Newton and
// K-FAC on explicit quadratics; SGD and Adam against PyTorch's update formulas re-implemented
// here; rejected steps, checkpoints and option validation.

#include <Eigen/Dense>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <quadra/curvature/preconditioner.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/plugin_host.hpp>
#include <string>
#include <vector>

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using quadra::StatusCode;

namespace {

// --- K-FAC layout, written from curvature.hpp: [W b] with W row-major at offset, b after W.

struct Layout {
  Eigen::Index offset, out, in;
  bool bias;
  [[nodiscard]] Eigen::Index cols() const { return in + (bias ? 1 : 0); }
};

Mat gather(const Layout& l, const Vec& v) {
  Mat m(l.out, l.cols());
  for (Eigen::Index i = 0; i < l.out; ++i) {
    for (Eigen::Index j = 0; j < l.in; ++j) m(i, j) = v(l.offset + i * l.in + j);
    if (l.bias) m(i, l.in) = v(l.offset + l.out * l.in + i);
  }
  return m;
}

void scatter(const Layout& l, const Mat& m, Vec& v) {
  for (Eigen::Index i = 0; i < l.out; ++i) {
    for (Eigen::Index j = 0; j < l.in; ++j) v(l.offset + i * l.in + j) = m(i, j);
    if (l.bias) v(l.offset + l.out * l.in + i) = m(i, l.in);
  }
}

/// The dense n x n matrix of v -> (S V A) on the layer's block, zero elsewhere.
Mat kronecker_dense(const Layout& l, const Mat& a, const Mat& s, Eigen::Index n) {
  Mat dense = Mat::Zero(n, n);
  for (Eigen::Index k = 0; k < n; ++k) {
    Vec e = Vec::Zero(n);
    e(k) = 1.0;
    Vec column = Vec::Zero(n);
    scatter(l, s * gather(l, e) * a, column);
    dense.col(k) = column;
  }
  return dense;
}

Mat random_spd(Eigen::Index n, unsigned seed) {
  std::srand(seed);
  const Mat a = Mat::Random(n, n);
  return a * a.transpose() / static_cast<double>(n) + 0.1 * Mat::Identity(n, n);
}

Vec random_vector(Eigen::Index n, unsigned seed) {
  std::srand(seed);
  return Vec::Random(n);
}

/// Q diag(eigenvalues) Q' with a random orthogonal Q.
Mat with_spectrum(const Vec& eigenvalues, unsigned seed) {
  std::srand(seed);
  const Eigen::Index n = eigenvalues.size();
  const Mat q = Eigen::HouseholderQR<Mat>(Mat::Random(n, n)).householderQ() * Mat::Identity(n, n);
  return q * eigenvalues.asDiagonal() * q.transpose();
}

double relative(const Vec& a, const Vec& b) { return (a - b).norm() / b.norm(); }

// --- Fakes of the host side.

class FakeBackend final : public quadra::ICurvatureBackend {
 public:
  explicit FakeBackend(Eigen::Index n) : n_(n) {}
  quadra::Index num_parameters() const override { return n_; }
  quadra::Index batch_size() const override { return 1; }
  bool is_double_precision() const override { return true; }
  quadra::Status set_mc_samples(int, std::uint64_t) override { return unused(); }
  quadra::Status product(quadra::CurvatureProduct, quadra::ConstVectorRef<double>,
                         quadra::VectorRef<double>) override {
    return unused();
  }
  quadra::Status product(quadra::CurvatureProduct, quadra::ConstVectorRef<float>,
                         quadra::VectorRef<float>) override {
    return unused();
  }
  quadra::Status diagonal(quadra::CurvatureProduct, quadra::VectorRef<double>) override {
    return unused();
  }
  quadra::Status kfac_factors(quadra::KfacVariant variant, int mc_samples, std::uint64_t seed,
                              std::vector<quadra::KroneckerFactor>& out) override {
    ++calls;
    last_variant = variant;
    last_samples = mc_samples;
    last_seed = seed;
    out = factors;
    return quadra::Status::ok();
  }

  void set_layer(const Layout& l, const Mat& a, const Mat& s) {
    quadra::KroneckerFactor f;
    f.offset = l.offset;
    f.out = l.out;
    f.in = l.in;
    f.bias = l.bias;
    f.a = a;
    f.s = s;
    factors = {f};
  }

  std::vector<quadra::KroneckerFactor> factors;
  int calls = 0;
  quadra::KfacVariant last_variant = quadra::KfacVariant::kType2;
  int last_samples = 0;
  std::uint64_t last_seed = 0;

 private:
  static quadra::Status unused() { return quadra::Status::unsupported("not used by solvers"); }
  Eigen::Index n_;
};

/// A diagonal curvature "plugin": the exact diagonal of a dense matrix.
class DiagonalOf final : public quadra::CurvatureEstimator {
 public:
  explicit DiagonalOf(const Mat& c) : d_(c.diagonal()) {}
  quadra::Status bind(quadra::ICurvatureBackend&) override { return quadra::Status::ok(); }
  quadra::Status apply(quadra::ConstVectorRef<double> v, quadra::VectorRef<double> out) override {
    out = d_.cwiseProduct(v);
    return quadra::Status::ok();
  }
  quadra::Status apply(quadra::ConstVectorRef<float>, quadra::VectorRef<float>) override {
    return quadra::Status::unsupported("float64 only");
  }
  quadra::Status solve(double, quadra::ConstVectorRef<double>, quadra::VectorRef<double>) override {
    return quadra::Status::unsupported("not used");
  }
  quadra::CurvatureStructure structure() const override {
    return quadra::CurvatureStructure::kDiagonal;
  }
  quadra::Status diagonal(quadra::VectorRef<double> out) const override {
    out = d_;
    return quadra::Status::ok();
  }
  quadra::Status kronecker(std::vector<quadra::KroneckerEigen>&) const override {
    return quadra::Status::unsupported("diagonal");
  }

 private:
  Vec d_;
};

/// q(d) = 1 + g'd + d'Cd/2 in float64; loss_at() may use another quadratic (a "held-out" loss).
class DenseModel final : public quadra::IQuadraticModel {
 public:
  DenseModel(Mat c_in, Vec g_in)
      : c(std::move(c_in)), g(std::move(g_in)), loss_c(c), loss_g(g), backend(g.size()) {}

  quadra::Index num_parameters() const override { return g.size(); }
  std::int64_t step() const override { return step_count; }
  quadra::Status parameters(quadra::VectorRef<double> out) override {
    out.setZero();
    return quadra::Status::ok();
  }
  double loss() const override { return 1.0; }
  quadra::Status gradient(quadra::VectorRef<double> out) override {
    out = g;
    return quadra::Status::ok();
  }
  quadra::Status loss_at(quadra::ConstVectorRef<double> d, double& out) override {
    ++loss_calls;
    out = 1.0 + loss_g.dot(d) + 0.5 * d.dot(loss_c * d);
    return quadra::Status::ok();
  }
  quadra::Status curvature_times(quadra::ConstVectorRef<double> v,
                                 quadra::VectorRef<double> out) override {
    ++products;
    out = c * v;
    if (poison_products) out(0) = std::nan("");
    return quadra::Status::ok();
  }
  quadra::Status top_eigenpairs(int k, int /*max_products*/, double /*tolerance*/,
                                quadra::Eigensolver /*method*/, quadra::Vector<double>& values,
                                quadra::Matrix<double>& vectors) override {
    ++eigen_calls;
    const Eigen::SelfAdjointEigenSolver<Mat> eig(c);
    values = eig.eigenvalues().tail(k).reverse();
    vectors = eig.eigenvectors().rightCols(k).rowwise().reverse();
    return quadra::Status::ok();
  }
  quadra::Status conjugate_gradients(const quadra::CgRequest& request,
                                     quadra::CgOutcome& out) override {
    // The host's CG, as the training loop offers it, on this model's products.
    quadra::linalg::FunctionOperator<double> op(
        g.size(), [this](quadra::ConstVectorRef<double> x, quadra::VectorRef<double> y) {
          return curvature_times(x, y);
        });
    if (request.preconditioner.empty()) return quadra::linalg::newton_cg(op, g, request, out);
    // The host binds a structured curvature plugin; here the exact diagonal of C stands in.
    DiagonalOf diagonal(c);
    auto m = quadra::Preconditioner::create(
        diagonal, g.size(), request.lambda + request.preconditioner_damping,
        request.preconditioner_exponent, request.preconditioner);
    if (!m.is_ok()) return m.status();
    return quadra::linalg::newton_cg(op, g, request, out, m.value().get());
  }
  quadra::ICurvatureBackend& engine() override { return backend; }

  Mat c;
  Vec g;
  Mat loss_c;
  Vec loss_g;
  std::int64_t step_count = 0;
  bool poison_products = false;
  int products = 0;
  int loss_calls = 0;
  int eigen_calls = 0;
  FakeBackend backend;
};

// --- The host.

quadra::PluginHost& host() {
  static quadra::PluginHost instance;
  static bool loaded = false;
  if (!loaded) {
    loaded = true;
    // Only the solver libraries: the tests must not depend on the other built-in plugins.
    for (const auto& entry : std::filesystem::directory_iterator(BUILTIN_PLUGIN_DIR)) {
      if (entry.path().filename().string().find("quadra_solver_") == std::string::npos) continue;
      const quadra::Status status = instance.load_library(entry.path());
      INFO(status.message());
      REQUIRE(status.is_ok());
    }
  }
  return instance;
}

quadra::PluginHandle<quadra::Solver> make(const char* name, const quadra::RawOptions& options = {}) {
  auto created = host().create<quadra::Solver>(name, options);
  INFO(name << ": " << (created.is_ok() ? std::string() : created.status().message()));
  REQUIRE(created.is_ok());
  return std::move(created).value();
}

std::string creation_error(const char* name, const quadra::RawOptions& options) {
  auto created = host().create<quadra::Solver>(name, options);
  return created.is_ok() ? std::string("(created)") : created.status().message();
}

quadra::Directions propose(quadra::Solver& solver, quadra::IQuadraticModel& model, double lambda) {
  quadra::Directions out;
  const quadra::Status status = solver.propose(model, lambda, out);
  INFO(status.message());
  REQUIRE(status.is_ok());
  REQUIRE(out.basis.cols() == out.own_coefficients.size());
  REQUIRE(out.basis.rows() == model.num_parameters());
  return out;
}

Vec step_of(const quadra::Directions& d) { return d.basis * d.own_coefficients; }

bool identical(const quadra::Directions& a, const quadra::Directions& b) {
  return a.basis.rows() == b.basis.rows() && a.basis.cols() == b.basis.cols() &&
         a.basis == b.basis && a.own_coefficients == b.own_coefficients;
}

// --- Reference CG (Nocedal & Wright Alg. 5.2), with the plugin's stopping rules.

struct CgRun {
  std::vector<Vec> p;
  std::vector<double> alpha;
  std::vector<Vec> x;  // x[0] is the start
  std::vector<double> q;
  bool negative_curvature = false;
};

CgRun reference_cg(const Mat& c, const Vec& g, double lambda, const Vec& x0, int max_iterations,
                   double tolerance, bool martens) {
  const Mat a = c + lambda * Mat::Identity(g.size(), g.size());
  CgRun run;
  Vec x = x0, r = a * x0 + g, p = -r;
  run.x.push_back(x);
  run.q.push_back(g.dot(x) + 0.5 * x.dot(a * x));
  for (int k = 0; k < max_iterations; ++k) {
    if (r.norm() <= tolerance * g.norm()) break;
    const Vec ap = a * p;
    const double curvature = p.dot(ap);
    if (curvature <= 0.0) {
      run.negative_curvature = true;
      break;
    }
    const double alpha = r.squaredNorm() / curvature;
    x += alpha * p;
    const Vec r_next = r + alpha * ap;
    run.p.push_back(p);
    run.alpha.push_back(alpha);
    run.x.push_back(x);
    run.q.push_back(g.dot(x) + 0.5 * x.dot(a * x));
    if (martens) {
      const std::size_t i = run.q.size() - 1, m = std::max<std::size_t>(10, i / 10);
      if (i > m && run.q[i] < 0.0 && (run.q[i] - run.q[i - m]) / run.q[i] < 5e-4 * double(m)) break;
    }
    p = -r_next + (r_next.squaredNorm() / r.squaredNorm()) * p;
    r = r_next;
  }
  return run;
}

quadra::RawOptions plain_cg(int max_iterations, const char* tolerance = "1e-10") {
  return {{"max_iterations", std::to_string(max_iterations)},
          {"tolerance", tolerance},
          {"martens_rule", "false"},
          {"warm_start", "false"}};
}

}  // namespace

TEST_CASE("the solver components are registered with their kinds and schemas", "[plugin:solver]") {
  const std::vector<std::string> names = host().names(quadra::PluginKind::kSolver);
  for (const char* name : {"sgd", "adam", "cg", "eigen-newton", "kfac"}) {
    INFO(name);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
  CHECK_FALSE(make("sgd")->uses_curvature());
  CHECK_FALSE(make("adam")->uses_curvature());
  CHECK(make("cg")->uses_curvature());
  CHECK(make("eigen-newton")->uses_curvature());
  CHECK(make("kfac")->uses_curvature());
}

TEST_CASE("invalid options are refused with a message naming the option", "[plugin:solver]") {
  const auto refused = [](const char* name, const quadra::RawOptions& options, const char* option) {
    const std::string message = creation_error(name, options);
    INFO(name << ": " << message);
    CHECK(message.find(option) != std::string::npos);
    CHECK(message != "(created)");
  };
  refused("sgd", {{"learning_rate", "0"}}, "learning_rate");
  refused("sgd", {{"learning_rate", "-0.1"}}, "learning_rate");
  refused("sgd", {{"momentum", "1"}}, "momentum");
  refused("sgd", {{"nesterov", "true"}}, "nesterov");
  refused("adam", {{"learning_rate", "0"}}, "learning_rate");
  refused("adam", {{"beta2", "1"}}, "beta2");
  refused("adam", {{"beta1", "-0.5"}}, "beta1");
  refused("adam", {{"epsilon", "0"}}, "epsilon");
  refused("cg", {{"max_iterations", "0"}}, "max_iterations");
  refused("cg", {{"warm_start_decay", "1.5"}}, "warm_start_decay");
  refused("eigen-newton", {{"negative_curvature", "clip"}}, "negative_curvature");
  refused("eigen-newton", {{"complement_step", "-1"}}, "complement_step");
  refused("kfac", {{"learning_rate", "0"}}, "learning_rate");
  refused("kfac", {{"damping_style", "eigen"}}, "damping_style");
  refused("kfac", {{"inverse_interval", "0"}}, "inverse_interval");
  refused("kfac", {{"lerning_rate", "1"}}, "lerning_rate");
  CHECK(creation_error("sgd", {{"momentum", "0.9"}, {"nesterov", "true"}}) == "(created)");
}

// --- CG

TEST_CASE("cg reaches the exact damped minimiser within n iterations", "[plugin:cg]") {
  const int n = 20;
  DenseModel model(random_spd(n, 11), random_vector(n, 12));
  const double lambda = 0.1;
  auto cg = make("cg", plain_cg(n));
  const quadra::Directions d = propose(*cg, model, lambda);
  const Vec newton = -(model.c + lambda * Mat::Identity(n, n)).ldlt().solve(model.g);
  CHECK(relative(step_of(d), newton) < 1e-8);
  CHECK(d.iterations <= n);
  CHECK(d.basis.cols() == d.iterations);
  CHECK(model.products == d.iterations);

  // The columns are the CG search directions, the coefficients their step lengths.
  const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), n, 1e-10, false);
  REQUIRE(static_cast<int>(ref.p.size()) == d.iterations);
  for (int k = 0; k < std::min(d.iterations, 5); ++k) {  // later ones amplify rounding
    CHECK(relative(d.basis.col(k), ref.p[static_cast<std::size_t>(k)]) < 1e-8);
    CHECK(d.own_coefficients(k) == Approx(ref.alpha[static_cast<std::size_t>(k)]).epsilon(1e-8));
  }
}

TEST_CASE(
    "preconditioned cg reaches the exact minimiser in fewer iterations when C is badly "
    "scaled",
    "[plugin:cg]") {
  // A badly scaled SPD matrix: D S D with S well conditioned and D spanning six decades.
  const int n = 40;
  Vec scales(n);
  for (int i = 0; i < n; ++i) scales(i) = std::pow(10.0, 6.0 * i / (n - 1));
  const Mat c = scales.asDiagonal() * random_spd(n, 31) * scales.asDiagonal();
  DenseModel plain(c, random_vector(n, 32));
  DenseModel preconditioned = plain;
  const double lambda = 1e-3;
  const Vec newton = -(c + lambda * Mat::Identity(n, n)).ldlt().solve(plain.g);
  auto options = plain_cg(1000, "1e-10");
  const quadra::Directions d_plain = propose(*make("cg", options), plain, lambda);
  options["preconditioner"] = "diag-ggn";
  options["preconditioner_damping"] = "0";
  options["preconditioner_exponent"] = "1";
  const quadra::Directions d_pcg = propose(*make("cg", options), preconditioned, lambda);
  CHECK(relative(step_of(d_pcg), newton) < 1e-8);
  INFO("plain CG " << d_plain.iterations << " iterations, Jacobi-preconditioned "
                   << d_pcg.iterations);
  CHECK(d_pcg.iterations < d_plain.iterations / 2);
  // Martens' exponent 0.75 also converges to the same minimiser.
  options["preconditioner_exponent"] = "0.75";
  DenseModel again = plain;
  CHECK(relative(step_of(propose(*make("cg", options), again, lambda)), newton) < 1e-8);
}

TEST_CASE("cg: P times the own coefficients is the CG iterate when truncated", "[plugin:cg]") {
  const int n = 15;
  DenseModel model(random_spd(n, 21), random_vector(n, 22));
  const double lambda = 0.05;
  SECTION("max_iterations") {
    const quadra::Directions d = propose(*make("cg", plain_cg(4)), model, lambda);
    REQUIRE(d.basis.cols() == 4);
    CHECK(d.iterations == 4);
    const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), 4, 0.0, false);
    CHECK(relative(step_of(d), ref.x.back()) < 1e-12);
    CHECK(d.basis.col(0) == -model.g);  // x_0 = 0: the first direction is -g exactly
  }
  SECTION("relative residual tolerance") {
    const quadra::Directions d = propose(*make("cg", plain_cg(n, "1e-3")), model, lambda);
    const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), n, 1e-3, false);
    REQUIRE(ref.p.size() < static_cast<std::size_t>(n));
    CHECK(d.basis.cols() == static_cast<Eigen::Index>(ref.p.size()));
    CHECK(relative(step_of(d), ref.x.back()) < 1e-12);
    const Vec residual = (model.c + lambda * Mat::Identity(n, n)) * step_of(d) + model.g;
    CHECK(residual.norm() <= 1e-3 * model.g.norm());
  }
}

TEST_CASE("cg stops on Martens' relative-progress test", "[plugin:cg]") {
  const int n = 120;
  const Vec spectrum = Eigen::pow(10.0, Vec::LinSpaced(n, -6.0, 0.0).array()).matrix();
  const Mat c = with_spectrum(spectrum, 31);
  // g = C z: little gradient where the curvature is low, so progress stalls and the test fires.
  DenseModel model(c, c * random_vector(n, 32));
  const double lambda = 0.0;
  const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), n, 0.0, true);
  REQUIRE(ref.p.size() < static_cast<std::size_t>(n));  // the test fired, not the iteration cap
  REQUIRE(ref.p.size() > 10);
  auto cg = make("cg", {{"max_iterations", std::to_string(n)},
                        {"tolerance", "0"},
                        {"warm_start", "false"}});  // martens_rule defaults to true
  const quadra::Directions d = propose(*cg, model, lambda);
  CHECK(d.iterations == static_cast<int>(ref.p.size()));
  CHECK(relative(step_of(d), ref.x.back()) < 1e-8);
  // Without the rule the same run goes on.
  const quadra::Directions full = propose(*make("cg", plain_cg(n, "0")), model, lambda);
  CHECK(full.iterations > d.iterations);
}

TEST_CASE("cg warm-starts from the decayed previous accepted step", "[plugin:cg]") {
  const int n = 12;
  const Mat c = random_spd(n, 41);
  DenseModel first(c, random_vector(n, 42));
  Vec g2 = first.g + 0.1 * random_vector(n, 43);
  DenseModel second(c, g2);
  const double lambda = 0.2;
  quadra::RawOptions options = plain_cg(n);
  options["warm_start"] = "true";
  options["warm_start_decay"] = "0.5";
  auto cg = make("cg", options);

  const quadra::Directions d1 = propose(*cg, first, lambda);
  CHECK(d1.basis.col(0) == -first.g);  // nothing to warm-start from yet
  const Vec s1 = step_of(d1);
  cg->step_taken(s1, true);

  const quadra::Directions d2 = propose(*cg, second, lambda);
  REQUIRE(d2.basis.cols() >= 2);
  CHECK(d2.basis.col(0) == 0.5 * s1);
  CHECK(d2.own_coefficients(0) == 1.0);
  const CgRun ref = reference_cg(c, g2, lambda, 0.5 * s1, n, 1e-10, false);
  CHECK(d2.iterations == static_cast<int>(ref.p.size()));
  CHECK(d2.basis.cols() == d2.iterations + 1);
  CHECK(relative(step_of(d2), ref.x.back()) < 1e-8);
  for (std::size_t k = 0; k < ref.p.size(); ++k) {
    CHECK(relative(d2.basis.col(static_cast<Eigen::Index>(k) + 1), ref.p[k]) < 1e-6);
  }

  SECTION("a rejected step does not replace the warm start") {
    cg->step_taken(Vec::Constant(n, 7.0), false);
    const quadra::Directions d3 = propose(*cg, second, lambda);
    CHECK(d3.basis.col(0) == 0.5 * s1);
  }
  SECTION("checkpoint: a restored solver proposes bitwise the same") {
    std::vector<double> state;
    REQUIRE(cg->save_state(state).is_ok());
    REQUIRE(state.size() == static_cast<std::size_t>(2 + n));
    CHECK(state[0] == 1.0);
    CHECK(state[1] == double(n));
    auto restored = make("cg", options);
    REQUIRE(restored->load_state(state).is_ok());
    CHECK(identical(propose(*restored, second, lambda), propose(*cg, second, lambda)));
    // A fresh solver without the state starts from zero instead.
    CHECK_FALSE(identical(propose(*make("cg", options), second, lambda), d2));
  }
  SECTION("an uphill warm start is not used") {
    cg->step_taken(-s1, true);  // q(-0.5 s1) > 0 on the first model
    const quadra::Directions d3 = propose(*cg, first, lambda);
    CHECK(d3.basis.col(0) == -first.g);
    CHECK(relative(step_of(d3), s1) < 1e-12);
  }
  SECTION("warm_start = false ignores accepted steps") {
    auto cold = make("cg", plain_cg(n));
    cold->step_taken(s1, true);
    CHECK(propose(*cold, second, lambda).basis.col(0) == -g2);
    std::vector<double> state;
    REQUIRE(cold->save_state(state).is_ok());
    CHECK(state == std::vector<double>{1.0, 0.0});
  }
}

TEST_CASE("cg backtracking walks back through the iterates after ceil(1.3^j) iterations",
          "[plugin:cg]") {
  const int n = 30;
  const Vec spectrum = Eigen::pow(10.0, Vec::LinSpaced(n, -3.0, 1.0).array()).matrix();
  DenseModel model(with_spectrum(spectrum, 51), random_vector(n, 52));
  model.loss_c = model.c + Mat::Identity(n, n);  // the held-out loss punishes long steps
  const double lambda = 0.0;
  quadra::RawOptions options = plain_cg(n, "0");
  options["backtracking"] = "true";
  const quadra::Directions d = propose(*make("cg", options), model, lambda);
  REQUIRE(d.iterations == n);

  // Reference: kept iteration counts, then the walk from the last one.
  const std::vector<int> kept = {1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24, 30};
  const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), n, 0.0, false);
  REQUIRE(ref.x.size() == static_cast<std::size_t>(n + 1));
  const auto held_out = [&](int count) {
    const Vec& x = ref.x[static_cast<std::size_t>(count)];
    return 1.0 + model.loss_g.dot(x) + 0.5 * x.dot(model.loss_c * x);
  };
  int chosen = kept.back(), evaluated = 1;
  double best = held_out(chosen);
  for (auto it = kept.rbegin() + 1; it != kept.rend(); ++it) {
    ++evaluated;
    const double loss = held_out(*it);
    if (!(loss < best)) break;
    best = loss;
    chosen = *it;
  }
  REQUIRE(chosen < n);  // the case is meaningful: an earlier iterate wins
  CHECK(d.basis.cols() == chosen);
  CHECK(model.loss_calls == evaluated);
  CHECK(relative(step_of(d), ref.x[static_cast<std::size_t>(chosen)]) < 1e-8);

  SECTION("without backtracking the last iterate is proposed") {
    DenseModel again = model;
    again.loss_calls = 0;
    const quadra::Directions last = propose(*make("cg", plain_cg(n, "0")), again, lambda);
    CHECK(last.basis.cols() == n);
    CHECK(again.loss_calls == 0);
  }
}

TEST_CASE("cg stops at non-positive curvature", "[plugin:cg]") {
  SECTION("indefinite C: the directions found before it") {
    const int n = 10;
    Vec spectrum(n);
    spectrum << -2.0, -0.5, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0;
    DenseModel model(with_spectrum(spectrum, 61), random_vector(n, 62));
    const double lambda = 0.1;
    const CgRun ref = reference_cg(model.c, model.g, lambda, Vec::Zero(n), n, 1e-10, false);
    REQUIRE(ref.negative_curvature);
    REQUIRE(!ref.p.empty());
    const quadra::Directions d = propose(*make("cg", plain_cg(n)), model, lambda);
    CHECK(d.basis.cols() == static_cast<Eigen::Index>(ref.p.size()));
    CHECK(relative(step_of(d), ref.x.back()) < 1e-10);
    const Mat damped = model.c + lambda * Mat::Identity(n, n);
    for (Eigen::Index k = 0; k < d.basis.cols(); ++k) {
      CHECK(d.basis.col(k).dot(damped * d.basis.col(k)) > 0.0);
    }
  }
  SECTION("at the first direction: a saddle-free steepest-descent step") {
    Vec diagonal(4);
    diagonal << -1.0, 2.0, 3.0, 4.0;
    Vec g = Vec::Zero(4);
    g(0) = 2.0;
    DenseModel model(diagonal.asDiagonal(), g);
    const quadra::Directions d = propose(*make("cg", plain_cg(4)), model, 0.1);
    REQUIRE(d.basis.cols() == 1);
    CHECK(d.basis.col(0) == -g);
    CHECK(d.own_coefficients(0) == Approx(4.0 / (4.0 + 0.4)).epsilon(1e-14));
    CHECK(d.iterations == 0);
  }
  SECTION("zero curvature along the gradient and no damping: a numerical issue") {
    Vec diagonal(2);
    diagonal << 0.0, 1.0;
    DenseModel model(diagonal.asDiagonal(), Vec::Unit(2, 0));
    quadra::Directions d;
    const quadra::Status status = make("cg", plain_cg(2))->propose(model, 0.0, d);
    CHECK(status.code() == StatusCode::kNumericalIssue);
    CHECK(status.message().find("zero curvature") != std::string::npos);
  }
}

TEST_CASE("cg reports non-finite values and bad states", "[plugin:cg]") {
  const int n = 6;
  DenseModel model(random_spd(n, 71), random_vector(n, 72));
  quadra::Directions d;
  SECTION("non-finite gradient") {
    model.g(2) = std::nan("");
    const quadra::Status status = make("cg")->propose(model, 0.1, d);
    CHECK(status.code() == StatusCode::kNumericalIssue);
    CHECK(status.message() == "cg: the gradient has non-finite entries");
  }
  SECTION("non-finite curvature product") {
    model.poison_products = true;
    const quadra::Status status = make("cg")->propose(model, 0.1, d);
    CHECK(status.code() == StatusCode::kNumericalIssue);
    CHECK(status.message() == "linear operator product has a non-finite entry: y[0] = nan (n = 6)");
  }
  SECTION("load_state validates the layout") {
    auto cg = make("cg");
    quadra::Status status = cg->load_state({1.0, 5.0, 1.0, 2.0});
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.message() ==
          "cg: checkpoint state ends after 4 entries; expected entries 2..6 for the warm-start "
          "vector (layout: {version 1, n, warm-start vector[n]})");
    status = cg->load_state({2.0, 0.0});
    CHECK(status.message() ==
          "cg: checkpoint state has layout version 2; expected 1 (layout: {version 1, n, "
          "warm-start vector[n]})");
    CHECK(cg->load_state({1.0, 1.0, std::nan("")}).message() ==
          "cg: checkpoint state entry 2 (element 0 of the warm-start vector) is nan; expected a "
          "finite number");
    CHECK(cg->load_state({}).code() == StatusCode::kInvalidArgument);
    // A state of another model's size is refused when it is used.
    REQUIRE(cg->load_state({1.0, 3.0, 0.1, 0.2, 0.3}).is_ok());
    status = cg->propose(model, 0.1, d);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.message() == "cg: the warm-start vector has 3 entries, the model 6 parameters");
  }
}

// --- eigen-Newton

TEST_CASE("eigen-newton with k = n is the exact damped Newton step", "[plugin:eigen-newton]") {
  const int n = 12;
  DenseModel model(random_spd(n, 81), random_vector(n, 82));
  const double lambda = 0.3;
  auto solver = make("eigen-newton", {{"rank", std::to_string(n)}, {"complement_step", "1"}});
  const quadra::Directions d = propose(*solver, model, lambda);
  REQUIRE(d.basis.cols() == n);  // the complement is rounding noise here and left out
  const Vec newton = -(model.c + lambda * Mat::Identity(n, n)).ldlt().solve(model.g);
  CHECK(relative(step_of(d), newton) < 1e-10);
  CHECK((d.basis.transpose() * d.basis - Mat::Identity(n, n)).norm() < 1e-10);
}

TEST_CASE("eigen-newton with k < n is the Newton step projected on the top eigenspace",
          "[plugin:eigen-newton]") {
  const int n = 12, k = 4;
  DenseModel model(random_spd(n, 91), random_vector(n, 92));
  const double lambda = 0.05;
  const Eigen::SelfAdjointEigenSolver<Mat> eig(model.c);
  const Mat u = eig.eigenvectors().rightCols(k);
  const Vec theta = eig.eigenvalues().tail(k);
  const Vec projected =
      -u * (theta.array() + lambda).inverse().matrix().asDiagonal() * (u.transpose() * model.g);

  const quadra::Directions d = propose(*make("eigen-newton", {{"rank", "4"}}), model, lambda);
  REQUIRE(d.basis.cols() == k);
  CHECK(relative(step_of(d), projected) < 1e-12);
  for (int i = 0; i < k; ++i) {
    const Vec ui = d.basis.col(i);
    const double theta_i = ui.dot(model.c * ui);
    CHECK(d.own_coefficients(i) == Approx(-model.g.dot(ui) / (theta_i + lambda)).epsilon(1e-10));
  }

  SECTION("complement_step adds a gradient step in the orthogonal complement") {
    const quadra::Directions c =
        propose(*make("eigen-newton", {{"rank", "4"}, {"complement_step", "0.5"}}), model, lambda);
    REQUIRE(c.basis.cols() == k + 1);
    const Vec perp = model.g - u * (u.transpose() * model.g);
    CHECK(c.basis.col(k).norm() == Approx(1.0).epsilon(1e-14));
    CHECK((u.transpose() * c.basis.col(k)).norm() < 1e-12);
    CHECK(c.own_coefficients(k) == Approx(-0.5 * perp.norm()).epsilon(1e-12));
    CHECK(relative(step_of(c), projected - 0.5 * perp) < 1e-12);
  }
}

TEST_CASE("eigen-newton handles non-positive eigenvalues", "[plugin:eigen-newton]") {
  const int n = 6;
  Vec spectrum(n);
  spectrum << -2.0, -1.0, -0.5, 1.0, 2.0, 3.0;
  DenseModel model(with_spectrum(spectrum, 101), random_vector(n, 102));
  const double lambda = 0.1;
  const Eigen::SelfAdjointEigenSolver<Mat> eig(model.c);
  const Mat u = eig.eigenvectors();
  const Vec gamma = u.transpose() * model.g;
  SECTION("absolute: saddle-free Newton") {
    const Vec expected =
        -u * (eig.eigenvalues().array().abs() + lambda).inverse().matrix().asDiagonal() * gamma;
    const quadra::Directions d = propose(*make("eigen-newton", {{"rank", "6"}}), model, lambda);
    CHECK(d.basis.cols() == n);
    CHECK(relative(step_of(d), expected) < 1e-10);
  }
  SECTION("drop: only positive curvature, the rest by the complement step") {
    const Mat positive = u.rightCols(3);
    const Vec newton = -positive * (eig.eigenvalues().tail(3).array() + lambda).inverse().matrix().asDiagonal() *
                       (positive.transpose() * model.g);
    const quadra::Directions d =
        propose(*make("eigen-newton", {{"rank", "6"}, {"negative_curvature", "drop"}}), model, lambda);
    CHECK(d.basis.cols() == 3);
    CHECK(relative(step_of(d), newton) < 1e-10);
    const quadra::Directions c = propose(
        *make("eigen-newton",
              {{"rank", "6"}, {"negative_curvature", "drop"}, {"complement_step", "2"}}),
        model, lambda);
    CHECK(c.basis.cols() == 4);
    const Vec perp = model.g - positive * (positive.transpose() * model.g);
    CHECK(relative(step_of(c), newton - 2.0 * perp) < 1e-10);
  }
  SECTION("a zero eigenvalue without damping is a numerical issue") {
    Vec diagonal(2);
    diagonal << 1.0, 0.0;
    DenseModel singular(diagonal.asDiagonal(), Vec::Ones(2));
    quadra::Directions d;
    const quadra::Status status = make("eigen-newton", {{"rank", "2"}})->propose(singular, 0.0, d);
    CHECK(status.code() == StatusCode::kNumericalIssue);
  }
}

// --- K-FAC

namespace {

struct KfacProblem {
  Layout layout{0, 3, 3, true};  // out 3, in 3, bias: 12 parameters
  Mat a = random_spd(4, 111);
  Mat s = random_spd(3, 112);
  Eigen::Index n = 12;
  [[nodiscard]] DenseModel model(unsigned seed) const {
    DenseModel m(kronecker_dense(layout, a, s, n), random_vector(n, seed));
    m.backend.set_layer(layout, a, s);
    return m;
  }
};

}  // namespace

TEST_CASE("kfac on C = S (x) A reaches the exact damped minimiser", "[plugin:kfac]") {
  const KfacProblem problem;
  DenseModel model = problem.model(113);
  const double lambda = 0.07;
  const Vec exact = -(model.c + lambda * Mat::Identity(problem.n, problem.n)).ldlt().solve(model.g);
  SECTION("rescale: own coefficient is the line minimiser, 1 here") {
    const quadra::Directions d = propose(*make("kfac"), model, lambda);
    REQUIRE(d.basis.cols() == 1);
    CHECK(relative(d.basis.col(0), exact) < 1e-10);
    CHECK(d.own_coefficients(0) == Approx(1.0).epsilon(1e-10));
    CHECK(relative(step_of(d), exact) < 1e-10);
    CHECK(model.backend.calls == 1);
    CHECK(model.backend.last_variant == quadra::KfacVariant::kType2);
    CHECK(model.products == 1);
  }
  SECTION("no rescale: own coefficient is the learning rate") {
    const quadra::Directions d =
        propose(*make("kfac", {{"rescale", "false"}, {"learning_rate", "0.3"}}), model, lambda);
    CHECK(d.own_coefficients(0) == 0.3);
    CHECK(relative(d.basis.col(0), exact) < 1e-10);
    CHECK(model.products == 0);
  }
}

TEST_CASE("kfac pi damping is the factored Tikhonov inverse", "[plugin:kfac]") {
  const KfacProblem problem;
  DenseModel model = problem.model(121);
  const double lambda = 0.2;
  const double pi = std::sqrt((problem.a.trace() / 4.0) / (problem.s.trace() / 3.0));
  const Mat damped = kronecker_dense(problem.layout,
                                     problem.a + pi * std::sqrt(lambda) * Mat::Identity(4, 4),
                                     problem.s + std::sqrt(lambda) / pi * Mat::Identity(3, 3),
                                     problem.n);
  const Vec expected = -damped.ldlt().solve(model.g);
  const quadra::Directions d = propose(*make("kfac", {{"damping_style", "pi"}}), model, lambda);
  CHECK(relative(d.basis.col(0), expected) < 1e-10);
  const double line = -model.g.dot(expected) /
                      expected.dot((model.c + lambda * Mat::Identity(problem.n, problem.n)) * expected);
  CHECK(d.own_coefficients(0) == Approx(line).epsilon(1e-10));
}

TEST_CASE("kfac: parameters outside every layer get the plain negative gradient", "[plugin:kfac]") {
  const Layout layout{1, 2, 3, false};  // parameters 1..6; 0 and 7 are outside
  const Mat a = random_spd(3, 131), s = random_spd(2, 132);
  const Eigen::Index n = 8;
  DenseModel model(kronecker_dense(layout, a, s, n) + Mat::Identity(n, n), random_vector(n, 133));
  model.backend.set_layer(layout, a, s);
  const double lambda = 0.1;
  const quadra::Directions d = propose(*make("kfac", {{"rescale", "false"}}), model, lambda);
  CHECK(d.basis(0, 0) == -model.g(0));
  CHECK(d.basis(7, 0) == -model.g(7));
  const Mat block = kronecker_dense(layout, a, s, n).block(1, 1, 6, 6);
  const Vec inner = -(block + lambda * Mat::Identity(6, 6)).ldlt().solve(model.g.segment(1, 6));
  CHECK(relative(d.basis.col(0).segment(1, 6), inner) < 1e-10);
}

TEST_CASE("kfac averages factors and refreshes them every inverse_interval steps",
          "[plugin:kfac]") {
  const KfacProblem problem;
  DenseModel model = problem.model(141);
  const double lambda = 0.1;
  const Mat a2 = random_spd(4, 142), s2 = random_spd(3, 143);
  auto kfac = make("kfac", {{"inverse_interval", "2"}, {"factor_decay", "0.9"}, {"rescale", "false"}});
  const auto expected = [&](const Mat& a, const Mat& s) {
    const Mat c = kronecker_dense(problem.layout, a, s, problem.n);
    return Vec(-(c + lambda * Mat::Identity(problem.n, problem.n)).ldlt().solve(model.g));
  };

  const quadra::Directions d0 = propose(*kfac, model, lambda);
  CHECK(model.backend.calls == 1);
  CHECK(relative(d0.basis.col(0), expected(problem.a, problem.s)) < 1e-10);
  kfac->step_taken(step_of(d0), true);

  model.backend.set_layer(problem.layout, a2, s2);
  model.step_count = 1;
  const quadra::Directions d1 = propose(*kfac, model, lambda);
  CHECK(model.backend.calls == 1);  // in between refreshes: the old factors
  CHECK(d1.basis == d0.basis);

  model.step_count = 2;
  const quadra::Directions d2 = propose(*kfac, model, lambda);
  CHECK(model.backend.calls == 2);
  CHECK(relative(d2.basis.col(0), expected(0.9 * problem.a + 0.1 * a2, 0.9 * problem.s + 0.1 * s2)) <
        1e-10);
}

TEST_CASE("kfac: a failed proposal leaves no trace", "[plugin:kfac]") {
  const KfacProblem problem;
  DenseModel model = problem.model(151);
  const quadra::RawOptions options = {
      {"inverse_interval", "2"}, {"factor_decay", "0"}, {"rescale", "false"}};
  auto failing = make("kfac", options);
  auto clean = make("kfac", options);
  for (std::int64_t step : {0, 1}) {
    model.step_count = step;
    propose(*failing, model, 0.1);
    propose(*clean, model, 0.1);
  }
  // Step 2 refreshes the factors: zero factors and lambda = 0 leave no positive eigenvalue.
  model.step_count = 2;
  model.backend.set_layer(problem.layout, Mat::Zero(4, 4), Mat::Zero(3, 3));
  quadra::Directions refused;
  CHECK(failing->propose(model, 0.0, refused).code() == StatusCode::kNumericalIssue);
  // Tried again with other factors, the solver refreshes as if the failure had not happened.
  const Mat a2 = random_spd(4, 152), s2 = random_spd(3, 153);
  model.backend.set_layer(problem.layout, a2, s2);
  CHECK(identical(propose(*failing, model, 0.1), propose(*clean, model, 0.1)));
}

TEST_CASE("kfac draws MC labels with a seed from the option and the step", "[plugin:kfac]") {
  const KfacProblem problem;
  const auto seed_at = [&](std::int64_t step, const char* seed) {
    DenseModel model = problem.model(151);
    model.step_count = step;
    propose(*make("kfac", {{"variant", "mc"}, {"mc_samples", "3"}, {"seed", seed}}), model, 0.1);
    CHECK(model.backend.last_variant == quadra::KfacVariant::kMc);
    CHECK(model.backend.last_samples == 3);
    return model.backend.last_seed;
  };
  CHECK(seed_at(5, "7") == seed_at(5, "7"));
  CHECK(seed_at(5, "7") != seed_at(6, "7"));
  CHECK(seed_at(5, "7") != seed_at(5, "8"));
}

TEST_CASE("kfac checkpoints: a restored solver continues bitwise identically", "[plugin:kfac]") {
  const KfacProblem problem;
  DenseModel model = problem.model(161);
  const double lambda = 0.1;
  const quadra::RawOptions options = {{"inverse_interval", "1"}, {"factor_decay", "0.8"}};
  auto kfac = make("kfac", options);
  propose(*kfac, model, lambda);
  model.backend.set_layer(problem.layout, random_spd(4, 162), random_spd(3, 163));
  model.step_count = 1;
  propose(*kfac, model, lambda);

  std::vector<double> state;
  REQUIRE(kfac->save_state(state).is_ok());
  CHECK(state.size() == 3 + 4 + (2 + 16) + (2 + 9));
  auto restored = make("kfac", options);
  REQUIRE(restored->load_state(state).is_ok());
  model.backend.set_layer(problem.layout, random_spd(4, 164), random_spd(3, 165));
  model.step_count = 2;
  const quadra::Directions original = propose(*kfac, model, lambda);
  const quadra::Directions resumed = propose(*restored, model, lambda);
  CHECK(identical(original, resumed));
  CHECK_FALSE(identical(original, propose(*make("kfac", options), model, lambda)));

  SECTION("load_state refuses malformed states and says what it expected") {
    auto fresh = make("kfac", options);
    std::vector<double> truncated(state.begin(), state.end() - 1);
    quadra::Status status = fresh->load_state(truncated);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    const std::string layout =
        " (layout: {version 1, steps, layers, per layer: offset, out, in, bias (0/1), A rows, "
        "A cols, A, S rows, S cols, S})";
    CHECK(status.message() ==
          "kfac: checkpoint state ends after 35 entries; expected entries 27..35 for the layer 0 "
          "output factor S" +
              layout);
    std::vector<double> longer = state;
    longer.push_back(0.0);
    CHECK(fresh->load_state(longer).message() ==
          "kfac: checkpoint state has 37 entries; expected 36" + layout);
    std::vector<double> other_version = state;
    other_version[0] = 2.0;
    CHECK(fresh->load_state(other_version).message() ==
          "kfac: checkpoint state has layout version 2; expected 1" + layout);
    std::vector<double> wrong_shape = state;
    wrong_shape[7] = 5.0;  // A's row count
    CHECK(fresh->load_state(wrong_shape).message() ==
          "kfac: checkpoint state entries 7 and 8 (shape of the layer 0 input factor A) are 5 x 4; "
          "expected 4 x 4");
    std::vector<double> fractional = state;
    fractional[5] = 3.5;  // the layer's input size
    CHECK(fresh->load_state(fractional).message() ==
          "kfac: checkpoint state entry 5 (layer 0 input size) is 3.5; expected a non-negative "
          "integer");
    std::vector<double> bias_flag = state;
    bias_flag[6] = 2.0;
    CHECK(fresh->load_state(bias_flag).message() ==
          "kfac: checkpoint state entry 6 (layer 0 bias flag) is 2; expected an integer from 0 "
          "to 1");
    std::vector<double> non_finite = state;
    non_finite[10] = std::numeric_limits<double>::infinity();  // A(1, 0)
    CHECK(fresh->load_state(non_finite).message() ==
          "kfac: checkpoint state entry 10 (element (1, 0) of the layer 0 input factor A) is inf; "
          "expected a finite number");
    // A failed load leaves the solver as it was: it still starts from the engine's factors.
    DenseModel other = problem.model(166);
    CHECK(identical(propose(*fresh, other, lambda), propose(*make("kfac", options), other, lambda)));
  }
  SECTION("a state from a larger model is refused when used") {
    auto fresh = make("kfac", {{"inverse_interval", "100"}});
    REQUIRE(fresh->load_state(state).is_ok());
    DenseModel small(random_spd(8, 167), random_vector(8, 168));
    quadra::Directions d;
    const quadra::Status status = fresh->propose(small, lambda, d);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.message() == "kfac: layer 0 spans parameters 0..11, the model has 8");
  }
}

// --- First-order baselines

namespace {

std::vector<Vec> gradients(Eigen::Index n) {
  return {random_vector(n, 171), random_vector(n, 172), random_vector(n, 173),
          random_vector(n, 174)};
}

/// torch.optim.SGD (dampening 0): the parameter change of each step.
std::vector<Vec> torch_sgd(const std::vector<Vec>& grads, double lr, double momentum, bool nesterov) {
  std::vector<Vec> updates;
  Vec buf;
  for (const Vec& g : grads) {
    Vec d = g;
    if (momentum != 0.0) {
      buf = buf.size() == 0 ? Vec(g) : Vec(momentum * buf + g);
      d = nesterov ? Vec(g + momentum * buf) : buf;
    }
    updates.push_back(-lr * d);
  }
  return updates;
}

/// torch.optim.Adam (amsgrad off, weight_decay 0): the parameter change of each step.
std::vector<Vec> torch_adam(const std::vector<Vec>& grads, double lr, double beta1, double beta2,
                            double eps) {
  std::vector<Vec> updates;
  const Eigen::Index n = grads[0].size();
  Vec m = Vec::Zero(n), v = Vec::Zero(n);
  int t = 0;
  for (const Vec& g : grads) {
    ++t;
    Vec update(n);
    const double bc1 = 1.0 - std::pow(beta1, t), bc2 = 1.0 - std::pow(beta2, t);
    for (Eigen::Index i = 0; i < n; ++i) {
      m(i) = beta1 * m(i) + (1.0 - beta1) * g(i);
      v(i) = beta2 * v(i) + (1.0 - beta2) * g(i) * g(i);
      const double denom = std::sqrt(v(i)) / std::sqrt(bc2) + eps;
      update(i) = -(lr / bc1) * m(i) / denom;
    }
    updates.push_back(update);
  }
  return updates;
}

/// Proposes on each gradient in turn and accepts every step.
std::vector<quadra::Directions> run(quadra::Solver& solver, const std::vector<Vec>& grads) {
  std::vector<quadra::Directions> out;
  for (const Vec& g : grads) {
    DenseModel model(Mat::Identity(g.size(), g.size()), g);
    out.push_back(propose(solver, model, 0.0));
    solver.step_taken(step_of(out.back()), true);
  }
  return out;
}

void check_updates(const std::vector<quadra::Directions>& got, const std::vector<Vec>& expected) {
  REQUIRE(got.size() == expected.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    INFO("step " << k);
    REQUIRE(got[k].basis.cols() == 1);
    CHECK(got[k].own_coefficients(0) == 1.0);
    CHECK(relative(got[k].basis.col(0), expected[k]) < 1e-14);
  }
}

}  // namespace

TEST_CASE("sgd and adam match PyTorch's update formulas", "[plugin:first-order]") {
  const std::vector<Vec> grads = gradients(5);
  const std::vector<Vec> three(grads.begin(), grads.begin() + 3);
  SECTION("plain sgd") {
    check_updates(run(*make("sgd", {{"learning_rate", "0.05"}}), three),
                  torch_sgd(three, 0.05, 0.0, false));
  }
  SECTION("heavy-ball momentum") {
    check_updates(run(*make("sgd", {{"learning_rate", "0.05"}, {"momentum", "0.9"}}), three),
                  torch_sgd(three, 0.05, 0.9, false));
  }
  SECTION("nesterov") {
    check_updates(
        run(*make("sgd", {{"learning_rate", "0.05"}, {"momentum", "0.8"}, {"nesterov", "true"}}),
            three),
        torch_sgd(three, 0.05, 0.8, true));
  }
  SECTION("adam, defaults") {
    check_updates(run(*make("adam"), three), torch_adam(three, 1e-3, 0.9, 0.999, 1e-8));
  }
  SECTION("adam, other constants") {
    check_updates(run(*make("adam", {{"learning_rate", "0.01"},
                                     {"beta1", "0.5"},
                                     {"beta2", "0.9"},
                                     {"epsilon", "0.1"}}),
                      three),
                  torch_adam(three, 0.01, 0.5, 0.9, 0.1));
  }
}

TEST_CASE("first-order solvers: a rejected step leaves no trace", "[plugin:first-order]") {
  const std::vector<Vec> g = gradients(5);
  for (const quadra::RawOptions& options :
       {quadra::RawOptions{{"momentum", "0.9"}}, quadra::RawOptions{{"momentum", "0.9"}, {"nesterov", "true"}},
        quadra::RawOptions{{"learning_rate", "0.01"}}}) {
    const char* name = options.count("learning_rate") != 0 ? "adam" : "sgd";
    INFO(name);
    auto with_rejection = make(name, options);
    auto without = make(name, options);
    // g0 accepted, g1 rejected (twice), g2, g3 accepted vs g0, g2, g3.
    DenseModel m0(Mat::Identity(5, 5), g[0]), m1(Mat::Identity(5, 5), g[1]);
    with_rejection->step_taken(step_of(propose(*with_rejection, m0, 0.0)), true);
    with_rejection->step_taken(step_of(propose(*with_rejection, m1, 0.0)), false);
    with_rejection->step_taken(step_of(propose(*with_rejection, m1, 0.0)), false);
    const std::vector<quadra::Directions> a = run(*with_rejection, {g[2], g[3]});
    const std::vector<quadra::Directions> b = run(*without, {g[0], g[2], g[3]});
    CHECK(identical(a[0], b[1]));
    CHECK(identical(a[1], b[2]));
  }
  SECTION("a rejected first step: the buffers start afresh") {
    auto rejected = make("adam");
    DenseModel m1(Mat::Identity(5, 5), g[1]);
    rejected->step_taken(step_of(propose(*rejected, m1, 0.0)), false);
    std::vector<double> state;
    REQUIRE(rejected->save_state(state).is_ok());
    CHECK(state == std::vector<double>{1.0, 0.0, 0.0});
    CHECK(identical(run(*rejected, {g[0]})[0], run(*make("adam"), {g[0]})[0]));
  }
}

TEST_CASE("first-order checkpoints restore bitwise and validate their layout",
          "[plugin:first-order]") {
  const std::vector<Vec> g = gradients(5);
  for (const char* name : {"sgd", "adam"}) {
    INFO(name);
    const quadra::RawOptions options =
        std::string(name) == "sgd" ? quadra::RawOptions{{"momentum", "0.5"}} : quadra::RawOptions{};
    auto solver = make(name, options);
    run(*solver, {g[0], g[1]});
    std::vector<double> state;
    REQUIRE(solver->save_state(state).is_ok());
    const std::size_t buffers = std::string(name) == "sgd" ? 1 : 2;
    REQUIRE(state.size() == 3 + buffers * 5);
    CHECK(state[0] == 1.0);
    CHECK(state[1] == 2.0);
    CHECK(state[2] == 5.0);
    auto restored = make(name, options);
    REQUIRE(restored->load_state(state).is_ok());
    CHECK(identical(run(*restored, {g[2]})[0], run(*solver, {g[2]})[0]));

    std::vector<double> wrong = state;
    wrong.pop_back();
    const quadra::Status status = make(name, options)->load_state(wrong);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    const std::string layout =
        buffers == 1
            ? " (layout: {version 1, steps, n, n buffer entries})"
            : " (layout: {version 1, steps, n, n first-moment entries, n second-moment entries})";
    const std::string expected =
        std::string(name) + ": checkpoint state ends after " + std::to_string(wrong.size()) +
        " entries; expected entries " +
        (buffers == 1 ? "3..7 for the momentum buffer" : "8..12 for the second moment") + layout;
    CHECK(status.message() == expected);
    std::vector<double> version = state;
    version[0] = 3.0;
    CHECK(make(name, options)->load_state(version).message() ==
          std::string(name) + ": checkpoint state has layout version 3; expected 1" + layout);
    std::vector<double> non_finite = state;
    non_finite[4] = std::numeric_limits<double>::quiet_NaN();
    CHECK(make(name, options)->load_state(non_finite).message() ==
          std::string(name) + ": checkpoint state entry 4 (element 1 of the " +
              (buffers == 1 ? "momentum buffer" : "first moment") +
              ") is nan; expected a finite number");
    if (buffers == 2) {
      std::vector<double> negative = state;
      negative[10] = -0.5;
      CHECK(make(name, options)->load_state(negative).message() ==
            "adam: checkpoint state entry 10 (element 2 of the second moment) is -0.5; expected a "
            "finite number >= 0");
    }

    // A state for 5 parameters does not fit a model with 4.
    auto mismatched = make(name, options);
    REQUIRE(mismatched->load_state(state).is_ok());
    DenseModel small(Mat::Identity(4, 4), Vec::Ones(4));
    quadra::Directions d;
    CHECK(mismatched->propose(small, 0.0, d).code() == StatusCode::kInvalidArgument);
  }
  SECTION("sgd without momentum refuses a momentum buffer") {
    const quadra::Status status = make("sgd")->load_state({1.0, 1.0, 2.0, 0.5, 0.5});
    CHECK(status.message() ==
          "sgd: checkpoint state holds a momentum buffer, but option 'momentum' is 0");
  }
}
