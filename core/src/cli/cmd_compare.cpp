// `quadra compare`: several optimizers x seeds trained on the same model, data and budget;
// a summary table, all curves as CSV, and gnuplot figures when gnuplot is installed.

#include <fmt/format.h>
#include <fmt/std.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <optional>
#include <functional>
#include <quadra/dist/communicator.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/io/directory_lock.hpp>
#include <quadra/train/trainer.hpp>
#include <sstream>

#include "cli.hpp"
#include "comparison.hpp"
#include "figures.hpp"
#include "run_config.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: quadra compare --config FILE [--set section.key=value]... [--overwrite]\n"
    "                      [--plugin-path DIR]...\n\n"
    "Trains every optimizer of [compare] optimizers (config files holding [optimizer], the\n"
    "per-kind sections and optionally [train] keys such as batch_size) with every seed of\n"
    "[compare] seeds, on the [model], [data] and budget of this file, and prints a summary.\n"
    "The budget (train.epochs, max_steps, max_seconds) is the compare file's alone, so every\n"
    "optimizer gets the same. Writes OUT/NAME/seedS/ per run, summary.csv, curves.csv and, when\n"
    "gnuplot is installed, loss and accuracy against steps and time as PNG figures. A\n"
    "compare.out that holds the runs of an earlier comparison is refused unless --overwrite.\n\n"
    "  [compare]\n"
    "  optimizers = sgd.ini adam.ini cg-debiased.ini   # relative to this file\n"
    "  seeds = 0 1\n"
    "  out = runs/compare\n"
    "  target_accuracy = 88   # optional: time and steps to the first evaluation with 88 % test\n"
    "                         # accuracy (target_loss: a test loss), evaluations excluded";

/// Keys an optimizer file may not set: they belong to the comparison as a whole.
constexpr const char* kSharedKeys[] = {"train.epochs", "train.max_steps", "train.max_seconds",
                                       "train.seed", "train.out"};

/// The optimizer file merged over the compare file's shared sections.
Entrant make_entrant(const fs::path& file, const Config& shared) {
  Entrant e;
  e.name = file.stem().string();
  e.file = file;
  const Config own = Config::from_file(file);
  for (const auto& [key, entry] : own.entries()) {
    for (const char* forbidden : kSharedKeys) {
      if (key == forbidden) {
        throw Error(
            fmt::format("{}: sets {}; the comparison's budget, seeds and outputs are set "
                        "by the compare file alone",
                        file, key));
      }
    }
    if (key.rfind("model.", 0) == 0 || key.rfind("data.", 0) == 0 ||
        key.rfind("compare.", 0) == 0) {
      throw Error(
          fmt::format("{}: sets {}; the model and data are shared by every optimizer of a "
                      "comparison: set them in the compare file",
                      file, key));
    }
  }
  for (const auto& [key, entry] : shared.entries()) {
    if (key.rfind("compare.", 0) != 0) e.config.apply_override(key + "=" + entry.value);
  }
  for (const auto& [key, entry] : own.entries()) e.config.apply_override(key + "=" + entry.value);
  return e;
}

/// Collects every evaluation of a run for curves.csv.
class CurveRecorder final : public train::TrainObserver {
 public:
  void on_evaluation(const train::EvalRecord& r) override { records.push_back(r); }
  std::vector<train::EvalRecord> records;
};

struct Finished {
  std::string name;
  std::uint64_t seed = 0;
  fs::path dir;
  train::RunSummary summary;
  std::vector<train::EvalRecord> evals;
  std::optional<train::EvalRecord> reached;  ///< the first evaluation that met the targets
};

/// The first evaluation meeting every target the comparison sets (none set: none).
std::optional<train::EvalRecord> first_reaching(const std::vector<train::EvalRecord>& evals,
                                                const Comparison& c) {
  if (!c.target_accuracy && !c.target_loss) return std::nullopt;
  for (const train::EvalRecord& e : evals) {
    const bool accuracy = !c.target_accuracy || 100.0 * e.test_accuracy >= *c.target_accuracy;
    const bool loss = !c.target_loss || e.test_loss <= *c.target_loss;
    if (accuracy && loss) return e;
  }
  return std::nullopt;
}

