// Engine benchmarks: the operations of perf-baseline.md on the MLP 784-512-256-10 (tanh) and a
// small CNN on 28×28 inputs, batches 128 and 1024, and on the ResNet-8 of examples/resnet
// (3×32×32 inputs, BatchNorm with running statistics) at batch 128: the gradient, GGN- and
// Hessian-vector products and per-sample gradients; float32 (float64 with QUADRA_BENCH_DTYPE=
// float64). Threads: QUADRA_THREADS (default: all cores). bench/compare_engine.py runs this
// next to the PyTorch peer (bench/torch_peer.py) and prints the ratio table.
//
// Names: <op>/<model>/<batch>. Products on a bound batch ("cached") exclude the forward pass,
// as the peer's cached-graph variants do; "grad" includes it. "persample_grad" reuses the bound
// batch's backward pass; "persample_full" (the ResNet) binds afresh, forward and backward
// included, as functorch's vmap of grad computes them.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <string>

#include <quadra/nn/bound_batch.hpp>
#include <quadra/parallel.hpp>

namespace {

using quadra::Index;
using namespace quadra::nn;

const char* kMlp = "linear(512) tanh linear(256) tanh linear(10)";
const char* kCnn = "conv(16,3,pad=1) relu maxpool(2) conv(32,3) relu avgpool(2) flatten linear(10)";
// examples/resnet/resnet.py's quadra_spec(1, 16, 10): He et al.'s CIFAR ResNet-8.
const char* kResnet =
    "conv(16,3,pad=1,bias=false) batchnorm relu "
    "residual(conv(16,3,pad=1,bias=false) batchnorm relu conv(16,3,pad=1,bias=false) batchnorm) relu "
    "residual(conv(32,3,stride=2,pad=1,bias=false) batchnorm relu conv(32,3,pad=1,bias=false) batchnorm, "
    "shortcut=conv(32,1,stride=2,bias=false) batchnorm) relu "
    "residual(conv(64,3,stride=2,pad=1,bias=false) batchnorm relu conv(64,3,pad=1,bias=false) batchnorm, "
    "shortcut=conv(64,1,stride=2,bias=false) batchnorm) relu globalavgpool flatten linear(10)";

template <class S>
struct Setup {
  Network net;
  quadra::Vector<S> theta;
  quadra::Matrix<S> x;
  std::vector<std::int64_t> y;
  quadra::Vector<S> v;

  Setup(const std::string& spec, const std::string& shape, Index n)
      : net(spec, parse_shape(shape)), theta(net.initial_parameters<S>(0)) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::normal_distribution<double> normal;
    x.resize(net.num_inputs(), n);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(uniform(rng));
    for (Index i = 0; i < n; ++i) y.push_back(static_cast<std::int64_t>(rng() % 10));
    v.resize(net.num_parameters());
    for (Index i = 0; i < v.size(); ++i) v[i] = static_cast<S>(normal(rng));
  }
  BoundBatch<S> bind() const { return BoundBatch<S>(net, theta, x, Targets<S>::from_labels(y), Loss::kCrossEntropy); }
};

enum class Op {
  kGrad, kBind, kGgn, kHvp, kEf, kPerSample, kPerSampleFull, kGgnDiag, kEfDiag, kKfacEmp, kKfacMc,
  kKfacType2
};

