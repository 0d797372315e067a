// The machine's memory bandwidth, the floor of the bandwidth-bound operations: per-sample
// gradients write a P × N matrix (274 MB for the MLP 784-512-256-10 at N = 128) and each Gram
// product at N = 1024 reads a 175 MB triangle. Threads: QUADRA_THREADS (default: all cores), as in
// bench_engine. Reported as bytes per second; docs/performance.md compares the engine against
// these.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include <quadra/parallel.hpp>

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace {

constexpr std::int64_t kPerSampleBytes = 535818LL * 128 * 4;  // MLP parameters × 128 samples, float32
constexpr std::int64_t kGramBytes = 36LL * 37 / 2 * 256 * 256 * 4;  // K's packed triangle at N = 1024
constexpr std::int64_t kChunk = 1 << 24;  // bytes per task

// A fresh block (new[] aligns to 16 bytes on x86-64), written once so that its pages are mapped
// before timing.
std::unique_ptr<char[]> mapped_block(std::int64_t bytes) {
  std::unique_ptr<char[]> block(new char[static_cast<std::size_t>(bytes)]);
  std::memset(block.get(), 1, static_cast<std::size_t>(bytes));
  return block;
}

// Fills [begin, end) with four repeating floats, with non-temporal stores where the ISA has
// them, as the engine's per-sample gradients are written (begin and end 16-byte aligned).
void stream_fill(char* begin, char* end, const float (&pattern)[4]) {
#if defined(__SSE2__) && defined(__x86_64__)
  const __m128 value = _mm_loadu_ps(pattern);
  for (char* p = begin; p < end; p += 16) _mm_stream_ps(reinterpret_cast<float*>(p), value);
  _mm_sfence();
#else
  for (char* p = begin; p < end; p += 16) std::memcpy(p, pattern, 16);
#endif
}

// The write-only streaming rate, for data (the floor of per-sample gradients) and for zeros. On
// the VMs this was measured on, lines of zeros are written about twice as fast as lines of data
// (the memory system treats them specially), so only the data rate is a floor for the engine.
void BM_StreamWrite(benchmark::State& state, float first) {
  const float pattern[4] = {first, first * 0.5F, first * 0.25F, first * 0.125F};
  const std::int64_t bytes = state.range(0);
  const auto block = mapped_block(bytes);
  for (auto _ : state) {
    quadra::parallel_for_chunks(bytes, kChunk, [&](const quadra::ChunkRange& r) {
      stream_fill(block.get() + r.begin, block.get() + r.end, pattern);
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK_CAPTURE(BM_StreamWrite, data, 1.5F)->Arg(kPerSampleBytes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_StreamWrite, zeros, 0.0F)->Arg(kPerSampleBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

// A vectorisable sum over float32: the read-only streaming rate.
void BM_StreamRead(benchmark::State& state) {
  const std::int64_t bytes = state.range(0);
  const auto block = mapped_block(bytes);
  const auto* values = reinterpret_cast<const float*>(block.get());
  const std::int64_t count = bytes / 4;
  for (auto _ : state) {
    const float sum = quadra::deterministic_reduce(
        count, kChunk / 4, 0.0F,
        [&](const quadra::ChunkRange& r) {
          float s[8] = {};
          for (std::int64_t i = r.begin; i + 8 <= r.end; i += 8) {
            for (int k = 0; k < 8; ++k) s[k] += values[i + k];
          }
          return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        },
        [](float a, float b) { return a + b; });
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_StreamRead)->Arg(kGramBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  if (const char* threads = std::getenv("QUADRA_THREADS")) quadra::set_num_threads(std::atoi(threads));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
