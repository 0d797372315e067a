// Normalization layers (batchnorm with running statistics, layernorm, groupnorm) against
// independent references: central finite differences and dense matrices, float64; plus
// thread-count determinism, float32, parsing, buffers and the parameter layout.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include <unistd.h>

#include <Eigen/Eigenvalues>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "nn_test_utils.hpp"

using namespace quadra;
using namespace quadra::nn;
using namespace quadra::nn::test;

namespace {

std::vector<Case> norm_cases() {
  return {
      {"cnn-bn-gn-ln-ce", "conv(4,3) batchnorm tanh groupnorm(2) flatten layernorm linear(3)", "2x5x5",
       Loss::kCrossEntropy},
      {"mlp-ln-ce", "linear(8) layernorm tanh linear(3)", "5", Loss::kCrossEntropy},
      {"mlp-bn1d-gn-mse", "linear(6) batchnorm sigmoid linear(6) groupnorm(3,eps=0.01) linear(2)", "4",
       Loss::kMse},
      // Normalization first (a parameter layer with no tangent input) and without affine.
      {"norm-first-ce", "layernorm(affine=false) linear(4) groupnorm(2,affine=false) gelu batchnorm linear(3)",
       "6", Loss::kCrossEntropy},
  };
}

/// A problem with non-trivial γ, β and running statistics.
Problem make_norm_problem(const Case& c, Index n, std::uint64_t seed) {
  Problem p = make_problem(c, n, seed);
  std::mt19937_64 rng(seed + 77);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.3, 2.0);
  for (const ParameterInfo& info : p.net.parameters()) {
    if (!p.net.layers()[static_cast<std::size_t>(info.layer)].is_normalization()) continue;
    for (Index i = 0; i < info.size; ++i) {
      p.theta[info.offset + i] = info.is_bias ? 0.5 * normal(rng) : uniform(rng) * (rng() % 2 ? 1 : -1);
    }
  }
  std::vector<double> buffers = p.net.buffer_values();
  for (const BufferInfo& b : p.net.buffers()) {
    for (Index i = 0; i < b.size; ++i) {
      double& value = buffers[static_cast<std::size_t>(b.offset + i)];
      if (b.is_integer) value = 7;
      else if (b.name.ends_with("running_var")) value = uniform(rng);
      else value = 0.5 * normal(rng);
    }
  }
  p.net.set_buffer_values(buffers);
  return p;
}

Mat fd_hessian(const Problem& p, double h = 1e-5) {
  const Index size = p.theta.size();
  Mat reference(size, size);
  for (Index i = 0; i < size; ++i) {
    Vec plus = p.theta;
    Vec minus = p.theta;
    plus[i] += h;
    minus[i] -= h;
    Vec gp(size);
    Vec gm(size);
    bind(p, plus).gradient(gp);
    bind(p, minus).gradient(gm);
    reference.col(i) = (gp - gm) / (2 * h);
  }
  return reference;
}

/// The dense Hessian of the mean loss by second-order central differences of the loss alone
/// (independent of the engine's gradient).
Mat fd2_hessian(const Problem& p, double h = 1e-4) {
  const Index size = p.theta.size();
  Mat hess(size, size);
  const auto loss = [&](const Vec& t) { return bind(p, t).loss(); };
  for (Index i = 0; i < size; ++i) {
    for (Index j = 0; j <= i; ++j) {
      Vec t = p.theta;
      t[i] += h;
      t[j] += h;
      const double pp = loss(t);
      t[j] -= 2 * h;
      const double pm = loss(t);
      t[i] -= 2 * h;
      const double mm = loss(t);
      t[j] += 2 * h;
      const double mp = loss(t);
      hess(i, j) = hess(j, i) = (pp - pm - mp + mm) / (4 * h * h);
    }
  }
  return hess;
}

}  // namespace

