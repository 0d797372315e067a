// Logs and checkpoints of a training run. See run_files.hpp.

#include "run_files.hpp"

#include <fmt/format.h>
#include <fmt/std.h>

#include <cmath>
#include <quadra/error.hpp>
#include <system_error>

namespace quadra::train {

namespace fs = std::filesystem;

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string json_number(double value) {
  // 17 significant digits round-trip a double; JSON has no NaN or infinity.
  return std::isfinite(value) ? fmt::format("{:.17g}", value) : "null";
}

namespace {

/// CSV cell: empty for NaN (spreadsheets and gnuplot skip it), shortest round-trip otherwise.
std::string csv_number(double value) {
  return std::isfinite(value) ? fmt::format("{}", value) : "";
}

constexpr const char* kStepHeader =
    "step,epoch,loss,lambda,rho,accepted,directions,iterations,curvature_products,step_norm,"
    "seconds,note\n";
constexpr const char* kEvalHeader =
    "step,epoch,seconds,train_loss,val_loss,val_accuracy,test_loss,test_accuracy\n";

void open_log(const fs::path& file, bool resume, std::int64_t size, const char* header,
              std::ofstream& stream) {
  if (resume) {
    std::error_code ec;
    const auto actual = fs::file_size(file, ec);
    if (ec || static_cast<std::int64_t>(actual) < size) {
      throw Error(fmt::format("cannot resume: log {} is {} than the checkpoint expects ({} bytes)",
                              file, ec ? "missing or unreadable" : "shorter", size));
    }
    // Lines written after the checkpoint are dropped: the resumed run writes them again.
    fs::resize_file(file, static_cast<std::uintmax_t>(size), ec);
    if (ec) throw Error(fmt::format("cannot truncate {}: {}", file, ec.message()));
    stream.open(file, std::ios::binary | std::ios::app);
  } else {
    stream.open(file, std::ios::binary | std::ios::trunc);
    stream << header;
  }
  if (!stream) throw Error(fmt::format("cannot write {}", file));
}

}  // namespace

RunLogs::RunLogs(const fs::path& dir, bool resume, const std::vector<std::int64_t>& sizes)
    : files_{dir / "steps.csv", dir / "eval.csv", dir / "log.jsonl"} {
  if (resume && sizes.size() != 3) throw Error("checkpoint has no log sizes");
  const auto size = [&](int i) { return resume ? sizes[static_cast<std::size_t>(i)] : 0; };
  open_log(files_[0], resume, size(0), kStepHeader, steps_);
  open_log(files_[1], resume, size(1), kEvalHeader, eval_);
  open_log(files_[2], resume, size(2), "", jsonl_);
}

void RunLogs::step(const StepRecord& r) {
  steps_ << fmt::format("{},{},{},{},{},{},{},{},{},{},{:.3f},{}\n", r.step, csv_number(r.epoch),
                        csv_number(r.loss), csv_number(r.lambda), csv_number(r.rho),
                        r.accepted ? 1 : 0, r.directions, r.iterations, r.curvature_products,
                        csv_number(r.step_norm), r.seconds, r.note);
  jsonl_ << fmt::format(
      "{{\"kind\":\"step\",\"step\":{},\"epoch\":{},\"loss\":{},\"lambda\":{},\"rho\":{},"
      "\"accepted\":{},\"directions\":{},\"iterations\":{},\"curvature_products\":{},"
      "\"step_norm\":{},\"seconds\":{},\"note\":{}}}\n",
      r.step, json_number(r.epoch), json_number(r.loss), json_number(r.lambda), json_number(r.rho),
      r.accepted ? "true" : "false", r.directions, r.iterations, r.curvature_products,
      json_number(r.step_norm), json_number(r.seconds), json_string(r.note));
}

void RunLogs::evaluation(const EvalRecord& r) {
  eval_ << fmt::format("{},{},{:.3f},{},{},{},{},{}\n", r.step, csv_number(r.epoch), r.seconds,
                       csv_number(r.train_loss), csv_number(r.val_loss), csv_number(r.val_accuracy),
                       csv_number(r.test_loss), csv_number(r.test_accuracy));
  jsonl_ << fmt::format(
      "{{\"kind\":\"eval\",\"step\":{},\"epoch\":{},\"seconds\":{},\"train_loss\":{},"
      "\"val_loss\":{},\"val_accuracy\":{},\"test_loss\":{},\"test_accuracy\":{}}}\n",
      r.step, json_number(r.epoch), json_number(r.seconds), json_number(r.train_loss),
      json_number(r.val_loss), json_number(r.val_accuracy), json_number(r.test_loss),
      json_number(r.test_accuracy));
}

void RunLogs::flush() {
  steps_.flush();
  eval_.flush();
  jsonl_.flush();
  if (!steps_ || !eval_ || !jsonl_) {
    throw Error(fmt::format("cannot write the logs in {} (disk full?)", files_[0].parent_path()));
  }
}

std::vector<std::int64_t> RunLogs::sizes() {
  flush();
  std::vector<std::int64_t> out;
  for (const auto& file : files_) out.push_back(static_cast<std::int64_t>(fs::file_size(file)));
  return out;
}

namespace {

std::vector<double> eval_fields(const EvalRecord& e) {
  return {static_cast<double>(e.step),
          e.epoch,
          e.seconds,
          e.train_loss,
          e.val_loss,
          e.val_accuracy,
          e.test_loss,
          e.test_accuracy};
}

EvalRecord eval_from(const std::vector<double>& v, std::size_t at) {
  EvalRecord e;
  e.step = static_cast<std::int64_t>(v[at]);
  e.epoch = v[at + 1];
  e.seconds = v[at + 2];
  e.train_loss = v[at + 3];
  e.val_loss = v[at + 4];
  e.val_accuracy = v[at + 5];
  e.test_loss = v[at + 6];
  e.test_accuracy = v[at + 7];
  return e;
}

io::NpyArray doubles(const std::vector<double>& v) {
  return io::NpyArray::from<double>({static_cast<std::int64_t>(v.size())}, v.data());
}

}  // namespace

void write_checkpoint(const fs::path& file, const Checkpoint& c) {
  const std::vector<std::int64_t> counters = {
      Checkpoint::kLayout,  c.step,          c.rejected,         c.consecutive_failures,
      c.curvature_products, c.sampler_steps, c.gradient_samples, c.epochs_evaluated,
      c.train_loss_count};
  std::vector<double> reals = {c.seconds, c.train_loss_sum};
  for (double x : eval_fields(c.best)) reals.push_back(x);
  for (double x : eval_fields(c.last)) reals.push_back(x);
  std::vector<std::pair<std::string, io::NpyArray>> arrays = {
      {"counters", io::NpyArray::from<std::int64_t>({static_cast<std::int64_t>(counters.size())},
                                                    counters.data())},
      {"reals", doubles(reals)},
      {"log_sizes", io::NpyArray::from<std::int64_t>(
                        {static_cast<std::int64_t>(c.log_sizes.size())}, c.log_sizes.data())},
      {"params", c.params},
      {"solver_state", doubles(c.solver_state)},
      {"damping_state", doubles(c.damping_state)},
      {"identity",
       io::NpyArray::from<std::uint8_t>({static_cast<std::int64_t>(c.identity.size())},
                                        reinterpret_cast<const std::uint8_t*>(c.identity.data()))},
  };
  if (!c.previous_params.bytes.empty()) arrays.emplace_back("previous_params", c.previous_params);
  io::write_npz(file, arrays);
}

Checkpoint read_checkpoint(const fs::path& file) {
  if (!fs::exists(file)) {
    throw Error(
        fmt::format("cannot resume: no checkpoint {}; a run writes it at every "
                    "train.checkpoint_every steps and when it stops",
                    file));
  }
  const auto arrays = io::read_npz(file);
  const auto counters = io::require(arrays, "counters", file).to_vector<std::int64_t>();
  if (counters.empty() || counters[0] != Checkpoint::kLayout || counters.size() != 9) {
    throw Error(fmt::format("{}: checkpoint layout {} with {} counters; expected layout {} with 9",
                            file, counters.empty() ? -1 : counters[0], counters.size(),
                            Checkpoint::kLayout));
  }
  Checkpoint c;
  c.step = counters[1];
  c.rejected = counters[2];
  c.consecutive_failures = counters[3];
  c.curvature_products = counters[4];
  c.sampler_steps = counters[5];
  c.gradient_samples = counters[6];
  c.epochs_evaluated = counters[7];
  c.train_loss_count = counters[8];
  const auto reals = io::require(arrays, "reals", file).to_vector<double>();
  if (reals.size() != 18) {
    throw Error(fmt::format("{}: 'reals' has {} entries; expected 18", file, reals.size()));
  }
  c.seconds = reals[0];
  c.train_loss_sum = reals[1];
  c.best = eval_from(reals, 2);
  c.last = eval_from(reals, 10);
  c.log_sizes = io::require(arrays, "log_sizes", file).to_vector<std::int64_t>();
  c.params = io::require(arrays, "params", file);
  if (auto it = arrays.find("previous_params"); it != arrays.end()) c.previous_params = it->second;
  c.solver_state = io::require(arrays, "solver_state", file).to_vector<double>();
  c.damping_state = io::require(arrays, "damping_state", file).to_vector<double>();
  const auto identity = io::require(arrays, "identity", file).to_vector<std::uint8_t>();
  c.identity.assign(identity.begin(), identity.end());
  return c;
}

}  // namespace quadra::train
