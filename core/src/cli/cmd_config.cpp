// `quadra config`: resolve a config's optimizer, create each chosen plugin, print the result.

#include <iostream>

#include <fmt/format.h>

#include <quadra/optimizer_spec.hpp>

#include "cli.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: quadra config [--config FILE] [--set section.key=value]... [--plugin-path DIR]...\n\n"
    "Reads the optimizer of a config ([optimizer] names one plugin per kind; the section named\n"
    "after each kind holds that plugin's options), validates every option against the plugin's\n"
    "schema, creates each plugin, and prints the resolved config with defaults filled in.";

template <class Interface>
void create(const PluginHost& host, const std::optional<ComponentChoice>& choice) {
  if (!choice) return;
  auto created = host.create<Interface>(choice->component->info.name, choice->given);
  if (!created.is_ok()) throw Error(created.status().message());
}

}  // namespace

int run_config(const Args& args) {
  po::options_description options("config options");
  add_config_options(options);
  add_plugin_path_option(options);
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;

  const Config config = read_config(vm);
  config.check_known(optimizer_config_keys(), optimizer_config_sections());
  PluginHost host;
  load_plugins(host, vm, /*strict=*/false);
  const OptimizerSpec spec = resolve_optimizer(config, host);

  // Creating each plugin runs its factory: a plugin may refuse a combination of valid values.
  create<CurvatureEstimator>(host, spec.choice(PluginKind::kCurvature));
  create<Solver>(host, spec.choice(PluginKind::kSolver));
  create<DampingStrategy>(host, spec.choice(PluginKind::kDamping));
  create<DebiasingStrategy>(host, spec.choice(PluginKind::kDebiasing));

  std::cout << format_optimizer(spec);
  return kExitOk;
}

}  // namespace quadra::cli
