// IDX and gzip: in-memory parsing, files, the MNIST directory layout, and every error.

#include <catch2/catch.hpp>

#include <cstring>
#include <limits>

#include <sys/stat.h>

#include <fmt/format.h>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

#include "data_test_util.hpp"

using Catch::Contains;
using quadra::data::Dataset;
using quadra::test::bytes_of;
using quadra::test::gzip;
using quadra::test::idx_bytes;
using quadra::test::ScratchDir;

namespace {

/// 3 images of 2x2 pixels, values 0, 51, ..., and labels 2, 0, 1.
std::string images3() {
  std::vector<std::uint8_t> px(12);
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint8_t>((i * 51) % 256);
  return idx_bytes(0x08, {3, 2, 2}, bytes_of(px));
}
std::string labels3() { return idx_bytes(0x08, {3}, bytes_of({2, 0, 1})); }

std::string be_float(float v) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &v, 4);
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((bits >> shift) & 0xff));
  return out;
}

}  // namespace

TEST_CASE("IDX images and labels in memory", "[data][idx]") {
  const Dataset d = quadra::data::idx_dataset(images3(), "img", labels3(), "lab", "t/train");
  CHECK(d.name == "t/train");
  CHECK(d.task == quadra::data::Task::kClassification);
  CHECK(d.sample_shape == std::vector<std::int64_t>{1, 2, 2});
  CHECK(d.size() == 3);
  CHECK(d.feature_dim() == 4);
  CHECK(d.labels == std::vector<std::int64_t>{2, 0, 1});
  CHECK(d.num_classes == 3);
  // uint8 pixels are x / 255 exactly.
  CHECK(d.features[0] == 0.0f);
  CHECK(d.features[1] == 51.0f / 255.0f);
  CHECK(d.features[5] == 1.0f);  // 255
  CHECK(d.sample(1)[0] == d.features[4]);
  d.validate();

  SECTION("gzip and raw give the same data") {
    const Dataset g = quadra::data::idx_dataset(gzip(images3()), "img.gz", gzip(labels3()), "lab.gz", "g");
    CHECK(g.features == d.features);
    CHECK(g.labels == d.labels);
    // Two gzip members back to back are one stream, as gzip(1) treats them.
    const std::string raw = images3();
    const std::string two = gzip(raw.substr(0, 7)) + gzip(raw.substr(7));
    CHECK(quadra::data::gunzip_if_compressed(two, "two.gz") == raw);
  }
  SECTION("2-d and 4-d image arrays") {
    const std::string flat = idx_bytes(0x08, {3, 4}, std::string(12, '\x10'));
    CHECK(quadra::data::idx_dataset(flat, "f", labels3(), "l", "f").sample_shape ==
          std::vector<std::int64_t>{4});
    const std::string chw = idx_bytes(0x08, {3, 3, 1, 2}, std::string(18, '\x10'));
    CHECK(quadra::data::idx_dataset(chw, "c", labels3(), "l", "c").sample_shape ==
          std::vector<std::int64_t>{3, 1, 2});
  }
  SECTION("float, short and int element types are decoded big-endian, unscaled") {
    const std::string f = idx_bytes(0x0D, {3, 1}, be_float(1.5f) + be_float(-2.25f) + be_float(1e-3f));
    const Dataset df = quadra::data::idx_dataset(f, "f", labels3(), "l", "f");
    CHECK(df.features == std::vector<float>{1.5f, -2.25f, 1e-3f});
    const std::string s = idx_bytes(0x0B, {3, 1}, std::string("\xff\xfe\x01\x00\x00\x07", 6));
    CHECK(quadra::data::idx_dataset(s, "s", labels3(), "l", "s").features ==
          std::vector<float>{-2.0f, 256.0f, 7.0f});
    const std::string labels_int = idx_bytes(0x0C, {3}, std::string("\0\0\0\x05\0\0\0\0\0\0\0\x01", 12));
    CHECK(quadra::data::idx_dataset(images3(), "i", labels_int, "li", "x").labels ==
          std::vector<std::int64_t>{5, 0, 1});
  }
}

