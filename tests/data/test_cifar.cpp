// CIFAR-10 and CIFAR-100 binary files generated in the test: records, layout, scaling, labels,
// every refusal, the directory layouts, splits and per-channel standardisation.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <quadra/data/loaders.hpp>
#include <quadra/data/source.hpp>
#include <quadra/error.hpp>

#include "data_test_util.hpp"

using Catch::Contains;
using quadra::data::CifarLabel;
using quadra::test::cifar_pixel;
using quadra::test::cifar_record;
using quadra::test::ScratchDir;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kPixels = 3072;

/// CIFAR-10 records with the given labels; record r's pixels come from cifar_pixel(first + r).
std::string cifar10_bytes(const std::vector<std::uint8_t>& labels, int first = 0) {
  std::string out;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    out += cifar_record({labels[r]}, first + static_cast<int>(r));
  }
  return out;
}

/// CIFAR-100 records of (coarse, fine) labels.
std::string cifar100_bytes(const std::vector<std::pair<std::uint8_t, std::uint8_t>>& labels) {
  std::string out;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    out += cifar_record({labels[r].first, labels[r].second}, static_cast<int>(r));
  }
  return out;
}

/// A CIFAR-10 directory: each training file holds `per_file` records, the test file `test`;
/// training record k of the whole set has label k % 10 and pixels cifar_pixel(k, ...).
void write_cifar10(const ScratchDir& dir, int per_file, int test) {
  for (int f = 0; f < 5; ++f) {
    std::vector<std::uint8_t> labels;
    for (int r = 0; r < per_file; ++r) {
      labels.push_back(static_cast<std::uint8_t>((f * per_file + r) % 10));
    }
    dir.write(fmt::format("data_batch_{}.bin", f + 1), cifar10_bytes(labels, f * per_file));
  }
  std::vector<std::uint8_t> labels;
  for (int r = 0; r < test; ++r) labels.push_back(static_cast<std::uint8_t>(9 - r % 10));
  dir.write("test_batch.bin", cifar10_bytes(labels, 1000));
}

}  // namespace

TEST_CASE("CIFAR-10 records: labels, C-H-W layout and scaling", "[data][cifar]") {
  const auto data = quadra::data::cifar10_dataset(cifar10_bytes({3, 0, 9}), "b.bin", "cifar10/x");
  REQUIRE(data.size() == 3);
  CHECK(data.name == "cifar10/x");
  CHECK(data.sample_shape == std::vector<std::int64_t>{3, 32, 32});
  CHECK(data.labels == std::vector<std::int64_t>{3, 0, 9});
  CHECK(data.num_classes == 10);
  CHECK(data.class_names == quadra::data::cifar10_class_names());
  CHECK(data.class_names.front() == "airplane");
  CHECK(data.class_names.back() == "truck");
  // Every pixel at its C-H-W index, exactly byte / 255.
  bool all = true;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) {
          const float want = static_cast<float>(cifar_pixel(r, c, y, x)) / 255.0f;
          all = all && data.features[static_cast<std::size_t>(r) * kPixels +
                                     static_cast<std::size_t>(c * 1024 + y * 32 + x)] == want;
        }
      }
    }
  }
  CHECK(all);
  // One lit pixel: green, row 5, column 7 of the second record.
  std::string bytes(2 * 3073, '\0');
  bytes[3073 + 1 + 1024 + 5 * 32 + 7] = static_cast<char>(255);
  const auto lit = quadra::data::cifar10_dataset(bytes, "lit.bin", "cifar10/lit");
  double sum = 0;
  for (float v : lit.features) sum += v;
  CHECK(sum == 1.0);
  CHECK(lit.features[kPixels + 1024 + 5 * 32 + 7] == 1.0f);
  CHECK(lit.sample(1)[1 * 1024 + 5 * 32 + 7] == 1.0f);
  lit.validate();
}

TEST_CASE("CIFAR-100 records: fine or coarse labels, both checked", "[data][cifar]") {
  const std::string bytes = cifar100_bytes({{4, 72}, {19, 99}, {0, 0}});
  const auto fine = quadra::data::cifar100_dataset(bytes, "train.bin", CifarLabel::kFine, "f");
  const auto coarse = quadra::data::cifar100_dataset(bytes, "train.bin", CifarLabel::kCoarse, "c");
  CHECK(fine.labels == std::vector<std::int64_t>{72, 99, 0});
  CHECK(coarse.labels == std::vector<std::int64_t>{4, 19, 0});
  CHECK(fine.num_classes == 100);
  CHECK(coarse.num_classes == 20);
  CHECK(fine.class_names.size() == 100);
  CHECK(coarse.class_names.size() == 20);
  CHECK(fine.class_names[72] == "seal");
  CHECK(coarse.class_names[4] == "fruit_and_vegetables");
  CHECK(fine.features == coarse.features);
  // The pixels follow the two label bytes.
  CHECK(fine.features[kPixels + 2 * 1024 + 31 * 32 + 31] ==
        static_cast<float>(cifar_pixel(1, 2, 31, 31)) / 255.0f);
}

