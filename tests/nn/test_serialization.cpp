// Weights and model files: round trips, PyTorch names, and one clear error per kind of fault.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/serialization.hpp>

using namespace quadra;
using namespace quadra::nn;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("quadra_nn_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("weights and model files round-trip", "[nn][io]") {
  TempDir dir;
  const Network net("conv(2,3,pad=1) relu flatten linear(3,bias=false) tanh linear(2)", parse_shape("1x4x4"));
  const Vector<double> theta = net.initial_parameters<double>(5);
  save_weights<double>(dir.path / "w.npz", net, theta);
  CHECK(load_weights<double>(dir.path / "w.npz", net) == theta);
  // float64 weights load into float32 (rounded).
  CHECK(load_weights<float>(dir.path / "w.npz", net) == theta.cast<float>());
  const auto arrays = io::read_npz(dir.path / "w.npz");
  CHECK(arrays.count("0.weight") == 1);
  CHECK(arrays.at("0.weight").shape == std::vector<std::int64_t>{2, 1, 3, 3});
  CHECK(arrays.at("3.weight").shape == std::vector<std::int64_t>{3, 32});
  CHECK(arrays.count("3.bias") == 0);
  CHECK(arrays.at("5.bias").shape == std::vector<std::int64_t>{2});

  save_model<float>(dir.path / "m.npz", net, theta.cast<float>());
  const Model<float> model = load_model<float>(dir.path / "m.npz");
  CHECK(model.network.spec() == net.spec());
  CHECK(model.network.input_shape() == net.input_shape());
  CHECK(model.params == theta.cast<float>());
  // A model file is also a weights file.
  CHECK(load_weights<float>(dir.path / "m.npz", net) == theta.cast<float>());
}

TEST_CASE("bad weight files give one clear error each", "[nn][io]") {
  TempDir dir;
  const Network net("linear(3) tanh linear(2)", parse_shape("4"));
  const Vector<double> theta = net.initial_parameters<double>(1);
  auto arrays = parameters_to_arrays<double>(net, theta);

  auto without = arrays;
  without.erase(without.begin() + 1);
  io::write_npz(dir.path / "missing.npz", without);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "missing.npz", net); }),
             Catch::Contains("missing.npz") && Catch::Contains("0.bias"));

  auto wrong_shape = arrays;
  wrong_shape[0].second = io::NpyArray::from<double>({4, 3}, theta.data());
  io::write_npz(dir.path / "shape.npz", wrong_shape);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "shape.npz", net); }),
             Catch::Contains("array '0.weight' has shape (4, 3)") && Catch::Contains("needs (3, 4)"));

  auto wrong_dtype = arrays;
  const std::vector<std::int64_t> ints(12, 1);
  wrong_dtype[0].second = io::NpyArray::from<std::int64_t>({3, 4}, ints.data());
  io::write_npz(dir.path / "dtype.npz", wrong_dtype);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "dtype.npz", net); }),
             Catch::Contains("dtype int64; expected float32 or float64"));

  auto extra = arrays;
  extra.emplace_back("9.weight", arrays[0].second);
  io::write_npz(dir.path / "extra.npz", extra);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "extra.npz", net); }),
             Catch::Contains("unexpected array '9.weight'"));

  // Truncated and non-NumPy files: the npy reader's errors, naming the file.
  io::write_npz(dir.path / "ok.npz", arrays);
  const std::string bytes = io::read_file_bytes(dir.path / "ok.npz");
  std::ofstream(dir.path / "truncated.npz", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "truncated.npz", net); }),
             Catch::Contains("truncated.npz"));
  std::ofstream(dir.path / "text.npz") << "not numpy at all";
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "text.npz", net); }),
             Catch::Contains("text.npz"));

  // A weights-only file is not a model file.
  CHECK_THAT(error_of([&] { (void)load_model<double>(dir.path / "ok.npz"); }),
             Catch::Contains("not a quadra model file"));
}
