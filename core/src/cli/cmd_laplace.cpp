// `quadra laplace`: the Laplace approximation of a trained classifier with curvature from a
// plugin, same-data or debiased (paper §6), its predictive uncertainty compared with the MAP
// network on the clean test set, on seeded corruptions of it and for out-of-distribution
// detection. The numbers come from quadra/laplace.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <span>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quadra/data/random.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/laplace/corruptions.hpp>
#include <quadra/laplace/metrics.hpp>
#include <quadra/laplace/posterior.hpp>
#include <quadra/laplace/posterior_file.hpp>
#include <quadra/laplace/predictive.hpp>

#include "cli.hpp"
#include "figures.hpp"
#include "model_batch.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace lp = quadra::laplace;

namespace {

constexpr const char* kUsage =
    "usage: quadra laplace --model FILE [--weights W.npz] --data SOURCE\n"
    "          [--normalize N] [--seed S]\n"
    "          [--structure diag|kfac|lowrank|last-layer-full|full] [--subset all|last-layer]\n"
    "          [--curvature NAME] [--set curvature.KEY=VALUE]...\n"
    "          [--debiasing same-data,independent] [--kfac-eigenvalues kronecker|per-sample]\n"
    "          [--curvature-samples M] [--rank K] [--max-dense P]\n"
    "          [--predictive probit|glm-mc|nn-mc] [--samples S]\n"
    "          [--prior-precision grid|marglik|per-layer|VALUE] [--prior-grid LOW:HIGH:COUNT]\n"
    "          [--validation-samples V] [--test-samples T]\n"
    "          [--shift LIST|none] [--severities LIST] [--ood LIST|none] [--ood-data SOURCE]\n"
    "          [--out DIR] [--save FILE [--save-variant NAME]]\n"
    "          [--precision float32|float64] [--threads N]\n\n"
    "Fits p(theta | D) ~ N(theta*, (N C + tau I)^-1) around the trained model theta*, with C\n"
    "the curvature plugin's estimate on M training samples drawn with --seed and N the training\n"
    "set's size, once per --debiasing variant at equal curvature data: same-data chooses the\n"
    "bases (K-FAC eigenbases, Lanczos or dense eigenvectors) and measures the eigenvalues on all\n"
    "M samples; independent chooses the bases on one half and re-measures the eigenvalues on the\n"
    "other (Rayleigh quotients; for kfac factor-wise, or per sample with --kfac-eigenvalues\n"
    "per-sample). tau is chosen per variant by the validation NLL over --prior-grid, by the\n"
    "Laplace marginal likelihood (per-layer: one tau per parameter layer, for diag, kfac, full\n"
    "and last-layer-full), or fixed. Then compares the MAP network and each posterior's\n"
    "predictive on the test set, on corrupted test sets (gaussian-noise, rotation, contrast,\n"
    "blur at each severity 1-5) and by out-of-distribution AUROC of the predictive entropy\n"
    "(inverted, uniform-noise images, and --ood-data): accuracy, NLL, Brier score, ECE and MCE\n"
    "(15 bins).\n"
    "--out DIR writes metrics.csv, metrics.json, reliability.csv (with each bin's sample count),\n"
    "prior_search.csv, test_probabilities_METHOD.npy (the clean test set's N x C predictive per\n"
    "method) and, with gnuplot installed, reliability.png. --save FILE writes one variant's\n"
    "posterior with its model (--save-variant, default the last --debiasing variant) for\n"
    "quadra predict. A model file that records its preprocessing (quadra train writes it) has\n"
    "it applied; otherwise use the --normalize and --seed the model was trained with (the\n"
    "defaults of quadra train).";

/// The training run's data: a normalised split and the transform, so raw images can be
/// corrupted and normalised again.
data::Dataset raw_images(const data::Dataset& normalized, const data::FeatureTransform& t) {
  data::Dataset raw = normalized;
  if (t.kind == data::Normalization::kNone) return raw;
  const auto d = static_cast<std::size_t>(raw.feature_dim());
  for (std::size_t i = 0; i < raw.features.size(); ++i) {
    const std::size_t j = t.shift.size() == 1 ? 0 : i % d;
    raw.features[i] = raw.features[i] / t.scale[j] + t.shift[j];
  }
  return raw;
}

data::Dataset prefix(const data::Dataset& set, std::int64_t count, const std::string& name) {
  std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(count, set.size())));
  std::iota(indices.begin(), indices.end(), 0);
  return set.subset(indices, name);
}

template <class S>
nn::DatasetBatch<S> as_batch(const data::Dataset& set) {
  nn::DatasetBatch<S> out;
  out.inputs = Eigen::Map<const Eigen::MatrixXf>(set.features.data(), set.feature_dim(), set.size())
                   .template cast<S>();
  out.targets.labels = set.labels;
  return out;
}

struct EvalSet {
  std::string name;
  data::Dataset set;
  bool ood = false;
};

