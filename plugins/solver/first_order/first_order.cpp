// First-order baselines: `sgd` (heavy-ball or Nesterov momentum) and `adam`, with PyTorch's
// update formulas (torch.optim.SGD with dampening 0, torch.optim.Adam without amsgrad). Each
// proposes one direction, its whole update, with own coefficient 1, so a debiasing strategy
// that re-estimates coefficients can only rescale it.
//
// Weight decay is not an option here: the loop adds it to the model's gradient (eta theta), so
// `adam` with weight decay is Adam with L2 regularisation (torch.optim.Adam's weight_decay),
// not AdamW.
//
// Buffers advance in propose(); a rejected step restores them from a copy taken there, so the
// next proposal is the one an uninterrupted run without that step would have made.

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

using quadra::Index;
using quadra::Status;
using Vec = quadra::Vector<double>;

constexpr int kLayoutVersion = 1;

/// Constructors throw on invalid combinations the schema cannot express; the registrar's
/// factory thunk turns that into a Status naming the option.
void require_below_one(const char* component, const char* option, double value) {
  if (!(value < 1.0)) {
    throw std::invalid_argument(std::string(component) + ": option '" + option +
                                "' must be below 1, found " + quadra::format_number(value));
  }
}

Status read_gradient(const char* component, quadra::IQuadraticModel& model, Vec& g) {
  g.resize(model.num_parameters());
  if (Status s = model.gradient(g); !s.is_ok()) return s;
  if (!g.allFinite()) {
    return Status::numerical_issue(std::string(component) + ": the gradient has non-finite entries");
  }
  return Status::ok();
}

class Sgd final : public quadra::Solver {
 public:
  explicit Sgd(const quadra::OptionValues& options)
      : learning_rate_(options.get_real("learning_rate")),
        momentum_(options.get_real("momentum")),
        nesterov_(options.get_bool("nesterov")) {
    require_below_one("sgd", "momentum", momentum_);
    if (nesterov_ && !(momentum_ > 0.0)) {
      throw std::invalid_argument("sgd: option 'nesterov' needs option 'momentum' > 0, found 0");
    }
  }

  bool uses_curvature() const override { return false; }

  Status propose(quadra::IQuadraticModel& model, double /*lambda*/,
                 quadra::Directions& out) override {
    Vec g;
    if (Status s = read_gradient("sgd", model, g); !s.is_ok()) return s;
    if (buffer_.size() != 0 && buffer_.size() != g.size()) {
      return Status::invalid_argument("sgd: the momentum buffer has " +
                                      std::to_string(buffer_.size()) + " entries, the model " +
                                      std::to_string(g.size()) + " parameters");
    }
    saved_buffer_ = buffer_;
    saved_steps_ = steps_;
    pending_ = true;

    out.basis.resize(g.size(), 1);
    if (momentum_ > 0.0) {
      if (buffer_.size() == 0) {
        buffer_ = g;  // PyTorch starts the buffer at the first gradient, not at zero
      } else {
        buffer_ = momentum_ * buffer_ + g;
      }
      if (nesterov_) {
        out.basis.col(0) = -learning_rate_ * (g + momentum_ * buffer_);
      } else {
        out.basis.col(0) = -learning_rate_ * buffer_;
      }
    } else {
      out.basis.col(0) = -learning_rate_ * g;
    }
    ++steps_;
    out.own_coefficients = Vec::Ones(1);
    out.iterations = 0;
    return Status::ok();
  }

  void step_taken(quadra::ConstVectorRef<double> /*step*/, bool accepted) override {
    if (pending_ && !accepted) {
      buffer_.swap(saved_buffer_);
      steps_ = saved_steps_;
    }
    pending_ = false;
  }

  // Layout: {version 1, steps, n, buffer[n]}; n = 0 before the first momentum step.
  Status save_state(std::vector<double>& out) const override {
    out.reserve(3 + static_cast<std::size_t>(buffer_.size()));
    quadra::StateWriter(out, kLayoutVersion).count(steps_).count(buffer_.size()).vector(buffer_);
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("sgd", state, kLayoutVersion,
                               "{version 1, steps, n, n buffer entries}");
    std::int64_t steps = 0;
    Index n = 0;
    Vec buffer;
    reader.count("step count", steps);
    reader.count("buffer size n", n);
    reader.vector("momentum buffer", n, buffer);
    if (Status s = reader.finish(); !s.is_ok()) return s;
    if (n > 0 && !(momentum_ > 0.0)) {
      return Status::invalid_argument(
          "sgd: checkpoint state holds a momentum buffer, but option 'momentum' is 0");
    }
    buffer_ = std::move(buffer);
    steps_ = steps;
    pending_ = false;
    return Status::ok();
  }

 private:
  double learning_rate_;
  double momentum_;
  bool nesterov_;
  Vec buffer_;  // empty until the first step with momentum
  std::int64_t steps_ = 0;
  Vec saved_buffer_;
  std::int64_t saved_steps_ = 0;
  bool pending_ = false;  // a proposal awaits step_taken()
};

