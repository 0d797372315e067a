// `quadra plugins [describe NAME]`: what is loaded, and each plugin's options.

#include <iostream>

#include <fmt/format.h>
#include <fmt/std.h>

#include "cli.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: quadra plugins [--plugin-path DIR]...\n"
    "       quadra plugins describe NAME|KIND/NAME [--plugin-path DIR]...\n\n"
    "Lists every loaded plugin component (kind, name, version, description, file), or every\n"
    "option of one component (type, default, allowed range, help). Libraries that are refused\n"
    "are reported with the reason, and the exit status is then 1.\n\n"
    "Where plugins come from, in this order (every command that loads plugins, the same way):\n"
    "  1. the built-in directory, <prefix>/lib/quadra/plugins beside the quadra executable;\n"
    "  2. each directory of the environment variable QUADRA_PLUGIN_PATH, separated by ':';\n"
    "  3. each --plugin-path DIR (a directory, or one library file); repeatable.\n"
    "In a directory every file ending in .so is loaded (not its subdirectories). A name that is\n"
    "already loaded is refused as a duplicate, so a plugin cannot replace a built-in one.\n"
    "A plugin must be built with the compiler family, C++ standard library and Eigen that\n"
    "built quadra: it carries their build key, and one that differs from quadra's (quadra\n"
    "--version prints it) is refused. Build plugins with quadra_add_plugin() from the installed\n"
    "CMake package (find_package(quadra COMPONENTS sdk)) and the compiler that built quadra.";

/// NAME or KIND/NAME -> exactly one component, or an Error saying why not.
const Component& find_component(const PluginHost& host, const std::string& spec) {
  const auto slash = spec.find('/');
  if (slash != std::string::npos) {
    auto kind = parse_plugin_kind(spec.substr(0, slash));
    if (!kind.is_ok()) throw Error(kind.status().message());
    const std::string name = spec.substr(slash + 1);
    if (const Component* component = host.find(kind.value(), name)) return *component;
    const auto known = host.names(kind.value());
    throw Error(fmt::format("unknown {} plugin '{}'; available: {}", to_string(kind.value()), name,
                            known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", "))));
  }
  const auto found = host.find_all(spec);
  if (found.empty()) {
    std::vector<std::string> all;
    for (const Component& c : host.components()) all.push_back(c.info.name);
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());  // e.g. kfac: curvature and solver
    throw Error(fmt::format("no plugin named '{}'; available: {}", spec,
                            all.empty() ? std::string("none") : fmt::format("{}", fmt::join(all, ", "))));
  }
  if (found.size() > 1) {
    std::vector<std::string> qualified;
    for (const Component* c : found) qualified.push_back(fmt::format("{}/{}", to_string(c->kind), spec));
    throw Error(fmt::format("plugin name '{}' is ambiguous; write one of: {}", spec,
                            fmt::join(qualified, ", ")));
  }
  return *found.front();
}

void print_list(const PluginHost& host) {
  std::vector<const Component*> sorted;
  for (const Component& c : host.components()) sorted.push_back(&c);
  std::sort(sorted.begin(), sorted.end(), [](const Component* a, const Component* b) {
    return std::tie(a->kind, a->info.name) < std::tie(b->kind, b->info.name);
  });
  TextTable table({"KIND", "NAME", "VERSION", "DESCRIPTION", "FILE"});
  for (const Component* c : sorted) {
    table.add({to_string(c->kind), c->info.name, c->library_version, c->info.summary,
               c->file.string()});
  }
  std::cout << table.str();
}

void print_description(const Component& c) {
  std::cout << fmt::format("{} plugin '{}', version {}\n  {}\n  library: {} ({})\n\n",
                           to_string(c.kind), c.info.name, c.library_version, c.info.summary,
                           c.library_name, c.file.string());
  if (c.info.options.empty()) {
    std::cout << "options: none\n";
    return;
  }
  std::cout << fmt::format(
      "options (config section [{0}] with optimizer.{0} = {1}, or --set {0}.NAME=VALUE):\n",
      to_string(c.kind), c.info.name);
  TextTable table({"NAME", "TYPE", "DEFAULT", "ALLOWED", "HELP"});
  for (const OptionSpec& spec : c.info.options) {
    const std::string allowed = format_constraint(spec);
    table.add({spec.name, to_string(spec.type), format_value(spec.default_value),
               allowed.empty() ? "any" : allowed, spec.help});
  }
  std::cout << table.str();
}

}  // namespace

int run_plugins(const Args& args, Context& context) {
  po::options_description options("plugins options");
  add_plugin_path_option(options);
  options.add_options()("command", po::value<std::vector<std::string>>(), "describe NAME");
  po::positional_options_description positional;
  positional.add("command", -1);
  po::variables_map vm;
  if (!parse(args, kUsage, options, positional, vm)) return kExitOk;

  std::vector<std::string> words;
  if (vm.count("command") != 0) words = vm["command"].as<std::vector<std::string>>();
  if (!words.empty() && words.front() != "describe") {
    throw UsageError(fmt::format("unknown plugins subcommand '{}'; expected 'describe NAME'", words.front()));
  }
  if (!words.empty() && words.size() != 2) {
    throw UsageError("'plugins describe' takes exactly one NAME or KIND/NAME");
  }

  PluginHost& host = load_plugins(context, vm, /*strict=*/false);
  if (words.empty()) {
    print_list(host);
  } else {
    print_description(find_component(host, words[1]));
  }
  return host.refused().empty() ? kExitOk : kExitFailure;
}

}  // namespace quadra::cli