struct Method {
  std::string name;  ///< "map" or the debiasing variant
  std::unique_ptr<lp::Posterior> posterior;
  std::string tau_rule;
  std::string prior_rule;  ///< the rule's name in posterior files: grid, marglik, per-layer, fixed
  lp::PriorSearch search;
  double log_evidence = std::numeric_limits<double>::quiet_NaN();
  double fit_seconds = 0;
};

struct Row {
  std::string set;
  std::string method;
  lp::ClassificationMetrics metrics;
  double auroc = std::numeric_limits<double>::quiet_NaN();  ///< out-of-distribution sets only
  double mean_entropy = 0;                                  ///< of the predictive, in nats
};

std::vector<int> parse_severities(const std::string& text) {
  std::vector<int> out;
  for (const std::string& item : split_list(text)) {
    char* end = nullptr;
    const long value = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || value < 1 || value > lp::kMaxSeverity) {
      throw Error(fmt::format(
          "--severities: '{}' is not a severity; expected integers 1 to {} separated by "
          "commas",
          item, lp::kMaxSeverity));
    }
    out.push_back(static_cast<int>(value));
  }
  return out;
}

std::vector<double> parse_prior_grid(const std::string& text) {
  double low = 0, high = 0;
  int count = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%lf:%lf:%d%n", &low, &high, &count, &consumed) != 3 ||
      static_cast<std::size_t>(consumed) != text.size()) {
    throw Error(fmt::format("--prior-grid '{}': expected LOW:HIGH:COUNT, e.g. 1e-2:1e6:17", text));
  }
  return lp::log_grid(low, high, count);
}

/// --ood-data: another source's test split (its training split if it has none), normalised like
/// the training data, as an out-of-distribution set.
EvalSet ood_data_set(const po::variables_map& vm, const data::DataSplits& splits,
                     const data::Dataset& test) {
  const std::string source = vm["ood-data"].as<std::string>();
  data::LoadOptions load;
  load.validation_size = 0;
  data::DataSplits other = data::load_data(source, load);
  data::Dataset& set = other.test.empty() ? other.train : other.test;
  if (set.feature_dim() != test.feature_dim()) {
    throw Error(
        fmt::format("--ood-data '{}': its samples have {} features; the model's data '{}' "
                    "has {}; expected the same",
                    source, set.feature_dim(), vm["data"].as<std::string>(), test.feature_dim()));
  }
  if (set.task != data::Task::kClassification) {
    throw Error(
        fmt::format("--ood-data '{}' is a {} set; expected a classification set (its "
                    "labels are not used, but the predictive needs some)",
                    source, data::to_string(set.task)));
  }
  // Labels beyond the model's classes would fail binding; they carry no meaning here.
  for (std::int64_t& label : set.labels) label %= test.num_classes;
  set.num_classes = test.num_classes;
  const std::string name = "ood:" + source;
  data::Dataset out = prefix(set, test.size(), name);
  splits.transform.apply(out);
  return {name, std::move(out), true};
}

/// The evaluation sets: the clean test set, its corruptions and the OOD sets.
std::vector<EvalSet> evaluation_sets(const po::variables_map& vm, const data::DataSplits& splits) {
  if (splits.test.empty()) {
    throw Error(fmt::format("--data '{}' has no test set; Laplace is evaluated on one",
                            vm["data"].as<std::string>()));
  }
  const auto test_samples = vm["test-samples"].as<std::int64_t>();
  if (test_samples < 1)
    throw Error(fmt::format("--test-samples {}: expected at least 1", test_samples));
  const data::Dataset test = prefix(splits.test, test_samples, "test");
  std::vector<EvalSet> sets{{"test", test, false}};
  const std::string shift = vm["shift"].as<std::string>();
  const std::string ood = vm["ood"].as<std::string>();
  if (shift == "none" && ood == "none") return sets;
  if (test.sample_shape.size() != 3) {
    throw Error(fmt::format(
        "--shift and --ood need images (C x H x W samples); data '{}' has samples of {} "
        "features; pass --shift none --ood none",
        vm["data"].as<std::string>(), test.feature_dim()));
  }
  const data::Dataset raw = raw_images(test, splits.transform);
  const auto seed = vm["seed"].as<std::uint64_t>();
  auto normalized = [&](data::Dataset set, std::string name) {
    splits.transform.apply(set);
    set.name = name;
    return set;
  };
  if (shift != "none") {
    const std::vector<int> severities = parse_severities(vm["severities"].as<std::string>());
    for (const std::string& item : split_list(shift)) {
      const lp::Corruption corruption = lp::parse_corruption(item);
      for (int severity : severities) {
        const std::string name = fmt::format("{}-{}", lp::to_string(corruption), severity);
        sets.push_back(
            {name, normalized(lp::corrupt(raw, corruption, severity, seed), name), false});
      }
    }
  }
  if (ood != "none") {
    for (const std::string& item : split_list(ood)) {
      const lp::OodKind kind = lp::parse_ood_kind(item);
      const std::string name = fmt::format("ood:{}", lp::to_string(kind));
      sets.push_back({name, normalized(lp::out_of_distribution(raw, kind, seed), name), true});
    }
  }
  return sets;
}

