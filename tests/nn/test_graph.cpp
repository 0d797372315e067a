// Graph networks (residual blocks): spec syntax, names, shapes, the new ops and the engine's
// graph paths against independent references. The engine tests of test_engine.cpp also run on
// the residual cases of nn_test_utils.hpp.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include <quadra/error.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "nn_test_utils.hpp"

using namespace quadra;
using namespace quadra::nn;
using namespace quadra::nn::test;

namespace {

std::string error_of(const std::string& spec, const std::string& shape) {
  try {
    Network net(spec, parse_shape(shape));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::vector<std::string> names(const Network& net) {
  std::vector<std::string> out;
  for (const ParameterInfo& p : net.parameters()) out.push_back(p.name);
  return out;
}

constexpr const char* kResNet =
    "conv(16,3,pad=1,bias=false) relu residual(conv(16,3,pad=1,bias=false) relu "
    "conv(16,3,pad=1,bias=false)) relu residual(conv(32,3,stride=2,pad=1,bias=false) relu "
    "conv(32,3,pad=1,bias=false), shortcut=conv(32,1,stride=2,bias=false)) relu globalavgpool "
    "flatten linear(10)";

}  // namespace

TEST_CASE("residual blocks become nodes with inputs, shapes and PyTorch names", "[nn][graph][spec]") {
  const Network net(kResNet, parse_shape("3x8x8"));
  CHECK_FALSE(net.is_sequential());
  // Nodes: 0 conv, 1 relu, 2-4 branch, 5 add, 6 relu, 7-9 branch, 10 shortcut, 11 add, 12 relu,
  // 13 globalavgpool, 14 flatten, 15 linear.
  REQUIRE(net.layers().size() == 16);
  CHECK(net.inputs(2) == std::vector<Index>{2});
  CHECK(net.inputs(5) == std::vector<Index>{5, 2});  // branch output + identity
  CHECK(net.layers()[5].kind == LayerKind::kAdd);
  CHECK(net.inputs(7) == std::vector<Index>{7});
  CHECK(net.inputs(10) == std::vector<Index>{7});    // the shortcut reads the block's input
  CHECK(net.inputs(11) == std::vector<Index>{10, 11});
  CHECK(net.module_path(3) == "2.branch.1");
  CHECK(net.module_path(5) == "2");
  CHECK(net.module_path(10) == "4.shortcut.0");
  CHECK(net.module_path(15) == "8");
  CHECK(net.shapes()[11].str() == "32x4x4");
  CHECK(net.shapes()[14].str() == "32x1x1");
  CHECK(net.output_shape().str() == "10");
  CHECK(names(net) == std::vector<std::string>{"0.weight", "2.branch.0.weight", "2.branch.2.weight",
                                               "4.branch.0.weight", "4.branch.2.weight",
                                               "4.shortcut.0.weight", "8.weight", "8.bias"});
  CHECK(net.parameters()[5].shape == std::vector<Index>{32, 16, 1, 1});
  CHECK(net.parameters()[5].layer == 10);
  CHECK(net.num_parameters() ==
        16 * 27 + 2 * 16 * 16 * 9 + 32 * 16 * 9 + 32 * 32 * 9 + 32 * 16 + 320 + 10);
  // Activations: every value is stored once.
  Index values = 0;
  for (const TensorShape& s : net.shapes()) values += s.size();
  CHECK(net.activations_per_sample() == values);
  // FLOPs of the new ops: add one per output, global pool one per input, dropout none.
  CHECK(net.forward_flops(5) == 16 * 64);
  CHECK(net.forward_flops(13) == 32 * 16);
  CHECK(Network("dropout linear(2)", parse_shape("3")).forward_flops(0) == 0);
  // Chains stay chains.
  CHECK(Network("linear(3) tanh linear(2)", parse_shape("4")).is_sequential());
  CHECK(Network("linear(3) tanh linear(2)", parse_shape("4")).inputs(2) == std::vector<Index>{2});
}

TEST_CASE("residual blocks nest and round-trip through the canonical text", "[nn][graph][spec]") {
  const Network net(
      "linear(4) Residual( tanh residual(linear(4) , shortcut = Linear(4, bias=false) tanh) "
      "linear(4,bias=true) ) dropout dropout(p=0.1) linear(2)",
      parse_shape("3"));
  const std::string canonical =
      "linear(4) residual(tanh residual(linear(4),shortcut=linear(4,bias=false) tanh) linear(4)) "
      "dropout(0.5) dropout(0.1) linear(2)";
  CHECK(net.spec() == canonical);
  CHECK(Network(canonical, parse_shape("3")).spec() == canonical);
  CHECK(names(net) == std::vector<std::string>{
                          "0.weight", "0.bias", "1.branch.1.branch.0.weight",
                          "1.branch.1.branch.0.bias", "1.branch.1.shortcut.0.weight",
                          "1.branch.2.weight", "1.branch.2.bias", "4.weight", "4.bias"});
  // Nodes: linear, tanh, inner linear, inner shortcut linear, tanh, inner add, linear, outer add.
  CHECK(net.inputs(3) == std::vector<Index>{2});
  CHECK(net.inputs(5) == std::vector<Index>{3, 5});
  CHECK(net.inputs(7) == std::vector<Index>{7, 1});
  CHECK(net.layers()[8].dropout == 0.5);
  CHECK(net.layers()[9].dropout == Approx(0.1));
  // The flat node list of parse_layer_spec.
  const auto nodes = parse_layer_spec(canonical);
  REQUIRE(nodes.size() == 11);
  CHECK(nodes[5].kind == LayerKind::kAdd);
  CHECK(nodes[7].kind == LayerKind::kAdd);
  CHECK(nodes[5].str() == "add");
}

TEST_CASE("bad residual specs name the token, its position and what was expected", "[nn][graph][spec]") {
  CHECK_THAT(error_of("linear(4) residual(linear(4) tanh linear(2)", "4"),
             Catch::Contains("token 2 'residual(linear(4) tanh linear(2)' at character 11: '(' "
                             "is never closed"));
  CHECK_THAT(error_of("linear(4) residual(linear(4))) linear(2)", "4"),
             Catch::Contains("token 2 'residual(linear(4))' at character 11: unexpected ')' after "
                             "')'"));
  CHECK_THAT(error_of("linear(4) ) linear(2)", "4"),
             Catch::Contains("token 2 ')' at character 11: ')' without a matching '('"));
  CHECK_THAT(error_of("residual(linear(4), shortcut=linear(4), gate=relu) linear(2)", "4"),
             Catch::Contains("token 1 'residual(linear(4), shortcut=linear(4), gate=relu)' at "
                             "character 1: unknown argument 'gate' (valid: shortcut)") &&
                 Catch::Contains("expected residual(BRANCH...[,shortcut=SHORTCUT...])"));
  CHECK_THAT(error_of("residual(linear(4), shortcut=linear(4), shortcut=tanh) linear(2)", "4"),
             Catch::Contains("shortcut is given twice"));
  CHECK_THAT(error_of("residual() linear(2)", "4"), Catch::Contains("the branch is empty"));
  CHECK_THAT(error_of("residual linear(2)", "4"),
             Catch::Contains("token 1 'residual' at character 1: a residual block needs its "
                             "branch in parentheses"));
  CHECK_THAT(error_of("residual(linear(4), shortcut=) linear(2)", "4"),
             Catch::Contains("shortcut is empty"));
  CHECK_THAT(error_of("residual(linear(4), tanh) linear(2)", "4"),
             Catch::Contains("'tanh' after the branch is not key=value"));
  // Nested tokens are numbered in reading order with their offset in the whole text.
  CHECK_THAT(error_of("linear(4) residual(tanh linaer(4)) linear(2)", "4"),
             Catch::Contains("token 4 'linaer(4)' at character 25: unknown layer 'linaer'"));
  CHECK_THAT(error_of("residual(linear(4), shortcut=tanh conv(2,2)) linear(2)", "4"),
             Catch::Contains("layer 0.shortcut.1 'conv(2,2,stride=1,pad=0)' (token 4) receives "
                             "shape 4: needs a CxHxW input"));
  CHECK_THAT(error_of("add linear(2)", "4"),
             Catch::Contains("token 1 'add' at character 1: 'add' is the join of a residual block"));
  // The sum needs one shape: both named.
  CHECK_THAT(error_of("linear(4) residual(linear(3)) linear(2)", "4"),
             Catch::Contains("layer 1 'residual(linear(3))' (token 2): its branch gives shape 3 "
                             "but its shortcut (the identity) passes its input of shape 4"));
  CHECK_THAT(error_of("conv(4,3,pad=1) residual(conv(8,3,stride=2,pad=1), shortcut=conv(8,1)) "
                      "flatten linear(2)",
                      "1x8x8"),
             Catch::Contains("its branch gives shape 8x4x4 but its shortcut gives shape 8x8x8"));
  std::string deep = "linear(2)";
  for (int i = 0; i < 65; ++i) deep = "residual(" + deep + ")";
  CHECK_THAT(error_of("linear(2) " + deep, "4"), Catch::Contains("residual blocks nest more than 64 deep"));
  deep = "linear(2)";
  for (int i = 0; i < 64; ++i) deep = "residual(tanh " + deep + ")";
  CHECK(Network("linear(2) " + deep, parse_shape("4")).layers().size() == 2 + 64 * 2);
  CHECK_THAT(error_of("globalavgpool linear(2)", "4"),
             Catch::Contains("layer 0 'globalavgpool' (token 1) receives shape 4: needs a CxHxW"));
  CHECK_THAT(error_of("dropout(1.5) linear(2)", "4"),
             Catch::Contains("drop probability 1.5 is outside [0, 1]"));
  CHECK_THAT(error_of("dropout(q=0.1) linear(2)", "4"),
             Catch::Contains("unknown argument 'q' (valid: p)"));
}

TEST_CASE("globalavgpool, dropout and residual sums compute what PyTorch does", "[nn][graph]") {
  // globalavgpool: the mean over each channel.
  const Network pool("globalavgpool flatten", parse_shape("2x2x3"));
  Mat x(12, 2);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<double>(i * i % 7) - 2.5;
  const Mat y = pool.forward<double>(Vec(0), x);
  for (Index s = 0; s < 2; ++s) {
    CHECK(y(0, s) == Approx(x.col(s).head(6).mean()));
    CHECK(y(1, s) == Approx(x.col(s).tail(6).mean()));
  }
  // dropout is the identity; a residual block is branch(x) + shortcut(x).
  const Network id("dropout(0.9) flatten", parse_shape("12"));
  CHECK(id.forward<double>(Vec(0), x) == x);
  const Network res("residual(tanh, shortcut=sigmoid) residual(softplus)", parse_shape("12"));
  const Mat r = res.forward<double>(Vec(0), x);
  const Mat h = x.array().tanh() + x.array().logistic();
  const Mat expected = h.array() + (h.array().exp() + 1).log();
  CHECK(rel_err(r, expected) < 1e-15);
}

TEST_CASE("graph engine: layer inputs and output adjoints refer to each node's own input",
          "[nn][graph]") {
  const Problem p = make_problem(all_cases()[4], 5, 3);  // resmlp-ce
  auto batch = bind(p);
  const Network& net = p.net;
  // layer_input(l) is the value node l reads; for the shortcut linear, the block's input.
  for (Index l = 0; l < static_cast<Index>(net.layers().size()); ++l) {
    CHECK(&batch.layer_input(l) != nullptr);
    CHECK(batch.layer_input(l).rows() == net.input_shape(l).size());
  }
  // backpropagate + per-parameter-layer reductions equal the VJP.
  const Index c = net.num_outputs();
  Mat u(c, 5);
  for (Index i = 0; i < u.size(); ++i) u.data()[i] = std::sin(1.0 + static_cast<double>(i));
  Vec vjp(p.theta.size());
  batch.vjp(u, vjp);
  batch.backpropagate(u);
  for (const ParameterInfo& info : net.parameters()) {
    if (info.is_bias) continue;
    const Mat& adj = batch.output_adjoints(info.layer);
    const Mat& in = batch.layer_input(info.layer);
    const Mat w_grad = adj * in.transpose();  // Linear: Σ_n δ_n x_nᵀ
    const Mat got = Eigen::Map<const Mat>(vjp.data() + info.offset, info.shape[1], info.shape[0])
                        .transpose();
    CHECK(rel_err(w_grad, got) < 1e-13);
  }
  // Outputs of blocks before the first parameter carry no adjoint.
  const Problem q = make_problem(all_cases()[5], 4, 5);  // resmlp-input-fork-mse
  auto b2 = bind(q);
  b2.backpropagate(Mat::Ones(q.net.num_outputs(), 4));
  CHECK_THROWS_WITH(b2.output_adjoints(0), Catch::Contains("output adjoints of layer 0"));
}

TEST_CASE("residual models round-trip through weights and model files", "[nn][graph][io]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("quadra_graph_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const Network net(kResNet, parse_shape("3x8x8"));
  const Vec theta = net.initial_parameters<double>(7);
  save_model<double>(dir / "m.npz", net, theta);
  const auto arrays = io::read_npz(dir / "m.npz");
  CHECK(arrays.at("4.shortcut.0.weight").shape == std::vector<std::int64_t>{32, 16, 1, 1});
  CHECK(arrays.count("2.branch.2.weight") == 1);
  const Model<double> model = load_model<double>(dir / "m.npz");
  CHECK(model.network.spec() == net.spec());
  CHECK(model.params == theta);
  Mat x(net.num_inputs(), 3);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::cos(static_cast<double>(i));
  CHECK(model.network.forward<double>(model.params, x) == net.forward<double>(theta, x));
  std::filesystem::remove_all(dir);
}
