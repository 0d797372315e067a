// The table of `quadra` subcommands. Each lives in its own cmd_*.cpp; add one line here.

#include "cli.hpp"

namespace quadra::cli {

int run_plugins(const Args& args, Context& context);  // cmd_plugins.cpp
int run_config(const Args& args, Context& context);   // cmd_config.cpp
int run_curvature(const Args& args, Context& context);  // cmd_curvature.cpp
int run_data(const Args& args, Context& context);       // cmd_data.cpp
int run_spectrum(const Args& args, Context& context);   // cmd_spectrum.cpp
int run_train(const Args& args, Context& context);      // cmd_train.cpp
int run_compare(const Args& args, Context& context);    // cmd_compare.cpp
int run_bias(const Args& args, Context& context);       // cmd_bias.cpp
int run_laplace(const Args& args, Context& context);    // cmd_laplace.cpp
int run_predict(const Args& args, Context& context);    // cmd_predict.cpp
int run_model(const Args& args, Context& context);      // cmd_model.cpp

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"plugins", "list plugins, describe one plugin's options", &run_plugins},
      {"config", "validate a config, create its plugins and print the resolved options",
       &run_config},
      {"model", "describe a model: layers, output shapes, FLOPs, parameter names and offsets",
       &run_model},
      {"curvature", "loss, gradient and exact curvature products of a model on one batch", &run_curvature,
       true},
      {"data", "describe a data source: splits, shapes, classes, statistics", &run_data},
      {"spectrum", "top eigenvalues, trace and spectral density of a curvature on one batch",
       &run_spectrum, true},
      {"train", "train a model with an optimizer composed of plugins, as a config describes",
       &run_train, true},
      {"compare", "train several optimizers x seeds on the same budget and compare them",
       &run_compare, true},
      {"bias", "measure the mini-batch quadratic's bias: same-batch vs independent vs full batch",
       &run_bias, true},
      {"laplace", "Laplace posterior of a trained classifier, same-data vs debiased: calibration, shift, OOD",
       &run_laplace, true},
      {"predict",
       "class probabilities of the MAP network or a saved Laplace posterior on any inputs",
       &run_predict, true},
  };
  return table;
}

}  // namespace quadra::cli
