// ONNX import: the translation of torch.onnx.export files (tests/fixtures/onnx, written by
// make_onnx_fixtures.py) into specs and state_dict arrays, and one clear error per malformed file.

#include <algorithm>
#include <filesystem>
#include <regex>
#include <string>

#include <catch2/catch.hpp>

#include <quadra/error.hpp>
#include <quadra/io/file.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/onnx_import.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/serialization.hpp>

namespace {

using Catch::Matchers::Contains;
using quadra::nn::import_onnx;
using quadra::nn::OnnxImportOptions;

const std::filesystem::path kDir = std::filesystem::path(QUADRA_SOURCE_DIR) / "tests/fixtures/onnx";

std::string import_error(const std::string& file, const OnnxImportOptions& options = {}) {
  try {
    (void)import_onnx(kDir / file, options);
  } catch (const quadra::Error& e) {
    return e.what();
  }
  return "no error";
}

const std::string kBlock1 =
    "residual(conv(4,3,stride=1,pad=1,bias=false,name=layer1.conv1) "
    "batchnorm(eps=1e-05,momentum=0.1,name=layer1.bn1) relu "
    "conv(4,3,stride=1,pad=1,bias=false,name=layer1.conv2) "
    "batchnorm(eps=1e-05,momentum=0.1,name=layer1.bn2))";
const std::string kBlock2 =
    "residual(conv(8,3,stride=2,pad=1,bias=false,name=layer2.conv1) "
    "batchnorm(eps=1e-05,momentum=0.1,name=layer2.bn1) relu "
    "conv(8,3,stride=1,pad=1,bias=false,name=layer2.conv2) "
    "batchnorm(eps=1e-05,momentum=0.1,name=layer2.bn2), "
    "shortcut=conv(8,1,stride=2,pad=0,bias=false,name=layer2.down.0) "
    "batchnorm(eps=1e-05,momentum=0.1,name=layer2.down.1))";

const std::string kResnetSpec = "conv(4,3,stride=1,pad=1,bias=true,name=stem) " + kBlock1 +
                                " relu " + kBlock2 +
                                " relu globalavgpool flatten linear(5,bias=true,name=fc)";

}  // namespace

TEST_CASE("an exported ResNet becomes residual blocks named like its state_dict", "[nn][onnx]") {
  REQUIRE(quadra::nn::onnx_available());
  const auto model = import_onnx(kDir / "resnet.onnx");
  CHECK(model.spec == kResnetSpec);
  CHECK(model.input_shape.str() == "1x8x8");
  // Every state_dict entry, with PyTorch's values (batch norm statistics included).
  const auto state = quadra::io::read_npz(kDir / "resnet_state.npz");
  CHECK(model.arrays.size() == state.size());
  for (const auto& [key, expected] : state) {
    INFO(key);
    REQUIRE(model.arrays.count(key) == 1);
    const auto& got = model.arrays.at(key);
    CHECK(got.shape == expected.shape);
    if (key.find("num_batches_tracked") == std::string::npos) {
      CHECK(got.to_vector<double>() == expected.to_vector<double>());
    }
  }
}

TEST_CASE("training_mode = 1 imports as batch statistics; --batch-norm overrides", "[nn][onnx]") {
  using quadra::nn::NormMode;
  const auto train = import_onnx(kDir / "resnet_train.onnx");
  CHECK(train.spec == kResnetSpec);
  CHECK(train.batch_norm == NormMode::kBatchStatistics);
  CHECK(import_onnx(kDir / "resnet.onnx").batch_norm == NormMode::kRunningStatistics);
  OnnxImportOptions running;
  running.batch_norm = "running";
  const auto as_running = import_onnx(kDir / "resnet_train.onnx", running);
  CHECK(as_running.spec == kResnetSpec);
  CHECK(as_running.batch_norm == NormMode::kRunningStatistics);
  OnnxImportOptions batch;
  batch.batch_norm = "batch";
  CHECK(import_onnx(kDir / "resnet.onnx", batch).batch_norm == NormMode::kBatchStatistics);
  OnnxImportOptions bad;
  bad.batch_norm = "frozen";
  CHECK_THAT(import_error("resnet.onnx", bad), Contains("'frozen'") && Contains("running or batch"));
}

