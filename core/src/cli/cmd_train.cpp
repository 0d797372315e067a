// `quadra train`: one optimizer, composed of plugins, trained as a config describes.

#include <fmt/format.h>
#include <fmt/std.h>

#include <iostream>
#include <optional>
#include <quadra/dist/communicator.hpp>
#include <quadra/optimizer_spec.hpp>
#include <quadra/train/trainer.hpp>

#include "cli.hpp"
#include "figures.hpp"
#include "run_config.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: quadra train --config FILE [--set section.key=value]... [--resume|--overwrite]\n"
    "                    [--plugin-path DIR]...\n\n"
    "Trains a model with the optimizer the config composes from plugins ([optimizer] and one\n"
    "section per plugin kind) on the data of [data], with the budget and settings of [train]\n"
    "(keys: quadra train --help-config). Writes steps.csv, eval.csv, log.jsonl, manifest.json,\n"
    "checkpoint.npz and model.npz to train.out, which is locked while the run lasts; a\n"
    "train.out that holds another run is refused unless --resume or --overwrite. Ctrl-C\n"
    "finishes the current step, writes a checkpoint and stops; --resume continues from it\n"
    "exactly as if never interrupted. After the run, when gnuplot is installed, the loss and\n"
    "the validation accuracy against steps and wall time are drawn as\n"
    "train.out/{loss,val_accuracy}_vs_{steps,time}.png.\n\n"
    "Under mpirun -np R the run is data-parallel: every draw is the same as in one process,\n"
    "split across the R processes by samples; rank 0 writes the files (docs/mpi.md).";

/// "cg + ggn + levenberg-marquardt + cg-line-search": the plugins, solver first.
std::string optimizer_name(const OptimizerSpec& spec) {
  std::string name;
  for (const PluginKind kind : {PluginKind::kSolver, PluginKind::kCurvature, PluginKind::kDamping,
                                PluginKind::kDebiasing}) {
    if (const auto& choice = spec.choice(kind)) {
      name += (name.empty() ? "" : " + ") + choice->component->info.name;
    }
  }
  return name;
}

}  // namespace

int run_train(const Args& args, Context& context) {
  po::options_description options("train options");
  add_config_options(options);
  add_plugin_path_option(options);
  options.add_options()("resume", "continue from train.out/checkpoint.npz")(
      "overwrite", "start afresh in a train.out that holds another run, replacing its files")(
      "help-config", "list the keys of [model], [data], [train] and [line_search]");
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  if (vm.count("help-config") != 0) {
    std::cout << train::run_config_help();
    return kExitOk;
  }
  if (vm.count("config") == 0 && vm.count("set") == 0) {
    throw UsageError("quadra train needs --config FILE (and/or --set section.key=value)");
  }

  // Under mpirun every rank reads the config and data; an error there is every rank's.
  const dist::Communicator& world = dist::Communicator::world();
  PluginHost& host = load_plugins(context, vm, /*strict=*/false);
  std::optional<train::ResolvedRun> resolved;
  std::optional<data::DataSplits> loaded;
  run_agreed(world, [&] {
    resolved.emplace(train::resolve_run(read_config(vm), host));
    loaded.emplace(train::load_run_data(resolved->settings));
  });
  const train::ResolvedRun& run = *resolved;
  const data::DataSplits& data = *loaded;

  train::RunRequest request;
  request.settings = run.settings;
  request.optimizer = &run.optimizer;
  request.host = &host;
  request.data = &data;
  request.resolved_config = run.resolved_config;
  request.resume = vm.count("resume") != 0;
  request.overwrite = vm.count("overwrite") != 0;
  if (request.resume && request.overwrite) {
    throw UsageError(
        "--resume continues the run in train.out and --overwrite replaces it; give "
        "one of them");
  }
  const train::RunSummary summary = train::run_training(request);
  std::cout << format_summary_line(summary) << "\n"
            << fmt::format("outputs in {}\n", summary.out.string());
  // Drawn for failed and interrupted runs too: their curves show what went wrong.
  RunDescription description;
  description.model =
      run.settings.model.spec.empty() ? run.settings.model.file : run.settings.model.spec;
  description.data = run.settings.data.source;
  description.optimizer = optimizer_name(run.optimizer);
  description.loss = !run.settings.model.loss.empty()             ? run.settings.model.loss
                     : data.train.task == data::Task::kRegression ? "mse"
                                                                  : "cross-entropy";
  if (world.is_root()) render_run_figures(summary.out, description, "figures: ");
  if (summary.interrupted) return 130;  // the shell's convention for SIGINT
  return summary.failed ? kExitFailure : kExitOk;
}

}  // namespace quadra::cli
