#pragma once
/// \file
/// Loaders: bytes on disk (or in memory) -> Dataset. Every parser has an in-memory entry point
/// (used by the fuzzers in tests/fuzz) and a file entry point that names the file in messages.
///
/// Conventions shared by all loaders:
///  - uint8 features (IDX images, uint8 .npy) are scaled by 1/255 to [0, 1], exactly (a lookup
///    table of x / 255.0f); every other type is converted to float32 as is.
///  - Every feature and target must be finite (and float64 values within float32's range);
///    NaN or Inf is an Error naming the file and the element (index, offset, or line and column).
///  - Classification labels are non-negative integers below kMaxClasses; num_classes is
///    max(label) + 1 unless the format fixes it (Fashion-MNIST: 10, with class names).
///  - Files may be gzip-compressed (detected by the gzip magic bytes, not the file name) for IDX
///    and CSV.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/data/dataset.hpp>
#include <quadra/io/npy.hpp>

namespace quadra::data {

/// A training file and a test file loaded together. `test` is empty when the source has none.
struct TrainTest {
  Dataset train;
  Dataset test;
};

// ---- gzip -------------------------------------------------------------------------------------

/// `bytes` inflated when they start with the gzip magic (1f 8b; several members are
/// concatenated, as gzip does), else `bytes` unchanged. Corrupt or truncated streams throw an
/// Error naming `name` and the compressed offset.
std::string gunzip_if_compressed(std::string_view bytes, const std::string& name);
/// The file's bytes, inflated when gzip-compressed.
std::string read_maybe_gzip(const std::filesystem::path& file);

// ---- IDX (MNIST's format: big-endian magic 0x0000TTNN, NN dimensions of uint32) ----------------

struct IdxArray {
  std::uint8_t type = 0x08;          ///< 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
  std::vector<std::int64_t> dims;
  std::string_view data;             ///< big-endian elements; points into the parsed buffer
  std::size_t header_size = 0;       ///< offset of `data` in the buffer
};

/// Parses decompressed IDX bytes (no copy: `data` points into `bytes`).
IdxArray parse_idx(std::string_view bytes, const std::string& name);

/// An IDX images file and an IDX labels file (each gzip or raw) as one classification data set.
/// Images N x H x W become samples {1, H, W}; N x D become {D}; N x C x H x W become {C, H, W}.
Dataset idx_dataset(std::string_view image_bytes, const std::string& image_name,
                    std::string_view label_bytes, const std::string& label_name,
                    std::string dataset_name);
Dataset load_idx(const std::filesystem::path& images, const std::filesystem::path& labels,
                 std::string dataset_name);

/// Where Debian's dataset-fashion-mnist package puts the files.
std::filesystem::path default_fashion_mnist_dir();
/// The ten Fashion-MNIST classes, in label order ("T-shirt/top", ..., "Ankle boot").
const std::vector<std::string>& fashion_mnist_class_names();
/// The four standard files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
/// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally with .gz) from `dir`:
/// 60000 training and 10000 test images of {1, 28, 28}, 10 named classes. `name` is
/// "fashion-mnist" or "mnist" (MNIST uses the same file names, with digit classes).
TrainTest load_mnist_style(const std::filesystem::path& dir, const std::string& name);
TrainTest load_fashion_mnist(const std::filesystem::path& dir = default_fashion_mnist_dir());

// ---- CIFAR (the official "binary version" files) ---------------------------------------------

/// Which of a CIFAR-100 record's two labels is the class: the 100 fine classes or the 20
/// superclasses.
enum class CifarLabel { kFine, kCoarse };

/// The ten CIFAR-10 classes in label order ("airplane", ..., "truck").
const std::vector<std::string>& cifar10_class_names();
/// The CIFAR-100 fine (100) or coarse (20) class names in label order.
const std::vector<std::string>& cifar100_class_names(CifarLabel label);

/// The records of one CIFAR-10 file: 3073 bytes each, a label byte 0-9 then 3072 pixel bytes
/// (1024 red, 1024 green, 1024 blue, each plane 32 x 32 row-major). Samples are {3, 32, 32}
/// scaled to [0, 1], 10 named classes. The file must be a whole, nonzero number of records
/// (the official files hold 10000; fewer are accepted, e.g. a subset for a quick run).
Dataset cifar10_dataset(std::string_view bytes, const std::string& name, std::string dataset_name);
/// The records of one CIFAR-100 file: 3074 bytes each, a coarse label byte 0-19, a fine label
/// byte 0-99 (both checked), then the 3072 pixel bytes as in CIFAR-10.
Dataset cifar100_dataset(std::string_view bytes, const std::string& name, CifarLabel label,
                         std::string dataset_name);
/// data_batch_1.bin ... data_batch_5.bin (training, in that order) and test_batch.bin from `dir`,
/// or from `dir`/cifar-10-batches-bin (where the official archive unpacks to).
TrainTest load_cifar10(const std::filesystem::path& dir);
/// train.bin and test.bin from `dir`, or from `dir`/cifar-100-binary.
TrainTest load_cifar100(const std::filesystem::path& dir, CifarLabel label);

// ---- CSV ---------------------------------------------------------------------------------------

enum class CsvHeader { kAuto, kYes, kNo };

struct CsvOptions {
  /// The label (target) column: a header name, or a 0-based index; negative counts from the end.
  /// Empty: the last column.
  std::string label;
  /// kAuto: the first row is a header when none of its cells is a number (when the label is a
  /// column name, it is always a header). A first row with numbers and a bad cell is data, and
  /// the bad cell an error: a data row is never taken for a header.
  CsvHeader header = CsvHeader::kAuto;
  Task task = Task::kClassification;
  char delimiter = ',';
  /// Classification with text labels: the classes to map them to (for a test file, the
  /// training file's class_names); empty: the sorted distinct labels of this file.
  std::vector<std::string> class_names;
};

/// Parses CSV text: numeric feature columns plus one label column. Blank lines are skipped;
/// fields may be double-quoted (RFC 4180, without line breaks inside quotes). Integer labels
/// are class indices; text labels become classes named by the text. Messages name `name`,
/// the 1-based line and column (and the column's header).
Dataset parse_csv(std::string_view text, const std::string& name, const CsvOptions& options,
                  std::string dataset_name);
Dataset load_csv(const std::filesystem::path& file, const CsvOptions& options,
                 std::string dataset_name);

// ---- NumPy pairs -------------------------------------------------------------------------------

enum class NpyTask { kAuto, kClassification, kRegression };

/// X (N, or N x ..., any supported dtype; uint8 scaled by 1/255) and y (N labels of an integer
/// dtype, or N / N x T float targets) as one data set. kAuto: integer y is classification,
/// float y regression. `x_name` and `y_name` name the arrays in messages.
Dataset npy_dataset(const io::NpyArray& x, const std::string& x_name, const io::NpyArray& y,
                    const std::string& y_name, NpyTask task, std::string dataset_name);
Dataset load_npy_pair(const std::filesystem::path& x, const std::filesystem::path& y, NpyTask task,
                      std::string dataset_name);

// ---- synthetic sets (seeded; the same seed gives the same samples everywhere) -----------------

/// Two interleaved half circles (scikit-learn's make_moons geometry): 2 features, 2 classes,
/// classes alternate (sample i has class i % 2), angles uniform, Gaussian noise of std `noise`.
Dataset make_moons(std::int64_t n, double noise, std::uint64_t seed, std::string dataset_name);
/// `arms` interleaved spiral arms through one turn: 2 features, `arms` classes (sample i on arm
/// i % arms), radius uniform in [0, 1], Gaussian noise of std `noise`.
Dataset make_spirals(std::int64_t n, std::int64_t arms, double noise, std::uint64_t seed,
                     std::string dataset_name);
/// Regression y = sin(x) + noise * N(0, 1) with x uniform in [-pi, pi]: 1 feature, 1 target.
Dataset make_sinusoid(std::int64_t n, double noise, std::uint64_t seed, std::string dataset_name);

}  // namespace quadra::data