lp::FitOptions fit_options(const po::variables_map& vm, const RawOptions& curvature) {
  lp::FitOptions o;
  o.structure = lp::parse_structure(vm["structure"].as<std::string>());
  o.subset = lp::parse_subset(vm["subset"].as<std::string>());
  const bool subset_given = !vm["subset"].defaulted();
  if (subset_given &&
      ((o.structure == lp::Structure::kLastLayerFull && o.subset != lp::Subset::kLastLayer) ||
       (o.structure == lp::Structure::kFull && o.subset != lp::Subset::kAll))) {
    throw UsageError(fmt::format("--subset {} contradicts --structure {}, which fixes the subset",
                                 lp::to_string(o.subset), lp::to_string(o.structure)));
  }
  if (vm.count("curvature") != 0) o.curvature = vm["curvature"].as<std::string>();
  o.curvature_options = curvature;
  o.kfac_eigenvalues = lp::parse_kfac_eigenvalues(vm["kfac-eigenvalues"].as<std::string>());
  o.rank = vm["rank"].as<Index>();
  o.max_dense = vm["max-dense"].as<Index>();
  o.seed = vm["seed"].as<std::uint64_t>();
  return o;
}

lp::PredictiveOptions predictive_options(const po::variables_map& vm) {
  lp::PredictiveOptions o;
  o.kind = lp::parse_predictive(vm["predictive"].as<std::string>());
  if (o.kind == lp::PredictiveKind::kMap) {
    throw UsageError(
        "--predictive map: the MAP network is always reported; choose probit, glm-mc or nn-mc");
  }
  o.samples = vm["samples"].as<int>();
  if (o.samples < 1) throw Error(fmt::format("--samples {}: expected at least 1", o.samples));
  o.seed = vm["seed"].as<std::uint64_t>();
  return o;
}

/// Fits one debiasing variant and chooses its τ.
template <class S>
Method fit_method(const po::variables_map& vm, const PluginHost& host, const ModelData<S>& in,
                  lp::FitOptions fit, lp::Debiasing debiasing, const nn::DatasetBatch<S>& d1,
                  const nn::DatasetBatch<S>& d2, const nn::DatasetBatch<S>& both,
                  const data::Dataset& validation, double total_nll,
                  const lp::PredictiveOptions& predictive) {
  const auto start = std::chrono::steady_clock::now();
  Method m;
  m.name = lp::to_string(debiasing);
  fit.debiasing = debiasing;
  const bool independent = debiasing == lp::Debiasing::kIndependent;
  lp::CurvatureModel model =
      lp::fit_curvature<S>(host, *in.network, in.params, in.loss, independent ? d1 : both,
                           independent ? &d2 : nullptr, fit);
  m.posterior = std::make_unique<lp::Posterior>(std::move(model), in.params.template cast<double>(),
                                                static_cast<double>(in.data.train.size()), 1.0);
  const std::string rule = vm["prior-precision"].as<std::string>();
  if (rule == "grid") {
    m.search = lp::tune_prior_by_validation<S>(
        *m.posterior, *in.network, in.params, validation, predictive,
        parse_prior_grid(vm["prior-grid"].as<std::string>()));
    m.tau_rule = fmt::format("validation NLL over {} values", m.search.taus.size());
  } else if (rule == "marglik") {
    lp::maximize_marginal_likelihood(*m.posterior, total_nll);
    m.tau_rule = "marginal likelihood";
  } else if (rule == "per-layer") {
    lp::maximize_marginal_likelihood_per_layer(*m.posterior, total_nll);
    m.tau_rule = "marginal likelihood per layer";
  } else {
    char* end = nullptr;
    const double tau = std::strtod(rule.c_str(), &end);
    if (*end != '\0' || !(tau > 0.0) || !std::isfinite(tau)) {
      throw Error(fmt::format(
          "--prior-precision '{}': expected grid, marglik, per-layer or a number > 0", rule));
    }
    m.posterior->set_prior_precision(tau);
    m.tau_rule = "fixed";
  }
  m.prior_rule = rule == "grid" || rule == "marglik" || rule == "per-layer" ? rule : "fixed";
  m.log_evidence = m.posterior->log_marginal_likelihood(total_nll);
  m.fit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

std::string fmt_value(double v) { return std::isfinite(v) ? fmt::format("{:.4f}", v) : "-"; }

/// "3.162", or "[0.5, 12]" (one per parameter layer).
std::string tau_text(const lp::Posterior& posterior) {
  if (!posterior.per_layer_prior()) return fmt::format("{:.4g}", posterior.prior_precision());
  std::string out;
  for (double tau : posterior.prior_precisions())
    out += fmt::format("{}{:.4g}", out.empty() ? "" : ", ", tau);
  return "[" + out + "]";
}

/// Out-of-distribution rows show only the AUROC and the mean entropy: their labels carry no
/// meaning, so neither do accuracy and calibration.
std::string metrics_table(const std::vector<Row>& rows) {
  TextTable table({"set", "method", "acc", "NLL", "Brier", "ECE", "MCE", "entropy", "AUROC"});
  for (const Row& r : rows) {
    const bool ood = std::isfinite(r.auroc);
    auto shown = [&](double v) { return ood ? std::string("-") : fmt_value(v); };
    table.add({r.set, r.method, shown(r.metrics.accuracy), shown(r.metrics.nll),
               shown(r.metrics.brier), shown(r.metrics.ece), shown(r.metrics.mce),
               fmt_value(r.mean_entropy), fmt_value(r.auroc)});
  }
  return table.str();
}

/// One line per method: the clean test set, the mean over the corrupted sets and over the OOD
/// sets, so that variants compare at a glance.
std::string summary_table(const std::vector<Method>& methods, const std::vector<Row>& rows) {
  TextTable table({"method", "test acc", "test NLL", "test ECE", "shift acc", "shift NLL",
                   "shift ECE", "OOD AUROC"});
  for (const Method& m : methods) {
    double shift[3] = {0, 0, 0}, auroc = 0;
    int shifted = 0, ood = 0;
    const Row* clean = nullptr;
    for (const Row& r : rows) {
      if (r.method != m.name) continue;
      if (r.set == "test") {
        clean = &r;
      } else if (std::isfinite(r.auroc)) {
        auroc += r.auroc;
        ++ood;
      } else {
        shift[0] += r.metrics.accuracy;
        shift[1] += r.metrics.nll;
        shift[2] += r.metrics.ece;
        ++shifted;
      }
    }
    auto mean = [](double sum, int count) {
      return count > 0 ? fmt_value(sum / count) : std::string("-");
    };
    table.add({m.name, fmt_value(clean->metrics.accuracy), fmt_value(clean->metrics.nll),
               fmt_value(clean->metrics.ece), mean(shift[0], shifted), mean(shift[1], shifted),
               mean(shift[2], shifted), mean(auroc, ood)});
  }
  return table.str();
}

std::string metrics_csv(const std::vector<Row>& rows) {
  std::string out = "set,method,count,accuracy,nll,brier,ece,mce,mean_entropy,auroc\n";
  for (const Row& r : rows) {
    out += fmt::format("{},{},{},{:.10g},{:.10g},{:.10g},{:.10g},{:.10g},{:.10g},{}\n", r.set,
                       r.method, r.metrics.count, r.metrics.accuracy, r.metrics.nll,
                       r.metrics.brier, r.metrics.ece, r.metrics.mce, r.mean_entropy,
                       std::isfinite(r.auroc) ? fmt::format("{:.10g}", r.auroc) : "");
  }
  return out;
}

std::string reliability_csv(const std::vector<Row>& rows) {
  std::string out = "set,method,bin_lower,bin_upper,count,accuracy,confidence\n";
  for (const Row& r : rows) {
    for (const lp::ReliabilityBin& b : r.metrics.bins) {
      out += fmt::format("{},{},{:.10g},{:.10g},{},{:.10g},{:.10g}\n", r.set, r.method, b.lower,
                         b.upper, b.count, b.accuracy, b.confidence);
    }
  }
  return out;
}

/// A JSON string literal (paths and specs may hold quotes or backslashes).
std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<int>(ch));
      continue;
    }
    out += ch;
  }
  return out + "\"";
}

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{:.10g}", v) : "null"; }

