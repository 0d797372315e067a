// Early stopping on top of quadra's training loop: a TrainObserver watches every evaluation
// and ends the run when the validation loss has not improved for `patience` evaluations.
//
//   early_stopping CONFIG [PATIENCE] [section.key=value]...
//
// CONFIG is any `quadra train` config; the built-in plugins are found next to the quadra
// installation (QUADRA_PLUGIN_PATH adds more). The program shows the library API a tool or
// experiment script builds on: configs, plugins, data, the loop and its hooks.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <quadra/error.hpp>
#include <quadra/train/trainer.hpp>
#include <string>

namespace {

class EarlyStopping final : public quadra::train::TrainObserver {
 public:
  explicit EarlyStopping(int patience) : patience_(patience) {}

  void on_evaluation(const quadra::train::EvalRecord& r) override {
    if (r.val_loss < best_) {
      best_ = r.val_loss;
      best_step_ = r.step;
      stale_ = 0;
    } else {
      ++stale_;
    }
  }

  std::string stop_reason() override {
    if (stale_ < patience_) return {};
    return fmt::format(
        "early stop: validation loss {:.4f} at step {} was not improved in {} "
        "evaluations",
        best_, best_step_, stale_);
  }

 private:
  int patience_;
  int stale_ = 0;
  double best_ = std::numeric_limits<double>::infinity();
  std::int64_t best_step_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: early_stopping CONFIG [PATIENCE] [section.key=value]...\n";
    return 2;
  }
  try {
    quadra::Config config = quadra::Config::from_file(argv[1]);
    const int patience = argc > 2 ? std::atoi(argv[2]) : 3;
    for (int i = 3; i < argc; ++i) config.apply_override(argv[i]);

    quadra::PluginHost host;
    if (auto s = host.load_default_paths({}); !s.is_ok()) throw quadra::Error(s.message());
    const quadra::train::ResolvedRun run = quadra::train::resolve_run(config, host);
    const quadra::data::DataSplits data = quadra::train::load_run_data(run.settings);

    EarlyStopping stopper(patience < 1 ? 1 : patience);
    quadra::train::RunRequest request;
    request.settings = run.settings;
    request.optimizer = &run.optimizer;
    request.host = &host;
    request.data = &data;
    request.resolved_config = run.resolved_config;
    request.observers = {&stopper};
    request.overwrite = true;  // an experiment script reruns into the same train.out
    const quadra::train::RunSummary s = quadra::train::run_training(request);
    std::cout << fmt::format("{} after {} steps; best validation loss {:.4f} (step {})\n",
                             s.stop_reason, s.steps, s.best_eval.val_loss, s.best_eval.step);
    return s.failed ? 1 : 0;
  } catch (const quadra::Error& e) {
    std::cerr << "early_stopping: " << e.what() << "\n";
    return 1;
  }
}
