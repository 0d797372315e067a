// The engine's exact quantities against independent references: central finite differences,
// dense matrices built here, and algebraic identities. float64 throughout.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include <Eigen/Eigenvalues>

#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

#include "nn_test_utils.hpp"

using namespace quadra;
using namespace quadra::nn;
using namespace quadra::nn::test;

TEST_CASE("gradient matches central differences for every layer and loss", "[nn][gradient]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 5, 7);
    auto batch = bind(p);
    Vec g(p.theta.size());
    batch.gradient(g);
    CHECK(rel_err(g, fd_gradient(p)) < 1e-7);
    // The loss is the mean of the per-sample losses.
    CHECK(batch.loss() == Approx(batch.per_sample_losses().mean()).epsilon(1e-14));
  }
}

TEST_CASE("per-sample gradients match finite differences and sum to the batch gradient", "[nn][per-sample]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 4, 11);
    auto batch = bind(p);
    Mat per(p.theta.size(), 4);
    batch.per_sample_gradients(per);
    CHECK(rel_err(per, fd_per_sample(p)) < 1e-7);
    Vec g(p.theta.size());
    batch.gradient(g);
    CHECK(rel_err(per.rowwise().sum() / 4.0, g) < 1e-13);
  }
}

TEST_CASE("GGN product equals a dense J^T H J from finite-difference Jacobians", "[nn][ggn]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 3, 5);
    auto batch = bind(p);
    const Mat jac = fd_jacobian(p);
    const Mat reference = jac.transpose() * dense_loss_hessian(p, batch.outputs()) * jac;
    const Mat ggn = dense_of(p.theta.size(), [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
    CHECK(rel_err(ggn, reference) < 1e-7);
    // Symmetric and positive semi-definite.
    CHECK(rel_err(ggn, ggn.transpose()) < 1e-14);
    const Vec eig = Eigen::SelfAdjointEigenSolver<Mat>(0.5 * (ggn + ggn.transpose())).eigenvalues();
    CHECK(eig.minCoeff() > -1e-12 * eig.cwiseAbs().maxCoeff());
    for (std::uint64_t seed = 0; seed < 5; ++seed) {
      const Vec v = random_vector(p.theta.size(), seed);
      Vec gv(p.theta.size());
      batch.ggn_product(v, gv);
      CHECK(v.dot(gv) >= 0);
    }
  }
}

TEST_CASE("Hessian product matches finite differences of the gradient and is symmetric", "[nn][hessian]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 3, 9);
    auto batch = bind(p);
    const Index size = p.theta.size();
    const Mat hess = dense_of(size, [&](const Vec& v, Vec& out) { batch.hessian_product(v, out); });
    Mat reference(size, size);
    const double h = 1e-5;
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
    CHECK(rel_err(hess, reference) < 1e-7);
    CHECK(rel_err(hess, hess.transpose()) < 1e-12);
    // The Hessian differs from the GGN here (curved activations, non-zero residuals).
    const Mat ggn = dense_of(size, [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
    CHECK(rel_err(hess, ggn) > 1e-3);
  }
}

TEST_CASE("empirical Fisher product and diagonal match dense per-sample outer products", "[nn][ef]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 4, 13);
    auto batch = bind(p);
    const Mat per = fd_per_sample(p);
    const Mat reference = per * per.transpose() / 4.0;
    const Mat ef = dense_of(p.theta.size(), [&](const Vec& v, Vec& out) { batch.empirical_fisher_product(v, out); });
    CHECK(rel_err(ef, reference) < 1e-7);
    Vec diag(p.theta.size());
    batch.empirical_fisher_diagonal(diag);
    CHECK(rel_err(diag, reference.diagonal()) < 1e-7);
  }
}

TEST_CASE("GGN diagonal equals the dense GGN's diagonal", "[nn][diag]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 5, 17);
    auto batch = bind(p);
    const Mat ggn = dense_of(p.theta.size(), [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
    Vec diag(p.theta.size());
    batch.ggn_diagonal(diag);
    CHECK(rel_err(diag, ggn.diagonal()) < 1e-12);
  }
}

TEST_CASE("MC-Fisher approaches the GGN as the number of samples grows", "[nn][mc]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 6, 19);
    auto batch = bind(p);
    const Index size = p.theta.size();
    // Four fixed probe vectors; the MC operator is checked on them (dense would be slow under
    // sanitizers), and for symmetry through uᵀ F v = vᵀ F u.
    Mat probes(size, 4);
    for (Index k = 0; k < 4; ++k) probes.col(k) = random_vector(size, 100 + static_cast<std::uint64_t>(k));
    Mat ggn(size, 4);
    for (Index k = 0; k < 4; ++k) {
      Vec out(size);
      batch.ggn_product(probes.col(k), out);
      ggn.col(k) = out;
    }
    auto mc_error = [&](int samples) {
      batch.set_mc_samples(samples, 42);
      Mat mc(size, 4);
      for (Index k = 0; k < 4; ++k) {
        Vec out(size);
        batch.mc_fisher_product(probes.col(k), out);
        mc.col(k) = out;
      }
      const double cross = probes.col(0).dot(mc.col(1));
      CHECK(cross == Approx(probes.col(1).dot(mc.col(0))).epsilon(1e-12));
      return rel_err(mc, ggn);
    };
    const double e1 = mc_error(1);
    const double e100 = mc_error(100);
    const double e4000 = mc_error(4000);
    CHECK(e100 < e1);
    CHECK(e4000 < e100);
    CHECK(e4000 < 0.05);
  }
}

TEST_CASE("JVP matches finite differences and is the adjoint of the VJP", "[nn][jvp]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 4, 23);
    auto batch = bind(p);
    const Index size = p.theta.size();
    const Vec v = random_vector(size, 1);
    Mat jv(p.net.num_outputs(), 4);
    batch.jvp(v, jv);
    const Mat jac = fd_jacobian(p);
    const Vec reference = jac * v;
    CHECK(rel_err(Eigen::Map<const Vec>(jv.data(), jv.size()), reference) < 1e-7);
    const Vec u_flat = random_vector(jv.size(), 2);
    const Mat u = Eigen::Map<const Mat>(u_flat.data(), jv.rows(), jv.cols());
    Vec jtu(size);
    batch.vjp(u, jtu);
    CHECK(rel_err(jtu, jac.transpose() * u_flat) < 1e-7);
    const double lhs = u_flat.dot(Eigen::Map<const Vec>(jv.data(), jv.size()));
    CHECK(lhs == Approx(jtu.dot(v)).epsilon(1e-12));
  }
}