std::string metrics_json(const po::variables_map& vm, const nn::Network& net,
                         const lp::FitOptions& fit, const std::vector<Method>& methods,
                         const std::vector<Row>& rows, Index curvature_samples) {
  std::string out = "{\n";
  out += fmt::format("  \"model\": {},\n  \"parameters\": {},\n  \"data\": {},\n",
                     json_string(net.spec()), net.num_parameters(),
                     json_string(vm["data"].as<std::string>()));
  out += fmt::format(
      "  \"structure\": \"{}\",\n  \"curvature\": \"{}\",\n  \"curvature_samples\": {},\n",
      lp::to_string(fit.structure), lp::curvature_plugin_name(fit), curvature_samples);
  out += fmt::format("  \"predictive\": \"{}\",\n  \"posteriors\": [\n",
                     vm["predictive"].as<std::string>());
  bool first = true;
  for (const Method& m : methods) {
    if (!m.posterior) continue;
    std::string taus;
    for (double tau : m.posterior->prior_precisions())
      taus += fmt::format("{}{}", taus.empty() ? "" : ", ", json_number(tau));
    out += fmt::format(
        "{}    {{\"debiasing\": \"{}\", \"prior_precision\": {}, \"prior_precisions\": [{}], "
        "\"prior_rule\": \"{}\", \"log_marginal_likelihood\": {}, \"fit_seconds\": {:.3f}, "
        "\"range\": [{}, {}]}}",
        first ? "" : ",\n", m.name,
        m.posterior->per_layer_prior() ? "null" : json_number(m.posterior->prior_precision()), taus,
        m.tau_rule, json_number(m.log_evidence), m.fit_seconds, m.posterior->model().range.offset,
        m.posterior->model().range.offset + m.posterior->model().range.size);
    first = false;
  }
  out += "\n  ],\n  \"results\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out += fmt::format(
        "    {{\"set\": \"{}\", \"method\": \"{}\", \"count\": {}, \"accuracy\": {}, \"nll\": {}, "
        "\"brier\": {}, \"ece\": {}, \"mce\": {}, \"mean_entropy\": {}, \"auroc\": {}}}{}\n",
        r.set, r.method, r.metrics.count, json_number(r.metrics.accuracy),
        json_number(r.metrics.nll), json_number(r.metrics.brier), json_number(r.metrics.ece),
        json_number(r.metrics.mce), json_number(r.mean_entropy), json_number(r.auroc),
        i + 1 < rows.size() ? "," : "");
  }
  return out + "  ]\n}\n";
}