/// "88% test accuracy", "test loss 0.35", or both.
std::string target_text(const Comparison& c) {
  std::vector<std::string> parts;
  if (c.target_accuracy) parts.push_back(fmt::format("{:g}% test accuracy", *c.target_accuracy));
  if (c.target_loss) parts.push_back(fmt::format("test loss {:g}", *c.target_loss));
  return fmt::format("{}", fmt::join(parts, " and "));
}

std::string csv_value(double v) { return std::isfinite(v) ? fmt::format("{}", v) : ""; }

/// "0.4321" or "0.4321 ± 0.0012" over seeds.
std::string mean_sd(const std::vector<double>& values, const char* format, double scale = 1.0) {
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = sum / static_cast<double>(values.size());
  std::string out = fmt::format(fmt::runtime(format), scale * mean);
  if (values.size() > 1) {
    double ss = 0;
    for (double v : values) ss += (v - mean) * (v - mean);
    out += " ± " + fmt::format(fmt::runtime(format),
                               scale * std::sqrt(ss / static_cast<double>(values.size() - 1)));
  }
  return out;
}

/// What names the comparison in its figures' titles and axis labels.
struct FigureContext {
  std::string model;
  std::string data;
  std::string loss;  ///< "cross-entropy" or "mse"
  std::size_t seeds = 1;
  std::string target;  ///< e.g. "88% test accuracy", or empty
};

/// Validation loss and accuracy against steps and wall time: one colour per optimizer, each
/// seed a thin line and the mean over seeds bold (the run itself when there is one seed).
std::vector<LineFigure> comparison_figures(const std::vector<Finished>& runs,
                                           const std::vector<Entrant>& entrants,
                                           const FigureContext& context) {
  double max_seconds = 0;
  for (const Finished& r : runs) {
    for (const train::EvalRecord& e : r.evals) max_seconds = std::max(max_seconds, e.train_seconds);
  }
  const auto [scale, unit] = time_unit(max_seconds);
  const std::string subtitle = fmt::format(
      "model {}, data {}, {}", context.model, context.data,
      context.seeds == 1 ? std::string("1 seed") : fmt::format("{} seeds each", context.seeds));
  const std::string loss_label = context.loss == "mse" ? "validation loss (mean squared error)"
                                                       : "validation loss (cross-entropy, nats)";
  std::vector<LineFigure> figures;
  for (const bool by_time : {false, true}) {
    for (const bool accuracy : {false, true}) {
      LineFigure f;
      f.png = fmt::format("val_{}_vs_{}.png", accuracy ? "accuracy" : "loss",
                          by_time ? "time" : "steps");
      f.title = fmt::format("Validation {} against {}\n{}", accuracy ? "accuracy" : "loss",
                            by_time ? "training time" : "optimizer steps", subtitle);
      f.x_label = by_time ? fmt::format("training time, evaluations excluded ({})", unit)
                          : "optimizer step (accepted and rejected)";
      f.y_label = accuracy ? "validation accuracy (%)" : loss_label;
      f.y_axis = accuracy ? YAxis::kHigherIsBetter : YAxis::kLowerIsBetter;
      if (context.seeds > 1) f.key_title = "bold: mean over seeds; thin: each seed";
      bool marked = false;  // the first target marker carries the legend entry
      for (std::size_t e = 0; e < entrants.size(); ++e) {
        std::vector<PlotLine> seeds;
        for (const Finished& r : runs) {
          if (r.name != entrants[e].name) continue;
          PlotLine line{"", {}, {}, e, PlotLine::Style::kThin};
          for (const train::EvalRecord& rec : r.evals) {
            line.x.push_back(by_time ? rec.train_seconds * scale : static_cast<double>(rec.step));
            line.y.push_back(accuracy ? 100.0 * rec.val_accuracy : rec.val_loss);
          }
          seeds.push_back(std::move(line));
        }
        if (seeds.empty()) continue;
        PlotLine bold;
        if (seeds.size() == 1) {
          bold = seeds.front();
        } else {
          std::vector<const PlotLine*> pointers;
          for (const PlotLine& line : seeds) pointers.push_back(&line);
          bold = mean_line(pointers);
          for (PlotLine& line : seeds) f.lines.push_back(std::move(line));
        }
        bold.title = entrants[e].name;
        bold.color = e;
        bold.style = PlotLine::Style::kBold;
        f.lines.push_back(std::move(bold));
        // Where each run first met the comparison's target.
        PlotLine marks{"", {}, {}, e, PlotLine::Style::kMarker};
        marks.sets_range = false;
        for (const Finished& r : runs) {
          if (r.name != entrants[e].name || !r.reached) continue;
          marks.x.push_back(by_time ? r.reached->train_seconds * scale
                                    : static_cast<double>(r.reached->step));
          marks.y.push_back(accuracy ? 100.0 * r.reached->val_accuracy : r.reached->val_loss);
        }
        if (!marks.x.empty()) {
          if (!context.target.empty() && !marked) marks.title = "reached " + context.target;
          marked = true;
          f.lines.push_back(std::move(marks));
        }
      }
      figures.push_back(std::move(f));
    }
  }
  return figures;
}

}  // namespace