TEST_CASE("K-FAC type-2 and empirical equal the exact GGN and EF blocks for one sample", "[nn][kfac]") {
  // Every Linear layer with N = 1: G_layer = (Σ_c s_c s_cᵀ) ⊗ ā āᵀ exactly.
  // The same holds in a graph: the residual MLP's fork sums both paths into each S.
  for (const std::string spec : {"linear(3)", "linear(4) tanh linear(3,bias=false) sigmoid linear(3)",
                                 "linear(4) tanh residual(linear(4) softplus linear(4), "
                                 "shortcut=linear(4,bias=false)) residual(tanh linear(4)) linear(3)"}) {
    for (Loss loss : {Loss::kCrossEntropy, Loss::kMse}) {
      INFO(spec << " " << to_string(loss));
      const Problem p = make_problem({"kfac", spec, "5", loss}, 1, 29);
      auto batch = bind(p);
      const Index size = p.theta.size();
      const Mat ggn = dense_of(size, [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
      const Mat ef = dense_of(size, [&](const Vec& v, Vec& out) { batch.empirical_fisher_product(v, out); });
      for (KfacType type : {KfacType::kType2, KfacType::kEmpirical}) {
        const auto factors = batch.kfac_factors(type);
        std::size_t weights = 0;
        for (const ParameterInfo& info : p.net.parameters()) weights += info.is_bias ? 0 : 1;
        REQUIRE(factors.size() == weights);
        for (const auto& f : factors) {
          // Indices of [W b] (row-major, bias last column) in the flat parameter vector.
          const Index offset = p.net.parameter_offset(f.layer);
          const Index out = f.s.rows();
          const Index dim = f.a.rows();
          const Index in = f.augmented ? dim - 1 : dim;
          std::vector<Index> index;
          for (Index o = 0; o < out; ++o) {
            for (Index i = 0; i < dim; ++i) index.push_back(i < in ? offset + o * in + i : offset + out * in + o);
          }
          const Mat& dense = type == KfacType::kType2 ? ggn : ef;
          Mat block(index.size(), index.size());
          for (std::size_t r = 0; r < index.size(); ++r) {
            for (std::size_t k = 0; k < index.size(); ++k) block(r, k) = dense(index[r], index[k]);
          }
          Mat kron(out * dim, out * dim);
          for (Index o = 0; o < out; ++o) {
            for (Index q = 0; q < out; ++q) kron.block(o * dim, q * dim, dim, dim) = f.s(o, q) * f.a;
          }
          CHECK(rel_err(kron, block) < 1e-12);
        }
      }
    }
  }
}

TEST_CASE("K-FAC MC factors approach type-2, conv factors have the right shapes", "[nn][kfac]") {
  const Problem p = make_problem(all_cases()[2], 6, 31);
  auto batch = bind(p);
  const auto exact = batch.kfac_factors(KfacType::kType2);
  const auto mc = batch.kfac_factors(KfacType::kMc, 2000, 3);
  REQUIRE(exact.size() == 3);
  REQUIRE(mc.size() == 3);
  // conv(3,3) on 2 channels with bias: A is (2·9+1)²; conv(4,2) without bias on 3: (12)².
  CHECK(exact[0].a.rows() == 19);
  CHECK(exact[0].s.rows() == 3);
  CHECK(exact[1].a.rows() == 12);
  CHECK(!exact[1].augmented);
  CHECK(exact[2].a.rows() == 5);
  for (std::size_t l = 0; l < exact.size(); ++l) {
    CHECK(rel_err(mc[l].a, exact[l].a) < 1e-14);
    CHECK(rel_err(mc[l].s, exact[l].s) < 0.08);
    // Conv A's bias corner is 1 (mean over samples and positions of 1·1).
    if (exact[l].augmented) CHECK(exact[l].a(exact[l].a.rows() - 1, exact[l].a.cols() - 1) == Approx(1.0));
  }
}

TEST_CASE("results are bitwise identical with 1 and 2 threads", "[nn][determinism]") {
  for (const Case& c : all_cases()) {
    INFO(c.name);
    // 601 samples: three chunks (256, 256, 89).
    const Problem p = make_problem(c, 601, 37);
    const Vec v = random_vector(p.theta.size(), 3);
    auto run = [&](int threads) {
      const ThreadLimit limit(threads);
      auto batch = bind(p);
      std::vector<Vec> results(4, Vec(p.theta.size()));
      batch.gradient(results[0]);
      batch.ggn_product(v, results[1]);
      batch.hessian_product(v, results[2]);
      batch.ggn_diagonal(results[3]);
      REQUIRE(batch.chunk_size() == 256);
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

namespace {

/// The gradient and per-sample gradients of a fresh batch (a transient backward pass: chunk-local
/// adjoints, each layer's term taken per chunk) and of a batch whose backward pass is stored
/// (after a Hessian product), from one binding each.
template <class S>
void check_transient_matches_stored(const Network& net, const Vector<S>& theta,
                                    const Matrix<S>& x, const Targets<S>& targets, Loss loss) {
  const Vector<S> v = random_vector(theta.size(), 11).template cast<S>();
  const Index n = x.cols();
  Vector<S> fresh(theta.size());
  Vector<S> again(theta.size());
  Vector<S> stored(theta.size());
  Matrix<S> fresh_per(theta.size(), n);
  Matrix<S> stored_per(theta.size(), n);
  {
    BoundBatch<S> batch(net, theta, x, targets, loss);
    batch.gradient(fresh);
    batch.gradient(again);
  }
  {
    BoundBatch<S> batch(net, theta, x, targets, loss);
    batch.per_sample_gradients(fresh_per);
  }
  {
    BoundBatch<S> batch(net, theta, x, targets, loss);
    Vector<S> hv(theta.size());
    batch.hessian_product(v, hv);
    batch.gradient(stored);
    batch.per_sample_gradients(stored_per);
  }
  const auto bytes = [](const auto& m) { return sizeof(S) * static_cast<std::size_t>(m.size()); };
  CHECK(std::memcmp(fresh.data(), stored.data(), bytes(fresh)) == 0);
  CHECK(std::memcmp(again.data(), stored.data(), bytes(again)) == 0);
  CHECK(std::memcmp(fresh_per.data(), stored_per.data(), bytes(fresh_per)) == 0);
  CHECK(rel_err(fresh_per.rowwise().sum().template cast<double>() / static_cast<double>(n),
                fresh.template cast<double>()) < (sizeof(S) == 4 ? 1e-5 : 1e-12));
}

}  // namespace

TEST_CASE("a batch's first gradient, stored nowhere, equals the stored backward pass's bitwise",
          "[nn][bound][transient]") {
  // Every layer kind, plus a ResNet block network whose BatchNorm+ReLU backward is fused and
  // whose 3x3 convolutions run the direct kernels, in float64 and float32; 601 samples make
  // three chunks, the last one short.
  std::vector<Case> cases = all_cases();
  cases.push_back({"resnet-bn-running",
                   "conv(4,3,pad=1,bias=false) batchnorm relu residual(conv(4,3,pad=1,bias=false) "
                   "batchnorm relu conv(4,3,pad=1,bias=false) batchnorm) relu "
                   "residual(conv(8,3,stride=2,pad=1,bias=false) batchnorm relu "
                   "conv(8,3,pad=1,bias=false) batchnorm, shortcut=conv(8,1,stride=2,bias=false) "
                   "batchnorm) relu globalavgpool flatten linear(3)",
                   "2x8x8", Loss::kCrossEntropy});
  cases.push_back({"norms", "conv(4,3) batchnorm tanh groupnorm(2) flatten layernorm linear(3)",
                   "2x5x5", Loss::kMse});
  for (const Case& c : cases) {
    INFO(c.name);
    const Problem p = make_problem(c, 601, 53);
    check_transient_matches_stored<double>(p.net, p.theta, p.x, p.targets, p.loss);
    Targets<float> targets;
    targets.labels = p.targets.labels;
    targets.values = p.targets.values.cast<float>();
    check_transient_matches_stored<float>(p.net, p.theta.cast<float>(), p.x.cast<float>(), targets,
                                          p.loss);
  }
}

TEST_CASE("products set every entry of their output, whatever it held", "[nn][bound]") {
  // The reductions write their outputs instead of adding to a zeroed buffer: an entry they
  // missed would keep the NaN it starts with here.
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 40, 43);
    const Vec v = random_vector(p.theta.size(), 7);
    const Mat u = Mat::Random(p.net.num_outputs(), 40);
    auto run = [&](double fill) {
      auto batch = bind(p);
      std::vector<Vec> results(7, Vec::Constant(p.theta.size(), fill));
      batch.gradient(results[0]);
      batch.ggn_product(v, results[1]);
      batch.hessian_product(v, results[2]);
      batch.empirical_fisher_product(v, results[3]);
      batch.mc_fisher_product(v, results[4]);
      batch.empirical_fisher_diagonal(results[5]);
      batch.vjp(u, results[6]);
      return results;
    };
    const auto clean = run(0.0);
    const auto dirty = run(std::numeric_limits<double>::quiet_NaN());
    for (std::size_t i = 0; i < clean.size(); ++i) {
      INFO("quantity " << i);
      CHECK(clean[i].allFinite());
      CHECK(clean[i] == dirty[i]);
    }
  }
}

TEST_CASE("repeated products on a bound batch are reproducible", "[nn][bound]") {
  const Problem p = make_problem(all_cases()[0], 40, 41);
  auto batch = bind(p);
  const Vec v = random_vector(p.theta.size(), 5);
  Vec first(p.theta.size());
  Vec again(p.theta.size());
  batch.hessian_product(v, first);
  Vec other(p.theta.size());
  batch.ggn_product(random_vector(p.theta.size(), 6), other);
  batch.hessian_product(v, again);
  CHECK(first == again);
}

TEST_CASE("float32 agrees with float64", "[nn][float32]") {
  const Problem p = make_problem(all_cases()[2], 20, 43);
  auto batch64 = bind(p);
  BoundBatch<float> batch32(p.net, p.theta.cast<float>(), p.x.cast<float>(),
                            Targets<float>::from_labels(p.targets.labels), p.loss);
  const Vec v = random_vector(p.theta.size(), 7);
  Vec g64(p.theta.size());
  Vec h64(p.theta.size());
  Vector<float> g32(p.theta.size());
  Vector<float> h32(p.theta.size());
  batch64.gradient(g64);
  batch32.gradient(g32);
  batch64.hessian_product(v, h64);
  batch32.hessian_product(v.cast<float>(), h32);
  CHECK(std::abs(batch32.loss() - batch64.loss()) < 1e-5 * std::abs(batch64.loss()));
  CHECK(rel_err(g32.cast<double>(), g64) < 1e-5);
  CHECK(rel_err(h32.cast<double>(), h64) < 1e-4);
}

TEST_CASE("float32 per-sample gradients into a strided block of a larger matrix", "[nn][per-sample][float32]") {
  // Columns 4·ld + 4 bytes apart start at every alignment, so the streaming stores take their
  // scalar head and tail paths; the rows past the block must keep their sentinel.
  for (const Case& c : all_cases()) {
    INFO(c.name);
    const Problem p = make_problem(c, 6, 19);
    auto batch64 = bind(p);
    Targets<float> targets;
    targets.labels = p.targets.labels;
    targets.values = p.targets.values.cast<float>();
    BoundBatch<float> batch32(p.net, p.theta.cast<float>(), p.x.cast<float>(), targets, p.loss);
    const Index rows = p.theta.size();
    Mat per64(rows, 6);
    batch64.per_sample_gradients(per64);
    Matrix<float> storage = Matrix<float>::Constant(rows + 3, 6, 7.0F);
    batch32.per_sample_gradients(storage.topRows(rows));
    CHECK(rel_err(storage.topRows(rows).cast<double>(), per64) < 1e-5);
    CHECK((storage.bottomRows(3).array() == 7.0F).all());
  }
}

TEST_CASE("binding checks parameters, inputs and targets", "[nn][errors]") {
  const Problem p = make_problem(all_cases()[0], 3, 1);
  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message([&] { BoundBatch<double>(p.net, Vec::Zero(3), p.x, p.targets, p.loss); }),
             Catch::Contains("parameter vector has 3 entries"));
  CHECK_THAT(message([&] { BoundBatch<double>(p.net, p.theta, Mat::Zero(5, 3), p.targets, p.loss); }),
             Catch::Contains("inputs have 5 features per sample; the network expects 4"));
  CHECK_THAT(message([&] {
               BoundBatch<double>(p.net, p.theta, p.x, Targets<double>::from_labels({0, 1}), p.loss);
             }),
             Catch::Contains("2 labels for 3 samples"));
  CHECK_THAT(message([&] {
               BoundBatch<double>(p.net, p.theta, p.x, Targets<double>::from_labels({0, 3, 1}), p.loss);
             }),
             Catch::Contains("label 3 of sample 1 is outside [0, 3)"));
  CHECK_THAT(message([&] {
               BoundBatch<double>(p.net, p.theta, p.x, Targets<double>::from_values(Mat::Zero(2, 3)), Loss::kMse);
             }),
             Catch::Contains("mse targets are 2x3"));
  auto batch = bind(p);
  Vec wrong(2);
  CHECK_THAT(message([&] { batch.ggn_product(Vec::Zero(p.theta.size()), wrong); }),
             Catch::Contains("GGN product output has 2 entries"));
  CHECK_THAT(message([&] { batch.set_mc_samples(0, 1); }), Catch::Contains("expected at least 1"));
}

TEST_CASE("a network without parameters has empty gradients and products", "[nn][edge]") {
  const Network net("flatten tanh", parse_shape("1x2x2"));
  const Mat x = Mat::Random(4, 3);
  BoundBatch<double> batch(net, Vec(0), x, Targets<double>::from_labels({0, 3, 1}), Loss::kCrossEntropy);
  Vec empty(0);
  batch.gradient(empty);
  batch.ggn_product(empty, empty);
  batch.hessian_product(empty, empty);
  batch.ggn_diagonal(empty);
  Mat per(0, 3);
  batch.per_sample_gradients(per);
  CHECK(batch.kfac_factors(KfacType::kType2).empty());
  CHECK(batch.loss() > 0);
}

TEST_CASE("max pooling takes the window maximum and propagates NaN, with and without padding", "[nn][pool]") {
  // Channel-major 1×4×4 image: windows of maxpool(2) are the four 2×2 quadrants; one holds a
  // tie, one a NaN.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Mat x(16, 1);
  x << 1, 5, 0, 0,  //
      5, 2, 0, -1,  //
      -3, -2, 7, nan,  //
      -4, -1, 8, 6;
  const Targets<double> mse = Targets<double>::from_values(Mat::Zero(4, 1));
  const BoundBatch<double> unpadded(Network("maxpool(2) flatten", parse_shape("1x4x4")), Vec(0), x, mse, Loss::kMse);
  const Mat& y = unpadded.outputs();
  CHECK(y(0, 0) == 5);
  CHECK(y(1, 0) == 0);
  CHECK(y(2, 0) == -1);
  CHECK(std::isnan(y(3, 0)));

  // maxpool(3, stride=2, pad=1): windows clipped at the border (the generic path).
  const Targets<double> mse4 = Targets<double>::from_values(Mat::Zero(4, 1));
  const BoundBatch<double> padded(Network("maxpool(3,stride=2,pad=1) flatten", parse_shape("1x4x4")), Vec(0), x,
                                  mse4, Loss::kMse);
  const Mat& z = padded.outputs();
  CHECK(z(0, 0) == 5);   // rows 0-1, cols 0-1
  CHECK(z(1, 0) == 5);   // rows 0-1, cols 1-3
  CHECK(z(2, 0) == 5);   // rows 1-3, cols 0-1
  CHECK(std::isnan(z(3, 0)));  // rows 1-3, cols 1-3 hold the NaN
}