TEST_CASE("a training-mode ResNet export matches PyTorch's train-mode gradient", "[nn][onnx]") {
  // make_onnx_train_grad.py: the same weights in train mode (the batch's statistics).
  const auto model = quadra::nn::load_model<double>(kDir / "resnet_train.onnx");
  const auto& net = model.network;
  CHECK(net.has_batch_statistics());
  const auto x = quadra::io::read_npy(kDir / "resnet_x.npy").to_vector<double>();
  const auto labels = quadra::io::read_npy(kDir / "resnet_y.npy").to_vector<std::int64_t>();
  const auto n = static_cast<Eigen::Index>(labels.size());
  const Eigen::Map<const Eigen::MatrixXd> inputs(x.data(), net.num_inputs(), n);
  quadra::nn::BoundBatch<double> batch(net, model.params, inputs,
                                       quadra::nn::Targets<double>::from_labels(labels),
                                       quadra::nn::Loss::kCrossEntropy);
  const auto expected = quadra::io::read_npz(kDir / "resnet_train_grad.npz");
  CHECK(batch.loss() == Approx(expected.at("loss").to_vector<double>()[0]).epsilon(1e-12));
  Eigen::VectorXd grad(net.num_parameters());
  batch.gradient(grad);
  for (const auto& p : net.parameters()) {
    INFO(p.name);
    const auto want = expected.at(p.name).to_vector<double>();
    const Eigen::Map<const Eigen::VectorXd> w(want.data(), p.size);
    CHECK((grad.segment(p.offset, p.size) - w).norm() <= 1e-10 * std::max(w.norm(), 1e-300));
  }
}

TEST_CASE("a constant-folded export is named after its nodes", "[nn][onnx]") {
  const auto model = import_onnx(kDir / "resnet_folded.onnx");
  CHECK(model.spec ==
        "conv(4,3,stride=1,pad=1,bias=true,name=stem) "
        "residual(conv(4,3,stride=1,pad=1,bias=true,name=layer1.conv1) relu "
        "conv(4,3,stride=1,pad=1,bias=true,name=layer1.conv2)) relu "
        "residual(conv(8,3,stride=2,pad=1,bias=true,name=layer2.conv1) relu "
        "conv(8,3,stride=1,pad=1,bias=true,name=layer2.conv2), "
        "shortcut=conv(8,1,stride=2,pad=0,bias=true,name=layer2.down.0)) relu "
        "globalavgpool flatten linear(5,bias=true,name=fc)");
  CHECK(model.arrays.size() == 14);
  CHECK(model.arrays.at("layer2.down.0.bias").shape == std::vector<std::int64_t>{8});
}

TEST_CASE("pools, activations, layer norm, GELU, dropout, view and x @ W + b import", "[nn][onnx]") {
  const auto model = import_onnx(kDir / "mixed_train.onnx");
  CHECK(model.spec ==
        "conv(3,3,stride=1,pad=1,bias=true,name=conv) leakyrelu(0.2) maxpool(2,stride=2,pad=0) "
        "avgpool(2,stride=1,pad=1) softplus flatten layernorm(eps=1e-05,name=norm) gelu "
        "dropout(0.25) linear(6,bias=true,name=w) tanh linear(4,bias=true,name=fc) sigmoid");
  CHECK(model.input_shape.str() == "2x6x6");
  // MatMul's weight is in x out; a Linear layer's is out x in.
  const auto& w = model.arrays.at("w.weight");
  CHECK(w.shape == std::vector<std::int64_t>{6, 48});
  CHECK(model.arrays.at("w.bias").shape == std::vector<std::int64_t>{6});
}

TEST_CASE("malformed ONNX files get one clear error each", "[nn][onnx]") {
  CHECK_THAT(import_error("unsupported_softmax.onnx"),
             Contains("unsupported_softmax.onnx") && Contains("node '/1/Softmax' (Softmax)") &&
                 Contains("not supported"));
  CHECK_THAT(import_error("dynamic_height.onnx"),
             Contains("dynamic dimension 'height' at axis 2") && Contains("only the batch"));
  CHECK_THAT(import_error("missing_initializer.onnx"),
             Contains("(Conv)") && Contains("'onnx::Conv_69' is not an initializer"));
  CHECK_THAT(import_error("truncated.onnx"), Contains("truncated.onnx: not an ONNX model"));
  CHECK_THAT(import_error("not_onnx.onnx"), Contains("not_onnx.onnx: not an ONNX model"));
  CHECK_THAT(import_error("no_such_file.onnx"), Contains("no_such_file.onnx"));
  // Hand-damaged bytes: a bad opset.
  auto bytes = quadra::io::read_file_bytes(kDir / "resnet.onnx");
  CHECK_THAT(std::string([&] {
               try {
                 (void)quadra::nn::import_onnx_bytes(std::string_view(bytes).substr(0, 10), "cut.onnx");
               } catch (const quadra::Error& e) {
                 return std::string(e.what());
               }
               return std::string("no error");
             }()),
             Contains("cut.onnx: not an ONNX model"));
}

TEST_CASE("ONNX files are recognised by their extension", "[nn][onnx]") {
  CHECK(quadra::nn::is_onnx_file("net.onnx"));
  CHECK(quadra::nn::is_onnx_file("dir/NET.ONNX"));
  CHECK_FALSE(quadra::nn::is_onnx_file("net.npz"));
  CHECK_FALSE(quadra::nn::is_onnx_file("onnx"));
}