bool is_comparison(const Config& config) {
  for (const auto& [key, entry] : config.entries()) {
    if (key.rfind("compare.", 0) == 0) return true;
  }
  return false;
}

Comparison resolve_comparison(const Config& shared, const fs::path& config_file,
                              const PluginHost& host) {
  shared.check_known({"compare.optimizers", "compare.seeds", "compare.out",
                      "compare.target_accuracy", "compare.target_loss"},
                     train::run_config_sections());
  const fs::path base = config_file.parent_path();
  const auto files = split_list(shared.get("compare.optimizers").value_or(""));
  if (files.empty()) {
    throw Error(
        "config key compare.optimizers is missing or empty; expected optimizer config "
        "files, e.g. 'sgd.ini adam.ini'");
  }
  Comparison c;
  c.seeds = parse_compare_seeds(shared.get("compare.seeds"));
  c.out = shared.get("compare.out").value_or("runs/compare");
  const auto target = [&](const char* key, double low, double high, const char* what) {
    const auto text = shared.get(key);
    if (!text) return std::optional<double>();
    char* end = nullptr;
    const double value = std::strtod(text->c_str(), &end);
    if (text->empty() || *end != '\0' || !(value > low && value <= high)) {
      throw Error(fmt::format("config key {}: '{}' is not {}", key, *text, what));
    }
    return std::optional<double>(value);
  };
  c.target_accuracy = target("compare.target_accuracy", 0.0, 100.0,
                             "a test accuracy in percent; expected a number in (0, 100]");
  c.target_loss = target("compare.target_loss", 0.0, std::numeric_limits<double>::max(),
                         "a test loss; expected a finite number > 0");
  // Everything is resolved before the first run starts: a typo in the last file must not cost
  // the minutes of the runs before it.
  for (const std::string& file : files) {
    const fs::path path = fs::path(file).is_absolute() ? fs::path(file) : base / file;
    c.entrants.push_back(make_entrant(path, shared));
    for (std::size_t i = 0; i + 1 < c.entrants.size(); ++i) {
      if (c.entrants[i].name == c.entrants.back().name) {
        throw Error(
            fmt::format("compare.optimizers names two files called '{}'; optimizers are "
                        "named by their file name and must differ",
                        c.entrants.back().name));
      }
    }
    try {
      c.resolved.push_back(train::resolve_run(c.entrants.back().config, host));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", path, e.what()));
    }
  }
  return c;
}

