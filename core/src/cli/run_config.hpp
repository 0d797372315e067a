#pragma once
// Shared by `quadra train` and `quadra compare`.

#include <cstdint>
#include <optional>
#include <quadra/train/trainer.hpp>
#include <string>
#include <vector>

namespace quadra::cli {

/// "budget of 3 epochs reached: 1170 steps (2 rejected), ...".
std::string format_summary_line(const train::RunSummary& summary);

/// The seeds of `[compare] seeds`, e.g. "0 1 2" or "0,1,2"; {0} when the key is missing. Throws
/// Error naming compare.seeds when the value lists no seed, an entry is not an integer >= 0, or
/// a seed repeats (each seed is one run, in its own directory, per optimizer).
std::vector<std::uint64_t> parse_compare_seeds(const std::optional<std::string>& value);

}  // namespace quadra::cli