TEST_CASE("normalization layers: gradient and per-sample gradients match finite differences", "[nn][norm]") {
  for (const Case& c : norm_cases()) {
    INFO(c.name);
    const Problem p = make_norm_problem(c, 5, 7);
    auto batch = bind(p);
    Vec g(p.theta.size());
    batch.gradient(g);
    CHECK(rel_err(g, fd_gradient(p)) < 1e-7);
    Mat per(p.theta.size(), 5);
    batch.per_sample_gradients(per);
    CHECK(rel_err(per, fd_per_sample(p)) < 1e-7);
    CHECK(rel_err(per.rowwise().sum() / 5.0, g) < 1e-13);
  }
}

TEST_CASE("normalization layers: Hessian product matches finite differences and a dense Hessian", "[nn][norm]") {
  for (const Case& c : norm_cases()) {
    INFO(c.name);
    const Problem p = make_norm_problem(c, 3, 9);
    auto batch = bind(p);
    const Index size = p.theta.size();
    const Mat hess = dense_of(size, [&](const Vec& v, Vec& out) { batch.hessian_product(v, out); });
    CHECK(rel_err(hess, fd_hessian(p)) < 1e-7);
    CHECK(rel_err(hess, hess.transpose()) < 1e-12);
    const Mat ggn = dense_of(size, [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
    CHECK(rel_err(hess, ggn) > 1e-3);
  }
  // Second differences of the loss only: small networks keep this affordable.
  for (const std::string spec : {"linear(4) layernorm tanh linear(3)", "linear(4) groupnorm(2) linear(3)",
                                 "layernorm linear(3)"}) {
    INFO(spec);
    const Problem p = make_norm_problem({"small", spec, "4", Loss::kCrossEntropy}, 3, 21);
    auto batch = bind(p);
    const Mat hess = dense_of(p.theta.size(), [&](const Vec& v, Vec& out) { batch.hessian_product(v, out); });
    CHECK(rel_err(hess, fd2_hessian(p)) < 1e-5);
  }
}

TEST_CASE("normalization layers: GGN, EF and their diagonals against dense references", "[nn][norm]") {
  for (const Case& c : norm_cases()) {
    INFO(c.name);
    const Problem p = make_norm_problem(c, 4, 5);
    auto batch = bind(p);
    const Index size = p.theta.size();
    const Mat jac = fd_jacobian(p);
    const Mat reference = jac.transpose() * dense_loss_hessian(p, batch.outputs()) * jac;
    const Mat ggn = dense_of(size, [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
    CHECK(rel_err(ggn, reference) < 1e-7);
    Vec diag(size);
    batch.ggn_diagonal(diag);
    CHECK(rel_err(diag, ggn.diagonal()) < 1e-12);
    const Mat per = fd_per_sample(p);
    const Mat ef_reference = per * per.transpose() / 4.0;
    const Mat ef = dense_of(size, [&](const Vec& v, Vec& out) { batch.empirical_fisher_product(v, out); });
    CHECK(rel_err(ef, ef_reference) < 1e-7);
    batch.empirical_fisher_diagonal(diag);
    CHECK(rel_err(diag, ef_reference.diagonal()) < 1e-7);
    // MC-Fisher with many labels approaches the GGN.
    batch.set_mc_samples(4000, 3);
    const Mat mc = dense_of(size, [&](const Vec& v, Vec& out) { batch.mc_fisher_product(v, out); });
    CHECK(rel_err(mc, ggn) < 0.08);
  }
}

TEST_CASE("normalization layers: JVP and VJP match the finite-difference Jacobian", "[nn][norm]") {
  for (const Case& c : norm_cases()) {
    INFO(c.name);
    const Problem p = make_norm_problem(c, 4, 23);
    auto batch = bind(p);
    const Vec v = random_vector(p.theta.size(), 1);
    Mat jv(p.net.num_outputs(), 4);
    batch.jvp(v, jv);
    const Mat jac = fd_jacobian(p);
    CHECK(rel_err(Eigen::Map<const Vec>(jv.data(), jv.size()), jac * v) < 1e-7);
    const Vec u_flat = random_vector(jv.size(), 2);
    const Mat u = Eigen::Map<const Mat>(u_flat.data(), jv.rows(), jv.cols());
    Vec jtu(p.theta.size());
    batch.vjp(u, jtu);
    CHECK(rel_err(jtu, jac.transpose() * u_flat) < 1e-7);
  }
}

TEST_CASE("normalization layers: bitwise identical with 1 and 2 threads, and float32 close", "[nn][norm][determinism]") {
  for (const Case& c : norm_cases()) {
    INFO(c.name);
    const Problem p = make_norm_problem(c, 601, 37);
    const Vec v = random_vector(p.theta.size(), 3);
    auto run = [&](int threads) {
      const ThreadLimit limit(threads);
      auto batch = bind(p);
      std::vector<Vec> results(6, Vec(p.theta.size()));
      batch.gradient(results[0]);
      batch.ggn_product(v, results[1]);
      batch.hessian_product(v, results[2]);
      batch.ggn_diagonal(results[3]);
      batch.empirical_fisher_product(v, results[4]);
      batch.empirical_fisher_diagonal(results[5]);
      return results;
    };
    const auto one = run(1);
    const auto two = run(2);
    for (std::size_t i = 0; i < one.size(); ++i) {
      INFO("quantity " << i);
      CHECK(std::memcmp(one[i].data(), two[i].data(), sizeof(double) * static_cast<std::size_t>(one[i].size())) == 0);
    }
    Targets<float> targets32;
    targets32.labels = p.targets.labels;
    targets32.values = p.targets.values.cast<float>();
    BoundBatch<float> batch32(p.net, p.theta.cast<float>(), p.x.cast<float>(), std::move(targets32), p.loss);
    Vector<float> g32(p.theta.size());
    Vector<float> h32(p.theta.size());
    batch32.gradient(g32);
    batch32.hessian_product(v.cast<float>(), h32);
    CHECK(rel_err(g32.cast<double>(), one[0]) < 1e-4);
    CHECK(rel_err(h32.cast<double>(), one[2]) < 1e-3);
  }
}

TEST_CASE("normalization layers: forward values against a direct evaluation", "[nn][norm]") {
  // layernorm over 2x1x3 and groupnorm(2) over the same: written out by hand.
  Network ln("layernorm flatten", parse_shape("2x1x3"));
  Network gn("groupnorm(2) flatten", parse_shape("2x1x3"));
  Network bn("batchnorm(eps=0.5) flatten", parse_shape("2x1x3"));
  Vec x(6);
  x << 1, 2, 4, -1, 0, 3;
  Vec ln_theta(12);
  ln_theta << 1, 2, 3, 4, 5, 6, 0.5, 0, 0, 0, 0, -1;
  Mat y = ln.forward<double>(ln_theta, x);
  const double mean = 9.0 / 6;
  double var = 0;
  for (Index i = 0; i < 6; ++i) var += (x[i] - mean) * (x[i] - mean) / 6;
  for (Index i = 0; i < 6; ++i) {
    CHECK(y(i, 0) == Approx(ln_theta[i] * (x[i] - mean) / std::sqrt(var + 1e-5) + ln_theta[6 + i]));
  }
  Vec gn_theta(4);
  gn_theta << 2, 3, 1, -1;
  y = gn.forward<double>(gn_theta, x);
  for (Index g = 0; g < 2; ++g) {
    const double m = x.segment(3 * g, 3).mean();
    const double v = (x.segment(3 * g, 3).array() - m).square().mean();
    for (Index i = 3 * g; i < 3 * g + 3; ++i) {
      CHECK(y(i, 0) == Approx(gn_theta[g] * (x[i] - m) / std::sqrt(v + 1e-5) + gn_theta[2 + g]));
    }
  }
  bn.set_buffer_values({0.5, -1, 2, 3, 11});
  Vec bn_theta(4);
  bn_theta << 2, 3, 1, -1;
  y = bn.forward<double>(bn_theta, x);
  for (Index i = 0; i < 6; ++i) {
    const Index c = i / 3;
    const double mu = c == 0 ? 0.5 : -1;
    const double var_c = c == 0 ? 2 : 3;
    CHECK(y(i, 0) == Approx(bn_theta[c] * (x[i] - mu) / std::sqrt(var_c + 0.5) + bn_theta[2 + c]));
  }
}

TEST_CASE("normalization layers: spec, parameter and buffer layout", "[nn][norm][network]") {
  Network net("conv(4,3) batchnorm tanh groupnorm(2,eps=0.001) flatten layernorm(affine=false) linear(3)",
              parse_shape("2x5x5"));
  CHECK(net.spec() ==
        "conv(4,3,stride=1,pad=0) batchnorm tanh groupnorm(2,eps=0.001) flatten layernorm(affine=false) linear(3)");
  CHECK(Network(net.spec(), net.input_shape()).spec() == net.spec());
  std::vector<std::string> names;
  for (const ParameterInfo& p : net.parameters()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
                                          "6.weight", "6.bias"});
  CHECK(net.parameters()[2].shape == std::vector<Index>{4});
  CHECK(net.parameters()[4].shape == std::vector<Index>{4});
  REQUIRE(net.buffers().size() == 3);
  CHECK(net.buffers()[0].name == "1.running_mean");
  CHECK(net.buffers()[1].name == "1.running_var");
  CHECK(net.buffers()[2].name == "1.num_batches_tracked");
  CHECK(net.buffers()[2].shape.empty());
  CHECK(net.buffers()[2].is_integer);
  CHECK(net.buffer_values() == std::vector<double>{0, 0, 0, 0, 1, 1, 1, 1, 0});
  const Vec theta = net.initial_parameters<double>(3);
  CHECK(theta.segment(net.parameters()[2].offset, 4) == Vec::Ones(4));
  CHECK(theta.segment(net.parameters()[3].offset, 4) == Vec::Zero(4));
  // A copy keeps its buffer values.
  std::vector<double> values = net.buffer_values();
  values[4] = 2.5;
  net.set_buffer_values(values);
  const Network copy = net;
  CHECK(copy.buffer_values()[4] == 2.5);
  // LayerNorm on an image: elementwise γ and β of the sample's shape.
  Network ln("layernorm flatten", parse_shape("3x2x2"));
  CHECK(ln.parameters()[0].shape == std::vector<Index>{3, 2, 2});
  CHECK(ln.parameters()[1].shape == std::vector<Index>{3, 2, 2});
  CHECK(ln.forward_flops(0) == 12 * 7);
  CHECK(net.forward_flops(1) == 4 * 3 * 3 * 2);
  CHECK(Network("linear(4) batchnorm(momentum=0.2,affine=false) linear(2)", parse_shape("3")).spec() ==
        "linear(4) batchnorm(momentum=0.2,affine=false) linear(2)");
}

TEST_CASE("normalization layers: bad specs and buffer values are refused clearly", "[nn][norm][errors]") {
  CHECK_THROWS_WITH(Network("conv(3,1) groupnorm(2) flatten", parse_shape("1x3x3")),
                    Catch::Contains("3 channels do not split into 2 groups"));
  CHECK_THROWS_WITH(Network("layernorm(eps=0) linear(2)", parse_shape("3")), Catch::Contains("eps 0 is not positive"));
  CHECK_THROWS_WITH(Network("batchnorm(momentum=2) linear(2)", parse_shape("3")),
                    Catch::Contains("momentum 2 is outside [0, 1]"));
  CHECK_THROWS_WITH(Network("groupnorm linear(2)", parse_shape("3")), Catch::Contains("missing the number of groups"));
  Network net("batchnorm linear(2)", parse_shape("2"));
  CHECK_THROWS_WITH(net.set_buffer_values({0, 0, 1}), Catch::Contains("3 given") && Catch::Contains("has 5"));
  CHECK_THROWS_WITH(net.set_buffer_values({0, 0, 1, -1, 0}),
                    Catch::Contains("'0.running_var' entry 1 is -1") && Catch::Contains(">= 0"));
  CHECK_THROWS_WITH(net.set_buffer_values({0, NAN, 1, 1, 0}), Catch::Contains("'0.running_mean' entry 1"));
  CHECK_THROWS_WITH(net.set_buffer_values({0, 0, 1, 1, 0.5}),
                    Catch::Contains("'0.num_batches_tracked'") && Catch::Contains("whole number"));
}

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("quadra_norm_test_" + std::to_string(::getpid()) + "_" +
            std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("normalization layers: buffers round-trip through weight and model files", "[nn][norm][io]") {
  TempDir dir;
  const Problem p = make_norm_problem(norm_cases()[0], 3, 5);
  const Network& net = p.net;
  save_weights<double>(dir.path / "w.npz", net, p.theta);
  const auto arrays = io::read_npz(dir.path / "w.npz");
  REQUIRE(arrays.count("1.running_mean") == 1);
  CHECK(arrays.at("1.running_mean").shape == std::vector<std::int64_t>{4});
  CHECK(arrays.at("1.running_var").dtype == io::DType::kFloat64);
  CHECK(arrays.at("1.num_batches_tracked").dtype == io::DType::kInt64);
  CHECK(arrays.at("1.num_batches_tracked").shape.empty());
  CHECK(arrays.at("1.num_batches_tracked").to_vector<std::int64_t>() == std::vector<std::int64_t>{7});
  // Into a fresh network (default buffers), the file's buffers come back exactly.
  Network fresh(net.spec(), net.input_shape());
  std::vector<double> buffers;
  CHECK(load_weights<double>(dir.path / "w.npz", fresh, &buffers) == p.theta);
  CHECK(buffers == net.buffer_values());
  // Model files keep them in the network they load.
  save_model<float>(dir.path / "m.npz", net, p.theta.cast<float>());
  const Model<float> model = load_model<float>(dir.path / "m.npz");
  REQUIRE(model.network.buffer_values().size() == net.buffer_values().size());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    CHECK(model.network.buffer_values()[i] == static_cast<double>(static_cast<float>(buffers[i])));
  }
  CHECK(io::read_npz(dir.path / "m.npz").at("1.running_var").dtype == io::DType::kFloat32);
  // The loaded model computes what the original does (its buffers are in use).
  const Matrix<float> a = model.network.forward<float>(model.params, p.x.cast<float>());
  const Matrix<float> b = net.forward<float>(p.theta.cast<float>(), p.x.cast<float>());
  CHECK((a - b).norm() <= 1e-5F * b.norm());
}

TEST_CASE("normalization layers: buffer arrays are checked strictly", "[nn][norm][io]") {
  TempDir dir;
  const Network net("linear(3) batchnorm linear(2)", parse_shape("4"));
  const Vector<double> theta = net.initial_parameters<double>(1);
  auto arrays = parameters_to_arrays<double>(net, theta);
  const auto without = [&](const std::string& key) {
    std::vector<std::pair<std::string, io::NpyArray>> out;
    for (const auto& a : arrays) {
      if (a.first != key) out.push_back(a);
    }
    return out;
  };
  const auto file = dir.path / "w.npz";
  io::write_npz(file, without("1.running_var"));
  CHECK_THAT(error_of([&] { (void)load_weights<double>(file, net); }),
             Catch::Contains("missing array '1.running_var'"));
  auto extra = arrays;
  const double one = 1;
  extra.emplace_back("1.running_std", io::NpyArray::from<double>({3}, std::vector<double>{1, 1, 1}.data()));
  io::write_npz(file, extra);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(file, net); }),
             Catch::Contains("unexpected array '1.running_std'") && Catch::Contains("1.num_batches_tracked"));
  auto bad_shape = without("1.running_mean");
  bad_shape.emplace_back("1.running_mean", io::NpyArray::from<double>({1}, &one));
  io::write_npz(file, bad_shape);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(file, net); }),
             Catch::Contains("buffer '1.running_mean' has shape (1,)") && Catch::Contains("(3,)"));
  auto negative = without("1.running_var");
  negative.emplace_back("1.running_var", io::NpyArray::from<double>({3}, std::vector<double>{1, -2, 1}.data()));
  io::write_npz(file, negative);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(file, net); }),
             Catch::Contains("'1.running_var' entry 1 is -2"));
  auto text = without("1.running_mean");
  const std::uint8_t bytes[3] = {1, 2, 3};
  text.emplace_back("1.running_mean", io::NpyArray::from<std::uint8_t>({3}, bytes));
  io::write_npz(file, text);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(file, net); }),
             Catch::Contains("buffer '1.running_mean' has dtype uint8"));
}
