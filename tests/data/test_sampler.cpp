// The per-role batch sampler: disjointness, epochs, seeds, overlap, whole-dataset draws.

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include <quadra/data/sampler.hpp>
#include <quadra/error.hpp>

using Catch::Contains;
using quadra::BatchDraw;
using quadra::BatchPlan;
using quadra::BatchRole;
using quadra::data::BatchSampler;
using quadra::data::SamplerOptions;

namespace {

/// One draw per role: gradient, directions, estimate, acceptance of the given relative sizes.
BatchPlan four_draws(double g = 1, double d = 1, double e = 1, double a = 1) {
  BatchPlan plan;
  plan.draws = {BatchDraw{g, false}, BatchDraw{d, false}, BatchDraw{e, false}, BatchDraw{a, false}};
  plan.draw_of_role = {0, 1, 2, 3};
  return plan;
}

BatchPlan same_batch() {
  BatchPlan plan;
  plan.draws = {BatchDraw{1, false}};
  plan.draw_of_role = {0, 0, 0, 0};
  return plan;
}

/// gradient+directions on draw 0, estimate on draw 1, acceptance on draw 2.
BatchPlan three_draws() {
  BatchPlan plan;
  plan.draws = {BatchDraw{1, false}, BatchDraw{0.5, false}, BatchDraw{2, false}};
  plan.draw_of_role = {0, 0, 1, 2};
  return plan;
}

std::vector<std::int64_t> as_vector(std::span<const std::int64_t> s) { return {s.begin(), s.end()}; }

quadra::data::Dataset indexed(std::int64_t n, std::int64_t d) {
  quadra::data::Dataset data;
  data.name = "t";
  data.sample_shape = {d};
  data.num_classes = 7;
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < d; ++j) data.features.push_back(static_cast<float>(i * 100 + j));
    data.labels.push_back(i % 7);
  }
  return data;
}

}  // namespace

TEST_CASE("draws within a step are disjoint and sized per role", "[data][sampler]") {
  SamplerOptions o;
  o.batch_size = 10;
  o.role_batch_size[static_cast<std::size_t>(BatchRole::kAcceptance)] = 25;
  o.seed = 3;
  BatchSampler sampler(200, o);
  for (const BatchPlan& plan : {four_draws(1, 2, 1.5, 1), three_draws(), same_batch()}) {
    for (int step = 0; step < 30; ++step) {
      const auto& batches = sampler.next(plan);
      REQUIRE(batches.num_draws() == static_cast<int>(plan.draws.size()));
      std::set<std::int64_t> seen;
      std::size_t total = 0;
      for (int d = 0; d < batches.num_draws(); ++d) {
        const auto& draw = batches.draw(d);
        CHECK(draw.size() == sampler.draw_size(plan, d));
        CHECK(static_cast<std::int64_t>(draw.indices().size()) == draw.size());
        for (std::int64_t i : draw.indices()) {
          CHECK(i >= 0);
          CHECK(i < 200);
          seen.insert(i);
        }
        total += draw.indices().size();
      }
      CHECK(seen.size() == total);  // no index twice in a step, within or across draws
    }
  }
  const BatchPlan plan = four_draws(1, 2, 1.5, 1);
  CHECK(sampler.draw_size(plan, 0) == 10);
  CHECK(sampler.draw_size(plan, 1) == 20);
  CHECK(sampler.draw_size(plan, 2) == 15);
  CHECK(sampler.draw_size(plan, 3) == 25);  // the acceptance role's own batch size
  // A draw serving gradient and directions uses the gradient role's stream and size.
  CHECK(sampler.draw_size(three_draws(), 1) == 5);
  CHECK(sampler.steps() == 90);
}

TEST_CASE("each role sees every sample once per epoch of its own", "[data][sampler]") {
  SamplerOptions o;
  o.batch_size = 16;
  o.seed = 11;
  const std::int64_t n = 320;  // 20 gradient steps per epoch
  BatchSampler sampler(n, o);
  const BatchPlan plan = four_draws(1, 1, 2, 1);
  std::map<int, std::vector<std::int64_t>> dealt;
  for (int step = 0; step < 200; ++step) {
    const auto& b = sampler.next(plan);
    for (int r = 0; r < quadra::kNumBatchRoles; ++r) {
      const auto idx = b.for_role(static_cast<BatchRole>(r)).indices();
      dealt[r].insert(dealt[r].end(), idx.begin(), idx.end());
    }
  }
  CHECK(sampler.epochs(BatchRole::kGradient) == 200 * 16 / n);
  CHECK(sampler.epochs(BatchRole::kEstimate) == 200 * 32 / n);
  for (int r = 0; r < quadra::kNumBatchRoles; ++r) {
    INFO("role " << r);
    const auto& seq = dealt[r];
    // Within each of the role's epochs no sample repeats; the gradient role (served first) is an
    // exact permutation per epoch, the others lose at most the samples skipped at an epoch's end.
    std::int64_t complete = 0;
    for (std::size_t start = 0; start + static_cast<std::size_t>(n) <= seq.size();
         start += static_cast<std::size_t>(n)) {
      std::set<std::int64_t> epoch(seq.begin() + static_cast<std::ptrdiff_t>(start),
                                   seq.begin() + static_cast<std::ptrdiff_t>(start) + n);
      if (r == 0) CHECK(static_cast<std::int64_t>(epoch.size()) == n);
      CHECK(static_cast<std::int64_t>(epoch.size()) >= n - 64);
      ++complete;
    }
    CHECK(complete >= 10);
  }
}

