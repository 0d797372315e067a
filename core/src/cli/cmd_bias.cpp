// `quadra bias`: how biased is the mini-batch quadratic? Directions are chosen on one batch and
// slopes and curvatures along them measured on that batch, on an independent one and on the whole
// training set (paper §2-3); or one Newton step by CG is taken biased and debiased and judged by
// the full-batch loss (paper §5). The numbers come from quadra/diagnostics/bias.hpp.


#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <span>
#include <sstream>

#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/data/random.hpp>
#include <quadra/data/source.hpp>
#include <quadra/diagnostics/bias.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/nn/serialization.hpp>

#include "cli.hpp"
#include "figures.hpp"
#include "model_batch.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace dg = quadra::diagnostics;

namespace {

constexpr const char* kUsage =
    "usage: quadra bias --model SPEC|FILE [--input-shape S] [--weights W.npz] --data SOURCE\n"
    "                   --batch-size B [--top K] [--repeats R] [--seed S]\n"
    "                   [--curvature NAME] [--set curvature.KEY=VALUE]... [--directions eigen|cg]\n"
    "                   [--cg-damping D] [--chunk-size C] [--train-samples N] [--out DIR]\n"
    "                   [--precision float32|float64] [--threads N]\n"
    "       quadra bias --newton-step --model SPEC|FILE ... --data SOURCE --batch-size B\n"
    "                   [--repeats R] [--lambdas L,L,...] [--cg-iterations N] [--eval-every E]\n"
    "                   [--debiasing NAME,NAME,...] [--cg-preconditioner diag-ggn|diag-ef|kfac]\n"
    "                   [--cg-preconditioner-damping D] [--cg-preconditioner-exponent X]\n"
    "                   [--out DIR] ...\n\n"
    "For each of R repeats, draws two disjoint batches B1 and B2 of B training samples, chooses K\n"
    "directions on B1 (the top eigenvectors of the curvature C on B1, or the first K search\n"
    "directions of CG on (C + D I) x = -g on B1) and measures the curvature u'Cu and the slope "
    "g'u\n"
    "along each on B1 (same batch), on B2 (independent) and on the whole training set (full "
    "batch).\n"
    "Prints mean ± 95% confidence half-width over repeats per direction, and the relative bias\n"
    "(estimate - full) / |full|, averaged over repeats with its interval. --out DIR writes\n"
    "bias.csv, spectrum.csv and, with gnuplot installed, spectrum.png.\n\n"
    "--newton-step: for each damping lambda and repeat, runs CG on B1 and turns its first k\n"
    "directions into a step d_k: CG's own iterate ('biased') and the coefficients of each\n"
    "debiasing plugin measured on B2; prints, per lambda and variant, the iteration with the\n"
    "lowest median full-batch loss L(theta + d_k), and the loss and quadratic\n"
    "q(d) = g'd + 1/2 d'(C + lambda I)d at the last iteration. --out DIR writes newton_step.csv\n"
    "(median and quartiles over repeats per lambda, variant and k) and newton_step.png.\n"
    "--cg-preconditioner runs preconditioned CG as the cg solver does with that option:\n"
    "M = (D + (lambda + D_p) I)^X, D from the named curvature plugin on B1.";

constexpr const char* kNewtonOnly[] = {"lambdas",
                                       "cg-iterations",
                                       "eval-every",
                                       "debiasing",
                                       "cg-preconditioner",
                                       "cg-preconditioner-damping",
                                       "cg-preconditioner-exponent"};
constexpr const char* kBiasOnly[] = {"top", "directions", "cg-damping"};

std::vector<double> parse_lambdas(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : split_list(text)) {
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    if (*end != '\0' || !(value > 0.0) || !std::isfinite(value)) {
      throw Error(fmt::format("--lambdas: '{}' is not a damping value; expected finite numbers > 0 "
                              "separated by commas, e.g. 1e-3,1e-2,1e-1",
                              item));
    }
    out.push_back(value);
  }
  if (out.empty()) throw Error(fmt::format("--lambdas '{}': expected at least one damping value", text));
  return out;
}

