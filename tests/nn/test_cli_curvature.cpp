// `quadra curvature` end to end: outputs on the PyTorch fixtures, and the error for each kind
// of mismatch a researcher can make.

#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <quadra/io/npy.hpp>

using namespace quadra;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(QUADRA_SOURCE_DIR) / "tests/fixtures/torch";

struct Run {
  int status;
  std::string output;
};

Run quadra_run(const std::string& args) {
  const std::string command = std::string(QUADRA_EXE) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) output += buffer.data();
  const int raw = ::pclose(pipe);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, output};
}

std::string fx(const std::string& file) { return (kFixtures / file).string(); }

std::vector<double> values(const fs::path& file) { return io::read_npy(file).to_vector<double>(); }

double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0;
  double norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff / norm);
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("quadra_cli_curvature_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("quadra curvature reproduces the PyTorch fixtures in float64", "[cli][nn]") {
  TempDir dir;
  const std::string spec = "'conv(3,3,pad=1) relu maxpool(2) conv(4,2,bias=false) softplus avgpool(2,stride=1) flatten linear(3)'";
  const Run run = quadra_run("curvature --model " + spec + " --weights " + fx("cnn_weights.npz") +
                             " --inputs " + fx("cnn_x.npy") + " --targets " + fx("cnn_y.npy") +
                             " --vector " + fx("cnn_v.npy") + " --precision float64 --threads 2 --diagonals --out " +
                             dir.path.string());
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK_THAT(run.output, Catch::Contains("wrote loss.npy"));
  CHECK(values(dir.path / "loss.npy")[0] == Approx(values(kFixtures / "cnn_loss_value.npy")[0]).epsilon(1e-12));
  CHECK(io::read_npy(dir.path / "grad.npy").dtype == io::DType::kFloat64);
  for (const char* name : {"grad", "ggn_v", "hessian_v", "ef_v", "ggn_diag"}) {
    INFO(name);
    CHECK(rel(values(dir.path / (std::string(name) + ".npy")), values(kFixtures / ("cnn_" + std::string(name) + ".npy"))) < 1e-10);
  }
  CHECK(fs::exists(dir.path / "mc_fisher_v.npy"));
  CHECK(fs::exists(dir.path / "ef_diag.npy"));

  // float32 by default; MSE targets; input shape taken from X.
  const Run f32 = quadra_run("curvature --model 'linear(6) sigmoid linear(3)' --weights " + fx("mlp_mse_weights.npz") +
                             " --inputs " + fx("mlp_mse_x.npy") + " --targets " + fx("mlp_mse_y.npy") +
                             " --loss mse --out " + dir.path.string());
  INFO(f32.output);
  REQUIRE(f32.status == 0);
  CHECK(io::read_npy(dir.path / "grad.npy").dtype == io::DType::kFloat32);
  CHECK(rel(values(dir.path / "grad.npy"), values(kFixtures / "mlp_mse_grad.npy")) < 1e-5);
}

TEST_CASE("quadra curvature names every mismatch", "[cli][nn]") {
  TempDir dir;
  const std::string out = " --out " + dir.path.string();
  const std::string mlp = "--model 'linear(8) tanh linear(6) gelu linear(4)' ";
  const std::string data = " --inputs " + fx("mlp_x.npy") + " --targets " + fx("mlp_y.npy");
  auto expect = [&](const std::string& args, int status, const std::string& text) {
    const Run run = quadra_run("curvature " + args);
    INFO(args << "\n" << run.output);
    CHECK(run.status == status);
    CHECK_THAT(run.output, Catch::Contains(text));
  };
  expect(mlp + "--input-shape 7" + data + out, 1, "inputs have shape (6, 5) (5 features per sample); the model expects 7");
  expect(mlp + data + " --vector " + fx("cnn_v.npy") + out, 1, "cnn_v.npy\": vector has shape (120,); expected (130,)");
  expect(mlp + data + " --loss mse" + out, 1, "mse targets have dtype int64; expected float32 or float64");
  expect(mlp + " --inputs " + fx("mlp_x.npy") + " --targets " + fx("cnn_y.npy") + out, 1,
         "targets have shape (5,); expected (6,), one label per input");
  expect(mlp + " --inputs " + fx("mlp_y.npy") + " --targets " + fx("mlp_y.npy") + out, 1,
         "inputs have shape (6,); expected N x features");
  expect(mlp + data + " --weights " + fx("cnn_weights.npz") + out, 1, "cnn_weights.npz\": array '0.weight' has shape (3, 2, 3, 3)");
  expect("--model 'linear(8) tnah' " + data + out, 1, "token 2 'tnah' at character 11: unknown layer");
  expect(mlp + data + " --precision half" + out, 2, "--precision 'half' is not float32 or float64");
  expect(mlp + data, 2, "the option '--out' is required");
  expect(mlp + data + " --loss hinge" + out, 1, "unknown loss 'hinge'; expected cross-entropy or mse");
  expect(mlp + " --inputs /nonexistent/x.npy --targets " + fx("mlp_y.npy") + out, 1, "/nonexistent/x.npy");
}