TEST_CASE("IDX errors name the file and the offset", "[data][idx][errors]") {
  SECTION("wrong magic number") {
    std::string bad = images3();
    bad[2] = '\x07';
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(bad, "train-images"),
                        Contains("train-images: wrong IDX magic number 0x00000703 at offset 0; "
                                 "expected 0x0000TTNN"));
    // Little-endian magic, the classic mistake.
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(std::string("\x03\x08\0\0", 4), "le"),
                        Contains("le: wrong IDX magic number 0x03080000 at offset 0"));
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(std::string("\0\0\x08\0", 4), "r0"),
                        Contains("r0: wrong IDX magic number 0x00000800"));
  }
  SECTION("truncated header and data") {
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(std::string("\0\0", 2), "tiny"),
                        Contains("tiny: truncated IDX file: 2 bytes, expected at least the 4-byte magic"));
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(images3().substr(0, 10), "h"),
                        Contains("h: truncated IDX header: 3 dimensions need a 16-byte header, the "
                                 "file has 10 bytes"));
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(images3().substr(0, 25), "d"),
                        Contains("d: truncated IDX data: dimensions 3 x 2 x 2 of ubyte need 12 bytes "
                                 "after the 16-byte header, but 9 bytes follow (the file ends at "
                                 "offset 25)"));
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(images3() + "xx", "o"),
                        Contains("o: oversized IDX data: dimensions 3 x 2 x 2 of ubyte need 12 bytes "
                                 "after the 16-byte header, but 14 bytes follow"));
    const std::string huge = idx_bytes(0x0E, {0xffffffffU, 0xffffffffU, 0xffffffffU}, "abc");
    REQUIRE_THROWS_WITH(quadra::data::parse_idx(huge, "huge"),
                        Contains("huge: truncated IDX data: dimensions 4294967295 x 4294967295 x "
                                 "4294967295 of double need more than 2^62 bytes"));
  }
  SECTION("truncated and corrupt gzip") {
    const std::string gz = gzip(images3());
    REQUIRE_THROWS_WITH(quadra::data::gunzip_if_compressed(gz.substr(0, gz.size() - 6), "t.gz"),
                        Contains(fmt::format("t.gz: truncated gzip data: the file ends at offset {} "
                                             "after",
                                             gz.size() - 6)) &&
                            Contains("before the end of the compressed stream"));
    REQUIRE_THROWS_WITH(quadra::data::gunzip_if_compressed(gz.substr(0, 5), "t5.gz"),
                        Contains("t5.gz: truncated gzip data: the file ends at offset 5 after 0 "
                                 "decompressed bytes"));
    std::string bad = gz;
    bad[3] = '\xe0';  // reserved header flag bits
    REQUIRE_THROWS_WITH(quadra::data::gunzip_if_compressed(bad, "c.gz"),
                        Contains("c.gz: corrupt gzip data at compressed offset") &&
                            Contains("unknown header flags set"));
    bad = gz;
    bad[bad.size() - 8] ^= 0x55;  // CRC-32 in the trailer
    REQUIRE_THROWS_WITH(quadra::data::gunzip_if_compressed(bad, "crc.gz"),
                        Contains("crc.gz: corrupt gzip data at compressed offset") &&
                            Contains("incorrect data check"));
    REQUIRE_THROWS_WITH(quadra::data::gunzip_if_compressed(gz + "junk", "j.gz"),
                        Contains(fmt::format("j.gz: corrupt gzip file: 4 bytes of trailing garbage at "
                                             "offset {} after the compressed data",
                                             gz.size())));
  }
  SECTION("image and label counts disagree") {
    const std::string two_labels = idx_bytes(0x08, {2}, bytes_of({1, 1}));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(images3(), "imgs", two_labels, "labs", "x"),
                        Contains("image and label counts disagree: imgs holds 3 images but labs holds "
                                 "2 labels"));
  }
  SECTION("labels must be non-negative integers") {
    const std::string float_labels = idx_bytes(0x0D, {3}, be_float(1) + be_float(2) + be_float(0));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(images3(), "i", float_labels, "fl", "x"),
                        Contains("fl: labels must be N integers (IDX magic 0x00000801, ubyte); found "
                                 "float of dimensions 3"));
    const std::string negative = idx_bytes(0x09, {3}, std::string("\x01\xff\x00", 3));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(images3(), "i", negative, "neg", "x"),
                        Contains("neg: label 1 (offset 9) is -1; expected a class index >= 0"));
  }
  SECTION("NaN and Inf pixels") {
    const std::string nan = idx_bytes(
        0x0D, {3, 1}, be_float(1) + be_float(std::numeric_limits<float>::quiet_NaN()) + be_float(0));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(nan, "nan-images", labels3(), "l", "x"),
                        Contains("nan-images: element 1 (offset 16) is nan; expected a finite number"));
    const std::string inf = idx_bytes(
        0x0D, {3, 1}, be_float(1) + be_float(0) + be_float(-std::numeric_limits<float>::infinity()));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(inf, "inf-images", labels3(), "l", "x"),
                        Contains("inf-images: element 2 (offset 20) is -inf"));
  }
  SECTION("a header claiming huge samples (found by fuzz_idx)") {
    const std::string none = idx_bytes(0x08, {0, 0xa0ffffc4U, 0xff45b4c8U}, "");
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(none, "h", idx_bytes(0x08, {0}, ""), "l", "x"),
                        Contains("h: sample shape (1, 2701131716, 4282758344) has more than 2^40 "
                                 "values per sample"));
  }
  SECTION("images without pixels") {
    const std::string empty = idx_bytes(0x08, {3, 0, 2}, "");
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(empty, "e", labels3(), "l", "x"),
                        Contains("e: images of dimensions 3 x 0 x 2 have no pixels"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(quadra::data::load_idx("/nonexistent/images", "/nonexistent/labels", "x"),
                        Contains("cannot read /nonexistent/images: No such file or directory"));
  }
}

