#pragma once
// The files of a training run: append-only logs (CSV and JSON lines) that a resume truncates
// back to the checkpoint, and the checkpoint itself (one .npz, written atomically).

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <quadra/io/npy.hpp>
#include <quadra/train/trainer.hpp>
#include <string>
#include <vector>

namespace quadra::train {

/// steps.csv, eval.csv and log.jsonl of one run directory.
class RunLogs {
 public:
  /// Fresh logs with headers (resume = false), or the existing logs truncated to `sizes`.
  RunLogs(const std::filesystem::path& dir, bool resume, const std::vector<std::int64_t>& sizes);
  void step(const StepRecord& r);
  void evaluation(const EvalRecord& r);
  void flush();
  /// Byte sizes of the three files (after flush()), stored in checkpoints.
  [[nodiscard]] std::vector<std::int64_t> sizes();

 private:
  std::filesystem::path files_[3];
  std::ofstream steps_, eval_, jsonl_;
};

/// Everything a resumed run needs besides its config. Field order is the on-disk layout of the
/// "counters" and "reals" arrays; kLayout versions it.
struct Checkpoint {
  static constexpr std::int64_t kLayout = 1;
  std::int64_t step = 0;
  std::int64_t rejected = 0;
  std::int64_t consecutive_failures = 0;
  std::int64_t curvature_products = 0;
  std::int64_t sampler_steps = 0;
  std::int64_t gradient_samples = 0;  ///< samples drawn for the gradient role so far
  std::int64_t epochs_evaluated = 0;  ///< whole epochs whose end was evaluated
  std::int64_t train_loss_count = 0;
  double seconds = 0;
  double train_loss_sum = 0;
  std::vector<std::int64_t> log_sizes;
  EvalRecord best;
  EvalRecord last;
  io::NpyArray params;           ///< float32 or float64, the model's precision
  io::NpyArray previous_params;  ///< empty unless the last step is not yet verified
  std::vector<double> solver_state;
  std::vector<double> damping_state;
  std::string identity;  ///< the config a resume must match
};

void write_checkpoint(const std::filesystem::path& file, const Checkpoint& c);
/// Throws Error naming the file on anything missing, malformed or of another layout.
Checkpoint read_checkpoint(const std::filesystem::path& file);

/// JSON string literal (quotes and escapes) and number (null for NaN and infinities).
std::string json_string(const std::string& text);
std::string json_number(double value);

}  // namespace quadra::train
