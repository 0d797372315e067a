// The summary line of a finished run and the seeds of a comparison, shared by train and compare.
// See run_config.hpp.

#include "run_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include <quadra/error.hpp>

#include "figures.hpp"

namespace quadra::cli {

std::string format_summary_line(const train::RunSummary& s) {
  return fmt::format(
      "{}: {} steps ({} rejected), {} curvature products, {:.1f} s; validation loss {:.4f}, "
      "accuracy {:.2f}%; test accuracy {:.2f}% (best validation loss {:.4f} at step {})",
      s.stop_reason, s.steps, s.rejected_steps, s.curvature_products, s.seconds,
      s.final_eval.val_loss, 100 * s.final_eval.val_accuracy, 100 * s.final_eval.test_accuracy,
      s.best_eval.val_loss, s.best_eval.step);
}

std::vector<std::uint64_t> parse_compare_seeds(const std::optional<std::string>& value) {
  constexpr const char* kExpected =
      "expected integers >= 0 separated by commas or spaces, e.g. 'seeds = 0 1 2'";
  if (!value) return {0};
  const std::vector<std::string> items = split_list(*value);
  if (items.empty()) {
    throw Error(fmt::format("config key compare.seeds is empty; {}", kExpected));
  }
  std::vector<std::uint64_t> seeds;
  for (const std::string& item : items) {
    std::uint64_t seed = 0;
    const char* end = item.data() + item.size();
    const auto [ptr, ec] = std::from_chars(item.data(), end, seed);
    if (ec == std::errc::result_out_of_range && ptr == end) {
      throw Error(fmt::format("config key compare.seeds: '{}' is more than {}; {}", item,
                              std::numeric_limits<std::uint64_t>::max(), kExpected));
    }
    if (ec != std::errc() || ptr != end) {
      throw Error(fmt::format("config key compare.seeds: '{}' is not a seed; {}", item, kExpected));
    }
    // Each seed is one run per optimizer, written to its own seedS directory: a repeat would run
    // twice into the same directory and count twice in the summary.
    if (std::find(seeds.begin(), seeds.end(), seed) != seeds.end()) {
      throw Error(fmt::format(
          "config key compare.seeds lists seed {} twice; expected each seed once", seed));
    }
    seeds.push_back(seed);
  }
  return seeds;
}

}  // namespace quadra::cli
