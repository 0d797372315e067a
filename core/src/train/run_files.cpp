// Logs and checkpoints of a training run. See run_files.hpp.

#include "run_files.hpp"

#include <fmt/format.h>
#include <fmt/std.h>

#include <cmath>
#include <ctime>
#include <map>
#include <quadra/error.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/sdk/build_key.hpp>
#include <quadra/sdk/version.hpp>
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
/// CSV text cell (RFC 4180): quoted, with quotes doubled, when it holds a comma, quote or line
/// break (a rejection reason may quote a plugin's message).
std::string csv_text(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string csv_number(double value) {
  return std::isfinite(value) ? fmt::format("{}", value) : "";
}

constexpr const char* kStepHeader =
    "step,epoch,loss,lambda,rho,accepted,directions,iterations,curvature_products,step_norm,"
    "seconds,propose_seconds,debias_seconds,measure_seconds,note\n";
constexpr const char* kEvalHeader =
    "step,epoch,seconds,train_loss,val_loss,val_accuracy,test_loss,test_accuracy,"
    "train_seconds\n";

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
  steps_ << fmt::format("{},{},{},{},{},{},{},{},{},{},{:.3f},{:.4f},{:.4f},{:.4f},{}\n", r.step,
                        csv_number(r.epoch), csv_number(r.loss), csv_number(r.lambda),
                        csv_number(r.rho), r.accepted ? 1 : 0, r.directions, r.iterations,
                        r.curvature_products, csv_number(r.step_norm), r.seconds, r.propose_seconds,
                        r.debias_seconds, r.measure_seconds, csv_text(r.note));
  jsonl_ << fmt::format(
      "{{\"kind\":\"step\",\"step\":{},\"epoch\":{},\"loss\":{},\"lambda\":{},\"rho\":{},"
      "\"accepted\":{},\"directions\":{},\"iterations\":{},\"curvature_products\":{},"
      "\"step_norm\":{},\"seconds\":{},\"propose_seconds\":{},\"debias_seconds\":{},"
      "\"measure_seconds\":{},\"note\":{}}}\n",
      r.step, json_number(r.epoch), json_number(r.loss), json_number(r.lambda), json_number(r.rho),
      r.accepted ? "true" : "false", r.directions, r.iterations, r.curvature_products,
      json_number(r.step_norm), json_number(r.seconds), json_number(r.propose_seconds),
      json_number(r.debias_seconds), json_number(r.measure_seconds), json_string(r.note));
}

