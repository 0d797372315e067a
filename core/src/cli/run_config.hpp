#pragma once
// Shared by `quadra train` and `quadra compare`.

#include <quadra/train/trainer.hpp>
#include <string>

namespace quadra::cli {

/// "budget of 3 epochs reached: 1170 steps (2 rejected), ...".
std::string format_summary_line(const train::RunSummary& summary);

}  // namespace quadra::cli