std::string prior_search_csv(const std::vector<Method>& methods) {
  std::string out = "debiasing,prior_precision,validation_nll\n";
  for (const Method& m : methods) {
    for (std::size_t i = 0; i < m.search.taus.size(); ++i) {
      out += fmt::format("{},{:.10g},{:.10g}\n", m.name, m.search.taus[i], m.search.objective[i]);
    }
  }
  return out;
}

/// Reliability diagram of the clean test set: accuracy against confidence per method, and below
/// it the samples in each confidence bin (log scale: most sit in the top bin), so that a point
/// resting on a handful of samples shows as such.
std::string reliability_script(const std::vector<Row>& rows) {
  std::vector<const Row*> test;
  for (const Row& r : rows) {
    if (r.set == "test") test.push_back(&r);
  }
  std::string script =
      "set terminal png size 800,900\nset output 'reliability.png'\nset multiplot\n"
      "set lmargin 10\nset rmargin 3\nset xrange [0:1]\nset grid\nset key top left\n";
  for (std::size_t i = 0; i < test.size(); ++i) {
    script += fmt::format("$m{} << EOD\n", i);
    for (const lp::ReliabilityBin& b : test[i]->metrics.bins) {
      if (b.count > 0) script += fmt::format("{:.6g} {:.6g}\n", b.confidence, b.accuracy);
    }
    script += fmt::format("EOD\n$c{} << EOD\n", i);
    for (const lp::ReliabilityBin& b : test[i]->metrics.bins) {
      if (b.count > 0) script += fmt::format("{:.6g} {}\n", 0.5 * (b.lower + b.upper), b.count);
    }
    script += "EOD\n";
  }
  script +=
      "set origin 0,0.34\nset size 1,0.66\nset yrange [0:1]\nset xlabel 'confidence'\n"
      "set ylabel 'accuracy'\nset title 'reliability on the clean test set'\n";
  std::string plot = "plot x with lines dt 2 lc rgb 'gray' title 'calibrated'";
  for (std::size_t i = 0; i < test.size(); ++i) {
    plot += fmt::format(", $m{} using 1:2 with linespoints pt 7 lc {} title '{} (ECE {:.3f})'", i,
                        i + 1, test[i]->method, test[i]->metrics.ece);
  }
  script += plot + "\n";
  // Bars side by side within each bin, one per method.
  const std::size_t bins = test.empty() ? 1 : test.front()->metrics.bins.size();
  const double width = 1.0 / static_cast<double>(bins) / static_cast<double>(test.size() + 1);
  script += fmt::format(
      "set origin 0,0\nset size 1,0.34\nset logscale y\nset yrange [0.5:*]\n"
      "set xlabel 'confidence bin'\nset ylabel 'samples (log scale)'\n"
      "set title 'test samples per confidence bin ({} bins)'\nset style fill solid 0.7 border -1\n"
      "set boxwidth {:.6g} absolute\n",
      bins, width);
  plot = "plot";
  for (std::size_t i = 0; i < test.size(); ++i) {
    const double offset =
        (static_cast<double>(i) - 0.5 * static_cast<double>(test.size() - 1)) * width;
    plot += fmt::format("{} $c{} using ($1{:+.6g}):2 with boxes lc {} title '{}'",
                        i == 0 ? "" : ",", i, offset, i + 1, test[i]->method);
  }
  return script + plot + "\nunset multiplot\n";
}

/// The variant --save writes: --save-variant, or the last --debiasing variant; none without
/// --save. Checked before anything is fitted.
std::optional<lp::Debiasing> save_variant(const po::variables_map& vm,
                                          const std::vector<lp::Debiasing>& variants) {
  if (vm.count("save") == 0) {
    if (vm.count("save-variant") != 0) throw UsageError("--save-variant needs --save FILE");
    return std::nullopt;
  }
  const lp::Debiasing chosen = vm.count("save-variant") == 0
                                   ? variants.back()
                                   : lp::parse_debiasing(vm["save-variant"].as<std::string>());
  if (std::find(variants.begin(), variants.end(), chosen) == variants.end()) {
    std::vector<std::string> names;
    for (lp::Debiasing v : variants) names.emplace_back(lp::to_string(v));
    throw UsageError(
        fmt::format("--save-variant {}: --debiasing runs only {}; expected one of them",
                    lp::to_string(chosen), fmt::join(names, ", ")));
  }
  const fs::path file = vm["save"].as<std::string>();
  if (fs::is_directory(file)) {
    throw Error(
        fmt::format("--save {}: is a directory; expected a file name such as "
                    "posterior.npz",
                    file.string()));
  }
  return chosen;
}

