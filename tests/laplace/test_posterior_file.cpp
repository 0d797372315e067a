// Laplace posterior files: every structure survives save and load bitwise (curvature, θ*, N,
// prior precisions, and so every predictive); the file loads as a model file; every fault of a
// file is one message naming the file and the key. Also the predictives' variances and the
// inputs-only entry point.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <quadra/error.hpp>
#include <quadra/io/file.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/laplace/posterior_file.hpp>
#include <quadra/laplace/predictive.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "posterior_test_utils.hpp"

namespace {

using namespace laplace_test;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;
namespace io = quadra::io;
using Catch::Contains;

fs::path output_dir() {
  const fs::path dir = fs::path(QUADRA_BINARY_DIR) / "test-output" / "laplace" / "posterior-file";
  fs::create_directories(dir);
  return dir;
}

/// A fitted posterior of `prob` with the given structure and subset.
lp::Posterior fitted(const Problem& prob, lp::Structure structure, lp::Subset subset) {
  lp::FitOptions o = options(structure);
  o.subset = subset;
  o.rank = 5;
  lp::CurvatureModel model = lp::fit_curvature<double>(
      host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, nullptr, o);
  return {std::move(model), prob.params, kN, 2.5};
}

lp::PosteriorInfo info_of(lp::Structure structure, bool per_layer = false) {
  lp::PosteriorInfo info;
  info.debiasing = lp::Debiasing::kIndependent;
  info.kfac_eigenvalues = lp::KfacEigenvalues::kPerSample;
  info.curvature = structure == lp::Structure::kDiagonal ? "diag-ggn"
                   : structure == lp::Structure::kKfac   ? "kfac"
                                                         : "ggn";
  info.prior_rule = per_layer ? "per-layer" : "marglik";
  info.predictive = lp::PredictiveKind::kGlmMc;
  info.samples = 37;
  info.curvature_samples = 40;
  info.data = "moons:n=600";
  info.normalize = "none";
  return info;
}

/// Every predictive (with its variance) of `post` on `set`.
std::vector<lp::Prediction> all_predictions(const Problem& prob, const lp::Posterior& post,
                                            const quadra::data::Dataset& set) {
  std::vector<lp::Prediction> out;
  for (auto kind :
       {lp::PredictiveKind::kProbit, lp::PredictiveKind::kGlmMc, lp::PredictiveKind::kNnMc}) {
    lp::PredictiveOptions o;
    o.kind = kind;
    o.samples = 20;
    o.seed = 7;
    o.variance = true;
    out.push_back(lp::predict_set<double>(prob.network, post.map(), &post, set, o));
  }
  return out;
}

/// Rewrites `from` as `to` after `change` edited its arrays.
void mutate(const fs::path& from, const fs::path& to,
            const std::function<void(std::map<std::string, io::NpyArray>&)>& change) {
  auto arrays = io::read_npz(from);
  change(arrays);
  io::write_npz(to, {arrays.begin(), arrays.end()});
}

io::NpyArray text(const std::string& value) {
  return io::NpyArray::from<std::uint8_t>({static_cast<std::int64_t>(value.size())},
                                          reinterpret_cast<const std::uint8_t*>(value.data()));
}

}  // namespace

