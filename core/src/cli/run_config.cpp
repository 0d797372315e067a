// The summary line of a finished run, shared by train and compare. See run_config.hpp.

#include "run_config.hpp"

#include <fmt/format.h>

namespace quadra::cli {

std::string format_summary_line(const train::RunSummary& s) {
  return fmt::format(
      "{}: {} steps ({} rejected), {} curvature products, {:.1f} s; validation loss {:.4f}, "
      "accuracy {:.2f}%; test accuracy {:.2f}% (best validation loss {:.4f} at step {})",
      s.stop_reason, s.steps, s.rejected_steps, s.curvature_products, s.seconds,
      s.final_eval.val_loss, 100 * s.final_eval.val_accuracy, 100 * s.final_eval.test_accuracy,
      s.best_eval.val_loss, s.best_eval.step);
}

}  // namespace quadra::cli
