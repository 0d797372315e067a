#pragma once
// The files of a training run, apart from the loop: the run directory (locked for the run's
// lifetime, refused when it holds another run), append-only logs (CSV and JSON lines) that a
// resume truncates back to the checkpoint, the checkpoint itself (one .npz, written atomically)
// and the manifest.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <quadra/io/directory_lock.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/train/trainer.hpp>
#include <string>
#include <vector>

#include "run_state.hpp"

namespace quadra::train {

/// train.out for one run: created and locked while the object lives. A fresh run refuses a
/// directory that holds a run (its manifest, checkpoint, model or logs) unless `overwrite`;
/// a resumed or overwriting run first removes temporaries an interrupted write left behind.
class RunDirectory {
 public:
  RunDirectory(const std::filesystem::path& dir, bool resume, bool overwrite);
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return lock_.dir(); }
  [[nodiscard]] std::filesystem::path operator/(const char* file) const { return path() / file; }

 private:
  io::DirectoryLock lock_;
};

/// The files a run writes into its directory (a run "holds" the directory when any exists).
const std::vector<std::string>& run_file_names();
/// The first of them that exists in `dir`, or empty.
std::string run_file_in(const std::filesystem::path& dir);

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

/// Everything a resumed run needs besides its config.
struct Checkpoint {
  static constexpr std::int64_t kLayout = 2;
  RunState state;
  std::vector<std::int64_t> log_sizes;
  io::NpyArray params;           ///< float32 or float64, the model's precision
  io::NpyArray previous_params;  ///< empty unless the last step is not yet verified
  /// The network's buffer values (Network::buffer_values: BatchNorm's running statistics, which
  /// training with batch statistics updates); empty for a model without buffers.
  std::vector<double> buffers;
  std::vector<double> solver_state;
  std::vector<double> damping_state;
  std::string identity;  ///< the config a resume must match
  /// The inputs' preprocessing, recorded as in model files (a resume recomputes it from the
  /// config; the record is for readers of the checkpoint).
  data::FeatureTransform preprocessing;
};

void write_checkpoint(const std::filesystem::path& file, const Checkpoint& c);
/// Throws Error naming the file on anything missing, malformed or of another layout.
Checkpoint read_checkpoint(const std::filesystem::path& file);

/// What manifest.json records about a run.
struct Manifest {
  std::int64_t resumed_from_step = -1;  ///< -1: a fresh run
  std::uint64_t seed = 0;
  int threads = 0;  ///< per process
  int ranks = 1;    ///< processes the run was split across (mpirun)
  /// Mean bytes one process contributed to the collectives of a step (its partial sums and
  /// agreements) in this session of the run; negative when not measured (one process).
  double bytes_sent_per_step = -1.0;
  double collectives_per_step = -1.0;  ///< mean collective calls of a step, likewise
  bool double_precision = false;
  std::string model_spec;
  std::int64_t parameters = 0;
  std::string data_source;
  std::int64_t train_size = 0, validation_size = 0, test_size = 0;
  std::vector<const Component*> plugins;  ///< the components the config chose
  std::string config;                     ///< the resolved config
  /// best.npz: the metric it was chosen by and its evaluation (empty metric: none written).
  std::string best_metric;
  EvalRecord best;
};
void write_manifest(const std::filesystem::path& file, const Manifest& m);

/// JSON string literal (quotes and escapes) and number (null for NaN and infinities).
std::string json_string(const std::string& text);
std::string json_number(double value);

}  // namespace quadra::train
