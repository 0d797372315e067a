// BatchNorm with batch statistics (PyTorch's train mode): every engine quantity of the batch loss
// against PyTorch (tests/fixtures/torch/make_bn_train_fixtures.py, float64, 1e-10 relative) and
// against central finite differences of the bound batch itself; K-FAC factors of the coupled
// backward pass; thread-count determinism across several chunks; the refusal of per-sample
// queries; prediction in eval mode.

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <functional>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "nn_test_utils.hpp"

using namespace quadra;
using namespace quadra::nn;
using namespace quadra::nn::test;

namespace {

const std::filesystem::path kDir = std::filesystem::path(QUADRA_SOURCE_DIR) / "tests/fixtures/torch";

io::NpyArray fixture(const std::string& name, const std::string& key) {
  return io::read_npy(kDir / (name + "_" + key + ".npy"));
}

Vec vec(const io::NpyArray& a) {
  const auto v = a.to_vector<double>();
  return Eigen::Map<const Vec>(v.data(), static_cast<Index>(v.size()));
}

std::string text(const io::NpyArray& a) {
  const auto bytes = a.to_vector<std::uint8_t>();
  return {bytes.begin(), bytes.end()};
}

double rel(const Eigen::Ref<const Mat>& a, const Eigen::Ref<const Mat>& b) {
  return (a - b).norm() / b.norm();
}

/// Smooth activations only (finite differences), a residual block, BatchNorm2d and 1d, a
/// batchnorm before the first parameter and one without affine parameters.
std::vector<Case> train_cases() {
  return {
      {"cnn-res-bn2d-bn1d-ce",
       "conv(3,3,pad=1) batchnorm tanh residual(conv(3,3,pad=1,bias=false) batchnorm softplus "
       "conv(3,3,pad=1)) batchnorm gelu flatten linear(4) batchnorm tanh linear(3)",
       "2x4x4", Loss::kCrossEntropy},
      {"mlp-bn-first-mse",
       "batchnorm linear(6) batchnorm sigmoid linear(6) batchnorm(affine=false) tanh linear(2)", "4",
       Loss::kMse},
  };
}

/// A problem whose batchnorm layers use batch statistics, with non-trivial γ and β.
Problem make_train_problem(const Case& c, Index n, std::uint64_t seed) {
  Problem p = make_problem(c, n, seed);
  p.net.set_batch_norm(NormMode::kBatchStatistics);
  std::mt19937_64 rng(seed + 5);
  std::normal_distribution<double> normal;
  for (const ParameterInfo& info : p.net.parameters()) {
    if (!p.net.layers()[static_cast<std::size_t>(info.layer)].is_normalization()) continue;
    for (Index i = 0; i < info.size; ++i) {
      p.theta[info.offset + i] = info.is_bias ? 0.5 * normal(rng) : 0.7 + 0.5 * normal(rng);
    }
  }
  return p;
}

/// Jacobian of every output of the bound batch (C·N rows, sample-major), central differences:
/// the batch statistics move with the parameters.
Mat fd_batch_jacobian(const Problem& p, double h = 1e-6) {
  const Index rows = p.net.num_outputs() * p.x.cols();
  Mat jac(rows, p.theta.size());
  for (Index i = 0; i < p.theta.size(); ++i) {
    Vec plus = p.theta;
    Vec minus = p.theta;
    plus[i] += h;
    minus[i] -= h;
    const Mat diff = (bind(p, plus).outputs() - bind(p, minus).outputs()) / (2 * h);
    jac.col(i) = Eigen::Map<const Vec>(diff.data(), rows);
  }
  return jac;
}

}  // namespace