TEST_CASE("CIFAR refusals name the file, the record, the value and what was expected",
          "[data][cifar][errors]") {
  REQUIRE_THROWS_WITH(
      quadra::data::cifar10_dataset(cifar10_bytes({1, 2}) + "12345", "/d/data_batch_1.bin", "x"),
      "/d/data_batch_1.bin: 6151 bytes is not a whole, nonzero number of 3073-byte cifar10 "
      "records (2 records and 5 bytes left over); expected a file of the CIFAR-10 binary version");
  REQUIRE_THROWS_WITH(quadra::data::cifar10_dataset("", "/d/test_batch.bin", "x"),
                      Contains("/d/test_batch.bin: 0 bytes is not a whole, nonzero number of "
                               "3073-byte cifar10 records"));
  // A CIFAR-100 file read as CIFAR-10: 3074-byte records do not divide.
  REQUIRE_THROWS_WITH(quadra::data::cifar10_dataset(cifar100_bytes({{1, 1}}), "t.bin", "x"),
                      Contains("t.bin: 3074 bytes is not a whole, nonzero number of 3073-byte"));
  REQUIRE_THROWS_WITH(
      quadra::data::cifar100_dataset(cifar10_bytes({1, 2}), "/d/train.bin", CifarLabel::kFine, "x"),
      Contains("/d/train.bin: 6146 bytes is not a whole, nonzero number of 3074-byte cifar100 "
               "records (1 records and 3072 bytes left over); expected a file of the CIFAR-100 "
               "binary version"));
  REQUIRE_THROWS_WITH(quadra::data::cifar10_dataset(cifar10_bytes({1, 10}), "b.bin", "x"),
                      "b.bin: record 1 (offset 3073) has label 10; expected a class in [0, 10)");
  REQUIRE_THROWS_WITH(
      quadra::data::cifar100_dataset(cifar100_bytes({{20, 5}}), "c.bin", CifarLabel::kFine, "x"),
      "c.bin: record 0 (offset 0) has coarse label 20; expected a class in [0, 20)");
  // The unused label is checked too.
  REQUIRE_THROWS_WITH(quadra::data::cifar100_dataset(cifar100_bytes({{1, 5}, {2, 6}, {3, 100}}),
                                                     "c.bin", CifarLabel::kCoarse, "x"),
                      "c.bin: record 2 (offset 6149) has fine label 100; expected a class in "
                      "[0, 100)");
}

TEST_CASE("cifar10:DIR loads five training files in order and the test file",
          "[data][cifar][source]") {
  const ScratchDir dir("cifar10_dir");
  write_cifar10(dir, 4, 3);
  quadra::data::LoadOptions options;
  options.validation_size = 0;
  const auto splits = quadra::data::load_data("cifar10:" + dir.path().string(), options);
  REQUIRE(splits.train.size() == 20);
  REQUIRE(splits.test.size() == 3);
  CHECK(splits.train.name == "cifar10/train");
  CHECK(splits.test.name == "cifar10/test");
  for (std::int64_t k = 0; k < 20; ++k) {
    CHECK(splits.train.labels[static_cast<std::size_t>(k)] == k % 10);
  }
  CHECK(splits.train.features[13 * kPixels + 2 * 1024 + 7] ==
        static_cast<float>(cifar_pixel(13, 2, 0, 7)) / 255.0f);
  CHECK(splits.test.labels == std::vector<std::int64_t>{9, 8, 7});
  CHECK(splits.test.class_names == quadra::data::cifar10_class_names());

  // The default validation split is a seeded sixth of the training files, as for every source.
  const auto split = quadra::data::load_data("cifar10:" + dir.path().string(), {});
  CHECK(split.train.size() == 17);
  CHECK(split.validation.size() == 3);
  CHECK(split.validation.name == "cifar10/validation");
  CHECK(split.test.size() == 3);

  // The folder the official archive unpacks to may be passed, or its parent.
  const ScratchDir parent("cifar10_parent");
  fs::create_directories(parent.path() / "cifar-10-batches-bin");
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    fs::copy_file(entry.path(), parent.path() / "cifar-10-batches-bin" / entry.path().filename());
  }
  CHECK(quadra::data::load_data("cifar10:" + parent.path().string(), options).train.size() == 20);
}

