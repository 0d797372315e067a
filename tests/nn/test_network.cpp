// Layer specs, shapes, parameter layout, initialisation, parallel helpers.

#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>

#include <quadra/error.hpp>
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
  CHECK_THAT(error_of("linear(x)", "784"),
             Catch::Contains("token 1 'linear(x)' at character 1: output features 'x' is not a positive integer") &&
                 Catch::Contains("expected linear(OUT[,bias=true|false])"));
  CHECK_THAT(error_of("conv(16)", "1x28x28"), Catch::Contains("missing the output channels or the kernel size"));
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