TEST_CASE("batch statistics: quadra matches PyTorch's train mode", "[nn][batchnorm-train][torch]") {
  for (const std::string name : {"bn_train_cnn", "bn_train_mlp"}) {
    INFO(name);
    TensorShape shape;
    for (std::int64_t d : fixture(name, "input_shape").to_vector<std::int64_t>()) shape.dims.push_back(d);
    Network net(text(fixture(name, "spec")), shape);
    net.set_batch_norm(NormMode::kBatchStatistics);
    const Loss loss = parse_loss(text(fixture(name, "loss")));
    std::vector<double> buffers;
    const Vec theta = load_weights<double>(kDir / (name + "_weights.npz"), net, &buffers);
    net.set_buffer_values(buffers);
    const io::NpyArray x_array = fixture(name, "x");
    const Index n = x_array.shape[0];
    const auto x_values = x_array.to_vector<double>();
    const Mat x = Eigen::Map<const Mat>(x_values.data(), net.num_inputs(), n);
    Targets<double> targets;
    if (loss == Loss::kCrossEntropy) {
      targets.labels = fixture(name, "y").to_vector<std::int64_t>();
    } else {
      const auto y = fixture(name, "y").to_vector<double>();
      targets.values = Eigen::Map<const Mat>(y.data(), net.num_outputs(), n);
    }
    BoundBatch<double> batch(net, theta, x, targets, loss);
    const Vec v = vec(fixture(name, "v"));
    Vec out(net.num_parameters());
    CHECK(batch.loss() == Approx(fixture(name, "loss_value").to_vector<double>()[0]).epsilon(1e-12));
    batch.gradient(out);
    CHECK(rel(out, vec(fixture(name, "grad"))) < 1e-10);
    batch.ggn_product(v, out);
    CHECK(rel(out, vec(fixture(name, "ggn_v"))) < 1e-10);
    batch.hessian_product(v, out);
    CHECK(rel(out, vec(fixture(name, "hessian_v"))) < 1e-10);
    batch.empirical_fisher_product(v, out);
    CHECK(rel(out, vec(fixture(name, "ef_v"))) < 1e-10);
    Mat jv(net.num_outputs(), n);
    batch.jvp(v, jv);
    CHECK(rel(Eigen::Map<const Vec>(jv.data(), jv.size()), vec(fixture(name, "jvp"))) < 1e-10);

    // K-FAC from the coupled backward pass, as K-FAC implementations take it in train mode.
    Vec norm_diagonal(net.num_parameters());
    const auto empirical = batch.kfac_factors(KfacType::kEmpirical, 1, 0, norm_diagonal.data());
    CHECK(rel(norm_diagonal, vec(fixture(name, "kfac_emp_norm_diag"))) < 1e-10);
    // Sampled labels: the factors' expectation, to the sampling error of 20,000 draws.
    const auto sampled = batch.kfac_factors(KfacType::kMc, 20000, 3);
    REQUIRE(sampled.size() == empirical.size());
    for (std::size_t k = 0; k < empirical.size(); ++k) {
      INFO("factor " << k);
      const auto a = fixture(name, "kfac_a_" + std::to_string(k)).to_vector<double>();
      const auto s_emp = fixture(name, "kfac_emp_s_" + std::to_string(k)).to_vector<double>();
      const auto s_mc = fixture(name, "kfac_mc_s_" + std::to_string(k)).to_vector<double>();
      REQUIRE(empirical[k].a.size() == static_cast<Index>(a.size()));
      REQUIRE(empirical[k].s.size() == static_cast<Index>(s_emp.size()));
      const Index rows = empirical[k].s.rows();
      const Index in = empirical[k].a.rows();
      CHECK(rel(empirical[k].a, Eigen::Map<const Mat>(a.data(), in, in)) < 1e-10);
      CHECK(rel(empirical[k].s, Eigen::Map<const Mat>(s_emp.data(), rows, rows)) < 1e-10);
      CHECK(rel(sampled[k].s, Eigen::Map<const Mat>(s_mc.data(), rows, rows)) < 0.02);
    }

    // One train-mode forward pass moves the running statistics as PyTorch's does.
    Network updated = net;
    batch.update_running_statistics(updated);
    const auto after = io::read_npz(kDir / (name + "_buffers_after.npz"));
    REQUIRE(after.size() == net.buffers().size());
    for (const BufferInfo& b : net.buffers()) {
      INFO(b.name);
      const auto want = after.at(b.name).to_vector<double>();
      for (Index i = 0; i < b.size; ++i) {
        CHECK(updated.buffer_values()[static_cast<std::size_t>(b.offset + i)] ==
              Approx(want[static_cast<std::size_t>(i)]).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("batch statistics: gradient, Hessian, GGN, JVP and VJP match finite differences",
          "[nn][batchnorm-train]") {
  for (const Case& c : train_cases()) {
    INFO(c.name);
    // 40 samples: two chunks, so every barrier sums partials across chunks.
    const Problem p = make_train_problem(c, 40, 21);
    auto batch = bind(p);
    REQUIRE(batch.chunk_size() < 40);
    const Index size = p.theta.size();
    Vec g(size);
    batch.gradient(g);
    CHECK(rel_err(g, fd_gradient(p)) < 1e-7);

    const Vec v = random_vector(size, 4);
    Vec hv(size);
    batch.hessian_product(v, hv);
    const double h = 1e-5;
    Vec gp(size);
    Vec gm(size);
    bind(p, p.theta + h * v).gradient(gp);
    bind(p, p.theta - h * v).gradient(gm);
    CHECK(rel_err(hv, (gp - gm) / (2 * h)) < 1e-6);

    const Mat jac = fd_batch_jacobian(p);
    const Mat lam = dense_loss_hessian(p, batch.outputs());
    Vec gv(size);
    batch.ggn_product(v, gv);
    CHECK(rel_err(gv, jac.transpose() * (lam * (jac * v))) < 1e-7);
    Mat jv(p.net.num_outputs(), p.x.cols());
    batch.jvp(v, jv);
    CHECK(rel_err(Eigen::Map<const Vec>(jv.data(), jv.size()), jac * v) < 1e-7);
    const Mat u = Mat::Random(p.net.num_outputs(), p.x.cols());
    Vec vju(size);
    batch.vjp(u, vju);
    CHECK(rel_err(vju, jac.transpose() * Eigen::Map<const Vec>(u.data(), u.size())) < 1e-7);
    // The Hessian is symmetric, and so is the GGN.
    const Vec w = random_vector(size, 5);
    Vec hw(size);
    batch.hessian_product(w, hw);
    CHECK(std::abs(w.dot(hv) - v.dot(hw)) < 1e-9 * (std::abs(w.dot(hv)) + 1));
  }
}

TEST_CASE("batch statistics: bitwise identical with 1 and 2 threads", "[nn][batchnorm-train][determinism]") {
  for (const Case& c : train_cases()) {
    INFO(c.name);
    const Problem p = make_train_problem(c, 601, 37);
    const Vec v = random_vector(p.theta.size(), 3);
    auto run = [&](int threads) {
      const ThreadLimit limit(threads);
      auto batch = bind(p);
      std::vector<Vec> results(5, Vec(p.theta.size()));
      batch.gradient(results[0]);
      batch.ggn_product(v, results[1]);
      batch.hessian_product(v, results[2]);
      batch.empirical_fisher_product(v, results[3]);
      batch.mc_fisher_product(v, results[4]);
      for (const KfacType type : {KfacType::kEmpirical, KfacType::kMc}) {
        Vec diagonal(p.theta.size());
        for (const auto& f : batch.kfac_factors(type, 2, 9, diagonal.data())) {
          results.emplace_back(Eigen::Map<const Vec>(f.a.data(), f.a.size()));
          results.emplace_back(Eigen::Map<const Vec>(f.s.data(), f.s.size()));
        }
        results.push_back(diagonal);
      }
      Vec loss(1);
      loss[0] = batch.loss();
      results.push_back(loss);
      return results;
    };
    const auto one = run(1);
    const auto two = run(2);
    for (std::size_t i = 0; i < one.size(); ++i) {
      INFO("quantity " << i);
      CHECK(std::memcmp(one[i].data(), two[i].data(), sizeof(double) * static_cast<std::size_t>(one[i].size())) == 0);
    }
  }
}

TEST_CASE("batch statistics: per-sample queries are refused", "[nn][batchnorm-train]") {
  const Problem p = make_train_problem(train_cases()[0], 8, 3);
  auto batch = bind(p);
  const Index size = p.theta.size();
  const Index n = p.x.cols();
  const Index c = p.net.num_outputs();
  Mat per_sample(size, n);
  Vec out(size);
  const Mat u = Mat::Ones(c, n);
  // One message: the query, why it is undefined, and the option that makes it defined.
  const auto refused = [](const std::function<void()>& query, const std::string& what) {
    try {
      query();
    } catch (const Error& e) {
      const std::string message = e.what();
      INFO(message);
      CHECK(message.find(what) != std::string::npos);
      CHECK(message.find("batch statistics") != std::string::npos);
      CHECK(message.find("--batch-norm running") != std::string::npos);
      return;
    }
    FAIL("no quadra::Error for " << what);
  };
  refused([&] { batch.per_sample_gradients(per_sample); }, "per-sample gradients");
  refused([&] { batch.ggn_diagonal(out); }, "GGN diagonal");
  refused([&] { batch.empirical_fisher_diagonal(out); }, "empirical Fisher diagonal");
  refused([&] { (void)batch.kfac_factors(KfacType::kType2); }, "type-2 K-FAC factors");
  refused([&] { batch.per_sample_vjp(u, per_sample); }, "per-sample VJPs");
  refused([&] { batch.backpropagate(u); }, "per-sample backpropagation");
  // A spec's batchnorm uses running statistics until set_batch_norm says otherwise.
  CHECK_FALSE(Network(train_cases()[0].spec, parse_shape("2x4x4")).has_batch_statistics());
  CHECK(p.net.has_batch_statistics());
}

TEST_CASE("batch statistics: prediction uses the running statistics (eval mode)", "[nn][batchnorm-train]") {
  const Problem p = make_train_problem(train_cases()[1], 10, 8);
  Network running = p.net;
  running.set_batch_norm(NormMode::kRunningStatistics);
  const Mat eval = running.forward<double>(p.theta, p.x);
  CHECK(p.net.forward<double>(p.theta, p.x) == eval);
  Problem q = p;
  q.net = running;
  CHECK(bind(q).outputs() == eval);
  CHECK(rel_err(bind(p).outputs(), eval) > 1e-3);  // the batch's statistics differ
}