class Adam final : public quadra::Solver {
 public:
  explicit Adam(const quadra::OptionValues& options)
      : learning_rate_(options.get_real("learning_rate")),
        beta1_(options.get_real("beta1")),
        beta2_(options.get_real("beta2")),
        epsilon_(options.get_real("epsilon")) {
    require_below_one("adam", "beta1", beta1_);
    require_below_one("adam", "beta2", beta2_);
  }

  bool uses_curvature() const override { return false; }

  Status propose(quadra::IQuadraticModel& model, double /*lambda*/,
                 quadra::Directions& out) override {
    Vec g;
    if (Status s = read_gradient("adam", model, g); !s.is_ok()) return s;
    if (first_.size() != 0 && first_.size() != g.size()) {
      return Status::invalid_argument("adam: the moment buffers have " +
                                      std::to_string(first_.size()) + " entries, the model " +
                                      std::to_string(g.size()) + " parameters");
    }
    saved_first_ = first_;
    saved_second_ = second_;
    saved_steps_ = steps_;
    pending_ = true;

    if (first_.size() == 0) {
      first_ = Vec::Zero(g.size());
      second_ = Vec::Zero(g.size());
    }
    ++steps_;
    first_ = beta1_ * first_ + (1.0 - beta1_) * g;
    second_ = beta2_ * second_ + (1.0 - beta2_) * g.cwiseProduct(g);
    const double t = static_cast<double>(steps_);
    const double bias_correction1 = 1.0 - std::pow(beta1_, t);
    const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(beta2_, t));
    const double step_size = learning_rate_ / bias_correction1;
    const Vec denom = (second_.array().sqrt() / bias_correction2_sqrt + epsilon_).matrix();
    out.basis.resize(g.size(), 1);
    out.basis.col(0) = -step_size * first_.cwiseQuotient(denom);
    out.own_coefficients = Vec::Ones(1);
    out.iterations = 0;
    if (!out.basis.allFinite()) {
      restore();  // a failed proposal leaves no trace either
      return Status::numerical_issue("adam: the update has non-finite entries");
    }
    return Status::ok();
  }

  void step_taken(quadra::ConstVectorRef<double> /*step*/, bool accepted) override {
    if (!accepted) restore();
    pending_ = false;
  }

  // Layout: {version 1, steps, n, first moment[n], second moment[n]}; n = 0 before step 1.
  Status save_state(std::vector<double>& out) const override {
    out.reserve(3 + 2 * static_cast<std::size_t>(first_.size()));
    quadra::StateWriter(out, kLayoutVersion)
        .count(steps_)
        .count(first_.size())
        .vector(first_)
        .vector(second_);
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("adam", state, kLayoutVersion,
                               "{version 1, steps, n, n first-moment entries, n second-moment "
                               "entries}");
    std::int64_t steps = 0;
    Index n = 0;
    Vec first, second;
    reader.count("step count", steps);
    reader.count("moment size n", n);
    reader.vector("first moment", n, first);
    reader.vector("second moment", n, second, quadra::StateRange::kNonNegative);
    if (Status s = reader.finish(); !s.is_ok()) return s;
    if ((n > 0) != (steps > 0)) {
      return Status::invalid_argument("adam: checkpoint state has " + std::to_string(steps) +
                                      " steps and moments of size " + std::to_string(n) +
                                      "; expected both zero or both positive");
    }
    first_ = std::move(first);
    second_ = std::move(second);
    steps_ = steps;
    pending_ = false;
    return Status::ok();
  }

 private:
  void restore() {
    if (!pending_) return;
    first_.swap(saved_first_);
    second_.swap(saved_second_);
    steps_ = saved_steps_;
    pending_ = false;
  }

  double learning_rate_;
  double beta1_;
  double beta2_;
  double epsilon_;
  Vec first_;   // empty until the first step
  Vec second_;
  std::int64_t steps_ = 0;
  Vec saved_first_;
  Vec saved_second_;
  std::int64_t saved_steps_ = 0;
  bool pending_ = false;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<Sgd>(
      {"sgd", "stochastic gradient descent with optional heavy-ball or Nesterov momentum",
       {OptionSpec::real("learning_rate", 0.1, "step size").greater_than(0.0),
        OptionSpec::real("momentum", 0.0, "momentum factor, below 1").in_range(0.0, 1.0),
        OptionSpec::boolean("nesterov", false, "Nesterov momentum (needs momentum > 0)")}});
  registrar.add<Adam>(
      {"adam", "Adam with bias correction (PyTorch's formulas)",
       {OptionSpec::real("learning_rate", 1e-3, "step size").greater_than(0.0),
        OptionSpec::real("beta1", 0.9, "decay of the first moment, below 1").in_range(0.0, 1.0),
        OptionSpec::real("beta2", 0.999, "decay of the second moment, below 1").in_range(0.0, 1.0),
        OptionSpec::real("epsilon", 1e-8, "added to the root of the second moment")
            .greater_than(0.0)}});
}

}  // namespace

QUADRA_PLUGIN("first-order-solvers", "1.0.0", register_components)
