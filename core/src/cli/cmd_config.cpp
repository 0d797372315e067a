// `quadra config`: check a config as the command that would use it does, print it resolved.

#include <fmt/format.h>
#include <fmt/std.h>

#include <iostream>
#include <quadra/data/source.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/optimizer_spec.hpp>
#include <quadra/option_parsing.hpp>
#include <quadra/train/settings.hpp>

#include "cli.hpp"
#include "comparison.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: quadra config [--config FILE] [--set section.key=value]... [--plugin-path DIR]...\n\n"
    "Checks a config as the command that runs it would, without running anything or reading\n"
    "data and model files, and prints it resolved with every default filled in ('# default').\n"
    "What it checks depends on the sections the config has:\n"
    "  [optimizer] and the per-kind sections only: the optimizer; every option against its\n"
    "    plugin's schema, and each chosen plugin created once;\n"
    "  [model] or [data] too: a run config of quadra train; the optimizer and every key of\n"
    "    [model], [data], [train] and [line_search] (quadra train --help-config), as quadra\n"
    "    train checks them before it loads the data, and the syntax of model.spec,\n"
    "    model.input_shape and data.source;\n"
    "  [train] or [line_search] without [model] and [data]: an optimizer file of a comparison;\n"
    "    the optimizer and the run keys it sets;\n"
    "  [compare]: a compare file of quadra compare; its seeds, and every optimizer file of\n"
    "    compare.optimizers merged over the compare file's sections, as quadra compare checks\n"
    "    them before its first run.";

template <class Interface>
void create(const PluginHost& host, const std::optional<ComponentChoice>& choice) {
  if (!choice) return;
  auto created = host.create<Interface>(choice->component->info.name, choice->given);
  if (!created.is_ok()) throw Error(created.status().message());
}

bool has_section(const Config& config, const std::string& section) {
  for (const auto& [key, entry] : config.entries()) {
    if (key.rfind(section + ".", 0) == 0) return true;
  }
  return false;
}

/// What quadra train checks only once the data is loaded, as far as it can be checked without
/// the data: the syntax of the model spec, the input shape and the data source.
void check_run_syntax(const train::RunSettings& settings) {
  const auto with_key = [](const char* key, const auto& check) {
    try {
      check();
    } catch (const Error& e) {
      throw Error(fmt::format("config key {}: {}", key, e.what()));
    }
  };
  if (!settings.model.spec.empty()) {
    with_key("model.spec", [&] { (void)nn::parse_layer_spec(settings.model.spec); });
  }
  if (!settings.model.input_shape.empty()) {
    with_key("model.input_shape", [&] { (void)nn::parse_shape(settings.model.input_shape); });
  }
  with_key("data.source", [&] { (void)data::parse_data_source(settings.data.source); });
}

/// The optimizer with every default, after creating each chosen plugin once: a plugin may
/// refuse a combination of valid values.
std::string resolve_optimizer_config(const Config& config, const PluginHost& host) {
  const OptimizerSpec spec = resolve_optimizer(config, host);
  create<CurvatureEstimator>(host, spec.choice(PluginKind::kCurvature));
  create<Solver>(host, spec.choice(PluginKind::kSolver));
  create<DampingStrategy>(host, spec.choice(PluginKind::kDamping));
  create<DebiasingStrategy>(host, spec.choice(PluginKind::kDebiasing));
  return format_optimizer(spec);
}

/// An optimizer file of a comparison: the optimizer and the [train] and [line_search] keys it
/// sets (e.g. its batch size); the model, data and budget come from the compare file.
std::string resolve_optimizer_file(const Config& config, const PluginHost& host) {
  auto sections = optimizer_config_sections();
  sections.insert({"train", "line_search"});
  config.check_known(optimizer_config_keys(), sections);
  std::string out = resolve_optimizer_config(config, host);
  const std::pair<const char*, const OptionSchema*> run_sections[] = {
      {"train", &train::train_schema()}, {"line_search", &train::line_search_schema()}};
  for (const auto& [name, schema] : run_sections) {
    const RawOptions given = config.section(name);
    if (given.empty()) continue;
    auto values = parse_options(*schema, given, fmt::format("config section [{}]", name));
    if (!values.is_ok()) throw Error(values.status().message());
    out += fmt::format("\n[{}]\n", name);
    for (const auto& [key, value] : values.value().entries()) {
      if (given.count(key) != 0) out += fmt::format("{} = {}\n", key, format_value(value));
    }
  }
  return "# no [model] or [data]: an optimizer file, for quadra compare (quadra train also needs\n"
         "# [model], [data] and a budget)\n" +
         out;
}

std::string resolve_comparison_config(const Config& config, const fs::path& file,
                                      const PluginHost& host) {
  const Comparison c = resolve_comparison(config, file, host);
  check_run_syntax(c.resolved.front().settings);  // the model and data are the compare file's
  std::vector<std::string> files;
  for (const Entrant& e : c.entrants) files.push_back(e.file.string());
  std::string out = fmt::format("[compare]\noptimizers = {}\nseeds = {}\nout = {}{}\n",
                                fmt::join(files, " "), fmt::join(c.seeds, " "), c.out.string(),
                                config.get("compare.out") ? "" : "  # default");
  for (std::size_t i = 0; i < c.entrants.size(); ++i) {
    const Entrant& e = c.entrants[i];
    out += fmt::format(
        "\n# ---- {}: one run per seed S in {}/seedS (train.out and train.seed below are "
        "replaced by these)\n{}",
        e.name, (c.out / e.name).string(), c.resolved[i].resolved_config);
  }
  return out;
}

}  // namespace

int run_config(const Args& args, Context& context) {
  po::options_description options("config options");
  add_config_options(options);
  add_plugin_path_option(options);
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;

  const Config config = read_config(vm);
  PluginHost& host = load_plugins(context, vm, /*strict=*/false);
  if (is_comparison(config)) {
    if (vm.count("config") == 0) {
      throw UsageError(
          "a compare config needs --config FILE: its optimizer files are relative to it");
    }
    std::cout << resolve_comparison_config(config, vm["config"].as<std::string>(), host);
    return kExitOk;
  }
  if (has_section(config, "model") || has_section(config, "data")) {
    // A run config: resolved as quadra train resolves it, before it loads the data.
    const train::ResolvedRun run = train::resolve_run(config, host);
    check_run_syntax(run.settings);
    std::cout << run.resolved_config;
    return kExitOk;
  }
  if (has_section(config, "train") || has_section(config, "line_search")) {
    std::cout << resolve_optimizer_file(config, host);
    return kExitOk;
  }
  config.check_known(optimizer_config_keys(), optimizer_config_sections());
  std::cout << resolve_optimizer_config(config, host);
  return kExitOk;
}

}  // namespace quadra::cli
