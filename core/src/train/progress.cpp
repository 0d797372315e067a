// The progress line. See progress.hpp.

#include "progress.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>

namespace quadra::train {

void ProgressLine::on_step(const StepRecord& record) {
  epoch_ = record.epoch;
  steps_ = record.step + 1;
  lambda_ = record.lambda;
  if (std::isfinite(record.loss)) {
    loss_sum_ += record.loss;
    ++loss_count_;
  }
  show(record.seconds, false);
}

void ProgressLine::on_evaluation(const EvalRecord& record) {
  epoch_ = record.epoch;
  steps_ = record.step;
  last_train_loss_ = record.train_loss;
  val_accuracy_ = record.val_accuracy;
  loss_sum_ = 0;
  loss_count_ = 0;
}

void ProgressLine::on_run_end(const RunSummary& summary) { show(summary.seconds, true); }

void ProgressLine::show(double seconds, bool final) {
  if (!final && seconds - last_shown_ < 0.2) return;  // a few updates per second at most
  last_shown_ = seconds;
  const std::string budget = epochs_ > 0 ? fmt::format("/{:g}", epochs_) : std::string();
  const double loss =
      loss_count_ > 0 ? loss_sum_ / static_cast<double>(loss_count_) : last_train_loss_;
  const std::string accuracy =
      std::isfinite(val_accuracy_) ? fmt::format("{:.2f}%", 100 * val_accuracy_) : "-";
  std::fprintf(stderr,
               "\r%s epoch %.2f%s  step %lld  loss %.4f  val acc %s  lambda %.2g  %.0fs   %s",
               label_.c_str(), epoch_, budget.c_str(), static_cast<long long>(steps_), loss,
               accuracy.c_str(), lambda_, seconds, final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace quadra::train