TEST_CASE("quadra curvature refuses non-finite inputs, weights and vectors", "[cli][nn]") {
  TempDir dir;
  const std::string out = " --out " + (dir.path / "out").string();
  const std::string mlp = "--model 'linear(8) tanh linear(6) gelu linear(4)' ";
  const std::string targets = " --targets " + fx("mlp_y.npy");
  const io::NpyArray x = io::read_npy(fx("mlp_x.npy"));
  std::vector<double> values = x.to_vector<double>();
  auto expect = [&](const std::string& args, int status, const std::string& text) {
    const Run run = quadra_run("curvature " + args);
    INFO(args << "\n" << run.output);
    CHECK(run.status == status);
    CHECK_THAT(run.output, Catch::Contains(text));
  };
  values[12] = std::numeric_limits<double>::quiet_NaN();
  io::write_npy(dir.path / "x_nan.npy", io::NpyArray::from<double>(x.shape, values.data()));
  for (const char* precision : {"float32", "float64"}) {
    expect(mlp + "--inputs " + (dir.path / "x_nan.npy").string() + targets + out + " --precision " +
               precision,
           1, "x_nan.npy\": element 12 (index (2, 2)) is nan; expected finite numbers");
  }
  values[12] = -3e39;
  io::write_npy(dir.path / "x_big.npy", io::NpyArray::from<double>(x.shape, values.data()));
  expect(mlp + "--inputs " + (dir.path / "x_big.npy").string() + targets + out, 1,
         "x_big.npy\": element 12 (index (2, 2)) is -3e+39, which overflows float32");
  std::vector<double> v(130, 0.5);
  v[129] = std::numeric_limits<double>::infinity();
  io::write_npy(dir.path / "v_inf.npy", io::NpyArray::from<double>({130}, v.data()));
  expect(mlp + "--inputs " + fx("mlp_x.npy") + targets + " --vector " +
             (dir.path / "v_inf.npy").string() + out,
         1, "v_inf.npy\": element 129 is inf; expected finite numbers");
  expect(mlp + "--inputs /dev/zero" + targets + out, 1,
         "cannot read /dev/zero: it is a character device; expected a regular file");
}

TEST_CASE("quadra curvature takes vectors and writes results keyed by parameter name", "[cli][nn]") {
  TempDir dir;
  const std::string cnn = "--model 'conv(3,3,pad=1) relu maxpool(2) conv(4,2,bias=false) softplus avgpool(2,stride=1) flatten linear(3)' --weights " +
                          fx("cnn_weights.npz") + " --inputs " + fx("cnn_x.npy") + " --targets " + fx("cnn_y.npy") +
                          " --precision float64 --diagonals";
  const auto run = [&](const std::string& vector, const fs::path& out) {
    const Run r = quadra_run("curvature " + cnn + " --vector " + vector + " --out " + out.string());
    INFO(r.output);
    REQUIRE(r.status == 0);
  };
  run(fx("cnn_v.npy"), dir.path / "flat");

  // Every per-parameter result twice: flat, and in state_dict shapes whose concatenation is it.
  for (const char* name : {"grad", "ggn_v", "hessian_v", "ef_v", "mc_fisher_v", "ggn_diag", "ef_diag"}) {
    INFO(name);
    const auto flat = values(dir.path / "flat" / (std::string(name) + ".npy"));
    const auto keyed = io::read_npz(dir.path / "flat" / (std::string(name) + ".npz"));
    REQUIRE(keyed.size() == 5);
    CHECK(keyed.at("0.weight").shape == std::vector<std::int64_t>{3, 2, 3, 3});
    CHECK(keyed.at("3.weight").shape == std::vector<std::int64_t>{4, 3, 2, 2});
    CHECK(keyed.at("7.bias").shape == std::vector<std::int64_t>{3});
    std::vector<double> joined;
    for (const char* key : {"0.weight", "0.bias", "3.weight", "7.weight", "7.bias"}) {
      const auto part = keyed.at(key).to_vector<double>();
      joined.insert(joined.end(), part.begin(), part.end());
    }
    CHECK(joined == flat);
  }

  // The keyed form of a vector gives bitwise the results of its flat form.
  run((dir.path / "flat" / "ggn_v.npz").string(), dir.path / "keyed");
  run((dir.path / "flat" / "ggn_v.npy").string(), dir.path / "again");
  for (const char* name : {"ggn_v", "hessian_v", "ef_v", "mc_fisher_v"}) {
    INFO(name);
    CHECK(values(dir.path / "keyed" / (std::string(name) + ".npy")) ==
          values(dir.path / "again" / (std::string(name) + ".npy")));
  }

  // A key missing, unknown or of the wrong shape is named.
  auto arrays = io::read_npz(dir.path / "flat" / "grad.npz");
  const auto refused = [&](const std::map<std::string, io::NpyArray>& a, const std::string& text) {
    std::vector<std::pair<std::string, io::NpyArray>> list(a.begin(), a.end());
    const fs::path file = dir.path / "bad.npz";
    io::write_npz(file, list);
    const Run r = quadra_run("curvature " + cnn + " --vector " + file.string() + " --out " +
                             (dir.path / "bad").string());
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Catch::Contains(text));
  };
  auto missing = arrays;
  missing.erase("3.weight");
  refused(missing, "bad.npz: missing array '3.weight'; found: 0.bias, 0.weight, 7.bias, 7.weight");
  auto unknown = arrays;
  unknown.emplace("5.weight", arrays.at("7.bias"));
  refused(unknown, "bad.npz\": unexpected array '5.weight'");
  auto reshaped = arrays;
  reshaped.at("0.weight").shape = {6, 9};  // the 54 entries of (3, 2, 3, 3)
  refused(reshaped, "bad.npz\": array '0.weight' has shape (6, 9); the network");
}