int run_compare(const Args& args, Context& context) {
  po::options_description options("compare options");
  add_config_options(options);
  add_plugin_path_option(options);
  options.add_options()("overwrite", "replace the runs of an earlier comparison in compare.out");
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  if (vm.count("config") == 0) throw UsageError("quadra compare needs --config FILE");
  const bool overwrite = vm.count("overwrite") != 0;

  // Under mpirun every rank reads the configs and data and runs every training split across
  // the ranks (train::run_training); rank 0 locks compare.out and writes its files.
  const dist::Communicator& world = dist::Communicator::world();
  PluginHost& host = load_plugins(context, vm, /*strict=*/false);
  std::optional<Comparison> resolved_comparison;
  std::optional<data::DataSplits> loaded;
  std::optional<io::DirectoryLock> lock;
  run_agreed(world, [&] {
    const Config shared = read_config(vm);
    resolved_comparison.emplace(
        resolve_comparison(shared, vm["config"].as<std::string>(), host));
    loaded.emplace(train::load_run_data(resolved_comparison->resolved.front().settings));
  });
  const Comparison& comparison = *resolved_comparison;
  const std::vector<Entrant>& entrants = comparison.entrants;
  const std::vector<train::ResolvedRun>& resolved = comparison.resolved;
  const std::vector<std::uint64_t>& seeds = comparison.seeds;
  const fs::path& out = comparison.out;
  const data::DataSplits& data = *loaded;
  const auto run_dir = [&](const Entrant& e, std::uint64_t seed) {
    return out / e.name / fmt::format("seed{}", seed);
  };
  // One comparison at a time in `out`; its runs are checked before the first one starts.
  const auto on_root = [&](const std::function<void()>& body) {
    world.run_agreed([&] {
      if (world.is_root()) body();
    });
  };
  on_root([&] {
    lock.emplace(out, "compare.out");
    for (const Entrant& e : entrants) {
      for (const std::uint64_t seed : seeds) {
        if (overwrite || !train::holds_run(run_dir(e, seed))) continue;
        throw Error(
            fmt::format("compare.out {} already holds a comparison ({} holds a run); "
                        "replace it with --overwrite or choose another compare.out",
                        out, run_dir(e, seed)));
      }
    }
  });

  std::vector<Finished> runs;
  std::string curves =
      "optimizer,seed,step,epoch,seconds,train_loss,val_loss,val_accuracy,test_loss,test_"
      "accuracy,train_seconds\n";
  for (std::size_t i = 0; i < entrants.size(); ++i) {
    for (const std::uint64_t seed : seeds) {
      train::RunRequest request;
      request.settings = resolved[i].settings;
      request.settings.train.seed = seed;
      request.settings.train.out = run_dir(entrants[i], seed);
      request.overwrite = overwrite;
      request.optimizer = &resolved[i].optimizer;
      request.host = &host;
      request.data = &data;
      request.resolved_config =
          fmt::format("# {} seed {}\n{}", entrants[i].name, seed, resolved[i].resolved_config);
      request.label = fmt::format("{} seed {}", entrants[i].name, seed);
      CurveRecorder recorder;
      request.observers.push_back(&recorder);
      const train::RunSummary summary = train::run_training(request);
      std::cerr << fmt::format("{} seed {}: {}\n", entrants[i].name, seed,
                               format_summary_line(summary));
      for (const auto& r : recorder.records) {
        curves += fmt::format("{},{},{},{},{:.3f},{},{},{},{},{},{:.3f}\n", entrants[i].name, seed,
                              r.step, csv_value(r.epoch), r.seconds, csv_value(r.train_loss),
                              csv_value(r.val_loss), csv_value(r.val_accuracy),
                              csv_value(r.test_loss), csv_value(r.test_accuracy), r.train_seconds);
      }
      runs.push_back({entrants[i].name, seed, request.settings.train.out, summary, recorder.records,
                      first_reaching(recorder.records, comparison)});
      if (summary.interrupted) {
        std::cerr << "quadra: interrupted; the finished runs are summarised below\n";
        break;
      }
    }
    if (!runs.empty() && runs.back().summary.interrupted) break;
  }

  // Per-run rows for scripts, then one aggregated row per optimizer for people.
  const bool targeted = comparison.target_accuracy || comparison.target_loss;
  std::string summary_csv =
      "optimizer,seed,steps,rejected_steps,curvature_products,seconds,final_val_loss,"
      "final_val_accuracy,best_val_loss,best_val_accuracy,test_accuracy,time_to_target_s,"
      "steps_to_target,stop_reason\n";
  std::vector<std::string> header = {"optimizer",     "runs",           "val loss",
                                     "best val loss", "val acc %",      "test acc %",
                                     "time s",        "curv. products", "rejected"};
  if (targeted) header.push_back("to target s");
  TextTable table(header);
  for (const Entrant& e : entrants) {
    std::vector<double> val_loss, best_loss, val_acc, test_acc, seconds, products, rejected;
    std::vector<double> to_target;
    std::size_t finished = 0;
    for (const Finished& r : runs) {
      if (r.name != e.name) continue;
      ++finished;
      const train::RunSummary& s = r.summary;
      if (r.reached) to_target.push_back(r.reached->train_seconds);
      summary_csv += fmt::format(
          "{},{},{},{},{},{:.3f},{},{},{},{},{},{},{},\"{}\"\n", r.name, r.seed, s.steps,
          s.rejected_steps, s.curvature_products, s.seconds, csv_value(s.final_eval.val_loss),
          csv_value(s.final_eval.val_accuracy), csv_value(s.best_eval.val_loss),
          csv_value(s.best_eval.val_accuracy), csv_value(s.final_eval.test_accuracy),
          r.reached ? fmt::format("{:.3f}", r.reached->train_seconds) : std::string(),
          r.reached ? std::to_string(r.reached->step) : std::string(), s.stop_reason);
      val_loss.push_back(s.final_eval.val_loss);
      best_loss.push_back(s.best_eval.val_loss);
      val_acc.push_back(s.final_eval.val_accuracy);
      test_acc.push_back(s.final_eval.test_accuracy);
      seconds.push_back(s.seconds);
      products.push_back(static_cast<double>(s.curvature_products));
      rejected.push_back(static_cast<double>(s.rejected_steps));
    }
    if (val_loss.empty()) continue;
    std::vector<std::string> row = {e.name,
                                    std::to_string(val_loss.size()),
                                    mean_sd(val_loss, "{:.4f}"),
                                    mean_sd(best_loss, "{:.4f}"),
                                    mean_sd(val_acc, "{:.2f}", 100.0),
                                    mean_sd(test_acc, "{:.2f}", 100.0),
                                    mean_sd(seconds, "{:.1f}"),
                                    mean_sd(products, "{:.0f}"),
                                    mean_sd(rejected, "{:.0f}")};
    if (targeted) {
      // Over the runs that reached it; "(k/n)" when not all did.
      row.push_back(to_target.empty() ? std::string("-") : mean_sd(to_target, "{:.3g}"));
      if (to_target.size() != finished) {
        row.back() += fmt::format(" ({}/{})", to_target.size(), finished);
      }
    }
    table.add(row);
  }
  on_root([&] {
    io::write_file_atomically(out / "summary.csv", summary_csv);
    io::write_file_atomically(out / "curves.csv", curves);
  });
  std::cout << table.str();
  if (targeted) {
    std::cout << fmt::format(
        "to target: training time (evaluations excluded) until the first evaluation with {}\n",
        target_text(comparison));
  }
  std::cout << fmt::format("per-run rows: {}; curves: {}\n", (out / "summary.csv").string(),
                           (out / "curves.csv").string());

  const train::RunSettings& settings = resolved.front().settings;
  FigureContext figure;
  figure.model = settings.model.spec.empty() ? settings.model.file : settings.model.spec;
  figure.data = settings.data.source;
  figure.loss = !settings.model.loss.empty()                 ? settings.model.loss
                 : data.train.task == data::Task::kRegression ? "mse"
                                                              : "cross-entropy";
  figure.seeds = seeds.size();
  if (targeted) figure.target = target_text(comparison);
  if (world.is_root()) {
    render_line_figures(out, "figures", comparison_figures(runs, entrants, figure), "figures: ");
  }
  const bool interrupted = !runs.empty() && runs.back().summary.interrupted;
  return interrupted ? 130 : kExitOk;
}

}  // namespace quadra::cli
