#pragma once
// The `quadra` command line: a table of subcommands and the helpers they share.

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/variables_map.hpp>

#include <quadra/config.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/error.hpp>
#include <quadra/plugin_host.hpp>

namespace quadra::cli {

using Args = std::vector<std::string>;

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  ///< bad input, refused plugin, failed run
inline constexpr int kExitUsage = 2;    ///< unknown subcommand, flag or missing argument

/// A usage mistake: printed with a pointer to the subcommand's --help, exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

/// What a subcommand runs in: the plugin host it creates plugins through. The `quadra`
/// executable passes an empty host, filled with the default plugins when a command first asks;
/// the Python module passes the host `import quadra` filled (strategies written in Python
/// included).
struct Context {
  PluginHost& host;
  bool default_plugins_loaded = false;
};

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args, Context& context);
  /// Runs data-parallel under mpirun (splits its batches across the ranks); the others refuse
  /// to start as several processes.
  bool several_processes = false;
};

/// Every subcommand, in the order `quadra --help` lists them (commands.cpp).
const std::vector<Command>& commands();

/// Parses `args` against `options` (and positionals); returns false after printing help when
/// --help was given. Throws UsageError on unknown flags, missing values or extra arguments.
bool parse(const Args& args, const std::string& usage, boost::program_options::options_description& options,
           const boost::program_options::positional_options_description& positional,
           boost::program_options::variables_map& vm);

/// `--plugin-path DIR` (repeatable), shared by every subcommand that loads plugins.
void add_plugin_path_option(boost::program_options::options_description& options);

/// Loads the built-in plugins and QUADRA_PLUGIN_PATH (unless the context's host has them), then
/// --plugin-path, and returns the host. Libraries refused now are reported on stderr; when
/// `strict`, a refusal is an error.
PluginHost& load_plugins(Context& context, const boost::program_options::variables_map& vm,
                         bool strict);

/// `--config FILE` and repeatable `--set section.key=value`.
void add_config_options(boost::program_options::options_description& options);
/// The config file (if given) with every --set applied in order.
Config read_config(const boost::program_options::variables_map& vm);

/// For the analysis subcommands (spectrum, bias, laplace): loads the plugins (not strict) and
/// returns the options of the [curvature] section, the only one their --config/--set accept.
RawOptions load_curvature_setup(Context& context, const boost::program_options::variables_map& vm);

/// Runs `quadra ARGS...`: the subcommand args[0] with the rest, --help and --version. Usage
/// mistakes are printed with a pointer to --help (exit code 2); other errors propagate.
int run(const Args& args, Context& context);

/// dist::Communicator::run_agreed for a command's setup (reading its inputs) on every rank: an
/// error on any rank becomes every rank's. A UsageError depends on the arguments alone, so
/// every rank throws it, and it passes as it is (exit status 2 and the command's usage hint).
void run_agreed(const dist::Communicator& world, const std::function<void()>& body);

}  // namespace quadra::cli