TEST_CASE("cifar10:DIR and cifar100:DIR refuse missing files and directories",
          "[data][cifar][errors]") {
  const ScratchDir dir("cifar10_missing");
  write_cifar10(dir, 2, 2);
  fs::remove(dir.path() / "data_batch_3.bin");
  const std::string d = dir.path().string();
  REQUIRE_THROWS_WITH(quadra::data::load_data("cifar10:" + d, {}),
                      "cifar10: " + d +
                          " has no data_batch_3.bin; expected the files of the unpacked binary "
                          "version (cifar-10-batches-bin: data_batch_1.bin, data_batch_2.bin, "
                          "data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin)");
  REQUIRE_THROWS_WITH(quadra::data::load_data("cifar100:" + d, {}),
                      Contains("cifar100: " + d +
                               " has no train.bin; expected the files of the "
                               "unpacked binary version (cifar-100-binary: train.bin, test.bin)"));
  REQUIRE_THROWS_WITH(quadra::data::load_data("cifar10:/nonexistent/cifar", {}),
                      Contains("cifar10: /nonexistent/cifar is not a directory; expected the "
                               "directory of the unpacked binary version"));
  // A bad record in the fourth file names that file.
  write_cifar10(dir, 2, 2);
  dir.write("data_batch_4.bin", cifar10_bytes({1, 200}));
  REQUIRE_THROWS_WITH(quadra::data::load_data("cifar10:" + d, {}),
                      (dir.path() / "data_batch_4.bin").string() +
                          ": record 1 (offset 3073) has label 200; expected a class in [0, 10)");
}

TEST_CASE("cifar100:DIR with label=fine or coarse", "[data][cifar][source]") {
  const ScratchDir dir("cifar100_dir");
  dir.write("train.bin", cifar100_bytes({{1, 10}, {2, 20}, {3, 30}, {4, 40}, {5, 50}, {6, 60}}));
  dir.write("test.bin", cifar100_bytes({{19, 99}}));
  const std::string d = dir.path().string();
  quadra::data::LoadOptions options;
  options.validation_size = 0;
  const auto fine = quadra::data::load_data("cifar100:" + d, options);
  CHECK(fine.train.labels == std::vector<std::int64_t>{10, 20, 30, 40, 50, 60});
  CHECK(fine.test.labels == std::vector<std::int64_t>{99});
  CHECK(fine.train.num_classes == 100);
  CHECK(fine.test.num_classes == 100);
  const auto coarse = quadra::data::load_data("cifar100:" + d + ",label=coarse", options);
  CHECK(coarse.train.labels == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(coarse.test.labels == std::vector<std::int64_t>{19});
  CHECK(coarse.train.num_classes == 20);
  CHECK(coarse.train.class_names.back() == "vehicles_2");
  CHECK(quadra::data::load_data("cifar100:" + d + ",label=fine", options).train.labels ==
        fine.train.labels);
}

TEST_CASE("standardize-channel: one mean and std per image channel", "[data][cifar][normalize]") {
  const ScratchDir dir("cifar10_norm");
  write_cifar10(dir, 3, 2);
  quadra::data::LoadOptions options;
  options.validation_size = 3;
  options.normalization = quadra::data::Normalization::kStandardizeChannel;
  const auto splits = quadra::data::load_data("cifar10:" + dir.path().string(), options);
  const auto& t = splits.transform;
  REQUIRE(t.kind == quadra::data::Normalization::kStandardizeChannel);
  REQUIRE(t.shift.size() == kPixels);
  t.check(static_cast<std::int64_t>(kPixels), "test");
  const auto n = static_cast<std::size_t>(splits.train.size());
  for (std::size_t c = 0; c < 3; ++c) {
    // Constant over each plane, and the training pixels of the channel have mean 0 and std 1.
    CHECK(t.shift[c * 1024] == t.shift[c * 1024 + 1023]);
    CHECK(t.scale[c * 1024] == t.scale[c * 1024 + 1023]);
    double sum = 0, sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t k = 0; k < 1024; ++k) {
        const double v = splits.train.features[i * kPixels + c * 1024 + k];
        sum += v;
        sq += v * v;
      }
    }
    const double count = static_cast<double>(n * 1024);
    CHECK(std::abs(sum / count) < 1e-5);
    CHECK(sq / count == Approx(1.0).epsilon(1e-4));
  }
  CHECK(t.shift[0] != t.shift[1024]);
  CHECK_THAT(t.describe(), Contains("standardize-channel (3 channels: shift "));
  CHECK(quadra::data::parse_normalization("standardize-channel") ==
        quadra::data::Normalization::kStandardizeChannel);
  // Flat features have no channels.
  options.validation_size = -1;
  REQUIRE_THROWS_WITH(
      quadra::data::load_data("moons", options),
      Contains("cannot fit standardize-channel normalisation: 'moons/train' has "
               "sample shape (2), not images; expected samples of shape (C, H, W)"));
}
