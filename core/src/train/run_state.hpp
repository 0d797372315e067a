#pragma once
// The training loop's counters in one struct. A checkpoint stores every field under its name
// (see run_files.cpp), so adding a counter is one member and one line in fields().

#include <cstdint>
#include <quadra/train/trainer.hpp>

namespace quadra::train {

struct RunState {
  std::int64_t step = 0;  ///< steps taken, accepted and rejected
  std::int64_t rejected = 0;
  std::int64_t consecutive_failures = 0;
  std::int64_t curvature_products = 0;
  std::int64_t gradient_samples = 0;  ///< samples drawn for the gradient role so far
  std::int64_t epochs_evaluated = 0;  ///< whole epochs whose end was evaluated
  double train_loss_sum = 0;          ///< gradient-batch losses since the last evaluation
  std::int64_t train_loss_count = 0;
  double seconds = 0;  ///< wall time of the run before this process (resumes add up)
  double eval_seconds = 0;  ///< of which evaluating
  EvalRecord best;     ///< the evaluation with the lowest validation loss
  EvalRecord last;
  EvalRecord kept;  ///< the best evaluation by train.keep_best's metric (best.npz holds it)
  std::int64_t evaluations_since_kept = 0;  ///< for train.patience
  double next_eval_seconds = 0;             ///< for train.eval_every_seconds

  /// Calls visit(name, member pointer) for every field, in checkpoint order.
  template <class Visitor>
  static void fields(Visitor&& visit) {
    visit("step", &RunState::step);
    visit("rejected", &RunState::rejected);
    visit("consecutive_failures", &RunState::consecutive_failures);
    visit("curvature_products", &RunState::curvature_products);
    visit("gradient_samples", &RunState::gradient_samples);
    visit("epochs_evaluated", &RunState::epochs_evaluated);
    visit("train_loss_sum", &RunState::train_loss_sum);
    visit("train_loss_count", &RunState::train_loss_count);
    visit("seconds", &RunState::seconds);
    visit("eval_seconds", &RunState::eval_seconds);
    visit("best", &RunState::best);
    visit("last", &RunState::last);
    visit("kept", &RunState::kept);
    visit("evaluations_since_kept", &RunState::evaluations_since_kept);
    visit("next_eval_seconds", &RunState::next_eval_seconds);
  }
};

/// The fields of an evaluation record, for the checkpoint.
template <class Visitor>
void eval_fields(Visitor&& visit) {
  visit("step", &EvalRecord::step);
  visit("epoch", &EvalRecord::epoch);
  visit("seconds", &EvalRecord::seconds);
  visit("train_seconds", &EvalRecord::train_seconds);
  visit("train_loss", &EvalRecord::train_loss);
  visit("val_loss", &EvalRecord::val_loss);
  visit("val_accuracy", &EvalRecord::val_accuracy);
  visit("test_loss", &EvalRecord::test_loss);
  visit("test_accuracy", &EvalRecord::test_accuracy);
}

}  // namespace quadra::train
