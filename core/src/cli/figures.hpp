#pragma once
// Small helpers shared by subcommands: comma/space-separated lists and gnuplot figures.

#include <filesystem>
#include <string>
#include <vector>

namespace quadra::cli {

/// "a, b c" -> {"a", "b", "c"}: items separated by commas, spaces or tabs.
std::vector<std::string> split_list(const std::string& text);

/// Writes `script` to DIR/NAME.gp and runs gnuplot on it in DIR when gnuplot is installed.
/// Prints where the figure is, that gnuplot is missing, or that it failed (see DIR/NAME.log);
/// returns whether the figure was rendered. `prefix` starts the printed line.
bool render_figure(const std::filesystem::path& dir, const std::string& name,
                   const std::string& script, const std::string& prefix);

}  // namespace quadra::cli
