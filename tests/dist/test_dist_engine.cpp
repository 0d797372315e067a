// The engine on a batch split across ranks: every batch-level quantity equals the whole batch's
// in one process to 1e-12 (float64), on every layer kind and both losses, and a fault on one
// rank is every rank's error. Runs alone and as 2 and 3 ranks (tests/dist/CMakeLists.txt).

#define CATCH_CONFIG_RUNNER
#include <algorithm>
#include <catch2/catch.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <string>
#include <vector>

#include "../nn/nn_test_utils.hpp"

using quadra::Index;
using quadra::dist::Communicator;
using namespace quadra::nn;
using namespace quadra::nn::test;

namespace {

/// max |a - b| <= 1e-12 max |a|, and the same on every rank (checked against rank 0's bits).
void check_close(const Mat& whole, const Mat& split, const std::string& what) {
  INFO(what);
  REQUIRE(whole.rows() == split.rows());
  REQUIRE(whole.cols() == split.cols());
  const double scale = std::max(whole.cwiseAbs().maxCoeff(), 1e-300);
  CHECK((whole - split).cwiseAbs().maxCoeff() <= 1e-12 * scale);
  Mat root = split;
  Communicator::world().broadcast(
      std::span<double>(root.data(), static_cast<std::size_t>(root.size())));
  CHECK(root == split);
}

void check_close(const Vec& whole, const Vec& split, const std::string& what) {
  check_close(Mat(whole), Mat(split), what);
}

BoundBatch<double> bind_share(const Problem& p) {
  const Communicator& world = Communicator::world();
  const auto share = world.share_of(p.x.cols());
  Targets<double> mine;
  if (p.loss == Loss::kCrossEntropy) {
    mine.labels.assign(p.targets.labels.begin() + share.begin,
                       p.targets.labels.begin() + share.end);
  } else {
    mine.values = p.targets.values.middleCols(share.begin, share.size());
  }
  return BoundBatch<double>(p.net, p.theta, p.x.middleCols(share.begin, share.size()),
                            std::move(mine), p.loss, world, share);
}

/// The gradient and every curvature product of the split batch against the whole one, at a
/// random vector drawn from `rng` (returned for the checks that follow).
Vec check_products(BoundBatch<double>& whole, BoundBatch<double>& split, std::mt19937_64& rng,
                   int mc_samples, std::uint64_t mc_seed) {
  const Index n = whole.num_parameters();
  std::normal_distribution<double> normal;
  Vec v(n);
  for (Index i = 0; i < n; ++i) v[i] = normal(rng);
  Vec a(n);
  Vec b(n);
  whole.gradient(a);
  split.gradient(b);
  check_close(a, b, "gradient");
  whole.ggn_product(v, a);
  split.ggn_product(v, b);
  check_close(a, b, "GGN product");
  whole.hessian_product(v, a);
  split.hessian_product(v, b);
  check_close(a, b, "Hessian product");
  whole.empirical_fisher_product(v, a);
  split.empirical_fisher_product(v, b);
  check_close(a, b, "empirical Fisher product");
  whole.set_mc_samples(mc_samples, mc_seed);
  split.set_mc_samples(mc_samples, mc_seed);
  whole.mc_fisher_product(v, a);
  split.mc_fisher_product(v, b);
  check_close(a, b, "MC-Fisher product");
  return v;
}

}  // namespace