template <class S>
void run(benchmark::State& state, const char* spec, const char* shape, Op op) {
  const Index n = state.range(0);
  const Setup<S> setup(spec, shape, n);
  auto batch = setup.bind();
  quadra::Vector<S> out(setup.net.num_parameters());
  quadra::Matrix<S> per_sample;
  if (op == Op::kPerSample || op == Op::kPerSampleFull) {
    // Written once before timing so its pages are mapped (a zero fill may become calloc, which
    // maps nothing): the timed calls reuse the block, as the peer reuses its allocator's memory.
    per_sample.resize(setup.net.num_parameters(), n);
    batch.per_sample_gradients(per_sample);
  }
  // Cached products: the backward pass and work areas exist before timing, as in the peer.
  batch.gradient(out);
  batch.hessian_product(setup.v, out);
  for (auto _ : state) {
    switch (op) {
      case Op::kGrad: {
        auto fresh = setup.bind();
        fresh.gradient(out);
        break;
      }
      case Op::kBind: {
        auto fresh = setup.bind();
        benchmark::DoNotOptimize(fresh.loss());
        break;
      }
      case Op::kGgn: batch.ggn_product(setup.v, out); break;
      case Op::kHvp: batch.hessian_product(setup.v, out); break;
      case Op::kEf: batch.empirical_fisher_product(setup.v, out); break;
      case Op::kPerSample: batch.per_sample_gradients(per_sample); break;
      case Op::kPerSampleFull: {  // forward and backward included, as functorch's vmap does
        auto fresh = setup.bind();
        fresh.per_sample_gradients(per_sample);
        break;
      }
      case Op::kGgnDiag: batch.ggn_diagonal(out); break;
      case Op::kEfDiag: batch.empirical_fisher_diagonal(out); break;
      case Op::kKfacEmp: benchmark::DoNotOptimize(batch.kfac_factors(KfacType::kEmpirical)); break;
      case Op::kKfacMc: benchmark::DoNotOptimize(batch.kfac_factors(KfacType::kMc, 1, 0)); break;
      case Op::kKfacType2: benchmark::DoNotOptimize(batch.kfac_factors(KfacType::kType2)); break;
    }
    benchmark::ClobberMemory();
  }
  state.counters["threads"] = quadra::num_threads();
  state.SetItemsProcessed(state.iterations() * n);
}

void register_all(bool f64) {
  struct Item {
    const char* name;
    Op op;
  };
  const Item items[] = {{"grad", Op::kGrad},          {"bind_forward", Op::kBind},
                        {"ggnvp_cached", Op::kGgn},   {"hvp_cached", Op::kHvp},
                        {"efvp_cached", Op::kEf},     {"persample_grad", Op::kPerSample},
                        {"persample_full", Op::kPerSampleFull},
                        {"ggn_diag", Op::kGgnDiag},   {"ef_diag", Op::kEfDiag},
                        {"kfac_empirical", Op::kKfacEmp}, {"kfac_mc1", Op::kKfacMc},
                        {"kfac_type2", Op::kKfacType2}};
  const struct {
    const char* name;
    const char* spec;
    const char* shape;
    bool small;  ///< the ResNet: batch 128 and the operations the peer has for it
  } models[] = {{"mlp", kMlp, "784", false}, {"cnn", kCnn, "1x28x28", false},
                {"resnet", kResnet, "3x32x32", true}};
  for (const auto& model : models) {
    for (const Item& item : items) {
      const bool resnet_op = item.op == Op::kGrad || item.op == Op::kGgn || item.op == Op::kHvp ||
                             item.op == Op::kPerSample || item.op == Op::kPerSampleFull;
      if (model.small ? !resnet_op : item.op == Op::kPerSampleFull) continue;
      const std::string name = std::string(item.name) + "/" + model.name;
      auto* b = f64 ? benchmark::RegisterBenchmark(name.c_str(), run<double>, model.spec, model.shape, item.op)
                    : benchmark::RegisterBenchmark(name.c_str(), run<float>, model.spec, model.shape, item.op);
      b->Arg(128);
      if (!model.small) b->Arg(1024);
      b->Unit(benchmark::kMillisecond)->UseRealTime();
      if (item.op == Op::kPerSample || item.op == Op::kPerSampleFull) b->MinTime(1.0);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* threads = std::getenv("QUADRA_THREADS")) quadra::set_num_threads(std::atoi(threads));
  const char* dtype = std::getenv("QUADRA_BENCH_DTYPE");
  const bool f64 = dtype != nullptr && std::string(dtype) == "float64";
  benchmark::AddCustomContext("dtype", f64 ? "float64" : "float32");
  benchmark::AddCustomContext("gemm_kernel", quadra::nn::gemm_kernel_name());
  benchmark::AddCustomContext("quadra_threads", std::to_string(quadra::num_threads()));
  register_all(f64);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