/// Writes the chosen variant's posterior with its model (--save).
template <class S>
void save(const po::variables_map& vm, const ModelData<S>& in, const lp::FitOptions& fit,
          const lp::PredictiveOptions& predictive, const std::vector<Method>& methods,
          lp::Debiasing variant, Index curvature_samples) {
  const auto m = std::find_if(methods.begin(), methods.end(),
                              [&](const Method& x) { return x.name == lp::to_string(variant); });
  lp::PosteriorInfo info;
  info.debiasing = variant;
  info.kfac_eigenvalues = fit.kfac_eigenvalues;
  info.curvature = lp::curvature_plugin_name(fit);
  info.prior_rule = m->prior_rule;
  info.predictive = predictive.kind;
  info.samples = predictive.samples;
  info.curvature_samples = curvature_samples;
  info.data = vm["data"].as<std::string>();
  info.normalize = data::to_string(in.data.transform.kind);
  const fs::path file = vm["save"].as<std::string>();
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  lp::save_posterior(file, *in.network, *m->posterior, info, model_file_metadata(vm));
  std::cout << fmt::format("# saved the {} posterior ({}, tau = {} ({})) with its model to {}\n",
                           m->name, lp::to_string(fit.structure), tau_text(*m->posterior),
                           m->tau_rule, file.string());
}

/// Everything run_with needs before the first collective: options checked, files read, the
/// curvature data drawn. Every rank prepares the same, and agrees on errors (run_agreed).
template <class S>
struct Prepared {
  RawOptions curvature_options;
  lp::FitOptions fit;
  lp::PredictiveOptions predictive;
  std::vector<lp::Debiasing> variants;
  std::optional<lp::Debiasing> saved;
  ModelData<S> in;
  std::vector<EvalSet> sets;
  std::size_t half = 0;
  nn::DatasetBatch<S> d1, d2, both;
  data::Dataset validation;
};

