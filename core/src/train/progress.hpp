#pragma once
// The progress line a run shows on a terminal: an observer of the loop like any other, so the
// loop itself knows nothing of terminals.

#include <cstdint>
#include <quadra/train/trainer.hpp>
#include <string>

namespace quadra::train {

class ProgressLine final : public TrainObserver {
 public:
  /// `label` starts the line (quadra compare names the optimizer and seed); `epochs` is the
  /// budget in epochs (0: none).
  ProgressLine(std::string label, double epochs) : label_(std::move(label)), epochs_(epochs) {}

  void on_step(const StepRecord& record) override;
  void on_evaluation(const EvalRecord& record) override;
  void on_run_end(const RunSummary& summary) override;

 private:
  void show(double seconds, bool final);

  std::string label_;
  double epochs_;
  double last_shown_ = -1;
  // What the line shows, from the records seen.
  double epoch_ = 0;
  std::int64_t steps_ = 0;
  double lambda_ = 0;
  double loss_sum_ = 0;  // gradient-batch losses since the last evaluation
  std::int64_t loss_count_ = 0;
  double last_train_loss_ = kNaN;
  double val_accuracy_ = kNaN;
};

}  // namespace quadra::train