/// Flags checked here so that the message names them; the library checks its options again.
void check_flags(const po::variables_map& vm, Index parameters, std::int64_t train_size) {
  const auto repeats = vm["repeats"].as<int>();
  if (repeats < 2) {
    throw Error(fmt::format("--repeats {}: expected at least 2 (a confidence interval needs two "
                            "repeats)",
                            repeats));
  }
  const auto batch = vm["batch-size"].as<std::int64_t>();
  if (batch < 1 || 2 * batch > train_size) {
    throw Error(fmt::format("--batch-size {}: two disjoint batches need {} samples, but the training "
                            "set of '{}' has {}; expected 1 to {}",
                            batch, 2 * batch, vm["data"].as<std::string>(), train_size, train_size / 2));
  }
  const auto top = vm["top"].as<Index>();
  if (vm.count("newton-step") == 0 && (top < 1 || top > parameters)) {
    throw Error(fmt::format("--top {}: the model has {} parameters; expected 1 to {}", top,
                            parameters, parameters));
  }
  if (vm["chunk-size"].as<std::int64_t>() < 1) {
    throw Error(fmt::format("--chunk-size {}: expected at least 1", vm["chunk-size"].as<std::int64_t>()));
  }
}

/// The stream of --train-samples' draw (data::Stream's purposes are the data layer's).
constexpr std::uint64_t kTrainSamplesStream = 0x62747273;