template <class S>
void prepare(const po::variables_map& vm, Context& context, Prepared<S>& p) {
  PluginHost& host = context.host;
  p.curvature_options = load_curvature_setup(context, vm);
  const RawOptions& curvature_options = p.curvature_options;
  p.fit = fit_options(vm, curvature_options);
  const lp::FitOptions& fit = p.fit;
  p.predictive = predictive_options(vm);
  std::vector<lp::Debiasing>& variants = p.variants;
  for (const std::string& item : split_list(vm["debiasing"].as<std::string>()))
    variants.push_back(lp::parse_debiasing(item));
  if (variants.empty()) throw UsageError("--debiasing: expected same-data, independent or both");
  if (vm["prior-precision"].as<std::string>() == "per-layer") {
    try {
      lp::check_per_layer_prior(fit.structure);
    } catch (const Error& e) {
      throw Error(fmt::format("--prior-precision per-layer: {}", e.what()));
    }
  }
  p.saved = save_variant(vm, variants);
  {
    const std::string name = lp::curvature_plugin_name(fit);
    auto created = host.create<CurvatureEstimator>(name, curvature_options);
    if (!created.is_ok())
      throw Error(fmt::format("--curvature {}: {}", name, created.status().message()));
  }

  p.in = load_model_data<S>(vm);
  const ModelData<S>& in = p.in;
  for (lp::Debiasing variant : variants) {
    lp::FitOptions checked = fit;
    checked.debiasing = variant;
    lp::check_fit_options(*in.network, checked);
  }
  if (in.loss != nn::Loss::kCrossEntropy) {
    throw Error(
        fmt::format("quadra laplace evaluates classifiers (cross-entropy); --loss {} was given",
                    nn::to_string(in.loss)));
  }
  const auto samples = vm["curvature-samples"].as<std::int64_t>();
  if (samples < 2 || samples > in.data.train.size()) {
    throw Error(fmt::format(
        "--curvature-samples {}: the training set of '{}' has {}; expected 2 to {}", samples,
        vm["data"].as<std::string>(), in.data.train.size(), in.data.train.size()));
  }
  const auto validation_samples = vm["validation-samples"].as<std::int64_t>();
  if (validation_samples < 1)
    throw Error(fmt::format("--validation-samples {}: expected at least 1", validation_samples));
  if (vm["prior-precision"].as<std::string>() == "grid" && in.data.validation.empty()) {
    throw Error(
        "--prior-precision grid needs a validation split; the data has none (use marglik or a "
        "value)");
  }
  p.sets = evaluation_sets(vm, in.data);
  if (vm.count("ood-data") != 0) p.sets.push_back(ood_data_set(vm, in.data, p.sets.front().set));

  // Curvature data: M training samples in a seeded order; D1 and D2 are its two halves and the
  // same-data baseline uses both (equal curvature data).
  std::vector<std::int64_t> order(static_cast<std::size_t>(in.data.train.size()));
  std::iota(order.begin(), order.end(), 0);
  data::Rng rng(data::derive_seed(vm["seed"].as<std::uint64_t>(), 0x6c61706c /* "lapl" */));
  for (std::size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  const std::span<const std::int64_t> chosen(order.data(), static_cast<std::size_t>(samples));
  const auto half = static_cast<std::size_t>(samples / 2);
  p.half = half;
  p.d1 = as_batch<S>(in.data.train.subset(chosen.first(half), "D1"));
  p.d2 = as_batch<S>(in.data.train.subset(chosen.subspan(half, half), "D2"));
  p.both = as_batch<S>(in.data.train.subset(chosen.first(2 * half), "D1+D2"));
  p.validation = prefix(in.data.validation, validation_samples, "validation");
}

template <class S>
int run_with(const po::variables_map& vm, Context& context) {
  // Several ranks (docs/mpi.md): every rank prepares the same inputs and agrees on their errors;
  // the curvature data is bound split across the ranks, every prediction computes the rank's
  // share of each chunk and gathers the rest, and rank 0 alone writes.
  const dist::Communicator& world = dist::Communicator::world();
  PluginHost& host = context.host;
  Prepared<S> prepared;
  run_agreed(world, [&] { prepare<S>(vm, context, prepared); });
  const lp::FitOptions& fit = prepared.fit;
  const lp::PredictiveOptions& predictive = prepared.predictive;
  const ModelData<S>& in = prepared.in;
  const std::vector<EvalSet>& sets = prepared.sets;
  const std::size_t half = prepared.half;
  const data::Dataset& validation = prepared.validation;
  const nn::Network& net = *in.network;
  std::cout << fmt::format(
      "# quadra laplace: model '{}' ({} parameters, {}), data {} (N = {}){}{}\n", net.spec(),
      net.num_parameters(), std::is_same_v<S, double> ? "float64" : "float32",
      vm["data"].as<std::string>(), in.data.train.size(), in.preprocessing,
      world.size() > 1 ? fmt::format("; split across {} processes", world.size()) : std::string());
  std::cout << fmt::format(
      "# structure {} on {} parameters, curvature {}, {} curvature samples (halves of {} for "
      "independent), predictive {}\n",
      lp::to_string(fit.structure), lp::subset_range(net, lp::effective_subset(fit)).size,
      lp::curvature_plugin_name(fit), 2 * half, half, lp::to_string(predictive.kind));

  const Matrix<double> train_probabilities =
      lp::predict<S>(net, in.params, nullptr, in.data.train, {lp::PredictiveKind::kMap});
  const double total_nll = lp::mean_nll(train_probabilities, in.data.train.labels) *
                           static_cast<double>(in.data.train.size());

  std::vector<Method> methods;
  methods.emplace_back().name = "map";
  for (lp::Debiasing variant : prepared.variants) {
    methods.push_back(fit_method<S>(vm, host, in, fit, variant, prepared.d1, prepared.d2,
                                    prepared.both, validation, total_nll, predictive));
    const Method& m = methods.back();
    const std::vector<double> values = m.posterior->model().all_values();
    const double top = values.empty() ? 0.0 : *std::max_element(values.begin(), values.end());
    std::cout << fmt::format(
        "# {}: tau = {} ({}), log marginal likelihood {:.6g}, {} eigenvalues (largest "
        "{:.4g}), fitted in {:.1f} s\n",
        m.name, tau_text(*m.posterior), m.tau_rule, m.log_evidence, values.size(), top,
        m.fit_seconds);
    for (const std::string& note : m.posterior->model().notes)
      std::cout << "# note: " << note << "\n";
  }
  if (prepared.saved) {
    world.run_agreed([&] {
      if (world.is_root()) {
        save(vm, in, fit, predictive, methods, *prepared.saved, 2 * static_cast<Index>(half));
      }
    });
  }

  std::vector<Row> rows;
  std::vector<Eigen::VectorXd> clean_entropy(methods.size());
  std::vector<Matrix<double>> clean_probabilities(methods.size());
  for (const EvalSet& e : sets) {
    for (std::size_t i = 0; i < methods.size(); ++i) {
      const Method& m = methods[i];
      lp::PredictiveOptions o = predictive;
      if (!m.posterior) o.kind = lp::PredictiveKind::kMap;
      const Matrix<double> p = lp::predict<S>(net, in.params, m.posterior.get(), e.set, o);
      const Eigen::VectorXd entropy = lp::predictive_entropy(p);
      Row row{e.name, m.name, lp::classification_metrics(p, e.set.labels),
              std::numeric_limits<double>::quiet_NaN(), entropy.mean()};
      if (e.name == "test") {
        clean_entropy[i] = entropy;
        clean_probabilities[i] = p;
      }
      if (e.ood) {
        row.auroc = lp::auroc(
            std::span<const double>(clean_entropy[i].data(),
                                    static_cast<std::size_t>(clean_entropy[i].size())),
            std::span<const double>(entropy.data(), static_cast<std::size_t>(entropy.size())));
      }
      rows.push_back(std::move(row));
    }
  }
  std::cout
      << "# AUROC: out-of-distribution detection by predictive entropy against the clean test set\n"
      << metrics_table(rows)
      << "# summary: the clean test set, the mean over the corrupted sets and over the OOD sets\n"
      << summary_table(methods, rows);

  if (vm.count("out") == 0) return kExitOk;
  const fs::path out = vm["out"].as<std::string>();
  world.run_agreed([&] {
    if (!world.is_root()) return;
    fs::create_directories(out);
    io::write_file_atomically(out / "metrics.csv", metrics_csv(rows));
    io::write_file_atomically(out / "metrics.json", metrics_json(vm, net, fit, methods, rows,
                                                                 2 * static_cast<Index>(half)));
    io::write_file_atomically(out / "reliability.csv", reliability_csv(rows));
    io::write_file_atomically(out / "prior_search.csv", prior_search_csv(methods));
    for (std::size_t i = 0; i < methods.size(); ++i) {
      // C × N column-major is the N × C C-order array.
      const Matrix<double>& probabilities = clean_probabilities[i];
      io::write_npy(out / fmt::format("test_probabilities_{}.npy", methods[i].name),
                    io::NpyArray::from<double>({probabilities.cols(), probabilities.rows()},
                                               probabilities.data()));
    }
  });
  std::cout << fmt::format(
      "# wrote {}/{{metrics.csv,metrics.json,reliability.csv,prior_search.csv,"
      "test_probabilities_*.npy}}\n",
      out.string());
  if (world.is_root() &&
      render_figure(out, "reliability", reliability_script(rows), "# figure: ")) {
    std::cout << fmt::format("# figure: {}\n", (out / "reliability.png").string());
  }
  return kExitOk;
}

void add_options(po::options_description& options) {
  add_model_options(options);
  // One option per line reads as a table.
  // clang-format off
  options.add_options()
      ("data", po::value<std::string>()->required(), "data source the model was trained on, e.g. fashion-mnist")
      ("normalize", po::value<std::string>()->default_value("standardize-global"),
       "none, minmax, standardize, standardize-channel or standardize-global (as in training; "
       "quadra train's default); a model file's recorded preprocessing replaces it")
      ("structure", po::value<std::string>()->default_value("kfac"), "diag, kfac, lowrank, last-layer-full or full")
      ("subset", po::value<std::string>()->default_value("all"), "all or last-layer: the parameters covered")
      ("curvature", po::value<std::string>(), "curvature plugin (default: diag-ggn for diag, kfac for kfac, else ggn)")
      ("debiasing", po::value<std::string>()->default_value("same-data,independent"),
       "variants to fit and compare: same-data, independent")
      ("kfac-eigenvalues", po::value<std::string>()->default_value("kronecker"),
       "kfac: kronecker (a_i s_j; factor-wise Rayleigh quotients when independent) or per-sample (EK-FAC)")
      ("curvature-samples", po::value<std::int64_t>()->default_value(2000), "M training samples for the curvature")
      ("rank", po::value<Index>()->default_value(20), "lowrank: eigenpairs kept")
      ("max-dense", po::value<Index>()->default_value(4000), "full, last-layer-full: largest range densified")
      ("predictive", po::value<std::string>()->default_value("probit"), "probit, glm-mc or nn-mc")
      ("samples", po::value<int>()->default_value(100), "glm-mc, nn-mc: Monte-Carlo samples")
      ("prior-precision", po::value<std::string>()->default_value("grid"),
       "grid, marglik, per-layer (marginal likelihood, one tau per parameter layer) or a value tau > 0")
      ("prior-grid", po::value<std::string>()->default_value("1e-2:1e6:17"), "grid: LOW:HIGH:COUNT, log-spaced")
      ("validation-samples", po::value<std::int64_t>()->default_value(2000), "grid: validation samples used")
      ("test-samples", po::value<std::int64_t>()->default_value(10000), "test samples evaluated (a prefix)")
      ("shift", po::value<std::string>()->default_value("gaussian-noise,rotation,contrast,blur"),
       "corruptions of the test set, or none")
      ("severities", po::value<std::string>()->default_value("1,3,5"), "corruption severities (1-5)")
      ("ood", po::value<std::string>()->default_value("inverted,uniform-noise"), "out-of-distribution sets, or none")
      ("ood-data", po::value<std::string>(),
       "another data source (same sample shape) whose test split is one more out-of-distribution set")
      ("out", po::value<std::string>(), "write CSV, JSON (and a figure, with gnuplot) to this directory")
      ("save", po::value<std::string>(), "write one variant's posterior with its model to this .npz (for quadra predict)")
      ("save-variant", po::value<std::string>(), "--save: same-data or independent (default: the last --debiasing variant)");
  // clang-format on
  add_config_options(options);
  add_plugin_path_option(options);
}

}  // namespace

int run_laplace(const Args& args, Context& context) {
  po::options_description options("laplace options");
  add_options(options);
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  return use_double_precision(vm) ? run_with<double>(vm, context) : run_with<float>(vm, context);
}

}  // namespace quadra::cli