TEST_CASE("every structure's posterior survives a file bitwise, with the same predictions",
          "[laplace][posterior-file]") {
  const auto [spec, shape] =
      GENERATE(table<const char*, const char*>({{kMlp, "3"}, {kCnn, "1x4x4"}}));
  const auto structure =
      GENERATE(lp::Structure::kDiagonal, lp::Structure::kKfac, lp::Structure::kLowRank,
               lp::Structure::kFull, lp::Structure::kLastLayerFull);
  const auto subset = GENERATE(lp::Subset::kAll, lp::Subset::kLastLayer);
  if ((structure == lp::Structure::kFull && subset != lp::Subset::kAll) ||
      (structure == lp::Structure::kLastLayerFull && subset != lp::Subset::kLastLayer)) {
    return;  // the structure fixes the subset
  }
  INFO(spec << ", " << lp::to_string(structure) << ", subset " << lp::to_string(subset));
  const Problem prob(spec, nn::parse_shape(shape), 40, 3);
  lp::Posterior post = fitted(prob, structure, subset);
  const bool per_layer = structure != lp::Structure::kLowRank && post.prior_layers().size() > 1;
  if (per_layer) post.set_prior_precisions({0.5, 4.0});

  const fs::path file = output_dir() / "round-trip.npz";
  const std::vector<std::pair<std::string, io::NpyArray>> metadata = {
      {"__preprocessing__.mean", io::NpyArray::from<double>({1}, std::vector<double>{0.25}.data())},
      {"__laplace__.structure", text("stale")}};  // a posterior used as the model: dropped
  lp::save_posterior(file, prob.network, post, info_of(structure, per_layer), metadata);
  const lp::LoadedPosterior loaded = lp::load_posterior(file);

  REQUIRE(loaded.network.spec() == prob.network.spec());
  REQUIRE(loaded.network.input_shape() == prob.network.input_shape());
  REQUIRE(loaded.subset == lp::effective_subset([&] {
            lp::FitOptions o = options(structure);
            o.subset = subset;
            return o;
          }()));
  const lp::Posterior& back = loaded.posterior;
  REQUIRE(back.map() == post.map());
  REQUIRE(back.data_size() == post.data_size());
  REQUIRE(back.prior_precisions() == post.prior_precisions());
  REQUIRE(back.per_layer_prior() == per_layer);
  const lp::CurvatureModel& a = post.model();
  const lp::CurvatureModel& b = back.model();
  REQUIRE(b.structure == a.structure);
  REQUIRE(b.range.offset == a.range.offset);
  REQUIRE(b.range.size == a.range.size);
  REQUIRE(b.layers.size() == a.layers.size());
  REQUIRE(b.kronecker.size() == a.kronecker.size());
  for (std::size_t i = 0; i < a.kronecker.size(); ++i) {
    const lp::KroneckerBlock& x = a.kronecker[i];
    const lp::KroneckerBlock& y = b.kronecker[i];
    REQUIRE(y.offset == x.offset);
    REQUIRE(y.layer == x.layer);
    REQUIRE(y.out == x.out);
    REQUIRE(y.in == x.in);
    REQUIRE(y.bias == x.bias);
    REQUIRE(y.conv == x.conv);
    REQUIRE(y.identity == x.identity);
    REQUIRE(y.values == x.values);
    REQUIRE(y.qa == x.qa);
    REQUIRE(y.qs == x.qs);
  }
  REQUIRE(b.eigen.size() == a.eigen.size());
  for (std::size_t i = 0; i < a.eigen.size(); ++i) {
    REQUIRE(b.eigen[i].basis == a.eigen[i].basis);
    REQUIRE(b.eigen[i].values == a.eigen[i].values);
  }
  const lp::PosteriorInfo want = info_of(structure, per_layer);
  REQUIRE(loaded.info.debiasing == want.debiasing);
  REQUIRE(loaded.info.kfac_eigenvalues == want.kfac_eigenvalues);
  REQUIRE(loaded.info.curvature == want.curvature);
  REQUIRE(loaded.info.prior_rule == want.prior_rule);
  REQUIRE(loaded.info.predictive == want.predictive);
  REQUIRE(loaded.info.samples == want.samples);
  REQUIRE(loaded.info.curvature_samples == want.curvature_samples);
  REQUIRE(loaded.info.data == want.data);
  REQUIRE(loaded.info.normalize == want.normalize);

  REQUIRE(back.log_marginal_likelihood(10.0) == post.log_marginal_likelihood(10.0));
  const Problem other(spec, nn::parse_shape(shape), 9, 99);
  const quadra::data::Dataset set = as_dataset(other.batch, "unseen");
  const auto before = all_predictions(prob, post, set);
  const auto after = all_predictions(prob, back, set);
  for (std::size_t k = 0; k < before.size(); ++k) {
    REQUIRE(after[k].probabilities == before[k].probabilities);
    REQUIRE(after[k].variance == before[k].variance);
  }

  SECTION("the file is a model file too, carrying the model's metadata") {
    const nn::Model<double> model = nn::load_model<double>(file);
    REQUIRE(model.network.spec() == prob.network.spec());
    REQUIRE(model.params == prob.params);
    const auto arrays = io::read_npz(file);
    REQUIRE(arrays.at("__preprocessing__.mean").to_vector<double>() == std::vector<double>{0.25});
    REQUIRE(arrays.at("__laplace__.structure").to_vector<std::uint8_t>().size() ==
            std::string(lp::to_string(structure)).size());
  }
}

