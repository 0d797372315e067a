// Weights and model files: round trips, PyTorch names, and one clear error per kind of fault.

#include <fmt/format.h>
#include <fmt/std.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/serialization.hpp>
#include <vector>

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

TEST_CASE("weights must be finite, and fit the precision they load into", "[nn][io]") {
  TempDir dir;
  const Network net("linear(3) tanh linear(2)", parse_shape("4"));
  const Vector<double> theta = net.initial_parameters<double>(1);
  auto arrays = parameters_to_arrays<double>(net, theta);
  const fs::path file = dir.path / "w.npz";
  const std::string quoted = fmt::format("{}", file);  // as messages quote paths

  auto with_nan = arrays;
  std::vector<double> w(theta.data(), theta.data() + 12);
  w[5] = std::numeric_limits<double>::quiet_NaN();
  with_nan[0].second = io::NpyArray::from<double>({3, 4}, w.data());
  io::write_npz(file, with_nan);
  CHECK(error_of([&] { (void)load_weights<double>(file, net); }) ==
        quoted + ": array '0.weight': element 5 (index (1, 1)) is nan; expected finite numbers");

  auto with_inf = arrays;
  const std::vector<float> bias{0, -std::numeric_limits<float>::infinity(), 0};
  with_inf[1].second = io::NpyArray::from<float>({3}, bias.data());
  io::write_npz(file, with_inf);
  CHECK(error_of([&] { (void)load_weights<float>(file, net); }) ==
        quoted + ": array '0.bias': element 1 is -inf; expected finite numbers");

  auto too_big = arrays;
  const std::vector<double> big{0, 1e39, 0};
  too_big[1].second = io::NpyArray::from<double>({3}, big.data());
  io::write_npz(file, too_big);
  CHECK(load_weights<double>(file, net)(13) == 1e39);  // float64 holds it
  CHECK_THAT(
      error_of([&] { (void)load_weights<float>(file, net); }),
      Catch::StartsWith(quoted + ": array '0.bias': element 1 is 1e+39, which overflows float32"));
}

TEST_CASE("arrays a network cannot use are refused from their headers", "[nn][io]") {
  TempDir dir;
  const Network net("linear(3) tanh linear(2)", parse_shape("4"));
  auto arrays = parameters_to_arrays<double>(net, net.initial_parameters<double>(1));
  arrays.emplace_back("9.weight", arrays[0].second);
  io::write_npz(dir.path / "extra.npz", arrays);
  // Corrupt the unexpected array's data: it is refused before its data (and CRC) is read.
  std::string bytes = io::read_file_bytes(dir.path / "extra.npz");
  const std::size_t at = bytes.rfind("9.weight.npy");
  REQUIRE(at != std::string::npos);
  const std::size_t local = bytes.find("9.weight.npy");
  REQUIRE(local != at);  // the local header's name, then the central directory's
  bytes[local + 12 + 128 + 3] ^= 0x5a;
  std::ofstream(dir.path / "extra.npz", std::ios::binary) << bytes;
  CHECK_THAT(error_of([&] { (void)load_weights<double>(dir.path / "extra.npz", net); }),
             Catch::Contains("unexpected array '9.weight'; the network 'linear(3) tanh linear(2)' "
                             "has: 0.bias, 0.weight, 2.bias, 2.weight"));
  // Without the network's check the damage is found.
  CHECK_THAT(error_of([&] { (void)io::read_npz(dir.path / "extra.npz"); }),
             Catch::Contains("extra.npz[9.weight.npy]: corrupt ZIP entry: CRC-32"));
}

TEST_CASE("model files carry the preprocessing of their inputs", "[nn][io]") {
  TempDir dir;
  const Network net("linear(3) tanh linear(2)", parse_shape("4"));
  const Vector<float> theta = net.initial_parameters<float>(7);
  save_model<float>(dir.path / "plain.npz", net, theta);
  CHECK_FALSE(load_model<float>(dir.path / "plain.npz").preprocessing.has_value());

  data::FeatureTransform per_feature;
  per_feature.kind = data::Normalization::kStandardize;
  per_feature.shift = {0.5f, -1.0f, 2.0f, 0.0f};
  per_feature.scale = {2.0f, 0.25f, 1.0f, 4.0f};
  save_model<float>(dir.path / "m.npz", net, theta, per_feature);
  const auto loaded = load_model<float>(dir.path / "m.npz").preprocessing;
  REQUIRE(loaded.has_value());
  CHECK(loaded->kind == per_feature.kind);
  CHECK(loaded->shift == per_feature.shift);
  CHECK(loaded->scale == per_feature.scale);
  // It is what apply(Dataset&) computes, on a features x N block too.
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  loaded->apply(x.data(), 4, 2);
  CHECK(x == std::vector<float>{1.0f, 0.75f, 1.0f, 16.0f, 9.0f, 1.75f, 5.0f, 32.0f});

  // Malformed records: one message each, naming the file and the key.
  auto arrays = io::read_npz(dir.path / "m.npz");
  const auto rewrite = [&](const std::string& key, std::optional<io::NpyArray> value) {
    auto copy = arrays;
    if (value) {
      copy[key] = *value;
    } else {
      copy.erase(key);
    }
    std::vector<std::pair<std::string, io::NpyArray>> list(copy.begin(), copy.end());
    io::write_npz(dir.path / "bad.npz", list);
    return error_of([&] { static_cast<void>(load_model<float>(dir.path / "bad.npz")); });
  };
  const std::vector<float> three = {1, 2, 3};
  CHECK_THAT(rewrite("__shift__", io::NpyArray::from<float>({3}, three.data())),
             Catch::Contains("the recorded preprocessing: standardize normalisation has 3 shifts "
                             "and 4 scales; expected 1 or 4"));
  CHECK_THAT(rewrite("__scale__", std::nullopt), Catch::Contains("missing array '__scale__'"));
  const std::string bogus = "whiten";
  CHECK_THAT(
      rewrite("__normalize__", io::NpyArray::from<std::uint8_t>(
                                   {6}, reinterpret_cast<const std::uint8_t*>(bogus.data()))),
      Catch::Contains("array '__normalize__': normalization 'whiten' is not valid"));
  CHECK_THAT(rewrite("__normalize__", std::nullopt),
             Catch::Contains("array '__shift__' without '__normalize__'"));
  const std::vector<float> zero = {0, 1, 1, 1};
  CHECK_THAT(rewrite("__scale__", io::NpyArray::from<float>({4}, zero.data())),
             Catch::Contains("shift 0.5 and scale 0 for feature 0; expected finite numbers and a "
                             "nonzero scale"));
}
