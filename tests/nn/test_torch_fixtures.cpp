// Cross-check with PyTorch: tests/fixtures/torch/make_fixtures.py (chains) and
// make_graph_fixtures.py (residual networks, built by examples/pytorch/quadra_modules.py)
// computed these references with torch autograd in float64; quadra must match them to 1e-10
// relative.

#include <catch2/catch.hpp>

#include <filesystem>

#include <quadra/io/npy.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/serialization.hpp>

using namespace quadra;
using namespace quadra::nn;

namespace {

const std::filesystem::path kDir = std::filesystem::path(QUADRA_SOURCE_DIR) / "tests/fixtures/torch";

io::NpyArray fixture(const std::string& name, const std::string& key) {
  return io::read_npy(kDir / (name + "_" + key + ".npy"));
}

Vector<double> vec(const io::NpyArray& a) {
  const auto v = a.to_vector<double>();
  return Eigen::Map<const Vector<double>>(v.data(), static_cast<Index>(v.size()));
}

std::string text(const io::NpyArray& a) {
  const auto bytes = a.to_vector<std::uint8_t>();
  return {bytes.begin(), bytes.end()};
}

double rel(const Eigen::Ref<const Matrix<double>>& a, const Eigen::Ref<const Matrix<double>>& b) {
  return (a - b).norm() / b.norm();
}

}  // namespace

TEST_CASE("quadra matches PyTorch on the committed fixtures", "[nn][torch]") {
  // norm_*: batchnorm (eval mode, non-trivial running statistics), layernorm and groupnorm with
  // non-trivial weights and biases (make_norm_fixtures.py); resnet, resmlp_mse: residual blocks
  // (make_graph_fixtures.py).
  for (const std::string name :
       {"mlp", "cnn", "mlp_mse", "resnet", "resmlp_mse", "norm_cnn", "norm_mlp"}) {
    INFO(name);
    TensorShape shape;
    for (std::int64_t d : fixture(name, "input_shape").to_vector<std::int64_t>()) shape.dims.push_back(d);
    Network net(text(fixture(name, "spec")), shape);
    const Loss loss = parse_loss(text(fixture(name, "loss")));
    if (std::filesystem::exists(kDir / (name + "_names.npy"))) {
      // quadra names every parameter as the PyTorch module of quadra_modules.py does.
      std::string names;
      for (const ParameterInfo& info : net.parameters()) {
        names += (names.empty() ? "" : "\n") + info.name;
      }
      CHECK(names == text(fixture(name, "names")));
    }
    // Weights come from numpy.savez of the torch state_dict: the documented interop path.
    // The state_dict's buffers (running statistics) come with it.
    std::vector<double> buffers;
    const Vector<double> theta = load_weights<double>(kDir / (name + "_weights.npz"), net, &buffers);
    net.set_buffer_values(buffers);
    const io::NpyArray x_array = fixture(name, "x");
    const Index n = x_array.shape[0];
    const auto x_values = x_array.to_vector<double>();
    const Matrix<double> x = Eigen::Map<const Matrix<double>>(x_values.data(), net.num_inputs(), n);
    Targets<double> targets;
    const io::NpyArray y_array = fixture(name, "y");
    if (loss == Loss::kCrossEntropy) {
      targets.labels = y_array.to_vector<std::int64_t>();
    } else {
      const auto y = y_array.to_vector<double>();
      targets.values = Eigen::Map<const Matrix<double>>(y.data(), net.num_outputs(), n);
    }
    BoundBatch<double> batch(net, theta, x, targets, loss);
    const Vector<double> v = vec(fixture(name, "v"));
    const Index p = net.num_parameters();
    Vector<double> out(p);

    CHECK(batch.loss() == Approx(fixture(name, "loss_value").to_vector<double>()[0]).epsilon(1e-12));
    batch.gradient(out);
    CHECK(rel(out, vec(fixture(name, "grad"))) < 1e-10);
    batch.ggn_product(v, out);
    CHECK(rel(out, vec(fixture(name, "ggn_v"))) < 1e-10);
    batch.hessian_product(v, out);
    CHECK(rel(out, vec(fixture(name, "hessian_v"))) < 1e-10);
    batch.empirical_fisher_product(v, out);
    CHECK(rel(out, vec(fixture(name, "ef_v"))) < 1e-10);
    batch.ggn_diagonal(out);
    CHECK(rel(out, vec(fixture(name, "ggn_diag"))) < 1e-10);
    Matrix<double> jv(net.num_outputs(), n);
    batch.jvp(v, jv);
    CHECK(rel(Eigen::Map<const Vector<double>>(jv.data(), jv.size()), vec(fixture(name, "jvp"))) < 1e-10);

    const auto factors = batch.kfac_factors(KfacType::kType2);
    for (const auto& f : factors) {
      // Files are keyed by module path (in a chain, the layer's index).
      const std::string& path = net.module_path(f.layer);
      INFO("layer " << f.layer << " " << path);
      const auto a = vec(fixture(name, "kfac_a_" + path));
      const auto s = vec(fixture(name, "kfac_s_" + path));
      REQUIRE(a.size() == f.a.size());
      REQUIRE(s.size() == f.s.size());
      CHECK(rel(Eigen::Map<const Vector<double>>(f.a.data(), f.a.size()), a) < 1e-10);
      CHECK(rel(Eigen::Map<const Vector<double>>(f.s.data(), f.s.size()), s) < 1e-10);
    }
  }
}
