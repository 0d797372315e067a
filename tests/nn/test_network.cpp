// Layer specs, shapes, parameter layout, memory estimates and limits, initialisation, parallel
// helpers.

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <optional>

#include <quadra/error.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/parallel.hpp>

using namespace quadra;
using namespace quadra::nn;

namespace {
std::string error_of(const std::string& spec, const std::string& shape) {
  try {
    Network net(spec, parse_shape(shape));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string shape_error(const std::string& text) {
  try {
    (void)parse_shape(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string size_error(const std::string& text) {
  try {
    (void)parse_memory_size(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

/// Sets QUADRA_MEMORY_LIMIT for one scope and restores what was there.
class MemoryLimitVariable {
 public:
  explicit MemoryLimitVariable(const char* value) {
    if (const char* old = std::getenv("QUADRA_MEMORY_LIMIT")) old_ = old;
    if (value == nullptr) {
      ::unsetenv("QUADRA_MEMORY_LIMIT");
    } else {
      ::setenv("QUADRA_MEMORY_LIMIT", value, 1);
    }
  }
  ~MemoryLimitVariable() {
    if (old_) {
      ::setenv("QUADRA_MEMORY_LIMIT", old_->c_str(), 1);
    } else {
      ::unsetenv("QUADRA_MEMORY_LIMIT");
    }
  }
  MemoryLimitVariable(const MemoryLimitVariable&) = delete;
  MemoryLimitVariable& operator=(const MemoryLimitVariable&) = delete;

 private:
  std::optional<std::string> old_;
};
}  // namespace

TEST_CASE("specs parse into layers with PyTorch's state_dict names", "[nn][spec]") {
  const Network net("conv(16,3,pad=1) relu maxpool(2) conv(32,3) relu avgpool(2) flatten linear(10)",
                    parse_shape("1x28x28"));
  REQUIRE(net.layers().size() == 8);
  CHECK(net.shapes()[1].str() == "16x28x28");
  CHECK(net.shapes()[3].str() == "16x14x14");
  CHECK(net.shapes()[4].str() == "32x12x12");
  CHECK(net.shapes()[6].str() == "32x6x6");
  CHECK(net.output_shape().str() == "10");
  const auto& params = net.parameters();
  REQUIRE(params.size() == 6);
  CHECK(params[0].name == "0.weight");
  CHECK(params[0].shape == std::vector<Index>{16, 1, 3, 3});
  CHECK(params[1].name == "0.bias");
  CHECK(params[2].name == "3.weight");
  CHECK(params[4].name == "7.weight");
  CHECK(params[4].shape == std::vector<Index>{10, 1152});
  CHECK(net.num_parameters() == 16 * 9 + 16 + 32 * 144 + 32 + 10 * 1152 + 10);
  // The canonical text parses back to the same network.
  const Network again(net.spec(), net.input_shape());
  CHECK(again.spec() == net.spec());
  CHECK(again.num_parameters() == net.num_parameters());

  const Network mlp("linear(512) tanh linear(256) tanh linear(10, bias=false)", parse_shape("784"));
  CHECK(mlp.num_parameters() == 784 * 512 + 512 + 512 * 256 + 256 + 2560);
  CHECK(mlp.parameters().back().name == "4.weight");
  CHECK(parse_shape("1,28,28").dims == std::vector<Index>{1, 28, 28});
  CHECK(Network("leakyrelu(0.2) linear(2)", parse_shape("3")).layers()[0].negative_slope == 0.2);
}

TEST_CASE("bad specs name the token, its position and what was expected", "[nn][spec]") {
  CHECK_THAT(error_of("linear(512) tnah linear(10)", "784"),
             Catch::Contains("token 2 'tnah' at character 13: unknown layer 'tnah'") &&
                 Catch::Contains("expected one of linear, conv"));
  CHECK_THAT(
      error_of("linear(x)", "784"),
      Catch::Contains(
          "token 1 'linear(x)' at character 1: output features 'x' is not an integer >= 1") &&
          Catch::Contains("expected linear(OUT[,bias=true|false])"));
  CHECK_THAT(error_of("conv(16)", "1x28x28"), Catch::Contains("missing the kernel size"));
  CHECK_THAT(error_of("conv()", "1x28x28"),
             Catch::Contains("missing the output channels and the kernel size"));
  CHECK_THAT(error_of("conv(16,3,strid=2) flatten linear(2)", "1x28x28"), Catch::Contains("unknown argument 'strid'"));
  CHECK_THAT(error_of("linear(10", "784"), Catch::Contains("'(' is never closed"));
  CHECK_THAT(error_of("relu(3) linear(2)", "784"), Catch::Contains("'relu' takes no arguments"));
  CHECK_THAT(error_of("linear(10)", "1x28x28"),
             Catch::Contains("layer 0 'linear(10)' (token 1) receives shape 1x28x28") &&
                 Catch::Contains("insert 'flatten'"));
  CHECK_THAT(error_of("conv(4,5) flatten linear(2)", "1x3x3"), Catch::Contains("larger than the input"));
  CHECK_THAT(error_of("conv(4,3)", "1x8x8"), Catch::Contains("end the spec with 'flatten'"));
  CHECK_THAT(error_of("", "784"), Catch::Contains("layer spec is empty"));
  CHECK_THAT(error_of("linear(2,bias=maybe)", "4"), Catch::Contains("bias 'maybe' is not true or false"));
  CHECK_THAT(error_of("maxpool(2,pad=2) flatten", "1x8x8"), Catch::Contains("more than half the kernel"));
  CHECK_THAT([] {
    try {
      (void)parse_shape("1x28");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), Catch::Contains("has 2 dimensions"));
}

TEST_CASE("every layer argument's message says what it allows", "[nn][spec]") {
  const std::string image = "1x28x28";
  CHECK_THAT(error_of("conv(16,3,pad=-1) flatten", image),
             Catch::Contains(
                 "token 1 'conv(16,3,pad=-1)' at character 1: pad '-1' is not an integer >= 0") &&
                 Catch::Contains("expected conv(OUT,KERNEL[,stride=S][,pad=P][,bias=true|false])"));
  CHECK_THAT(error_of("conv(16,3,padding=x) flatten", image),
             Catch::Contains("padding 'x' is not an integer >= 0"));
  CHECK_THAT(error_of("conv(16,3,pad=) flatten", image),
             Catch::Contains("pad '' is not an integer >= 0"));
  CHECK_THAT(error_of("conv(16,3,stride=0) flatten", image),
             Catch::Contains("stride '0' is not an integer >= 1"));
  CHECK_THAT(error_of("conv(16,0) flatten", image),
             Catch::Contains("kernel size '0' is not an integer >= 1"));
  CHECK_THAT(error_of("conv(0,3) flatten", image),
             Catch::Contains("output channels '0' is not an integer >= 1"));
  CHECK_THAT(error_of("linear(-3)", "4"),
             Catch::Contains("output features '-3' is not an integer >= 1"));
  CHECK_THAT(error_of("maxpool(2,pad=-1) flatten", image),
             Catch::Contains("pad '-1' is not an integer >= 0"));
  CHECK_THAT(error_of("avgpool(2,stride=-2) flatten", image),
             Catch::Contains("stride '-2' is not an integer >= 1"));
  CHECK_THAT(error_of("maxpool(0) flatten", image),
             Catch::Contains("kernel size '0' is not an integer >= 1"));
  CHECK_THAT(
      error_of("maxpool(4,pad=3) flatten", image),
      Catch::Contains("pad 3 is more than half the kernel size 4; a pool allows pad 0 to 2"));
  CHECK_THAT(error_of("linear(99999999999999999999)", "4"),
             Catch::Contains("output features '99999999999999999999' is too large; expected an "
                             "integer from 1 to 9223372036854775807"));
  CHECK_THAT(error_of("leakyrelu(inf) linear(2)", "3"),
             Catch::Contains("negative slope 'inf' is not a finite number"));
  CHECK_THAT(error_of("leakyrelu(slope=x) linear(2)", "3"),
             Catch::Contains("slope 'x' is not a finite number"));
  // Two values for one argument would otherwise keep the last silently.
  CHECK_THAT(error_of("conv(16,3,pad=1,padding=2) flatten", image),
             Catch::Contains("pad is given twice"));
  CHECK_THAT(error_of("leakyrelu(0.1,slope=0.2) linear(2)", "3"),
             Catch::Contains("negative slope is given twice"));
  CHECK_THAT(error_of("linear(2,bias=false,bias=true)", "3"),
             Catch::Contains("bias is given twice"));
  CHECK_THAT(error_of("linear(3,4)", "4"),
             Catch::Contains("2 positional arguments given, at most 1 allowed"));
  CHECK_THAT(error_of("linear(3,)", "4"), Catch::Contains("empty argument"));
  CHECK_THAT(error_of("linear(bias=false,3)", "4"),
             Catch::Contains("positional argument '3' after a named one"));
  CHECK_THAT(error_of("linear(3,out=4)", "4"),
             Catch::Contains("unknown argument 'out' (valid: bias)"));
  CHECK_THAT(error_of("maxpool(2,bias=false) flatten", image),
             Catch::Contains("unknown argument 'bias' (valid: stride, pad)"));
  CHECK_THAT(error_of("linear", "4"), Catch::Contains("missing the output features"));
  CHECK_THAT(error_of("(3) linear(2)", "4"),
             Catch::Contains("token 1 '(3)' at character 1: the layer name before '(' is missing"));
}

TEST_CASE("specs keep their canonical text, aliases and defaults", "[nn][spec]") {
  // Canonical text is stored in model files: it must not change.
  const std::pair<const char*, const char*> cases[] = {
      {"linear(3) tanh linear(2)", "linear(3) tanh linear(2)"},
      {"Linear(3) TANH Linear(2,bias=true)", "linear(3) tanh linear(2)"},
      {"linear(512) tanh linear(10, bias=false)", "linear(512) tanh linear(10,bias=false)"},
      {"leakyrelu linear(2)", "leakyrelu(0.01) linear(2)"},
      {"leaky_relu(slope=0.3) linear(2)", "leakyrelu(0.3) linear(2)"},
      {"LeakyReLU(negative_slope=1e-3) linear(2)", "leakyrelu(0.001) linear(2)"},
      {"relu() sigmoid gelu softplus linear(2)", "relu sigmoid gelu softplus linear(2)"},
  };
  for (const auto& [spec, canonical] : cases) {
    INFO(spec);
    CHECK(Network(spec, parse_shape("4")).spec() == canonical);
  }
  const Network net(
      "conv2d(2,3,stride=2,padding=1,bias=0) maxpool2d(3,stride=1,padding=1) avgpool2d(2) flatten "
      "relu linear(2,bias=1)",
      parse_shape("3x9x9"));
  CHECK(net.spec() ==
        "conv(2,3,stride=2,pad=1,bias=false) maxpool(3,stride=1,pad=1) avgpool(2,stride=2,pad=0) "
        "flatten relu linear(2)");
  CHECK(net.layers()[0].has_parameters());
  CHECK_FALSE(net.layers()[0].bias);
  CHECK_FALSE(net.layers()[1].has_parameters());
  CHECK_FALSE(net.layers()[1].bias);
  CHECK(net.layers()[2].stride == 2);  // a pool's stride defaults to its kernel
  CHECK(net.shapes()[1].str() == "2x5x5");
  CHECK(net.shapes()[3].str() == "2x2x2");
  CHECK(net.parameters()[1].name == "5.weight");
  // Every kind's canonical text parses back to the same layer.
  const Network every(
      "conv(2,1,stride=3) maxpool(2,pad=1) avgpool(1) flatten leakyrelu(0.5) tanh "
      "linear(4,bias=false) sigmoid gelu softplus relu linear(2)",
      parse_shape("2x7x8"));
  for (const LayerSpec& layer : every.layers()) {
    INFO(layer.str());
    const LayerSpec again = parse_layer_spec(layer.str()).front();
    CHECK(again.str() == layer.str());
    CHECK(again.kind == layer.kind);
    CHECK(again.bias == layer.bias);
  }
}

TEST_CASE("a network's memory is estimated from its spec", "[nn][memory]") {
  const Network mlp("linear(512) tanh linear(256) tanh linear(10,bias=false)", parse_shape("784"));
  CHECK(mlp.num_parameters() == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10);
  CHECK(mlp.activations_per_sample() == 784 + 512 + 512 + 256 + 256 + 10);
  CHECK(mlp.memory_bytes(1, 4) == 4 * (535808 + 2330));
  CHECK(mlp.memory_bytes(128, 8) == 8 * (535808 + 128 * 2330));

  const Network cnn(
      "conv(16,3,pad=1) relu maxpool(2) conv(32,3) relu avgpool(2) flatten linear(10)",
      parse_shape("1x28x28"));
  const Index activations =
      784 + 16 * 28 * 28 * 2 + 16 * 14 * 14 + 32 * 12 * 12 * 2 + 32 * 6 * 6 * 2 + 10;
  CHECK(cnn.activations_per_sample() == activations);
  CHECK(cnn.memory_bytes(128, 4) == 4 * (16330 + 128 * activations));
  // Saturates instead of wrapping around.
  CHECK(cnn.memory_bytes(std::numeric_limits<Index>::max() / 2, 8) ==
        std::numeric_limits<Index>::max());

  // Sizes beyond int64 are reported before any product wraps around.
  CHECK_THAT(error_of("linear(4611686018427387904) linear(2)", "1"),
             Catch::Contains("its weight of shape 4611686018427387904x1 brings the parameters to "
                             "more than 9223372036854775807"));
  CHECK_THAT(error_of("conv(4611686018427387904,1) flatten", "1x8x8"),
             Catch::Contains("its output 4611686018427387904x8x8 has more than 9223372036854775807 "
                             "values per sample"));
  CHECK_THAT(error_of("conv(2,3,pad=9223372036854775807) flatten", "1x8x8"),
             Catch::Contains("padding 9223372036854775807 makes the input larger than"));
  CHECK_THAT(error_of("linear(9223372036854775807)", "784"),
             Catch::Contains(
                 "the activations up to it have more than 9223372036854775807 values per sample"));
  CHECK_THAT(shape_error("99999999999x99999999999x99999999999"),
             Catch::Contains("input shape '99999999999x99999999999x99999999999' has more than "
                             "9223372036854775807 values"));
  CHECK_THAT(
      [] {
        try {
          (void)Network("linear(2)", TensorShape{{3037000500, 3037000500, 2}});
        } catch (const Error& e) {
          return std::string(e.what());
        }
        return std::string("no error");
      }(),
      Catch::Contains("has more than 9223372036854775807 values per sample"));
}

TEST_CASE("models and batches above the memory limit are refused before allocation",
          "[nn][memory]") {
  {
    const MemoryLimitVariable limit("1M");
    // 785000 parameters and 784 + 1000 activations, 4 bytes each.
    CHECK(error_of("linear(1000)", "784") ==
          "model 'linear(1000)' on input 784 needs 3.0 MiB (3147136 bytes) for its 785000 "
          "parameters and the "
          "activations of one sample (1784 values), in float32; the memory limit "
          "(QUADRA_MEMORY_LIMIT) is 1.0 MiB "
          "(1048576 bytes); raise QUADRA_MEMORY_LIMIT to allow it");
    CHECK(error_of("linear(100)", "784") == "no error");
  }
  {
    // Fits in float32, not in float64.
    const MemoryLimitVariable limit("4M");
    const Network net("linear(1000)", parse_shape("784"));
    CHECK(net.initial_parameters<float>(0).size() == 785000);
    CHECK_THROWS_WITH(net.initial_parameters<double>(0),
                      Catch::Contains("needs 6.0 MiB (6294272 bytes) for its 785000 parameters") &&
                          Catch::Contains("in float64"));
  }
  {
    const MemoryLimitVariable limit("1M");
    const Network net("linear(10)", parse_shape("784"));
    const Vector<double> theta = net.initial_parameters<double>(0);
    auto bind = [&](Index n) {
      const Matrix<double> x = Matrix<double>::Zero(784, n);
      return BoundBatch<double>(net, theta, x,
                                Targets<double>::from_labels(std::vector<std::int64_t>(n, 0)),
                                Loss::kCrossEntropy);
    };
    CHECK(bind(100).batch_size() == 100);  // (7850 + 100 x 794) x 8 bytes < 1 MiB
    CHECK_THROWS_WITH(
        bind(200),
        Catch::Contains("needs 1.3 MiB (1333200 bytes) for its 7850 parameters and the activations "
                        "of 200 samples (200 x 794 values), in float64") &&
            Catch::Contains("or use a smaller batch"));
  }
}

TEST_CASE("QUADRA_MEMORY_LIMIT is bytes with an optional K, M, G or T suffix", "[nn][memory]") {
  CHECK(parse_memory_size("2000000") == 2000000);
  CHECK(parse_memory_size("8K") == 8192);
  CHECK(parse_memory_size(" 512M ") == Index{512} << 20);
  CHECK(parse_memory_size("16g") == Index{16} << 30);
  CHECK(parse_memory_size("2T") == Index{2} << 40);
  CHECK(parse_memory_size("9223372036854775807") == std::numeric_limits<Index>::max());
  const char* expected =
      "expected a whole number of bytes >= 1 with an optional K, M, G or T suffix (powers of "
      "1024), e.g. 16G";
  for (const char* bad : {"", "abc", "1.5G", "-1", "+5", "16GB", "16 G", "G"}) {
    INFO(bad);
    CHECK_THAT(size_error(bad), Catch::Contains(fmt::format(
                                    "QUADRA_MEMORY_LIMIT='{}' is not a memory size; ", bad)) &&
                                    Catch::Contains(expected));
  }
  CHECK_THAT(size_error("0"), Catch::Contains("QUADRA_MEMORY_LIMIT='0' is zero; expected"));
  CHECK_THAT(
      size_error("9999999T"),
      Catch::Contains("QUADRA_MEMORY_LIMIT='9999999T' is more than 9223372036854775807 bytes"));
  CHECK_THAT(size_error("99999999999999999999"),
             Catch::Contains("is more than 9223372036854775807 bytes"));
  CHECK(format_bytes(1000) == "1000 bytes");
  CHECK(format_bytes(Index{3} << 30) == "3.0 GiB (3221225472 bytes)");

  {
    const MemoryLimitVariable limit("3G");
    CHECK(memory_limit().bytes == Index{3} << 30);
    CHECK(memory_limit().source == "QUADRA_MEMORY_LIMIT");
  }
  {
    const MemoryLimitVariable limit("lots");
    CHECK_THROWS_WITH(memory_limit(),
                      Catch::Contains("QUADRA_MEMORY_LIMIT='lots' is not a memory size"));
    CHECK_THROWS_WITH(Network("linear(2)", parse_shape("2")),
                      Catch::Contains("QUADRA_MEMORY_LIMIT='lots'"));
  }
  for (const char* unset : {static_cast<const char*>(nullptr), ""}) {
    // The default: physical memory or the address-space limit, whichever is smaller.
    const MemoryLimitVariable limit(unset);
    const MemoryLimit found = memory_limit();
    CHECK(found.bytes > 0);
    CHECK((found.source == "physical memory" ||
           found.source == "the process's address-space limit, RLIMIT_AS"));
  }
}

TEST_CASE("model files and layer specs are told apart without filesystem errors", "[nn][spec]") {
  std::string spec;
  while (spec.size() <= 300) spec += "linear(16) tanh ";
  spec += "linear(2)";
  CHECK_FALSE(looks_like_model_file(spec));  // longer than a file name: ENAMETOOLONG
  CHECK(Network(spec, parse_shape("2")).num_outputs() == 2);
  std::string long_path;
  while (long_path.size() <= 5000) long_path += "directory/";
  CHECK_FALSE(looks_like_model_file(long_path));  // longer than a path
  CHECK_FALSE(looks_like_model_file("linear(16) tanh linear(2)"));
  CHECK_FALSE(looks_like_model_file(""));

  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("quadra_test_network_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path file = dir / "model.npz";
  std::ofstream(file) << "x";
  CHECK(looks_like_model_file(file.string()));
  CHECK_FALSE(looks_like_model_file(dir.string()));
  CHECK_FALSE(looks_like_model_file((file / "inside").string()));  // ENOTDIR
  CHECK(looks_like_model_file("/dev/zero"));  // meant as a file: the reader says what it is
  std::filesystem::remove_all(dir);
}

TEST_CASE("initialisation follows PyTorch's bounds and is seeded", "[nn][init]") {
  const Network net("linear(50) tanh linear(7)", parse_shape("30"));
  const auto a = net.initial_parameters<double>(1);
  const auto b = net.initial_parameters<double>(1);
  const auto c = net.initial_parameters<double>(2);
  CHECK(a == b);
  CHECK(a != c);
  const double bound1 = 1 / std::sqrt(30.0);
  const double bound2 = 1 / std::sqrt(50.0);
  CHECK(a.head(30 * 50 + 50).cwiseAbs().maxCoeff() <= bound1);
  CHECK(a.head(30 * 50 + 50).cwiseAbs().maxCoeff() > 0.95 * bound1);
  CHECK(a.tail(50 * 7 + 7).cwiseAbs().maxCoeff() <= bound2);
  // Uniform: variance bound²/3.
  const double var = a.head(1500).squaredNorm() / 1500;
  CHECK(var == Approx(bound1 * bound1 / 3).epsilon(0.1));
  CHECK(net.initial_parameters<float>(1).cast<double>().isApprox(a, 1e-7));
}

TEST_CASE("deterministic_reduce combines chunks in order for any thread count", "[parallel]") {
  std::vector<double> values(10007);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::sin(static_cast<double>(i)) * 1e-3 + 1.0 / (1.0 + static_cast<double>(i));
  auto sum_with = [&](int threads) {
    const ThreadLimit limit(threads);
    return deterministic_reduce(
        static_cast<std::int64_t>(values.size()), 97, 0.0,
        [&](const ChunkRange& r) {
          return std::accumulate(values.begin() + r.begin, values.begin() + r.end, 0.0);
        },
        [](double acc, double part) { return acc + part; });
  };
  const double one = sum_with(1);
  CHECK(one == sum_with(2));
  CHECK(one == Approx(std::accumulate(values.begin(), values.end(), 0.0)).epsilon(1e-12));
  CHECK(num_chunks(10, 3) == 4);
  CHECK(chunk_at(10, 3, 3).size() == 1);
  set_num_threads(1);
  CHECK(num_threads() == 1);
  set_num_threads(0);
  CHECK(num_threads() >= 1);
  CHECK_THROWS_AS(set_num_threads(-1), Error);
}

TEST_CASE("name= sets the module path of a layer's parameters", "[nn][network]") {
  const Network net("linear(4,name=encoder.fc) tanh residual(linear(4,name=block.inner)) "
                    "linear(3,bias=false,name=onnx::Gemm_7)",
                    parse_shape("5"));
  REQUIRE(net.parameters().size() == 5);
  CHECK(net.parameters()[0].name == "encoder.fc.weight");
  CHECK(net.parameters()[1].name == "encoder.fc.bias");
  CHECK(net.parameters()[2].name == "block.inner.weight");
  CHECK(net.parameters()[4].name == "onnx::Gemm_7.weight");
  // The canonical text keeps the names.
  CHECK(Network(net.spec(), parse_shape("5")).parameters()[2].name == "block.inner.weight");
  CHECK_THAT(error_of("linear(4,name=a) linear(4,name=a)", "5"),
             Catch::Contains("named 'a'") && Catch::Contains("unique"));
  CHECK_THAT(error_of("linear(4,name=a..b)", "5"), Catch::Contains("name 'a..b' is not a module path"));
  CHECK_THAT(error_of("linear(4,name=)", "5"), Catch::Contains("name '' is not a module path"));
  CHECK_THAT(error_of("linear(4,name=a,name=b)", "5"), Catch::Contains("name is given twice"));
  CHECK_THAT(error_of("relu(name=a)", "5"), Catch::Contains("takes no arguments"));
}