TEST_CASE("the MNIST directory layout, raw or gzip", "[data][idx]") {
  ScratchDir dir("mnist_layout");
  const std::string train_images = idx_bytes(0x08, {4, 2, 2}, std::string(16, '\xff'));
  const std::string train_labels = idx_bytes(0x08, {4}, bytes_of({0, 9, 3, 3}));
  dir.write("train-images-idx3-ubyte", train_images);           // raw
  dir.write("train-labels-idx1-ubyte.gz", gzip(train_labels));  // compressed
  dir.write("t10k-images-idx3-ubyte.gz", gzip(images3()));
  SECTION("a file is missing") {
    REQUIRE_THROWS_WITH(quadra::data::load_fashion_mnist(dir.path()),
                        Contains(fmt::format("fashion-mnist: {} has no t10k-labels-idx1-ubyte (or "
                                             "t10k-labels-idx1-ubyte.gz); expected the four files",
                                             dir.path().string())));
  }
  SECTION("all four present") {
    dir.write("t10k-labels-idx1-ubyte", labels3());
    const auto data = quadra::data::load_fashion_mnist(dir.path());
    CHECK(data.train.size() == 4);
    CHECK(data.test.size() == 3);
    CHECK(data.train.num_classes == 10);
    CHECK(data.test.num_classes == 10);
    CHECK(data.train.class_names.at(9) == "Ankle boot");
    CHECK(data.train.name == "fashion-mnist/train");
    CHECK(data.test.name == "fashion-mnist/test");
    CHECK(data.train.features[0] == 1.0f);
    CHECK(data.train.class_counts() == std::vector<std::int64_t>{1, 0, 0, 2, 0, 0, 0, 0, 0, 1});
    const auto mnist = quadra::data::load_mnist_style(dir.path(), "mnist");
    CHECK(mnist.train.class_names.at(9) == "9");
  }
  SECTION("labels beyond the ten classes") {
    dir.write("t10k-labels-idx1-ubyte", idx_bytes(0x08, {3}, bytes_of({1, 12, 0})));
    REQUIRE_THROWS_WITH(quadra::data::load_fashion_mnist(dir.path()),
                        Contains("t10k-labels-idx1-ubyte: label 1 is 12; expected a class in [0, 10)"));
  }
  SECTION("not a directory") {
    REQUIRE_THROWS_WITH(quadra::data::load_fashion_mnist("/nonexistent/fmnist"),
                        Contains("fashion-mnist: /nonexistent/fmnist is not a directory; expected a "
                                 "directory holding train-images-idx3-ubyte") &&
                            Contains("apt-get install dataset-fashion-mnist"));
  }
}

