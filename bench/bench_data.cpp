// The data layer's speed: loading Fashion-MNIST (the target is well under two seconds in
// Release), its parts (gunzip, pixel conversion), and the sampler's per-step cost.

#include <benchmark/benchmark.h>

#include <numeric>

#include <quadra/data/loaders.hpp>
#include <quadra/data/sampler.hpp>
#include <quadra/data/source.hpp>
#include <quadra/io/npy.hpp>

namespace {

const std::filesystem::path kTrainImages =
    quadra::data::default_fashion_mnist_dir() / "train-images-idx3-ubyte.gz";

// Both files, decompressed, parsed and converted: what every command pays at start-up.
void BM_LoadFashionMnist(benchmark::State& state) {
  for (auto _ : state) {
    auto data = quadra::data::load_fashion_mnist();
    benchmark::DoNotOptimize(data.train.features.data());
  }
  state.counters["images"] = benchmark::Counter(70000.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LoadFashionMnist)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// The same plus the random 50k/10k split and global standardisation (`quadra data describe`).
void BM_LoadFashionMnistSplits(benchmark::State& state) {
  quadra::data::LoadOptions options;
  options.normalization = quadra::data::Normalization::kStandardizeGlobal;
  for (auto _ : state) {
    auto splits = quadra::data::load_data("fashion-mnist", options);
    benchmark::DoNotOptimize(splits.train.features.data());
  }
}
BENCHMARK(BM_LoadFashionMnistSplits)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_GunzipTrainImages(benchmark::State& state) {
  const std::string compressed = quadra::io::read_file_bytes(kTrainImages);
  for (auto _ : state) {
    const std::string raw = quadra::data::gunzip_if_compressed(compressed, "train-images");
    benchmark::DoNotOptimize(raw.data());
    state.SetBytesProcessed(state.bytes_processed() + static_cast<std::int64_t>(raw.size()));
  }
}
BENCHMARK(BM_GunzipTrainImages)->Unit(benchmark::kMillisecond);

void BM_IdxTrainImagesFromRaw(benchmark::State& state) {
  const std::string raw =
      quadra::data::gunzip_if_compressed(quadra::io::read_file_bytes(kTrainImages), "train-images");
  const std::string labels(std::string("\0\0\x08\x01\0\0\xea\x60", 8) + std::string(60000, '\0'));
  for (auto _ : state) {
    auto data = quadra::data::idx_dataset(raw, "images", labels, "labels", "bench");
    benchmark::DoNotOptimize(data.features.data());
    state.SetBytesProcessed(state.bytes_processed() + static_cast<std::int64_t>(raw.size()));
  }
}
BENCHMARK(BM_IdxTrainImagesFromRaw)->Unit(benchmark::kMillisecond);

// One step of a four-draw plan (batch 128 each) and the gather of its 512 rows of 784 floats.
void BM_SamplerStepAndGather(benchmark::State& state) {
  const auto data = quadra::data::load_fashion_mnist().train;
  quadra::data::SamplerOptions options;
  options.batch_size = 128;
  quadra::data::BatchSampler sampler(data.size(), options);
  quadra::BatchPlan plan;
  plan.draws.assign(4, quadra::BatchDraw{1.0, false});
  plan.draw_of_role = {0, 1, 2, 3};
  quadra::data::GatherBuffer buffer;
  for (auto _ : state) {
    const auto& step = sampler.next(plan);
    for (int d = 0; d < step.num_draws(); ++d) {
      const auto view = quadra::data::gather(data, step.draw(d), buffer);
      benchmark::DoNotOptimize(view.features);
    }
  }
  state.SetItemsProcessed(state.iterations() * 512);
}
BENCHMARK(BM_SamplerStepAndGather)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