void RunLogs::evaluation(const EvalRecord& r) {
  eval_ << fmt::format("{},{},{:.3f},{},{},{},{},{},{:.3f}\n", r.step, csv_number(r.epoch),
                       r.seconds, csv_number(r.train_loss), csv_number(r.val_loss),
                       csv_number(r.val_accuracy), csv_number(r.test_loss),
                       csv_number(r.test_accuracy), r.train_seconds);
  jsonl_ << fmt::format(
      "{{\"kind\":\"eval\",\"step\":{},\"epoch\":{},\"seconds\":{},\"train_loss\":{},"
      "\"val_loss\":{},\"val_accuracy\":{},\"test_loss\":{},\"test_accuracy\":{},"
      "\"train_seconds\":{}}}\n",
      r.step, json_number(r.epoch), json_number(r.seconds), json_number(r.train_loss),
      json_number(r.val_loss), json_number(r.val_accuracy), json_number(r.test_loss),
      json_number(r.test_accuracy), json_number(r.train_seconds));
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

RunDirectory::RunDirectory(const fs::path& dir, bool resume, bool overwrite)
    : lock_(dir, "train.out") {
  if (resume || overwrite) {
    io::remove_stale_temporaries(dir);
    return;
  }
  if (const std::string file = run_file_in(dir); !file.empty()) {
    throw Error(fmt::format(
        "train.out {} already holds a run ({}); continue it with --resume, replace it with "
        "--overwrite, or choose another train.out",
        dir, file));
  }
}

std::string run_file_in(const fs::path& dir) {
  for (const std::string& name : run_file_names()) {
    std::error_code ec;
    if (fs::exists(dir / name, ec)) return name;
  }
  return {};
}

bool holds_run(const fs::path& dir) { return !run_file_in(dir).empty(); }

const std::vector<std::string>& run_file_names() {
  static const std::vector<std::string> names = {"manifest.json", "checkpoint.npz", "model.npz",
                                                 "best.npz",      "steps.csv",      "eval.csv",
                                                 "log.jsonl"};
  return names;
}

namespace {

/// Checkpoint entries of the run state: "state.NAME", and "state.best.FIELD" for records.
class StateWriter {
 public:
  explicit StateWriter(std::vector<std::pair<std::string, io::NpyArray>>& arrays)
      : arrays_(arrays) {}
  void operator()(const std::string& name, const std::int64_t& v) {
    arrays_.emplace_back("state." + name, io::NpyArray::from<std::int64_t>({}, &v));
  }
  void operator()(const std::string& name, const double& v) {
    arrays_.emplace_back("state." + name, io::NpyArray::from<double>({}, &v));
  }
  void operator()(const std::string& name, const EvalRecord& r) {
    eval_fields([&](const char* field, auto member) { (*this)(name + "." + field, r.*member); });
  }

 private:
  std::vector<std::pair<std::string, io::NpyArray>>& arrays_;
};

class StateReader {
 public:
  StateReader(const std::map<std::string, io::NpyArray>& arrays, const fs::path& file)
      : arrays_(arrays), file_(file) {}
  void operator()(const std::string& name, std::int64_t& v) { v = scalar<std::int64_t>(name); }
  void operator()(const std::string& name, double& v) { v = scalar<double>(name); }
  void operator()(const std::string& name, EvalRecord& r) {
    eval_fields([&](const char* field, auto member) { (*this)(name + "." + field, r.*member); });
  }

 private:
  template <class T>
  T scalar(const std::string& name) {
    const io::NpyArray& a = io::require(arrays_, "state." + name, file_);
    if (a.size() != 1) {
      throw Error(
          fmt::format("{}: 'state.{}' has {} entries; expected one", file_, name, a.size()));
    }
    return a.to_vector<T>().front();
  }
  const std::map<std::string, io::NpyArray>& arrays_;
  const fs::path& file_;
};

io::NpyArray doubles(const std::vector<double>& v) {
  return io::NpyArray::from<double>({static_cast<std::int64_t>(v.size())}, v.data());
}

}  // namespace

void write_checkpoint(const fs::path& file, const Checkpoint& c) {
  std::vector<std::pair<std::string, io::NpyArray>> arrays;
  const std::int64_t layout = Checkpoint::kLayout;
  arrays.emplace_back("layout", io::NpyArray::from<std::int64_t>({}, &layout));
  StateWriter write(arrays);
  RunState::fields([&](const char* name, auto member) { write(name, c.state.*member); });
  arrays.emplace_back(
      "log_sizes", io::NpyArray::from<std::int64_t>({static_cast<std::int64_t>(c.log_sizes.size())},
                                                    c.log_sizes.data()));
  arrays.emplace_back("params", c.params);
  if (!c.previous_params.bytes.empty()) arrays.emplace_back("previous_params", c.previous_params);
  if (!c.buffers.empty()) arrays.emplace_back("buffers", doubles(c.buffers));
  arrays.emplace_back("solver_state", doubles(c.solver_state));
  arrays.emplace_back("damping_state", doubles(c.damping_state));
  for (auto& entry : nn::preprocessing_to_arrays(c.preprocessing))
    arrays.push_back(std::move(entry));
  arrays.emplace_back("identity", io::NpyArray::from<std::uint8_t>(
                                      {static_cast<std::int64_t>(c.identity.size())},
                                      reinterpret_cast<const std::uint8_t*>(c.identity.data())));
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
  const auto layout = arrays.find("layout");
  const std::int64_t found =
      layout == arrays.end() || layout->second.size() != 1
          ? (arrays.count("counters") != 0 ? 1 : -1)  // layout 1 had no "layout" entry
          : layout->second.to_vector<std::int64_t>().front();
  if (found != Checkpoint::kLayout) {
    throw Error(
        fmt::format("{}: checkpoint layout {}; expected layout {} (written by another "
                    "version of quadra: start a new run)",
                    file, found, Checkpoint::kLayout));
  }
  Checkpoint c;
  StateReader read(arrays, file);
  RunState::fields([&](const char* name, auto member) { read(name, c.state.*member); });
  c.log_sizes = io::require(arrays, "log_sizes", file).to_vector<std::int64_t>();
  c.params = io::require(arrays, "params", file);
  if (auto it = arrays.find("previous_params"); it != arrays.end()) c.previous_params = it->second;
  if (auto it = arrays.find("buffers"); it != arrays.end()) {
    c.buffers = it->second.to_vector<double>();
  }
  c.solver_state = io::require(arrays, "solver_state", file).to_vector<double>();
  c.damping_state = io::require(arrays, "damping_state", file).to_vector<double>();
  const auto identity = io::require(arrays, "identity", file).to_vector<std::uint8_t>();
  c.identity.assign(identity.begin(), identity.end());
  return c;
}

namespace {

std::string iso_time_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

}  // namespace

void write_manifest(const fs::path& file, const Manifest& m) {
  const EvalRecord& b = m.best;
  const std::string best =
      m.best_metric.empty()
          ? std::string("null")
          : fmt::format(
                "{{\"file\": \"best.npz\", \"metric\": {}, \"step\": {}, \"epoch\": {}, "
                "\"val_loss\": {}, \"val_accuracy\": {}, \"test_loss\": {}, "
                "\"test_accuracy\": {}}}",
                json_string(m.best_metric), b.step, json_number(b.epoch), json_number(b.val_loss),
                json_number(b.val_accuracy), json_number(b.test_loss),
                json_number(b.test_accuracy));
  std::string plugins;
  for (const Component* c : m.plugins) {
    plugins += fmt::format(
        "{}    {{\"kind\": {}, \"name\": {}, \"library\": {}, \"version\": {}, "
        "\"file\": {}}}",
        plugins.empty() ? "" : ",\n", json_string(to_string(c->kind)), json_string(c->info.name),
        json_string(c->library_name), json_string(c->library_version),
        json_string(c->file.string()));
  }
  const std::string text = fmt::format(
      "{{\n  \"quadra\": {},\n  \"plugin_abi\": {},\n  \"build_key\": {},\n  \"written\": {},\n"
      "  \"resumed_from_step\": {},\n  \"seed\": {},\n  \"threads\": {},\n  \"ranks\": {},\n"
      "  \"bytes_sent_per_step\": {},\n  \"collectives_per_step\": {},\n  \"precision\": {},\n"
      "  \"model\": {{\"spec\": {}, \"parameters\": {}}},\n"
      "  \"data\": {{\"source\": {}, \"train\": {}, \"validation\": {}, \"test\": {}}},\n"
      "  \"plugins\": [\n{}\n  ],\n  \"best\": {},\n  \"config\": {}\n}}\n",
      json_string(QUADRA_SDK_VERSION_STRING), QUADRA_PLUGIN_ABI_VERSION,
      json_string(QUADRA_BUILD_KEY), json_string(iso_time_now()),
      m.resumed_from_step < 0 ? "null" : std::to_string(m.resumed_from_step), m.seed, m.threads,
      m.ranks, m.bytes_sent_per_step < 0 ? "null" : json_number(m.bytes_sent_per_step),
      m.collectives_per_step < 0 ? "null" : json_number(m.collectives_per_step),
      json_string(m.double_precision ? "float64" : "float32"), json_string(m.model_spec),
      m.parameters, json_string(m.data_source), m.train_size, m.validation_size, m.test_size,
      plugins, best, json_string(m.config));
  io::write_file_atomically(file, text);
}

}  // namespace quadra::train
