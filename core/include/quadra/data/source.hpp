#pragma once
/// \file
/// Data sources named by one string (the CLI's `--data`), and the train / validation / test
/// splits with normalisation that every command uses.
///
/// Source syntax: KIND[:ARG,ARG,...], where each ARG is a path (positional) or key=value.
/// Paths may not contain ',' (and a positional may not look like key=...).
///
///   fashion-mnist                    Debian's dataset-fashion-mnist (/usr/share/datasets/...)
///   fashion-mnist:DIR                the four standard files in DIR (train-images-idx3-ubyte,
///                                    train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
///                                    t10k-labels-idx1-ubyte; each raw or .gz)
///   mnist:DIR                        the same layout, digit classes
///   idx:IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]
///                                    any MNIST-style IDX pair (raw or gzip)
///   cifar10:DIR                      CIFAR-10's binary version: data_batch_1.bin ...
///                                    data_batch_5.bin and test_batch.bin in DIR (or in
///                                    DIR/cifar-10-batches-bin); samples {3, 32, 32}
///   cifar100:DIR[,label=fine|coarse] CIFAR-100's binary version: train.bin and test.bin in DIR
///                                    (or DIR/cifar-100-binary); 100 fine classes (default) or
///                                    20 coarse ones
///   csv:FILE[,TEST_FILE][,label=COL][,header=auto|yes|no][,task=classification|regression]
///                                    numeric features plus a label column (a name, or a 0-based
///                                    index, negative from the end; default: the last column).
///                                    header=auto: the first line is a header only when none of
///                                    its cells is a number (or when label= is a column name);
///                                    otherwise it is data, and a cell that is not a number is
///                                    an error, so a data row is never dropped as a header
///   npy:X.npy,y.npy[,X_TEST.npy,y_TEST.npy][,task=auto|classification|regression]
///                                    X of shape (N, ...), y of shape (N,) or (N, T); auto:
///                                    integer y is classification, float y regression
///   moons[:n=1000,test=1000,noise=0.1,seed=0]
///   spirals[:n=1000,test=1000,arms=3,noise=0.1,seed=0]
///   sinusoid[:n=1000,test=1000,noise=0.1,seed=0]
///                                    seeded synthetic sets (see loaders.hpp); the test set is
///                                    drawn from an independent stream of the same seed
///
/// Classification labels are class indices below kMaxClasses (dataset.hpp); spirals take at
/// most that many arms. The kinds are one table in source.cpp (see CONTRIBUTING.md).
///
/// Splits: the validation set comes out of the training file (the test file is never touched):
/// by default a seeded random subset of one sixth of it (10000 of Fashion-MNIST's 60000, leaving
/// 50000 for training); SplitMode::kLast takes the last samples instead (the classic MNIST
/// 50k/10k split). Each split keeps the file's order. Normalisation statistics are fitted on the
/// training split only and applied to all three.

#include <cstdint>
#include <map>
#include <optional>
#include <quadra/data/dataset.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace quadra::data {

/// A parsed source string. `options` holds the key=value arguments, `paths` the positional ones.
struct DataSource {
  std::string kind;  ///< fashion-mnist, mnist, idx, cifar10, cifar100, csv, npy, moons, ...
  std::vector<std::string> paths;
  std::map<std::string, std::string> options;
  std::string spec;  ///< the original string
};

/// Parses and checks a source string (kind, number of paths, known keys and their values).
/// Throws quadra::Error naming the string, what was found and what was expected.
DataSource parse_data_source(std::string_view spec);

/// The syntax above as help text for the CLI.
const char* data_source_help();

enum class SplitMode { kRandom, kLast };
enum class Normalization {
  kNone,               ///< as loaded (uint8 inputs are already scaled to [0, 1])
  kMinMax,             ///< per feature: (x - min) / (max - min), training min and max
  kStandardize,        ///< per feature: (x - mean) / std, training mean and std
  kStandardizeGlobal,  ///< one mean and std over all training features (usual for images)
  /// per channel of {C, H, W} images: one mean and std over each channel's training pixels
  /// (usual for colour images); stored per feature, each channel's pair repeated over its plane
  kStandardizeChannel,
};
/// "random" / "last"; "none" / "minmax" / "standardize" / "standardize-channel" /
/// "standardize-global".
const char* to_string(SplitMode mode);
const char* to_string(Normalization normalization);
/// Parses the names above; throws quadra::Error listing the valid ones.
SplitMode parse_split_mode(std::string_view text);
Normalization parse_normalization(std::string_view text);

/// x' = (x - shift[j]) * scale[j] for feature j; a single entry applies to every feature.
/// Constant features (zero range or std) get scale 1 so they map to 0 rather than NaN. Raw
/// uint8 inputs (images) are divided by 255 first, as every loader does.
struct FeatureTransform {
  Normalization kind = Normalization::kNone;
  std::vector<float> shift;
  std::vector<float> scale;

  /// Fits the transform on `train`.
  static FeatureTransform fit(const Dataset& train, Normalization kind);
  void apply(Dataset& data) const;
  /// The same on a features x N column-major block (one column per sample).
  void apply(float* features, std::int64_t feature_dim, std::int64_t samples) const;
  void apply(double* features, std::int64_t feature_dim, std::int64_t samples) const;
  /// Throws Error (naming `where`) unless shift and scale hold 1 or `feature_dim` finite
  /// entries each, the scales nonzero, and none for kNone.
  void check(std::int64_t feature_dim, const std::string& where) const;
  /// "standardize-global (shift 0.286, scale 3.13)" or "minmax (784 features)".
  [[nodiscard]] std::string describe() const;
};

struct LoadOptions {
  /// Samples moved from the training file to the validation split; -1: one sixth (rounded).
  std::int64_t validation_size = -1;
  SplitMode split = SplitMode::kRandom;
  std::uint64_t seed = 0;  ///< for the random split (synthetic data has its own seed=)
  Normalization normalization = Normalization::kNone;
  /// A transform fitted before (a model file's preprocessing): applied as it is instead of
  /// fitting `normalization` on the training split.
  std::optional<FeatureTransform> fitted;
};

struct DataSplits {
  Dataset train;
  Dataset validation;
  Dataset test;  ///< empty when the source has no test file
  FeatureTransform transform;
  std::string source;
};

/// Splits `full` into (train, validation) as LoadOptions describes.
std::pair<Dataset, Dataset> split_train_validation(Dataset full, std::int64_t validation_size,
                                                   SplitMode mode, std::uint64_t seed);

/// Loads a source, splits it and normalises it. Throws quadra::Error on any bad input.
DataSplits load_data(const DataSource& source, const LoadOptions& options);
DataSplits load_data(std::string_view spec, const LoadOptions& options);

}  // namespace quadra::data