TEST_CASE("bases found in float32 pass the load checks", "[laplace][posterior-file]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const Vector<float> params = prob.params.cast<float>();
  nn::DatasetBatch<float> batch;
  batch.inputs = prob.batch.inputs.cast<float>();
  batch.targets.labels = prob.batch.targets.labels;
  for (auto structure : {lp::Structure::kLowRank, lp::Structure::kKfac, lp::Structure::kFull}) {
    lp::FitOptions o = options(structure);
    o.rank = 6;
    lp::CurvatureModel model = lp::fit_curvature<float>(host(), prob.network, params,
                                                        nn::Loss::kCrossEntropy, batch, nullptr, o);
    const lp::Posterior post(std::move(model), params.cast<double>(), kN, 1.0);
    const fs::path file = output_dir() / "float32.npz";
    lp::save_posterior(file, prob.network, post, info_of(structure));
    const lp::LoadedPosterior loaded = lp::load_posterior(file);
    REQUIRE(loaded.posterior.map() == post.map());
  }
}

TEST_CASE("every fault of a posterior file is one message naming the file and the key",
          "[laplace][posterior-file]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const fs::path dir = output_dir();
  const fs::path kfac = dir / "kfac.npz";
  lp::Posterior post = fitted(prob, lp::Structure::kKfac, lp::Subset::kAll);
  lp::save_posterior(kfac, prob.network, post, info_of(lp::Structure::kKfac));
  const fs::path bad = dir / "bad.npz";
  const std::string name = bad.string();
  auto refused = [&](const std::function<void(std::map<std::string, io::NpyArray>&)>& change) {
    mutate(kfac, bad, change);
    try {
      (void)lp::load_posterior(bad);
    } catch (const quadra::Error& e) {
      return std::string(e.what());
    }
    FAIL("the file was accepted");
    return std::string();
  };

  SECTION("a plain model file") {
    nn::save_model<double>(bad, prob.network, prob.params);
    REQUIRE_THROWS_WITH(lp::load_posterior(bad), Contains(name) &&
                                                     Contains("not a Laplace posterior file") &&
                                                     Contains("__laplace__.format_version"));
  }
  SECTION("a truncated file") {
    const std::string bytes = io::read_file_bytes(kfac);
    std::ofstream(bad, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    REQUIRE_THROWS_WITH(lp::load_posterior(bad), Contains(name));
  }
  SECTION("another format version") {
    const std::string what = refused([](auto& a) {
      const std::int64_t v = 2;
      a["__laplace__.format_version"] = io::NpyArray::from<std::int64_t>({}, &v);
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.format_version' is 2") &&
                           Contains("version 1"));
  }
  SECTION("a missing array") {
    const std::string what = refused([](auto& a) { a.erase("__laplace__.0.qa"); });
    REQUIRE_THAT(what, Contains(name) && Contains("missing array '__laplace__.0.qa'") &&
                           Contains("input-side K-FAC eigenbasis of layer 0"));
  }
  SECTION("an unexpected array") {
    const std::string what = refused([](auto& a) { a["__laplace__.extra"] = text("x"); });
    REQUIRE_THAT(what, Contains(name) && Contains("unexpected array '__laplace__.extra'"));
  }
  SECTION("a wrong dtype") {
    const std::string what = refused([](auto& a) {
      const std::vector<float> values(15, 1.0f);
      a["__laplace__.2.values"] = io::NpyArray::from<float>({3, 5}, values.data());
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.2.values' has dtype float32; "
                                                  "expected float64"));
  }
  SECTION("a wrong shape") {
    const std::string what = refused([](auto& a) {
      const std::vector<double> values(12, 1.0);
      a["__laplace__.2.values"] = io::NpyArray::from<double>({3, 4}, values.data());
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.2.values' has shape (3, 4); "
                                                  "expected (3, 5)"));
  }
  SECTION("a non-finite value") {
    const std::string what = refused([](auto& a) {
      std::vector<double> values = a["__laplace__.0.values"].template to_vector<double>();
      values[3] = std::nan("");
      a["__laplace__.0.values"] = io::NpyArray::from<double>({4, 4}, values.data());
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.0.values'") && Contains("nan") &&
                           Contains("expected finite numbers"));
  }
  SECTION("a negative eigenvalue") {
    const std::string what = refused([](auto& a) {
      std::vector<double> values = a["__laplace__.0.values"].template to_vector<double>();
      values[5] = -0.5;
      a["__laplace__.0.values"] = io::NpyArray::from<double>({4, 4}, values.data());
    });
    REQUIRE_THAT(what,
                 Contains(name) && Contains("'__laplace__.0.values': element 5 (index (1, "
                                            "1)) is -0.5; expected curvature eigenvalues >= 0"));
  }
  SECTION("a basis that is not orthonormal") {
    const std::string what = refused([](auto& a) {
      std::vector<double> values = a["__laplace__.0.qs"].template to_vector<double>();
      values[0] *= 1.5;
      a["__laplace__.0.qs"] = io::NpyArray::from<double>({4, 4}, values.data());
    });
    REQUIRE_THAT(what,
                 Contains(name) && Contains("'__laplace__.0.qs' is not an orthonormal basis"));
  }
  SECTION("an unknown structure") {
    const std::string what = refused([](auto& a) { a["__laplace__.structure"] = text("kron"); });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.structure': structure 'kron' is "
                                                  "unknown; expected one of diag, kfac"));
  }
  SECTION("a subset the structure contradicts") {
    mutate(kfac, bad, [](auto& a) { a["__laplace__.structure"] = text("last-layer-full"); });
    REQUIRE_THROWS_WITH(lp::load_posterior(bad),
                        Contains(name) && Contains("'__laplace__.subset' is all, but structure "
                                                   "last-layer-full covers last-layer"));
  }
  SECTION("an unknown prior rule") {
    const std::string what = refused([](auto& a) { a["__laplace__.prior_rule"] = text("guess"); });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.prior_rule' is 'guess'; expected "
                                                  "one of grid, marglik, per-layer, fixed"));
  }
  SECTION("different prior precisions without the per-layer rule") {
    const std::string what = refused([](auto& a) {
      const std::vector<double> taus{1.0, 2.0};
      a["__laplace__.prior_precision"] = io::NpyArray::from<double>({2}, taus.data());
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.prior_precision' holds different "
                                                  "values per layer, but '__laplace__.prior_rule' "
                                                  "is marglik"));
  }
  SECTION("a prior precision that is not positive") {
    const std::string what = refused([](auto& a) {
      const std::vector<double> taus{0.0, 0.0};
      a["__laplace__.prior_precision"] = io::NpyArray::from<double>({2}, taus.data());
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.prior_precision': element 0 is 0; "
                                                  "expected prior precisions > 0"));
  }
  SECTION("a data size below 1") {
    const std::string what = refused([](auto& a) {
      const double n = 0.5;
      a["__laplace__.data_size"] = io::NpyArray::from<double>({}, &n);
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.data_size' is 0.5; expected the "
                                                  "training set's size N >= 1"));
  }
  SECTION("a scalar stored as a vector") {
    const std::string what = refused([](auto& a) {
      const double n = 500;
      a["__laplace__.data_size"] = io::NpyArray::from<double>({1}, &n);
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.data_size' has shape (1,); "
                                                  "expected ()"));
  }
  SECTION("no Monte-Carlo samples") {
    const std::string what = refused([](auto& a) {
      const std::int64_t samples = 0;
      a["__laplace__.samples"] = io::NpyArray::from<std::int64_t>({}, &samples);
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.samples' is 0; expected a sample "
                                                  "count from 1 to"));
  }
  SECTION("an integer stored as float64") {
    const std::string what = refused([](auto& a) {
      const double samples = 37;
      a["__laplace__.samples"] = io::NpyArray::from<double>({}, &samples);
    });
    REQUIRE_THAT(what, Contains(name) && Contains("'__laplace__.samples' has dtype float64; "
                                                  "expected int64"));
  }
  SECTION("text stored as numbers") {
    const std::string what = refused([](auto& a) {
      const double value = 1;
      a["__laplace__.curvature"] = io::NpyArray::from<double>({1}, &value);
    });
    REQUIRE_THAT(what,
                 Contains(name) && Contains("'__laplace__.curvature' has dtype float64 and "
                                            "shape (1,); expected a 1-d uint8 array of text"));
  }
  SECTION("the map predictive") {
    const std::string what = refused([](auto& a) { a["__laplace__.predictive"] = text("map"); });
    REQUIRE_THAT(what, Contains(name) &&
                           Contains("'__laplace__.predictive' is map; expected probit, glm-mc or "
                                    "nn-mc"));
  }
  SECTION("a per-layer prior on lowrank") {
    const fs::path lowrank = dir / "lowrank.npz";
    lp::save_posterior(lowrank, prob.network,
                       fitted(prob, lp::Structure::kLowRank, lp::Subset::kAll),
                       info_of(lp::Structure::kLowRank));
    mutate(lowrank, bad, [](auto& a) { a["__laplace__.prior_rule"] = text("per-layer"); });
    REQUIRE_THROWS_WITH(lp::load_posterior(bad),
                        Contains(name) && Contains("does not work with structure lowrank"));
  }
  SECTION("lowrank eigenvectors that are not range x k") {
    const fs::path lowrank = dir / "lowrank.npz";
    lp::save_posterior(lowrank, prob.network,
                       fitted(prob, lp::Structure::kLowRank, lp::Subset::kAll),
                       info_of(lp::Structure::kLowRank));
    mutate(lowrank, bad, [](auto& a) {
      const std::vector<double> values(30 * 5, 0.0);
      a["__laplace__.eigenvectors"] = io::NpyArray::from<double>({30, 5}, values.data());
    });
    REQUIRE_THROWS_WITH(lp::load_posterior(bad),
                        Contains(name) && Contains("'__laplace__.eigenvectors' has shape (30, 5); "
                                                   "expected (31, k) with 1 <= k <= 31"));
  }
  SECTION("saving refuses a prior rule the posterior contradicts") {
    lp::PosteriorInfo info = info_of(lp::Structure::kKfac);
    info.prior_rule = "per-layer";
    REQUIRE_THROWS_WITH(
        lp::save_posterior(bad, prob.network, post, info),
        Contains("prior rule per-layer, but the posterior has one prior precision"));
    post.set_prior_precisions({1.0, 2.0});
    info.prior_rule = "grid";
    REQUIRE_THROWS_WITH(lp::save_posterior(bad, prob.network, post, info),
                        Contains("prior rule grid, but the posterior has a per-layer prior"));
    info.prior_rule = "guess";
    REQUIRE_THROWS_WITH(lp::save_posterior(bad, prob.network, post, info),
                        Contains("prior rule 'guess' is unknown"));
  }
  SECTION("a model that does not load") {
    const std::string what = refused([](auto& a) { a.erase("0.weight"); });
    REQUIRE_THAT(what, Contains(name) && Contains("'0.weight'"));
  }
}