TEST_CASE("the gradient draw does not depend on the other roles", "[data][sampler]") {
  SamplerOptions o;
  o.batch_size = 8;
  o.seed = 5;
  BatchSampler alone(100, o);
  BatchSampler with_others(100, o);
  BatchPlan only_gradient;
  only_gradient.draws = {BatchDraw{1, false}};
  only_gradient.draw_of_role = {0, 0, 0, 0};
  for (int step = 0; step < 40; ++step) {
    const auto a = as_vector(alone.next(only_gradient).for_role(BatchRole::kGradient).indices());
    const auto b = as_vector(with_others.next(four_draws(1, 3, 2, 1)).for_role(BatchRole::kGradient).indices());
    CHECK(a == b);
  }
}

TEST_CASE("reproducible from the seed", "[data][sampler]") {
  SamplerOptions o;
  o.batch_size = 12;
  o.seed = 99;
  BatchSampler a(500, o), b(500, o);
  o.seed = 100;
  BatchSampler c(500, o);
  bool differs = false;
  for (int step = 0; step < 100; ++step) {
    const auto& sa = a.next(four_draws());
    const auto& sb = b.next(four_draws());
    const auto& sc = c.next(four_draws());
    for (int d = 0; d < 4; ++d) {
      CHECK(as_vector(sa.draw(d).indices()) == as_vector(sb.draw(d).indices()));
      differs = differs || as_vector(sa.draw(d).indices()) != as_vector(sc.draw(d).indices());
    }
  }
  CHECK(differs);
  // Each role has its own stream: the directions and estimate draws are not the same sequence
  // shifted, and a fresh sampler replays them exactly.
  BatchSampler d(500, o);
  const auto first = as_vector(d.next(four_draws()).draw(2).indices());
  BatchSampler e(500, o);
  CHECK(as_vector(e.next(four_draws()).draw(2).indices()) == first);
}

TEST_CASE("overlap: a fraction of the estimate draw comes from the directions draw", "[data][sampler]") {
  for (double f : {0.0, 0.25, 0.5, 1.0}) {
    SamplerOptions o;
    o.batch_size = 20;
    o.overlap = f;
    o.seed = 2;
    BatchSampler sampler(1000, o);
    for (int step = 0; step < 20; ++step) {
      const auto& b = sampler.next(four_draws(1, 1, 1, 1));
      const auto dir = as_vector(b.for_role(BatchRole::kDirections).indices());
      const auto est = as_vector(b.for_role(BatchRole::kEstimate).indices());
      const auto shared = static_cast<std::size_t>(std::llround(f * 20));
      CHECK(b.for_role(BatchRole::kEstimate).shared() == static_cast<std::int64_t>(shared));
      CHECK(std::equal(dir.begin(), dir.begin() + static_cast<std::ptrdiff_t>(shared), est.begin()));
      std::set<std::int64_t> d(dir.begin(), dir.end());
      std::size_t common = 0;
      for (std::int64_t i : est) common += d.count(i);
      CHECK(common == shared);  // exactly the shared part, the rest is disjoint
      std::set<std::int64_t> e(est.begin(), est.end());
      CHECK(e.size() == est.size());
      // Gradient and acceptance stay disjoint from both.
      for (std::int64_t i : b.for_role(BatchRole::kAcceptance).indices()) {
        CHECK(d.count(i) == 0);
        CHECK(e.count(i) == 0);
      }
    }
  }
  SamplerOptions o;
  o.overlap = 0.5;
  BatchSampler sampler(100, o);
  BatchPlan plan;
  plan.draws = {BatchDraw{0.1, false}, BatchDraw{0.1, false}};
  plan.draw_of_role = {0, 1, 0, 1};  // estimate shares the gradient draw: served before directions
  REQUIRE_THROWS_WITH(sampler.next(plan),
                      Contains("overlap needs the directions draw to be drawn before the estimate draw"));
}