TEST_CASE("a batch split across ranks gives the whole batch's quantities") {
  const Communicator& world = Communicator::world();
  for (const Case& c : all_cases()) {
    SECTION(c.name) {
      const Problem p = make_problem(c, 37, 3);
      BoundBatch<double> whole(p.net, p.theta, p.x, p.targets, p.loss);
      BoundBatch<double> split = bind_share(p);
      CHECK(split.total_batch_size() == 37);
      CHECK(split.batch_size() == world.share_of(37).size());
      check_close(Vec(Vec::Constant(1, whole.loss())), Vec(Vec::Constant(1, split.loss())), "loss");
      const Index n = p.net.num_parameters();
      std::mt19937_64 rng(9);
      std::normal_distribution<double> normal;
      const Vec v = check_products(whole, split, rng, 3, 17);
      Vec a(n);
      Vec b(n);
      whole.ggn_diagonal(a);
      split.ggn_diagonal(b);
      check_close(a, b, "GGN diagonal");
      whole.empirical_fisher_diagonal(a);
      split.empirical_fisher_diagonal(b);
      check_close(a, b, "empirical Fisher diagonal");
      // VJP: Σ_n J_nᵀ u_n with each rank's columns of u.
      Mat u(p.net.num_outputs(), 37);
      for (Index i = 0; i < u.size(); ++i) u.data()[i] = normal(rng);
      const auto share = world.share_of(37);
      whole.vjp(u, a);
      split.vjp(u.middleCols(share.begin, share.size()), b);
      check_close(a, b, "VJP");
      for (const KfacType type : {KfacType::kType2, KfacType::kMc, KfacType::kEmpirical}) {
        const auto fa = whole.kfac_factors(type, 2, 23);
        const auto fb = split.kfac_factors(type, 2, 23);
        REQUIRE(fa.size() == fb.size());
        for (std::size_t i = 0; i < fa.size(); ++i) {
          check_close(fa[i].a, fb[i].a, "K-FAC A of layer " + std::to_string(fa[i].layer));
          check_close(fa[i].s, fb[i].s, "K-FAC S of layer " + std::to_string(fa[i].layer));
        }
      }
    }
  }
}

TEST_CASE("batch statistics are the whole batch's across ranks (SyncBatchNorm)") {
  const Communicator& world = Communicator::world();
  Problem p = make_problem({"bn", "conv(3,3,pad=1) batchnorm tanh residual(conv(3,3,pad=1) batchnorm "
                                  "softplus) flatten linear(4) batchnorm tanh linear(3)",
                            "2x4x4", Loss::kCrossEntropy},
                           37, 5);
  p.net.set_batch_norm(NormMode::kBatchStatistics);
  BoundBatch<double> whole(p.net, p.theta, p.x, p.targets, p.loss);
  BoundBatch<double> split = bind_share(p);
  check_close(Vec(Vec::Constant(1, whole.loss())), Vec(Vec::Constant(1, split.loss())), "loss");
  const Index n = p.net.num_parameters();
  std::mt19937_64 rng(4);
  std::normal_distribution<double> normal;
  const Vec v = check_products(whole, split, rng, 2, 7);
  Vec a(n);
  Vec b(n);
  Mat u(p.net.num_outputs(), 37);
  for (Index i = 0; i < u.size(); ++i) u.data()[i] = normal(rng);
  const auto share = world.share_of(37);
  whole.vjp(u, a);
  split.vjp(u.middleCols(share.begin, share.size()), b);
  check_close(a, b, "VJP");
  Network running_whole = p.net;
  Network running_split = p.net;
  whole.update_running_statistics(running_whole);
  split.update_running_statistics(running_split);
  const auto& bw = running_whole.buffer_values();
  const auto& bs = running_split.buffer_values();
  check_close(Vec(Eigen::Map<const Vec>(bw.data(), static_cast<Index>(bw.size()))),
              Vec(Eigen::Map<const Vec>(bs.data(), static_cast<Index>(bs.size()))),
              "running statistics");
}

TEST_CASE("a bad label on one rank is every rank's error") {
  const Communicator& world = Communicator::world();
  Problem p = make_problem(all_cases().front(), 37, 3);
  p.targets.labels.back() = 7;  // the last sample: the last rank's share
  CHECK_THROWS_MATCHES(bind_share(p), quadra::Error,
                       Catch::Message("label 7 of sample 36 is outside [0, 3) (the network has 3 "
                                      "outputs)"));
  if (world.size() > 1) {
    Problem tiny = make_problem(all_cases().front(), world.size() - 1, 3);
    CHECK_THROWS_WITH(
        bind_share(tiny),
        Catch::Contains("cannot be split across " + std::to_string(world.size()) + " processes"));
  }
}

int main(int argc, char** argv) {
  const quadra::dist::Session session(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