TEST_CASE("predictive variances: probit's is diag Σ_f, Monte Carlo's that of the draws",
          "[laplace][posterior-file]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const lp::Posterior post = fitted(prob, lp::Structure::kKfac, lp::Subset::kAll);
  const Problem other(kMlp, nn::parse_shape("3"), 12, 99);
  const quadra::data::Dataset set = as_dataset(other.batch, "unseen");
  lp::PredictiveOptions o;
  o.variance = true;
  o.seed = 3;

  SECTION("probit: the linearised logits' variance") {
    const lp::Prediction p = lp::predict_set<double>(prob.network, prob.params, &post, set, o);
    nn::DatasetBatch<double> rounded = other.batch;  // the data set holds float32 features
    rounded.inputs = rounded.inputs.cast<float>().cast<double>();
    auto batch = prob.bind(rounded);
    const Matrix<double> sigma = post.functional_covariances(batch);
    for (Index n = 0; n < 12; ++n) {
      REQUIRE(p.variance.col(n) == Vector<double>(sigma.middleCols(3 * n, 3).diagonal()));
    }
  }
  SECTION("glm-mc and nn-mc: two draws, recovered from one and two") {
    for (auto kind : {lp::PredictiveKind::kGlmMc, lp::PredictiveKind::kNnMc}) {
      o.kind = kind;
      o.samples = 1;
      const lp::Prediction one = lp::predict_set<double>(prob.network, prob.params, &post, set, o);
      REQUIRE(one.variance.isZero(0.0));
      o.samples = 2;
      const lp::Prediction two = lp::predict_set<double>(prob.network, prob.params, &post, set, o);
      // The second draw is 2 p̄ − p₀; the unbiased variance of two values is (p₀ − p₁)² / 2.
      const Matrix<double> second = 2.0 * two.probabilities - one.probabilities;
      const Matrix<double> want = (one.probabilities - second).array().square().matrix() / 2.0;
      REQUIRE(max_abs_diff(two.variance, want) <= 1e-12);
    }
  }
  SECTION("map has none; predict() computes none") {
    o.kind = lp::PredictiveKind::kMap;
    REQUIRE(lp::predict_set<double>(prob.network, prob.params, nullptr, set, o).variance.size() ==
            0);
  }
  SECTION("inputs without labels predict what the data set does, bitwise, for any thread count") {
    Matrix<double> inputs(3, set.size());
    for (Index n = 0; n < set.size(); ++n) {
      for (Index f = 0; f < 3; ++f)
        inputs(f, n) = set.features[static_cast<std::size_t>(n * 3 + f)];
    }
    for (auto kind : {lp::PredictiveKind::kMap, lp::PredictiveKind::kProbit,
                      lp::PredictiveKind::kGlmMc, lp::PredictiveKind::kNnMc}) {
      o.kind = kind;
      o.samples = 15;
      o.chunk = 5;
      quadra::set_num_threads(1);
      const lp::Prediction a = lp::predict_set<double>(prob.network, prob.params, &post, set, o);
      quadra::set_num_threads(2);
      const lp::Prediction b =
          lp::predict_inputs<double>(prob.network, prob.params, &post, inputs, o);
      quadra::set_num_threads(0);
      REQUIRE(a.probabilities == b.probabilities);
      REQUIRE(a.variance == b.variance);
      REQUIRE(lp::predict<double>(prob.network, prob.params, &post, set, o) == a.probabilities);
    }
  }
}
