// Peak memory of one engine product on the example ResNet-8 (bench_engine's `resnet` model,
// 3×32×32 inputs, cross-entropy) or the other bench_engine models, in a process of its own:
//
//   peak_memory PRODUCT [MODEL [BATCH]]
//
// PRODUCT: bind (the forward pass alone), gradient, ggn, hessian, persample, ef, ggn_diag,
// ef_diag, kfac_type2, kfac_empirical. MODEL: resnet (default), cnn or mlp; BATCH: 128.
// Each product binds a fresh batch (forward pass included) and writes its result into memory it
// allocates, as a caller would. The report is the growth of the peak resident set
// (getrusage's ru_maxrss) over the resident set after loading: the network, parameters, inputs,
// labels and direction, and a warm-up product on a batch of one sample (thread pool, kernel
// scratch). bench/compare_memory.py runs every product next to PyTorch and prints the table.
// float32; threads: QUADRA_THREADS (default: all cores).

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/parallel.hpp>
#include <random>
#include <string>
#include <vector>

namespace {

using quadra::Index;
using namespace quadra::nn;
using S = float;

const char* spec_of(const std::string& model) {
  if (model == "mlp") return "linear(512) tanh linear(256) tanh linear(10)";
  if (model == "cnn") {
    return "conv(16,3,pad=1) relu maxpool(2) conv(32,3) relu avgpool(2) flatten linear(10)";
  }
  if (model == "resnet") {  // bench_engine.cpp's kResnet
    return "conv(16,3,pad=1,bias=false) batchnorm relu "
           "residual(conv(16,3,pad=1,bias=false) batchnorm relu conv(16,3,pad=1,bias=false) "
           "batchnorm) relu "
           "residual(conv(32,3,stride=2,pad=1,bias=false) batchnorm relu "
           "conv(32,3,pad=1,bias=false) batchnorm, shortcut=conv(32,1,stride=2,bias=false) "
           "batchnorm) relu "
           "residual(conv(64,3,stride=2,pad=1,bias=false) batchnorm relu "
           "conv(64,3,pad=1,bias=false) batchnorm, shortcut=conv(64,1,stride=2,bias=false) "
           "batchnorm) relu globalavgpool flatten linear(10)";
  }
  return nullptr;
}

const char* shape_of(const std::string& model) {
  if (model == "mlp") return "784";
  if (model == "cnn") return "1x28x28";
  return "3x32x32";
}

/// Peak resident set so far, in KiB.
long peak_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

/// Current resident set, in KiB (from /proc/self/statm).
long current_kib() {
  long pages = 0;
  long resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * 4;
}

/// Runs `product` on a fresh batch of the first n columns; returns a checksum so nothing is
/// optimised away.
double run(const std::string& product, const Network& net, const quadra::Vector<S>& theta,
           const quadra::Matrix<S>& x, const std::vector<std::int64_t>& y,
           const quadra::Vector<S>& v, Index n) {
  const std::vector<std::int64_t> labels(y.begin(), y.begin() + n);
  BoundBatch<S> batch(net, theta, x.leftCols(n), Targets<S>::from_labels(labels),
                      Loss::kCrossEntropy);
  const Index p = net.num_parameters();
  if (product == "bind") return batch.loss();
  if (product == "persample") {
    quadra::Matrix<S> out(p, n);
    batch.per_sample_gradients(out);
    return out.sum();
  }
  if (product == "kfac_type2" || product == "kfac_empirical") {
    const auto factors =
        batch.kfac_factors(product == "kfac_type2" ? KfacType::kType2 : KfacType::kEmpirical);
    double sum = 0;
    for (const auto& f : factors) sum += f.a.sum() + f.s.sum();
    return sum;
  }
  quadra::Vector<S> out(p);
  if (product == "gradient") {
    batch.gradient(out);
  } else if (product == "ggn") {
    batch.ggn_product(v, out);
  } else if (product == "hessian") {
    batch.hessian_product(v, out);
  } else if (product == "ef") {
    batch.empirical_fisher_product(v, out);
  } else if (product == "ggn_diag") {
    batch.ggn_diagonal(out);
  } else if (product == "ef_diag") {
    batch.empirical_fisher_diagonal(out);
  } else {
    return -1;
  }
  return out.sum();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: peak_memory PRODUCT [MODEL [BATCH]]\n");
    return 2;
  }
  const std::string product = argv[1];
  const std::string model = argc > 2 ? argv[2] : "resnet";
  const Index n = argc > 3 ? std::atol(argv[3]) : 128;
  const char* spec = spec_of(model);
  if (spec == nullptr || n < 1) {
    std::fprintf(stderr, "peak_memory: model '%s' (expected resnet, cnn or mlp), batch %ld\n",
                 model.c_str(), static_cast<long>(n));
    return 2;
  }
  if (const char* threads = std::getenv("QUADRA_THREADS"))
    quadra::set_num_threads(std::atoi(threads));
  const Network net(spec, parse_shape(shape_of(model)));
  const quadra::Vector<S> theta = net.initial_parameters<S>(0);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::normal_distribution<double> normal;
  quadra::Matrix<S> x(net.num_inputs(), n);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(uniform(rng));
  std::vector<std::int64_t> y;
  for (Index i = 0; i < n; ++i) y.push_back(static_cast<std::int64_t>(rng() % 10));
  quadra::Vector<S> v(net.num_parameters());
  for (Index i = 0; i < v.size(); ++i) v[i] = static_cast<S>(normal(rng));

  if (run(product, net, theta, x, y, v, 1) == -1) {
    std::fprintf(stderr, "peak_memory: unknown product '%s'\n", product.c_str());
    return 2;
  }
  const long base = current_kib();
  const long peak_before = peak_kib();
  const double check = run(product, net, theta, x, y, v, n);
  const long peak = peak_kib();
  // The high-water mark can only show what exceeds the loading and warm-up's peak.
  if (peak == peak_before)
    std::fprintf(stderr, "peak_memory: the product stayed below the warm-up's peak\n");
  const long growth = peak - base;
  std::printf(
      "{\"product\": \"%s\", \"model\": \"%s\", \"batch\": %ld, \"baseline_kib\": %ld, "
      "\"peak_kib\": %ld, \"growth_kib\": %ld, \"checksum\": %g}\n",
      product.c_str(), model.c_str(), static_cast<long>(n), base, peak, growth, check);
  return 0;
}
