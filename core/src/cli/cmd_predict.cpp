// `quadra predict`: class probabilities of a classifier on any inputs, from the MAP network or a
// Laplace posterior that `quadra laplace --save` wrote. The numbers come from quadra/laplace, so
// a saved posterior predicts exactly what quadra laplace reported for the same inputs.

#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <boost/program_options/parsers.hpp>

#include <quadra/io/atomic_file.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/laplace/metrics.hpp>
#include <quadra/laplace/posterior_file.hpp>
#include <quadra/laplace/predictive.hpp>

#include "cli.hpp"
#include "model_batch.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace lp = quadra::laplace;

namespace {

constexpr const char* kUsage =
    "usage: quadra predict [--model SPEC|FILE [--weights W.npz]] [--posterior P.npz]\n"
    "          (--inputs X.npy [--targets y.npy] | --data SOURCE [--split test|validation|train]\n"
    "           [--normalize N]) [--predictive map|probit|glm-mc|nn-mc] [--samples S] [--seed S]\n"
    "          --out DIR [--precision float32|float64] [--threads N]\n\n"
    "Class probabilities of a classifier for every input: the MAP network (softmax of its\n"
    "outputs) or, with --posterior (a file quadra laplace --save wrote), the Laplace predictive:\n"
    "probit, glm-mc or nn-mc with --samples draws seeded by --seed (default: the predictive and\n"
    "samples the posterior's prior precision was chosen with). The posterior file holds its\n"
    "model, so --model may be left out; given both, they must hold the same spec and weights.\n"
    "Inputs are --inputs (N x features or N x C x H x W; uint8 is scaled by 1/255) or a split of\n"
    "--data split by --seed as in training; both get the preprocessing the model file records\n"
    "(a model without one: --data normalised by --normalize). The same posterior, inputs,\n"
    "predictive, --samples and --seed give bitwise the probabilities quadra laplace computed.\n"
    "Writes to DIR: probabilities.npy (N x C float64), entropy.npy (N, the predictive entropy in\n"
    "nats), with a posterior variance.npy (N x C: for probit the variance of the linearised\n"
    "logits, diag J Sigma J'; for glm-mc and nn-mc the Monte-Carlo variance of each class\n"
    "probability) and predictions.csv (index, predicted class, its probability, entropy, its\n"
    "variance, the label when known). With labels (--data, or --targets) also prints accuracy,\n"
    "NLL, Brier score and ECE and writes metrics.csv.";

/// parse() with one difference: without --model, the --posterior file stands in for it (a
/// posterior file is a model file), so that the shared loaders read the model from there.
bool parse_predict(const Args& args, po::options_description& options, po::variables_map& vm) {
  options.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(args).options(options).run(), vm);
    if (vm.count("help") != 0) {
      std::cout << kUsage << "\n\n" << options << "\n";
      return false;
    }
    if (vm.count("model") == 0 && vm.count("posterior") != 0) {
      vm.insert({"model", po::variable_value(vm["posterior"].value(), false)});
    }
    if (vm.count("model") == 0) {
      throw UsageError(
          "give --model SPEC|FILE, --posterior P.npz (which holds its model), or both");
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  return true;
}

/// The inputs: a data set (with labels) or a matrix (labels when --targets was given).
template <class S>
struct Inputs {
  std::optional<nn::Network> network;
  Vector<S> params;
  nn::Loss loss = nn::Loss::kCrossEntropy;
  std::optional<data::Dataset> set;
  Matrix<S> matrix;
  std::vector<std::int64_t> labels;
  bool labelled = false;
  bool recorded_preprocessing = false;  ///< the model file's, applied to the inputs
  std::string description;
  [[nodiscard]] Index size() const { return set ? set->size() : matrix.cols(); }
};

template <class S>
Inputs<S> load_inputs(const po::variables_map& vm) {
  const bool npy = vm.count("inputs") != 0;
  const bool data = vm.count("data") != 0;
  if (npy == data) {
    throw UsageError(npy ? "give either --inputs or --data, not both"
                         : "give the inputs as --inputs X.npy or --data SOURCE");
  }
  if (vm.count("targets") != 0 && !npy) throw UsageError("--targets goes with --inputs");
  if (!vm["split"].defaulted() && !data) throw UsageError("--split goes with --data");
  Inputs<S> out;
  if (npy) {
    ModelBatch<S> batch = load_model_inputs<S>(vm);
    out.network = std::move(batch.network);
    out.params = std::move(batch.params);
    out.loss = batch.loss;
    out.matrix = std::move(batch.inputs);
    out.labelled = vm.count("targets") != 0;
    out.labels = std::move(batch.targets.labels);
    out.description = batch.batch_description;
    out.recorded_preprocessing = !batch.preprocessing.empty();
    if (out.labelled && out.loss == nn::Loss::kCrossEntropy) {
      const Index classes = out.network->num_outputs();
      for (std::size_t i = 0; i < out.labels.size(); ++i) {
        if (out.labels[i] < 0 || out.labels[i] >= classes) {
          throw Error(
              fmt::format("{}: label {} of input {} is not a class of the model's {}; "
                          "expected 0 to {}",
                          vm["targets"].as<std::string>(), out.labels[i], i, classes, classes - 1));
        }
      }
    }
    return out;
  }
  const std::string split = vm["split"].as<std::string>();
  if (split != "test" && split != "validation" && split != "train") {
    throw UsageError(fmt::format("--split '{}': expected test, validation or train", split));
  }
  ModelData<S> in = load_model_data<S>(vm);
  data::Dataset& set = split == "test"         ? in.data.test
                       : split == "validation" ? in.data.validation
                                               : in.data.train;
  if (set.empty()) {
    throw Error(fmt::format("--data '{}' has no {} split; expected one of its non-empty splits",
                            vm["data"].as<std::string>(), split));
  }
  out.network = std::move(in.network);
  out.params = std::move(in.params);
  out.loss = in.loss;
  out.labelled = true;
  out.labels = set.labels;
  out.description =
      fmt::format("{} split of {}{}", split, vm["data"].as<std::string>(), in.preprocessing);
  out.recorded_preprocessing = !in.preprocessing.empty();
  out.set.emplace(std::move(set));
  return out;
}

/// "0.weight element 3" for flat index `i` of the network's parameter vector.
std::string parameter_name(const nn::Network& network, Index i) {
  for (const nn::ParameterInfo& p : network.parameters()) {
    if (i >= p.offset && i < p.offset + p.size) {
      return fmt::format("'{}' element {}", p.name, i - p.offset);
    }
  }
  return fmt::format("parameter {}", i);
}

/// The model loaded through --model must be the one the posterior was fitted to.
template <class S>
void check_same_model(const po::variables_map& vm, const Inputs<S>& in,
                      const lp::LoadedPosterior& post) {
  const std::string model = vm["model"].as<std::string>();
  const std::string file = vm["posterior"].as<std::string>();
  const nn::Network& net = *in.network;
  const std::string advice =
      "expected the model the posterior was fitted to (or leave out --model: the posterior file "
      "holds it)";
  if (net.spec() != post.network.spec() || net.input_shape() != post.network.input_shape()) {
    throw Error(fmt::format(
        "--model {} and --posterior {} hold different models: '{}' with input {} against the "
        "posterior's '{}' with input {}; {}",
        model, file, net.spec(), net.input_shape().str(), post.network.spec(),
        post.network.input_shape().str(), advice));
  }
  const Vector<S> map = post.posterior.map().template cast<S>();
  for (Index i = 0; i < map.size(); ++i) {
    if (map(i) != in.params(i)) {
      throw Error(fmt::format(
          "--model {} and --posterior {} share the spec '{}' but not the weights: {} is {} in "
          "the model and {} in the posterior; {}",
          model, file, net.spec(), parameter_name(net, i), static_cast<double>(in.params(i)),
          static_cast<double>(map(i)), advice));
    }
  }
}

/// N × C C-order float64 from a C × N matrix (the same bytes).
io::NpyArray samples_by_classes(const Matrix<double>& m) {
  return io::NpyArray::from<double>({m.cols(), m.rows()}, m.data());
}

/// One row per input; the variance column when `variance_name` is not empty.
std::string predictions_csv(const Matrix<double>& p, const Eigen::VectorXd& entropy,
                            const Matrix<double>& variance, const std::string& variance_name,
                            const std::vector<std::int64_t>* labels) {
  std::string out = "index,predicted,probability,entropy";
  if (!variance_name.empty()) out += "," + variance_name;
  if (labels != nullptr) out += ",label";
  out += "\n";
  for (Index n = 0; n < p.cols(); ++n) {
    // Ties go to the lowest class, as in the metrics (torch.argmax).
    Index best = 0;
    for (Index c = 1; c < p.rows(); ++c) {
      if (p(c, n) > p(best, n)) best = c;
    }
    out += fmt::format("{},{},{:.10g},{:.10g}", n, best, p(best, n), entropy(n));
    if (!variance_name.empty()) out += fmt::format(",{:.10g}", variance(best, n));
    if (labels != nullptr) out += fmt::format(",{}", (*labels)[static_cast<std::size_t>(n)]);
    out += "\n";
  }
  return out;
}

template <class S>
int run_with(const po::variables_map& vm) {
  // Several ranks (docs/mpi.md): every rank reads the same inputs and agrees on their errors,
  // each predicts its share of every chunk and gathers the rest, and rank 0 alone writes.
  const dist::Communicator& world = dist::Communicator::world();
  std::optional<lp::LoadedPosterior> post;
  lp::PredictiveOptions o;
  Inputs<S> in;
  run_agreed(world, [&] {
    if (vm.count("posterior") != 0)
      post.emplace(lp::load_posterior(vm["posterior"].as<std::string>()));
    o.kind = vm.count("predictive") != 0 ? lp::parse_predictive(vm["predictive"].as<std::string>())
             : post                      ? post->info.predictive
                                         : lp::PredictiveKind::kMap;
    if (o.kind != lp::PredictiveKind::kMap && !post) {
      throw UsageError(fmt::format(
          "--predictive {} needs --posterior (a file of quadra laplace --save); without one, "
          "predict gives the MAP network",
          lp::to_string(o.kind)));
    }
    o.samples = vm.count("samples") != 0 ? vm["samples"].as<int>()
                : post                   ? post->info.samples
                                         : 100;
    if (o.samples < 1) throw Error(fmt::format("--samples {}: expected at least 1", o.samples));
    o.seed = vm["seed"].as<std::uint64_t>();
    o.variance = true;

    in = load_inputs<S>(vm);
    if (in.loss != nn::Loss::kCrossEntropy) {
      throw Error(fmt::format(
          "quadra predict gives class probabilities (cross-entropy); --loss {} was given",
          nn::to_string(in.loss)));
    }
    if (post) check_same_model(vm, in, *post);
  });
  const nn::Network& net = *in.network;
  const lp::Posterior* posterior = post ? &post->posterior : nullptr;

  std::cout << fmt::format("# quadra predict: model '{}' ({} parameters, {}), {} inputs: {}\n",
                           net.spec(), net.num_parameters(),
                           std::is_same_v<S, double> ? "float64" : "float32", in.size(),
                           in.description);
  if (post) {
    const lp::PosteriorInfo& info = post->info;
    std::string taus = fmt::format("{:.4g}", posterior->prior_precision());
    if (posterior->per_layer_prior()) {
      taus.clear();
      for (double tau : posterior->prior_precisions())
        taus += fmt::format("{}{:.4g}", taus.empty() ? "" : ", ", tau);
      taus = "[" + taus + "]";
    }
    std::cout << fmt::format(
        "# posterior {}: {} on {} parameters, {}, curvature {} on {} samples, N = {}, tau = {} "
        "({}), fitted on {}\n",
        vm["posterior"].as<std::string>(), lp::to_string(posterior->model().structure),
        posterior->model().range.size, lp::to_string(info.debiasing), info.curvature,
        info.curvature_samples, posterior->data_size(), taus, info.prior_rule,
        info.data.empty() ? "-" : info.data);
    if (in.set && !in.recorded_preprocessing && !info.normalize.empty() &&
        info.normalize != vm["normalize"].as<std::string>()) {
      std::cout << fmt::format(
          "# note: the posterior was fitted on data normalised by {}; --normalize is {}\n",
          info.normalize, vm["normalize"].as<std::string>());
    }
  }
  std::cout << fmt::format(
      "# predictive {}{}\n", lp::to_string(o.kind),
      o.kind == lp::PredictiveKind::kGlmMc || o.kind == lp::PredictiveKind::kNnMc
          ? fmt::format(" ({} samples, seed {})", o.samples, o.seed)
          : "");

  const lp::Prediction prediction =
      in.set ? lp::predict_set<S>(net, in.params, posterior, *in.set, o)
             : lp::predict_inputs<S>(net, in.params, posterior, in.matrix, o);
  const Matrix<double>& p = prediction.probabilities;
  const Eigen::VectorXd entropy = lp::predictive_entropy(p);
  const bool logits = o.kind == lp::PredictiveKind::kProbit;
  const bool with_variance = o.kind != lp::PredictiveKind::kMap;
  const std::string variance_name = !with_variance ? ""
                                    : logits       ? "logit_variance"
                                                   : "probability_variance";

  const fs::path out = vm["out"].as<std::string>();
  std::string written;
  std::optional<lp::ClassificationMetrics> metrics;
  if (in.labelled) metrics = lp::classification_metrics(p, in.labels);
  if (metrics) {
    const lp::ClassificationMetrics& m = *metrics;
    std::cout << fmt::format(
        "accuracy {:.4f}, NLL {:.4f}, Brier {:.4f}, ECE {:.4f}, mean entropy {:.4f} on {} "
        "labelled inputs\n",
        m.accuracy, m.nll, m.brier, m.ece, entropy.mean(), m.count);
  }
  world.run_agreed([&] {
    if (!world.is_root()) return;
    fs::create_directories(out);
    io::write_npy(out / "probabilities.npy", samples_by_classes(p));
    io::write_npy(out / "entropy.npy",
                  io::NpyArray::from<double>({entropy.size()}, entropy.data()));
    written = "probabilities.npy,entropy.npy";
    if (with_variance) {
      io::write_npy(out / "variance.npy", samples_by_classes(prediction.variance));
      written += ",variance.npy";
    }
    io::write_file_atomically(out / "predictions.csv",
                              predictions_csv(p, entropy, prediction.variance, variance_name,
                                              in.labelled ? &in.labels : nullptr));
    written += ",predictions.csv";
    if (metrics) {
      const lp::ClassificationMetrics& m = *metrics;
      io::write_file_atomically(
          out / "metrics.csv",
          fmt::format("count,accuracy,nll,brier,ece,mce,mean_entropy\n{},{:.10g},{:.10g},{:.10g},"
                      "{:.10g},{:.10g},{:.10g}\n",
                      m.count, m.accuracy, m.nll, m.brier, m.ece, m.mce, entropy.mean()));
      written += ",metrics.csv";
    }
  });
  std::cout << fmt::format("# wrote {}/{{{}}}\n", out.string(), written);
  if (with_variance) {
    std::cout << (logits
                      ? "# variance.npy: the variance of the linearised logits, diag J Sigma J'\n"
                      : fmt::format("# variance.npy: the Monte-Carlo variance of each class "
                                    "probability over {} draws\n",
                                    o.samples));
  }
  return kExitOk;
}

void add_options(po::options_description& options) {
  add_model_options(options);
  add_batch_options(options, /*with_data=*/false);
  // One option per line reads as a table.
  // clang-format off
  options.add_options()
      ("posterior", po::value<std::string>(), "Laplace posterior file of quadra laplace --save (holds its model)")
      ("data", po::value<std::string>(), "data source instead of --inputs, e.g. fashion-mnist")
      ("split", po::value<std::string>()->default_value("test"), "--data: test, validation or train")
      ("normalize", po::value<std::string>()->default_value("standardize-global"),
       "--data: none, minmax, standardize, standardize-channel or standardize-global (as in "
       "training; quadra train's default)")
      ("predictive", po::value<std::string>(),
       "map, probit, glm-mc or nn-mc (default: the posterior's, map without one)")
      ("samples", po::value<int>(), "glm-mc, nn-mc: Monte-Carlo samples (default: the posterior's, else 100)")
      ("out", po::value<std::string>()->required(), "directory for the .npy and .csv files");
  // clang-format on
}

}  // namespace

int run_predict(const Args& args, Context& /*context*/) {
  po::options_description options("predict options");
  add_options(options);
  po::variables_map vm;
  if (!parse_predict(args, options, vm)) return kExitOk;
  return use_double_precision(vm) ? run_with<double>(vm) : run_with<float>(vm);
}

}  // namespace quadra::cli