TEST_CASE("an imported network computes what PyTorch computes", "[nn][onnx]") {
  // Constant folding fused BatchNorm into the convolutions: a residual network of Conv, ReLU,
  // Add, global pooling and Linear whose outputs are the original module's.
  const auto model = import_onnx(kDir / "resnet_folded.onnx");
  const quadra::nn::Network network(model.spec, model.input_shape);
  // The canonical spec keeps the names.
  CHECK(quadra::nn::Network(network.spec(), model.input_shape).parameters().front().name == "stem.weight");
  for (const auto& p : network.parameters()) CHECK(model.arrays.count(p.name) == 1);
  const auto params =
      quadra::nn::parameters_from_arrays<double>(model.arrays, network, kDir / "resnet_folded.onnx");
  const auto x = quadra::io::read_npy(kDir / "resnet_x.npy");
  const auto expected = quadra::io::read_npy(kDir / "resnet_logits.npy");
  const auto n = x.shape[0];
  const auto xs = x.to_vector<double>();
  const Eigen::Map<const Eigen::MatrixXd> inputs(xs.data(), network.num_inputs(), n);
  const Eigen::MatrixXd out = network.forward<double>(params, inputs);
  const auto want = expected.to_vector<double>();
  const Eigen::Map<const Eigen::MatrixXd> reference(want.data(), network.num_outputs(), n);
  CHECK((out - reference).norm() <= 1e-10 * reference.norm());
}

TEST_CASE("an exported ResNet with BatchNorm matches PyTorch and its spec form", "[nn][onnx]") {
  const auto file = kDir / "resnet.onnx";
  const auto model = quadra::nn::load_model<double>(file);
  const auto& net = model.network;
  CHECK(net.buffers().size() == 5 * 3);  // five BatchNorms: mean, variance, batches tracked
  const auto x = quadra::io::read_npy(kDir / "resnet_x.npy").to_vector<double>();
  const auto labels = quadra::io::read_npy(kDir / "resnet_y.npy").to_vector<std::int64_t>();
  const auto n = static_cast<Eigen::Index>(labels.size());
  const Eigen::Map<const Eigen::MatrixXd> inputs(x.data(), net.num_inputs(), n);

  const auto logits = quadra::io::read_npy(kDir / "resnet_logits.npy").to_vector<double>();
  const Eigen::Map<const Eigen::MatrixXd> reference(logits.data(), net.num_outputs(), n);
  const Eigen::MatrixXd out = net.forward<double>(model.params, inputs);
  CHECK((out - reference).norm() <= 1e-12 * reference.norm());

  quadra::nn::BoundBatch<double> batch(net, model.params, inputs,
                                       quadra::nn::Targets<double>::from_labels(labels),
                                       quadra::nn::Loss::kCrossEntropy);
  Eigen::VectorXd grad(net.num_parameters());
  batch.gradient(grad);
  const auto expected = quadra::io::read_npz(kDir / "resnet_grad.npz");
  REQUIRE(expected.size() == net.parameters().size());
  for (const auto& p : net.parameters()) {
    INFO(p.name);
    const auto want = expected.at(p.name).to_vector<double>();
    const Eigen::Map<const Eigen::VectorXd> w(want.data(), p.size);
    CHECK((grad.segment(p.offset, p.size) - w).norm() <= 1e-10 * std::max(w.norm(), 1e-300));
  }

  // The same network written as a spec without names: the same numbers, bit for bit.
  const std::string unnamed = std::regex_replace(
      std::regex_replace(net.spec(), std::regex("\\(name=[^,)]*\\)"), ""),
      std::regex(",name=[^,)]*"), "");
  REQUIRE(unnamed.find("name=") == std::string::npos);
  quadra::nn::Network plain(unnamed, net.input_shape());
  plain.set_buffer_values(net.buffer_values());
  CHECK(plain.parameters()[0].name == "0.weight");
  quadra::nn::BoundBatch<double> same(plain, model.params, inputs,
                                      quadra::nn::Targets<double>::from_labels(labels),
                                      quadra::nn::Loss::kCrossEntropy);
  Eigen::VectorXd grad_plain(plain.num_parameters());
  same.gradient(grad_plain);
  CHECK(grad_plain == grad);
  const Eigen::VectorXd v = Eigen::VectorXd::LinSpaced(net.num_parameters(), -1.0, 1.0);
  Eigen::VectorXd hv(net.num_parameters());
  Eigen::VectorXd hv_plain(net.num_parameters());
  batch.hessian_product(v, hv);
  same.hessian_product(v, hv_plain);
  CHECK(hv_plain == hv);
}
