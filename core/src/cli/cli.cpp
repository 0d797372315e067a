// The `quadra` command line: subcommand dispatch and the helpers subcommands share.

#include "cli.hpp"

#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>

#include <boost/program_options/parsers.hpp>
#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/dist/communicator.hpp>
#include <quadra/sdk/build_key.hpp>
#include <quadra/sdk/version.hpp>

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

bool parse(const Args& args, const std::string& usage, po::options_description& options,
           const po::positional_options_description& positional, po::variables_map& vm) {
  options.add_options()("help,h", "show this help");
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help") != 0) {
      std::cout << usage << "\n\n" << options << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  return true;
}

void add_plugin_path_option(po::options_description& options) {
  options.add_options()("plugin-path", po::value<std::vector<std::string>>()->composing(),
                        "also load plugins from DIR (or one library file); repeatable. "
                        "QUADRA_PLUGIN_PATH adds ':'-separated directories too");
}

PluginHost& load_plugins(Context& context, const po::variables_map& vm, bool strict) {
  PluginHost& host = context.host;
  const std::size_t refused_before = host.refused().size();
  std::vector<fs::path> extra;
  if (vm.count("plugin-path") != 0) {
    for (const std::string& path : vm["plugin-path"].as<std::vector<std::string>>()) {
      extra.emplace_back(path);
    }
  }
  if (context.default_plugins_loaded) {
    for (const fs::path& path : extra) throw_if_error(host.load_path(path));
  } else {
    throw_if_error(host.load_default_paths(extra));
    context.default_plugins_loaded = true;
  }
  const std::size_t refused = host.refused().size() - refused_before;
  for (std::size_t i = refused_before; i < host.refused().size(); ++i) {
    std::cerr << "quadra: " << (strict ? "error: " : "warning: ") << host.refused()[i].reason
              << "\n";
  }
  if (strict && refused != 0) {
    throw Error(
        fmt::format("{} plugin librar{} refused", refused, refused == 1 ? "y was" : "ies were"));
  }
  return host;
}

void add_config_options(po::options_description& options) {
  options.add_options()("config,c", po::value<std::string>(), "INI config file")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "override one config value: section.key=value; repeatable, applied after --config");
}

Config read_config(const po::variables_map& vm) {
  Config config =
      vm.count("config") != 0 ? Config::from_file(vm["config"].as<std::string>()) : Config();
  if (vm.count("set") != 0) {
    for (const std::string& assignment : vm["set"].as<std::vector<std::string>>()) {
      config.apply_override(assignment);
    }
  }
  return config;
}

RawOptions load_curvature_setup(Context& context, const po::variables_map& vm) {
  load_plugins(context, vm, /*strict=*/false);
  Config config = read_config(vm);
  config.check_known({}, {"curvature"});
  return config.section("curvature");
}

void run_agreed(const dist::Communicator& world, const std::function<void()>& body) {
  std::optional<UsageError> usage;
  world.run_agreed([&] {
    try {
      body();
    } catch (const UsageError& e) {
      usage = e;
    }
  });
  if (usage) throw *usage;
}

namespace {

std::string top_level_help() {
  std::string text = fmt::format(
      "quadra {}: second-order training and Laplace uncertainty with debiased mini-batch "
      "quadratics\n\nusage: quadra <command> [options]\n       quadra --version | --help\n\n"
      "commands:\n",
      QUADRA_SDK_VERSION_STRING);
  for (const Command& command : commands()) {
    text += fmt::format("  {:<10}  {}\n", command.name, command.summary);
  }
  text += "\n'quadra <command> --help' shows a command's options.";
  return text;
}

}  // namespace

int run(const Args& args, Context& context) {
  if (args.empty()) {
    std::cerr << top_level_help() << "\n";
    return kExitUsage;
  }
  const std::string& first = args.front();
  if (first == "--help" || first == "-h" || first == "help") {
    std::cout << top_level_help() << "\n";
    return kExitOk;
  }
  if (first == "--version") {
    std::cout << fmt::format("quadra {} (plugin ABI {}, build key {})\n", QUADRA_SDK_VERSION_STRING,
                             QUADRA_PLUGIN_ABI_VERSION, QUADRA_BUILD_KEY);
    return kExitOk;
  }
  for (const Command& command : commands()) {
    if (first != command.name) continue;
    const Args rest(args.begin() + 1, args.end());
    const dist::Communicator& world = dist::Communicator::world();
    if (world.size() > 1 && !command.several_processes) {
      // Every rank would run the whole command and write the same files. Every rank gets here,
      // so the error is agreed without a collective.
      std::vector<std::string> several;
      for (const Command& c : commands()) {
        if (c.several_processes) several.emplace_back(c.name);
      }
      throw dist::AgreedError(
          fmt::format("quadra {} runs as one process, but was started as {} (mpirun); run it "
                      "without mpirun. Commands that run on several processes: {}",
                      command.name, world.size(), fmt::join(several, ", ")));
    }
    try {
      return command.run(rest, context);
    } catch (const UsageError& e) {
      std::cerr << fmt::format("quadra {}: {}\nsee 'quadra {} --help'\n", command.name, e.what(),
                               command.name);
      return kExitUsage;
    }
  }
  std::vector<std::string> names;
  for (const Command& command : commands()) names.emplace_back(command.name);
  std::cerr << fmt::format("quadra: unknown command '{}'; commands: {}\nsee 'quadra --help'\n",
                           first, fmt::join(names, ", "));
  return kExitUsage;
}

}  // namespace quadra::cli