TEST_CASE("IDX: sizes are checked before anything is allocated", "[data][idx][errors]") {
  SECTION("a label of 1e9 would mean a billion classes") {
    const std::string labels =
        idx_bytes(0x0C, {3}, std::string("\0\0\0\x01\x3b\x9a\xca\x00\0\0\0\0", 12));
    REQUIRE_THROWS_WITH(
        quadra::data::idx_dataset(images3(), "i", labels, "huge-labels", "x"),
        "huge-labels: label 1 (offset 12) is 1000000000; expected a class index below "
        "100000 (labels must be class indices 0..C-1 of at most 100000 classes)");
  }
  SECTION("gzip: the header's dimensions bound the buffer") {
    // 1 GiB declared, 12 bytes present: refused from the header, and never allocated.
    const std::string huge = gzip(idx_bytes(0x08, {1U << 30}, std::string(12, '\1')));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(images3(), "i", huge, "huge.gz", "x"),
                        "huge.gz: truncated IDX data: dimensions 1073741824 of ubyte need "
                        "1073741824 bytes after the 8-byte header, but 12 bytes follow (the file "
                        "ends at offset 20)");
    const std::string bigger = gzip(idx_bytes(0x0E, {0xffffffffU, 0xffffffffU, 3}, "abc"));
    REQUIRE_THROWS_WITH(
        quadra::data::idx_dataset(bigger, "big.gz", labels3(), "l", "x"),
        Contains("big.gz: truncated IDX data: dimensions 4294967295 x 4294967295 x 3 "
                 "of double need more than 2^62 bytes after the 16-byte header, but 3 "
                 "bytes follow"));
    const std::string oversized = gzip(labels3() + std::string(5000, '\0'));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(images3(), "i", oversized, "o.gz", "x"),
                        "o.gz: oversized IDX data: dimensions 3 of ubyte need 3 bytes after the "
                        "8-byte header, but 5003 bytes follow (the file ends at offset 5011)");
    const std::string short_header = gzip(std::string("\0\0\x08\x03\0\0", 6));
    REQUIRE_THROWS_WITH(quadra::data::idx_dataset(short_header, "sh.gz", labels3(), "l", "x"),
                        Contains("sh.gz: truncated IDX header: 3 dimensions need a 16-byte header, "
                                 "the file has 6 bytes"));
    // Well-formed compressed files still load.
    const Dataset d =
        quadra::data::idx_dataset(gzip(images3()), "i.gz", gzip(labels3()), "l.gz", "x");
    CHECK(d.labels == std::vector<std::int64_t>{2, 0, 1});
  }
  SECTION("files that are not regular files") {
    REQUIRE_THROWS_WITH(quadra::data::load_idx("/dev/zero", "/dev/zero", "x"),
                        "cannot read /dev/zero: it is a character device; expected a regular file");
    ScratchDir dir("idx_fifo");
    dir.write("images", images3());
    const auto fifo = dir.path() / "labels";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE_THROWS_WITH(
        quadra::data::load_idx(dir.path() / "images", fifo, "x"),
        "cannot read " + fifo.string() + ": it is a FIFO (named pipe); expected a regular file");
  }
}
