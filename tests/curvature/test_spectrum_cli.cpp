// `quadra spectrum` end to end: the eigenvalues it prints against dense eigendecompositions of
// the same matrices computed by PyTorch (tests/fixtures/torch/make_spectrum_fixtures.py), and
// its error messages.

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <quadra/io/npy.hpp>

namespace {

struct Run {
  int status = 0;
  std::string output;  // stdout and stderr
};

Run run_quadra(const std::string& arguments) {
  const std::string command =
      fmt::format("QUADRA_PLUGIN_PATH= '{}' {} 2>&1", QUADRA_EXECUTABLE, arguments);
  Run run;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe) != nullptr) run.output += buffer.data();
  const int raw = ::pclose(pipe);
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return run;
}

/// The numeric lines of a spectrum run after the header line containing `section`.
std::vector<double> eigenvalues(const std::string& output, const std::string& section) {
  std::vector<double> values;
  bool in_section = false;
  std::size_t begin = 0;
  while (begin < output.size()) {
    std::size_t end = output.find('\n', begin);
    if (end == std::string::npos) end = output.size();
    const std::string line = output.substr(begin, end - begin);
    if (line.rfind('#', 0) == 0) {
      in_section = line.find(section) != std::string::npos;
    } else if (in_section && !line.empty()) {
      values.push_back(std::stod(line));
    }
    begin = end + 1;
  }
  return values;
}

std::string fixture(const std::string& name) {
  return std::string(QUADRA_SOURCE_DIR) + "/tests/fixtures/torch/" + name;
}

std::string model_args(const std::string& name) {
  const auto spec = quadra::io::read_npy(fixture(name + "_spec.npy"));
  const std::string text(spec.bytes.begin(), spec.bytes.end());
  return fmt::format("--model '{}' --weights {} --inputs {} --targets {} --precision float64",
                     text, fixture(name + "_weights.npz"), fixture(name + "_x.npy"),
                     fixture(name + "_y.npy"));
}

}  // namespace

TEST_CASE("spectrum reproduces PyTorch's dense eigendecompositions", "[spectrum][torch]") {
  for (const std::string name : {"mlp", "cnn"}) {
    for (const std::string curvature : {"ggn", "hessian"}) {
      INFO(name << " / " << curvature);
      const Run run = run_quadra(fmt::format("spectrum {} --curvature {} --top 5 --bottom 3 "
                                             "--tolerance 1e-10",
                                             model_args(name), curvature));
      INFO(run.output);
      REQUIRE(run.status == 0);
      const auto reference = quadra::io::read_npy(fixture(name + "_" + curvature + "_eigenvalues.npy"))
                                 .to_vector<double>();
      const std::vector<double> top = eigenvalues(run.output, "top 5 eigenvalues");
      const std::vector<double> bottom = eigenvalues(run.output, "bottom 3 eigenvalues");
      REQUIRE(top.size() == 5);
      REQUIRE(bottom.size() == 3);
      const double scale = std::abs(reference.front());
      for (std::size_t i = 0; i < 5; ++i) CHECK(std::abs(top[i] - reference[i]) <= 1e-8 * scale);
      for (std::size_t i = 0; i < 3; ++i) {
        CHECK(std::abs(bottom[i] - reference[reference.size() - 1 - i]) <= 1e-8 * scale);
      }
      CHECK(run.output.find("converged") != std::string::npos);
      CHECK(run.output.find("# trace ") != std::string::npos);
    }
  }
}

TEST_CASE("spectrum's trace estimate is close to the true trace", "[spectrum]") {
  const Run run = run_quadra(fmt::format("spectrum {} --curvature ggn --top 1 --probes 400", model_args("mlp")));
  REQUIRE(run.status == 0);
  const auto reference = quadra::io::read_npy(fixture("mlp_ggn_eigenvalues.npy")).to_vector<double>();
  double trace = 0.0;
  for (double x : reference) trace += x;
  const auto at = run.output.find("# trace ");
  REQUIRE(at != std::string::npos);
  const double estimate = std::stod(run.output.substr(at + 8));
  const double error = std::stod(run.output.substr(run.output.find("+- ", at) + 3));
  CHECK(std::abs(estimate - trace) <= 4.0 * error);
}

