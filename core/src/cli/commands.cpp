// The table of `quadra` subcommands. Each lives in its own cmd_*.cpp; add one line here.

#include "cli.hpp"

namespace quadra::cli {

int run_plugins(const Args& args);  // cmd_plugins.cpp
int run_config(const Args& args);   // cmd_config.cpp

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"plugins", "list plugins, describe one plugin's options", &run_plugins},
      {"config", "validate a config, create its plugins and print the resolved options",
       &run_config},
  };
  return table;
}

}  // namespace quadra::cli