/// --train-samples N: N training samples drawn with --seed (in file order) replace the training
/// set, for the full batch and the draws of B1 and B2 alike, so that the full-batch reference of
/// a large model costs N samples' products rather than the whole set's.
void restrict_training_set(const po::variables_map& vm, data::Dataset& train) {
  const auto wanted = vm["train-samples"].as<std::int64_t>();
  if (wanted == 0) return;
  if (wanted < 2 || wanted > train.size()) {
    throw Error(fmt::format("--train-samples {}: the training set of '{}' has {} samples; expected "
                            "0 (all) or 2 to {}",
                            wanted, vm["data"].as<std::string>(), train.size(), train.size()));
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  data::Rng rng(data::derive_seed(vm["seed"].as<std::uint64_t>(), kTrainSamplesStream));
  data::shuffle(std::span<std::int64_t>(order), rng);
  order.resize(static_cast<std::size_t>(wanted));
  std::sort(order.begin(), order.end());
  train = train.subset(order, train.name + "/subset");
}

/// Flags of the other mode are a usage mistake, not silently ignored.
void check_mode(const po::variables_map& vm) {
  const std::string directions = vm["directions"].as<std::string>();
  if (directions != "eigen" && directions != "cg") {
    throw UsageError(fmt::format("--directions '{}': expected eigen or cg", directions));
  }
  const bool newton = vm.count("newton-step") != 0;
  const std::span<const char* const> other = newton ? std::span<const char* const>(kBiasOnly)
                                                    : std::span<const char* const>(kNewtonOnly);
  for (const char* flag : other) {
    if (vm.count(flag) != 0 && !vm[flag].defaulted()) {
      throw UsageError(fmt::format("--{} {} --newton-step", flag, newton ? "does not apply with" : "needs"));
    }
  }
}

/// Plugins are created once here so that a bad name fails with the flag that named it.
void check_plugins(const po::variables_map& vm, const PluginHost& host, const RawOptions& curvature) {
  const std::string name = vm["curvature"].as<std::string>();
  auto created = host.create<CurvatureEstimator>(name, curvature);
  if (!created.is_ok()) throw Error(fmt::format("--curvature {}: {}", name, created.status().message()));
  if (vm.count("newton-step") == 0) return;
  for (const std::string& plugin : split_list(vm["debiasing"].as<std::string>())) {
    auto debiasing = host.create<DebiasingStrategy>(plugin, {});
    if (!debiasing.is_ok()) {
      throw Error(fmt::format("--debiasing {}: {}", plugin, debiasing.status().message()));
    }
  }
}

/// Renders DIR/NAME.png from `script` when gnuplot is installed; says where it is.
void render(const fs::path& dir, const std::string& name, const std::string& script) {
  if (!dist::Communicator::world().is_root()) return;
  if (render_figure(dir, name, script, "# figure: ")) {
    std::cout << fmt::format("# figure: {}\n", (dir / (name + ".png")).string());
  }
}

/// Runs `write` on rank 0 and agrees on its outcome: a failure there is every rank's.
void on_root(const std::function<void()>& write) {
  const dist::Communicator& world = dist::Communicator::world();
  world.run_agreed([&] {
    if (world.is_root()) write();
  });
}

std::string plus_minus(const dg::MeanInterval& m) {
  if (!std::isfinite(m.mean)) return "n/a";
  return fmt::format("{:.4g} ± {:.2g}", m.mean, m.high - m.mean);
}

std::string percent(const dg::MeanInterval& m) {
  if (!std::isfinite(m.mean)) return "n/a";
  return fmt::format("{:+.1f}% ± {:.1f}%", 100.0 * m.mean, 100.0 * (m.high - m.mean));
}

std::string bias_table(const dg::BiasReport& r, dg::Quantity q) {
  TextTable table({"k", "same-batch", "independent", "full-batch", "rel.bias same", "rel.bias indep."});
  for (Index k = 0; k < r.options.top; ++k) {
    const auto& same = r.row(k, q, dg::Estimator::kSameBatch);
    const auto& indep = r.row(k, q, dg::Estimator::kIndependent);
    table.add({std::to_string(k + 1), plus_minus(same.value), plus_minus(indep.value),
               plus_minus(r.row(k, q, dg::Estimator::kFullBatch).value), percent(same.relative_bias),
               percent(indep.relative_bias)});
  }
  return table.str();
}

/// Colours shared by both figures: the biased estimate vermillion, the debiased ones blue,
/// green, ..., the full-batch truth black.
std::size_t variant_color(std::size_t i) { return i == 0 ? 1 : i == 1 ? 0 : i; }
constexpr std::size_t kTruthColor = 6;

/// "model ..., data ..., curvature ggn; 10 repeats of two batches of 256".
template <class S>
std::string figure_subtitle(const dg::Problem<S>& p, std::int64_t batch_size, int repeats) {
  return fmt::format("model {}, data {}, curvature {}\n{} repeats of two disjoint batches of {}",
                     p.network.spec(), p.train.name, p.curvature, repeats, batch_size);
}

/// Curvature along each direction: every repeat's estimate as a point (offset a little along x
/// per estimator), and the mean over repeats with its 95 % interval.
std::string spectrum_script(const dg::BiasReport& r, const std::string& subtitle) {
  const dg::Estimator estimators[] = {dg::Estimator::kSameBatch, dg::Estimator::kIndependent,
                                      dg::Estimator::kFullBatch};
  const std::size_t colors[] = {variant_color(0), variant_color(1), kTruthColor};
  const Index k_count = r.options.top;
  LineFigure f;
  f.png = "spectrum.png";
  f.title = fmt::format("Curvature along directions chosen on batch B1, measured three ways\n{}",
                        subtitle);
  f.x_label = r.options.directions == dg::DirectionSource::kEigen
                  ? "direction k (eigenvector k of C on B1, largest first)"
                  : "direction k (CG search direction k on B1)";
  f.y_label = "curvature u_k' C u_k";
  f.y_axis = YAxis::kFull;
  f.key_title = "mean and 95 % interval; dots: each repeat";
  f.x_min = 0.5;
  f.x_max = static_cast<double>(k_count) + 0.5;
  if (k_count <= 20) f.settings = "set xtics 1\nset mxtics 1\n";
  std::string data, plots;
  for (int e = 0; e < dg::kNumEstimators; ++e) {
    const double offset = 0.18 * (e - 1);
    std::string points;
    for (const dg::BiasRepeat& rep : r.repeats) {
      const Vector<double>& c = rep.by_estimator[static_cast<std::size_t>(e)].curvatures;
      PlotLine line{"", {}, {}, colors[e], PlotLine::Style::kThin};
      for (Index k = 0; k < c.size(); ++k) {
        line.x.push_back(static_cast<double>(k + 1) + offset);
        line.y.push_back(c(k));
        points += fmt::format("{} {:.10g}\n", static_cast<double>(k + 1) + offset, c(k));
      }
      f.lines.push_back(std::move(line));
    }
    PlotLine mean{dg::to_string(estimators[e]), {}, {}, colors[e], PlotLine::Style::kBold};
    std::string means;
    for (Index k = 0; k < k_count; ++k) {
      const dg::MeanInterval& m = r.row(k, dg::Quantity::kCurvature, estimators[e]).value;
      if (!std::isfinite(m.mean)) continue;
      mean.x.push_back(static_cast<double>(k + 1) + offset);
      mean.y.push_back(m.mean);
      // A full-batch value is exact up to the repeats' directions; its interval is theirs.
      const double low = std::isfinite(m.low) ? m.low : m.mean;
      const double high = std::isfinite(m.high) ? m.high : m.mean;
      means += fmt::format("{} {:.10g} {:.10g} {:.10g}\n", static_cast<double>(k + 1) + offset,
                           m.mean, low, high);
    }
    f.lines.push_back(std::move(mean));
    data += fmt::format("$p{0} << EOD\n{1}EOD\n$m{0} << EOD\n{2}EOD\n", e, points, means);
    plots += fmt::format(
        "{}$p{} using 1:2 with points pt 7 ps 0.45 lc rgb '{}' notitle, \\\n     "
        "$m{} using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 0.8 lc rgb '{}' title {}",
        e == 0 ? "" : ", \\\n     ", e, palette_color(colors[e], 0.5), e, palette_color(colors[e]),
        gnuplot_quote(dg::to_string(estimators[e])));
  }
  // A lower interval bound at or below 0 has no place on a log axis: the bar ends at the border.
  return figure_preamble(f.png, 1000, 620) + figure_settings(f, 1000, 620) + data + "plot " +
         plots + "\n";
}

template <class S>
dg::Problem<S> make_problem(const po::variables_map& vm, const ModelData<S>& in, const PluginHost& host,
                            const RawOptions& curvature_options) {
  return dg::Problem<S>{.network = *in.network, .params = in.params, .train = in.data.train,
                        .loss = in.loss, .host = host,
                        .curvature = vm["curvature"].as<std::string>(),
                        .curvature_options = curvature_options,
                        .chunk_size = vm["chunk-size"].as<std::int64_t>()};
}

std::string header(const po::variables_map& vm, const nn::Network& net, const data::Dataset& train,
                   bool is_double, const std::string& preprocessing) {
  return fmt::format(
      "# quadra bias{}: model '{}' ({} parameters, {}), data {} ({} samples), "
      "curvature {}{}\n",
      vm.count("newton-step") != 0 ? " --newton-step" : "", net.spec(), net.num_parameters(),
      is_double ? "float64" : "float32", train.name, train.size(),
      vm["curvature"].as<std::string>(), preprocessing);
}

void print_notes(const std::vector<std::string>& notes) {
  for (const std::string& note : notes) std::cout << "# note: " << note << "\n";
}

template <class S>
int run_bias_mode(const po::variables_map& vm, const dg::Problem<S>& problem) {
  dg::BiasOptions o;
  o.batch_size = vm["batch-size"].as<std::int64_t>();
  o.top = vm["top"].as<Index>();
  o.repeats = vm["repeats"].as<int>();
  o.seed = vm["seed"].as<std::uint64_t>();
  o.directions = dg::parse_direction_source(vm["directions"].as<std::string>(), "--directions");
  o.cg_damping = vm["cg-damping"].as<double>();
  auto result = dg::measure_bias(problem, o);
  if (!result.is_ok()) throw Error(result.status().message());
  const dg::BiasReport& r = result.value();
  std::cout << fmt::format(
      "# {} repeats of two disjoint batches of {} (seed {}); directions: {}; full-batch loss {:.6g}\n",
      o.repeats, o.batch_size, o.seed,
      o.directions == dg::DirectionSource::kEigen
          ? fmt::format("top-{} eigenvectors of C on B1", o.top)
          : fmt::format("first {} CG directions on (C + {:g} I) x = -g on B1", o.top, o.cg_damping),
      r.full_loss);
  std::cout << "# mean ± 95% CI half-width over repeats; rel.bias = mean of (estimate - full) / |full|\n"
            << "# curvature u_k' C u_k\n"
            << bias_table(r, dg::Quantity::kCurvature)
            << "# slope g' u_k (each u_k oriented so that its same-batch slope is <= 0)\n"
            << bias_table(r, dg::Quantity::kSlope);
  print_notes(r.notes);
  if (vm.count("out") == 0) return kExitOk;
  const fs::path out = vm["out"].as<std::string>();
  on_root([&] {
    fs::create_directories(out);
    io::write_file_atomically(out / "bias.csv", dg::bias_csv(r));
    io::write_file_atomically(out / "spectrum.csv", dg::spectrum_csv(r));
  });
  std::cout << fmt::format("# wrote {} and {}\n", (out / "bias.csv").string(), (out / "spectrum.csv").string());
  render(out, "spectrum", spectrum_script(r, figure_subtitle(problem, o.batch_size, o.repeats)));
  return kExitOk;
}

/// One panel per lambda: the median full-batch loss after k CG iterations per variant, the
/// quartiles over repeats as error bars, and the loss at theta (no step) dashed.
std::string newton_script(const dg::NewtonStepReport& r, const std::string& subtitle) {
  const auto panels = static_cast<int>(r.options.lambdas.size());
  constexpr int kPanelWidth = 520, kHeight = 560;
  const Index last = r.iterations.back();
  std::string script = figure_preamble("newton_step.png", kPanelWidth * panels, kHeight);
  script += fmt::format(
      "set multiplot layout 1,{} title {} font ',11'\n", panels,
      gnuplot_quote(fmt::format("One Newton step by CG, biased and debiased: full-batch loss "
                                "after k iterations (median, bars: quartiles)\n{}",
                                subtitle)));
  int block = 0;
  for (const double lambda : r.options.lambdas) {
    LineFigure f;
    f.title = fmt::format("λ = {:g}", lambda);
    f.x_label = "CG iteration k on B1";
    f.y_label = "full-batch loss L(θ + d_k)";
    f.y_axis = YAxis::kLowerIsBetter;
    f.y_log = false;  // a biased step that overshoots dwarfs the debiased ones
    f.x_min = 0;
    f.x_max = static_cast<double>(last);
    std::string data, plots;
    for (std::size_t v = 0; v < r.variants.size(); ++v) {
      PlotLine line{r.variants[v], {}, {}, variant_color(v), PlotLine::Style::kBold};
      std::string rows;
      for (const dg::NewtonStepRow& row : r.rows) {
        if (row.lambda != lambda || row.variant != r.variants[v] ||
            !std::isfinite(row.loss.median)) {
          continue;
        }
        line.x.push_back(static_cast<double>(row.iteration));
        line.y.push_back(row.loss.median);
        rows += fmt::format("{} {:.10g} {:.10g} {:.10g}\n", row.iteration, row.loss.median,
                            row.loss.q1, row.loss.q3);
      }
      f.lines.push_back(std::move(line));
      data += fmt::format("$b{} << EOD\n{}EOD\n", block, rows);
      plots +=
          fmt::format("{}$b{} using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 0.7 lc rgb '{}' title {}",
                      plots.empty() ? "" : ", \\\n     ", block++, palette_color(variant_color(v)),
                      gnuplot_quote(r.variants[v]));
    }
    PlotLine start{"L(θ), no step",
                   {0.0, static_cast<double>(last)},
                   {r.loss_at_start, r.loss_at_start},
                   kTruthColor,
                   PlotLine::Style::kThin};
    f.lines.push_back(std::move(start));
    plots += fmt::format(", \\\n     {:.10g} with lines dt 2 lw 1.5 lc rgb '#777777' title {}",
                         r.loss_at_start, gnuplot_quote("L(θ), no step"));
    script += figure_settings(f, kPanelWidth, kHeight - 60) + data + "plot " + plots + "\n";
  }
  return script + "unset multiplot\n";
}

/// "0.3123", or "0.3123 (7 of 10)" when some repeats have no value there.
std::string median_of(const dg::Quartiles& q, int repeats) {
  if (q.count == 0) return "n/a";
  const std::string value = fmt::format("{:.6g}", q.median);
  return q.count == repeats ? value : fmt::format("{} ({} of {})", value, q.count, repeats);
}

/// The row with the lowest median loss among those with every repeat (any row if none has).
const dg::NewtonStepRow* best_row(const std::vector<const dg::NewtonStepRow*>& rows, int repeats) {
  const dg::NewtonStepRow* best = nullptr;
  for (const bool complete : {true, false}) {
    for (const dg::NewtonStepRow* row : rows) {
      if (complete && row->loss.count != repeats) continue;
      if (best == nullptr || row->loss.median < best->loss.median) best = row;
    }
    if (best != nullptr) return best;
  }
  return best;
}

std::string newton_table(const dg::NewtonStepReport& r) {
  const std::string last_k = std::to_string(r.iterations.back());
  const int repeats = r.options.repeats;
  TextTable table({"lambda", "variant", "best k", "loss at best k", "loss at k=" + last_k, "q at k=" + last_k});
  for (double lambda : r.options.lambdas) {
    for (const std::string& variant : r.variants) {
      std::vector<const dg::NewtonStepRow*> rows;
      for (const dg::NewtonStepRow& row : r.rows) {
        if (row.lambda == lambda && row.variant == variant) rows.push_back(&row);
      }
      if (rows.empty()) continue;
      const dg::NewtonStepRow* best = best_row(rows, repeats);
      table.add({fmt::format("{:g}", lambda), variant, std::to_string(best->iteration),
                 median_of(best->loss, repeats), median_of(rows.back()->loss, repeats),
                 median_of(rows.back()->quadratic, repeats)});
    }
  }
  return table.str();
}

template <class S>
int run_newton_mode(const po::variables_map& vm, const dg::Problem<S>& problem) {
  dg::NewtonStepOptions o;
  o.batch_size = vm["batch-size"].as<std::int64_t>();
  o.repeats = vm["repeats"].as<int>();
  o.seed = vm["seed"].as<std::uint64_t>();
  o.lambdas = parse_lambdas(vm["lambdas"].as<std::string>());
  o.cg_iterations = vm["cg-iterations"].as<Index>();
  o.eval_every = vm["eval-every"].as<Index>();
  o.debiasing = split_list(vm["debiasing"].as<std::string>());
  const std::string preconditioner = vm["cg-preconditioner"].as<std::string>();
  if (preconditioner != "none" && preconditioner != "diag-ggn" && preconditioner != "diag-ef" &&
      preconditioner != "kfac") {
    throw UsageError(fmt::format(
        "--cg-preconditioner '{}': expected none, diag-ggn, diag-ef or kfac", preconditioner));
  }
  o.cg_preconditioner = preconditioner == "none" ? "" : preconditioner;
  o.cg_preconditioner_damping = vm["cg-preconditioner-damping"].as<double>();
  o.cg_preconditioner_exponent = vm["cg-preconditioner-exponent"].as<double>();
  if (o.cg_iterations < 1) throw Error(fmt::format("--cg-iterations {}: expected at least 1", o.cg_iterations));
  if (o.eval_every < 1) throw Error(fmt::format("--eval-every {}: expected at least 1", o.eval_every));
  auto result = dg::newton_step_experiment(problem, o);
  if (!result.is_ok()) throw Error(result.status().message());
  const dg::NewtonStepReport& r = result.value();
  std::cout << fmt::format("# single Newton step: {} repeats of two disjoint batches of {} (seed {}), CG up "
                           "to {} iterations, evaluated at {} of them; full-batch loss at theta {:.6g}\n",
                           o.repeats, o.batch_size, o.seed, o.cg_iterations, r.iterations.size() - 1,
                           r.loss_at_start);
  std::cout << "# medians over repeats of the full-batch loss L(theta + d_k) and quadratic q(d_k)\n"
            << newton_table(r);
  print_notes(r.notes);
  if (vm.count("out") == 0) return kExitOk;
  const fs::path out = vm["out"].as<std::string>();
  on_root([&] {
    fs::create_directories(out);
    io::write_file_atomically(out / "newton_step.csv", dg::newton_step_csv(r));
  });
  std::cout << fmt::format("# wrote {}\n", (out / "newton_step.csv").string());
  render(out, "newton_step", newton_script(r, figure_subtitle(problem, o.batch_size, o.repeats)));
  return kExitOk;
}

template <class S>
int run_with(const po::variables_map& vm, Context& context) {
  // Under mpirun every rank reads the inputs and binds its share of every batch (the
  // experiments see whole-batch values); an error reading them is every rank's.
  PluginHost& host = context.host;
  std::optional<RawOptions> curvature_setup;
  std::optional<ModelData<S>> loaded;
  std::optional<dg::Problem<S>> made;
  run_agreed(dist::Communicator::world(), [&] {
    curvature_setup.emplace(load_curvature_setup(context, vm));
    check_plugins(vm, host, *curvature_setup);
    loaded.emplace(load_model_data<S>(vm));
    restrict_training_set(vm, loaded->data.train);
    check_flags(vm, loaded->network->num_parameters(), loaded->data.train.size());
    made.emplace(make_problem(vm, *loaded, host, *curvature_setup));
  });
  const ModelData<S>& in = *loaded;
  const dg::Problem<S>& problem = *made;
  std::cout << header(vm, *in.network, in.data.train, std::is_same_v<S, double>, in.preprocessing);
  return vm.count("newton-step") != 0 ? run_newton_mode(vm, problem) : run_bias_mode(vm, problem);
}

void add_options(po::options_description& options) {
  add_model_options(options);
  options.add_options()("data", po::value<std::string>()->required(),
                        "data source, e.g. fashion-mnist or moons")(
      "batch-size", po::value<std::int64_t>()->default_value(128),
      "B, the size of each of the two batches")(
      "normalize", po::value<std::string>()->default_value("none"),
      "none, minmax, standardize, standardize-channel or standardize-global (fitted on the "
      "training split); a model file's recorded preprocessing replaces it")(
      "curvature", po::value<std::string>()->default_value("ggn"),
      "curvature plugin, e.g. ggn, hessian, kfac")("repeats", po::value<int>()->default_value(10),
                                                   "R >= 2 independent draws of (B1, B2)")(
      "top", po::value<Index>()->default_value(10), "K directions per repeat")(
      "directions", po::value<std::string>()->default_value("eigen"),
      "eigen (Lanczos on B1) or cg")("cg-damping", po::value<double>()->default_value(1e-3),
                                     "damping of CG for --directions cg")(
      "chunk-size", po::value<std::int64_t>()->default_value(2048),
      "samples bound at once for full-batch values")(
      "train-samples", po::value<std::int64_t>()->default_value(0),
      "use N training samples drawn with --seed as the training set (the full batch and the "
      "pool of B1 and B2); 0: all")(
      "out", po::value<std::string>(),
      "write CSV files (and figures, with gnuplot) to this directory")(
      "newton-step", "single-step experiment: CG on B1, biased and debiased steps")(
      "lambdas", po::value<std::string>()->default_value("1e-3,1e-2,1e-1"),
      "--newton-step: damping values")("cg-iterations", po::value<Index>()->default_value(50),
                                       "--newton-step: CG iterations on B1")(
      "eval-every", po::value<Index>()->default_value(1),
      "--newton-step: evaluate every E-th iteration and the last")(
      "debiasing", po::value<std::string>()->default_value("cg-line-search,cg-projected"),
      "--newton-step: debiasing plugins compared with CG's own iterates")(
      "cg-preconditioner", po::value<std::string>()->default_value("none"),
      "--newton-step: none, diag-ggn, diag-ef or kfac (preconditioned CG, as the cg solver)")(
      "cg-preconditioner-damping", po::value<double>()->default_value(1e-3),
      "--newton-step: added to lambda inside the preconditioner")(
      "cg-preconditioner-exponent", po::value<double>()->default_value(0.75),
      "--newton-step: the preconditioner's power, in (0, 1]");
  add_config_options(options);
  add_plugin_path_option(options);
}

}  // namespace

int run_bias(const Args& args, Context& context) {
  po::options_description options("bias options");
  add_options(options);
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  check_mode(vm);
  return use_double_precision(vm) ? run_with<double>(vm, context) : run_with<float>(vm, context);
}

}  // namespace quadra::cli
