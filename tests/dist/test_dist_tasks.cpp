// Independent tasks spread over the ranks (quadra/dist/tasks.hpp): the assignment, every rank
// receiving every result, the share each rank runs, agreed errors, and the K-FAC factors'
// eigendecompositions through the SDK (eigendecompose_factors on a split batch's backend),
// bitwise those of one process decomposing everything. Runs alone and as 1, 2 and 3 ranks.

#define CATCH_CONFIG_RUNNER
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <quadra/curvature/engine_backend.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/dist/tasks.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/sdk/kronecker.hpp>
#include <string>
#include <vector>

#include "../nn/nn_test_utils.hpp"

using quadra::Index;
using quadra::dist::Communicator;
using namespace quadra::nn;
using namespace quadra::nn::test;

namespace {

std::vector<double> task_result(std::size_t i) {
  std::vector<double> out(i);  // task 0 returns an empty vector
  for (std::size_t j = 0; j < i; ++j)
    out[j] = static_cast<double>(i) + 0.25 * static_cast<double>(j);
  return out;
}

}  // namespace

TEST_CASE("tasks are assigned greedily by cost, the same on every rank") {
  const std::vector<double> costs{27, 8, 1, 64, 8, 0};
  CHECK(quadra::dist::assign_tasks(costs, 1) == std::vector<int>{0, 0, 0, 0, 0, 0});
  // 64 -> 0; 27 -> 1; 8 (task 1) -> 1 (27 < 64); 8 (task 4) -> 1 (35 < 64); 1 -> 1 (43); 0 -> 1.
  CHECK(quadra::dist::assign_tasks(costs, 2) == std::vector<int>{1, 1, 1, 0, 1, 1});
  // 64 -> 0, 27 -> 1, 8 -> 2, 8 -> 2, 1 -> 2 (16 < 27), 0 -> 2 (17 < 27).
  CHECK(quadra::dist::assign_tasks(costs, 3) == std::vector<int>{1, 2, 2, 0, 2, 2});
  CHECK(quadra::dist::assign_tasks({}, 3).empty());
}

TEST_CASE("every rank receives every task's result and runs its own share only") {
  const Communicator& world = Communicator::world();
  const std::vector<double> costs{5, 1, 9, 3, 3, 7, 2};
  const std::vector<int> owner = quadra::dist::assign_tasks(costs, world.size());
  const std::int64_t before = quadra::dist::distributed_tasks_run();
  std::vector<std::size_t> ran;
  const auto results = quadra::dist::run_distributed(world, costs, [&](std::size_t i) {
    ran.push_back(i);
    return task_result(i);
  });
  REQUIRE(results.size() == costs.size());
  for (std::size_t i = 0; i < costs.size(); ++i) CHECK(results[i] == task_result(i));
  std::vector<std::size_t> mine;
  for (std::size_t i = 0; i < costs.size(); ++i) {
    if (owner[i] == world.rank()) mine.push_back(i);
  }
  CHECK(ran == mine);
  CHECK(quadra::dist::distributed_tasks_run() - before == static_cast<std::int64_t>(mine.size()));
}

TEST_CASE("a task that fails on one rank is every rank's error") {
  const Communicator& world = Communicator::world();
  const std::vector<double> costs{1, 1, 1, 1};
  const auto run = [&] {
    return quadra::dist::run_distributed(world, costs, [](std::size_t i) {
      if (i == 2) throw quadra::Error("task 2 failed");
      return task_result(i);
    });
  };
  if (world.size() == 1) {
    CHECK_THROWS_MATCHES(run(), quadra::Error, Catch::Message("task 2 failed"));
  } else {
    CHECK_THROWS_MATCHES(run(), quadra::dist::AgreedError, Catch::Message("task 2 failed"));
  }
}

TEST_CASE("K-FAC eigendecompositions spread over the ranks are bitwise those of one process") {
  const Communicator& world = Communicator::world();
  for (const Case& c : all_cases()) {
    SECTION(c.name) {
      const Problem p = make_problem(c, 37, 3);
      const DatasetBatch<double> data{p.x, p.targets};  // outlives the binding
      BoundBatch<double> split = bind_split<double>(p.net, p.theta, data, p.loss, world);
      quadra::EngineCurvatureBackend<double> backend(split);
      std::vector<quadra::KroneckerFactor> factors;
      REQUIRE(backend.kfac_factors(quadra::KfacVariant::kType2, 1, 0, factors).is_ok());
      std::vector<quadra::KroneckerEigen> blocks(factors.size());
      for (std::size_t l = 0; l < factors.size(); ++l) blocks[l].factor = factors[l];
      const std::int64_t before = quadra::dist::distributed_tasks_run();
      REQUIRE(quadra::eigendecompose_factors(backend, "kfac", blocks).is_ok());
      const std::int64_t ran = quadra::dist::distributed_tasks_run() - before;
      // What this rank ran through run_distributed: its share of the 2 per layer on a split
      // batch; alone, the backend runs them all in place.
      std::vector<double> costs;
      for (const auto& f : factors) {
        for (const auto* m : {&f.a, &f.s})
          costs.push_back(std::pow(static_cast<double>(m->rows()), 3));
      }
      const std::vector<int> owner = quadra::dist::assign_tasks(costs, world.size());
      const bool distributed = split.batch_size() != split.total_batch_size();
      CHECK(distributed == (world.size() > 1));
      CHECK(ran == (distributed ? std::count(owner.begin(), owner.end(), world.rank()) : 0));
      if (world.size() > 1) CHECK(ran < static_cast<std::int64_t>(owner.size()));
      for (const quadra::KroneckerEigen& b : blocks) {
        const Eigen::SelfAdjointEigenSolver<quadra::Matrix<double>> a(b.factor.a), s(b.factor.s);
        CHECK(b.a_eigenvalues == a.eigenvalues());
        CHECK(b.a_eigenvectors == a.eigenvectors());
        CHECK(b.s_eigenvalues == s.eigenvalues());
        CHECK(b.s_eigenvectors == s.eigenvectors());
      }
    }
  }
}

int main(int argc, char** argv) {
  const quadra::dist::Session session(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