TEST_CASE("spectrum writes the density atomically and refuses bad input", "[spectrum]") {
  const std::string density = std::string(QUADRA_BINARY_DIR) + "/spectrum-density.csv";
  std::remove(density.c_str());
  Run run = run_quadra(fmt::format("spectrum {} --top 2 --density {}", model_args("mlp"), density));
  INFO(run.output);
  REQUIRE(run.status == 0);
  FILE* file = std::fopen(density.c_str(), "r");
  REQUIRE(file != nullptr);
  std::array<char, 64> header{};
  REQUIRE(std::fgets(header.data(), header.size(), file) != nullptr);
  std::fclose(file);
  CHECK(std::string(header.data()) == "eigenvalue,density\n");

  run = run_quadra(fmt::format("spectrum {} --curvature ggm", model_args("mlp")));
  CHECK(run.status == 1);
  CHECK_THAT(run.output, Catch::Contains("unknown curvature plugin 'ggm'; available: diag-ef, diag-ggn, "
                                         "empirical-fisher, ggn, hessian, kfac, mc-fisher"));
  run = run_quadra(fmt::format("spectrum {} --top 0", model_args("mlp")));
  CHECK(run.status == 2);
  CHECK_THAT(run.output, Catch::Contains("--top 0 must be in [1, 130]"));
  run = run_quadra(fmt::format("spectrum {} --curvature mc-fisher --set curvature.samples=0", model_args("mlp")));
  CHECK(run.status == 1);
  CHECK_THAT(run.output, Catch::Contains("option 'samples' of curvature 'mc-fisher': 0 is outside the allowed range [1, 1000]"));
  run = run_quadra("spectrum --model 'linear(3)' --top 1");
  CHECK(run.status == 2);
  CHECK_THAT(run.output, Catch::Contains("give the batch as --inputs X.npy --targets y.npy or as --data SOURCE"));
  run = run_quadra(fmt::format("spectrum --model 'linear(3)' --input-shape 7 --inputs {} --targets {}",
                               fixture("mlp_x.npy"), fixture("mlp_y.npy")));
  CHECK(run.status == 1);
  CHECK_THAT(run.output, Catch::Contains("inputs have shape (6, 5) (5 features per sample); the "
                                         "model expects 7 per sample"));
}

TEST_CASE("spectrum draws its batch from a data source", "[spectrum][data]") {
  const Run run = run_quadra("spectrum --model 'linear(8) tanh linear(3)' --data spirals:n=300 "
                             "--batch-size 64 --top 3 --seed 1 --precision float64");
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(eigenvalues(run.output, "top 3 eigenvalues").size() == 3);
  CHECK_THAT(run.output, Catch::Contains("batch of 64 (seed 1)"));
}

TEST_CASE("spectrum --method gram reproduces PyTorch's GGN eigenvalues and the exact trace", "[spectrum][torch][gram]") {
  const Run run = run_quadra(fmt::format("spectrum {} --method gram --top 5 --tolerance 1e-12 "
                                         "--eigenvectors {}/gram-eigenvectors.npy",
                                         model_args("mlp"), QUADRA_BINARY_DIR));
  INFO(run.output);
  REQUIRE(run.status == 0);
  const auto reference = quadra::io::read_npy(fixture("mlp_ggn_eigenvalues.npy")).to_vector<double>();
  const std::vector<double> top = eigenvalues(run.output, "top 5 eigenvalues (Gram matrix");
  REQUIRE(top.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) CHECK(std::abs(top[i] - reference[i]) <= 1e-10 * reference.front());
  double trace = 0.0;
  for (double x : reference) trace += x;
  const auto at = run.output.find("# trace ");
  REQUIRE(at != std::string::npos);
  CHECK(std::stod(run.output.substr(at + 8)) == Approx(trace).epsilon(1e-10));
  const auto vectors = quadra::io::read_npy(std::string(QUADRA_BINARY_DIR) + "/gram-eigenvectors.npy");
  CHECK(vectors.shape == std::vector<std::int64_t>{5, 130});

  Run bad = run_quadra(fmt::format("spectrum {} --method gram --curvature hessian", model_args("mlp")));
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Catch::Contains("--method gram works for --curvature ggn only") &&
                             Catch::Contains("got 'hessian'"));
  bad = run_quadra(fmt::format("spectrum {} --method gram --bottom 2", model_args("mlp")));
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Catch::Contains("--method gram finds the top eigenvalues only"));
  bad = run_quadra(fmt::format("spectrum {} --method eigsh", model_args("mlp")));
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Catch::Contains("--method 'eigsh' is not known; expected lanczos or gram"));
  bad = run_quadra(fmt::format("spectrum {} --method gram --top 2", model_args("cnn")));
  CHECK(bad.status == 1);
  CHECK_THAT(bad.output, Catch::Contains("every parameter layer to be Linear") && Catch::Contains("use Lanczos"));
}