TEST_CASE("whole-dataset draws stream the training set in chunks without copying", "[data][sampler]") {
  const auto data = indexed(1000, 3);
  SamplerOptions o;
  o.batch_size = 64;
  o.chunk_size = 300;
  BatchSampler sampler(data.size(), o);
  BatchPlan plan;
  plan.draws = {BatchDraw{1, false}, BatchDraw{1, true}};
  plan.draw_of_role = {0, 1, 1, 1};
  const auto& b = sampler.next(plan);
  const auto& whole = b.for_role(BatchRole::kEstimate);
  CHECK(whole.whole_dataset());
  CHECK(whole.size() == 1000);
  CHECK(whole.indices().empty());
  CHECK(whole.num_chunks() == 4);
  CHECK(whole.chunk(3).begin == 900);
  CHECK(whole.chunk(3).end == 1000);
  quadra::data::GatherBuffer buffer;
  std::int64_t next = 0;
  for (std::int64_t k = 0; k < whole.num_chunks(); ++k) {
    const auto view = quadra::data::gather(data, whole, whole.chunk(k), buffer);
    CHECK(view.features == data.features.data() + next * 3);  // a pointer into the data set
    CHECK(view.labels == data.labels.data() + next);
    next += view.count;
  }
  CHECK(next == 1000);
  CHECK(buffer.features.empty());
  CHECK(quadra::data::Draw::whole(10, 4).num_chunks() == 3);
}

TEST_CASE("gather copies the drawn rows into a reused buffer", "[data][sampler]") {
  const auto data = indexed(300, 4);
  SamplerOptions o;
  o.batch_size = 32;
  o.chunk_size = 10;
  BatchSampler sampler(data.size(), o);
  quadra::data::GatherBuffer buffer;
  const float* storage = nullptr;
  for (int step = 0; step < 20; ++step) {
    const auto& draw = sampler.next(same_batch()).draw(0);
    const auto view = quadra::data::gather(data, draw, buffer);
    REQUIRE(view.count == 32);
    for (std::int64_t p = 0; p < view.count; ++p) {
      const std::int64_t i = draw.sample(p);
      CHECK(view.features[p * 4 + 2] == static_cast<float>(i * 100 + 2));
      CHECK(view.labels[p] == i % 7);
    }
    if (step == 0) storage = buffer.features.data();
    CHECK(buffer.features.data() == storage);  // no reallocation once grown
    CHECK(draw.num_chunks() == 4);
    const auto part = quadra::data::gather(data, draw, draw.chunk(3), buffer);
    CHECK(part.count == 2);
    CHECK(part.features[0] == static_cast<float>(draw.sample(30) * 100));
  }
}

TEST_CASE("sampler errors", "[data][sampler][errors]") {
  SamplerOptions o;
  o.batch_size = 0;
  REQUIRE_THROWS_WITH(BatchSampler(10, o), Contains("sampler: batch size 0; expected at least 1"));
  o.batch_size = 4;
  o.overlap = 1.5;
  REQUIRE_THROWS_WITH(BatchSampler(10, o), Contains("sampler: overlap 1.5; expected a fraction in [0, 1]"));
  o.overlap = 0;
  o.role_batch_size[2] = -3;
  REQUIRE_THROWS_WITH(BatchSampler(10, o), Contains("sampler: estimate batch size -3"));
  o.role_batch_size[2] = 0;
  REQUIRE_THROWS_WITH(BatchSampler(0, o), Contains("sampler: the training set has 0 samples"));
  BatchSampler sampler(10, o);
  REQUIRE_THROWS_WITH(sampler.next(BatchPlan{}), Contains("batch plan: no draws; expected at least one"));
  BatchPlan plan = four_draws();
  plan.draw_of_role[2] = 4;
  REQUIRE_THROWS_WITH(sampler.next(plan),
                      Contains("batch plan: role 'estimate' maps to draw 4, but the plan has 4 draws"));
  plan = four_draws(1, 0, 1, 1);
  REQUIRE_THROWS_WITH(sampler.next(plan),
                      Contains("batch plan: draw 1 has relative size 0; expected a finite number > 0"));
  REQUIRE_THROWS_WITH(sampler.next(four_draws()),
                      Contains("sampler: one step needs 16 distinct samples (disjoint draws of sizes 4, "
                               "4, 4, 4) but the training set has 10"));
  CHECK(sampler.steps() == 0);  // failed steps draw nothing
}
