// CIFAR-10 and CIFAR-100 in their official binary format. See loaders.hpp.
//
// A record is the label byte(s) and then 3072 pixel bytes: the 1024 red values of the 32 x 32
// image in row-major order, then green, then blue. That is already the C x H x W layout of a
// Dataset row, so each record's pixels convert with one table lookup per byte.

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>
#include <quadra/io/file.hpp>

#include "detail.hpp"

namespace quadra::data {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kPixels = 3 * 32 * 32;

/// What differs between the two formats.
struct CifarFormat {
  const char* kind;           ///< "cifar10" or "cifar100", as in the source string
  std::size_t label_bytes;    ///< 1 (the class) or 2 (coarse, then fine)
  std::int64_t classes[2];    ///< classes of each label byte
  const char* label_name[2];  ///< each label byte's name in messages
  [[nodiscard]] std::size_t record() const { return label_bytes + kPixels; }
};

constexpr CifarFormat kCifar10{"cifar10", 1, {10, 0}, {"label", ""}};
constexpr CifarFormat kCifar100{"cifar100", 2, {20, 100}, {"coarse label", "fine label"}};

/// Appends the records of one file to `out`; `label_byte` picks the label (0 or 1).
void append_records(std::string_view bytes, const std::string& name, const CifarFormat& format,
                    std::size_t label_byte, Dataset& out) {
  const std::size_t record = format.record();
  if (bytes.empty() || bytes.size() % record != 0) {
    throw Error(fmt::format(
        "{}: {} bytes is not a whole, nonzero number of {}-byte {} records ({} records and {} "
        "bytes left over); expected a file of the {} binary version",
        name, bytes.size(), record, format.kind, bytes.size() / record, bytes.size() % record,
        format.kind == std::string_view("cifar10") ? "CIFAR-10" : "CIFAR-100"));
  }
  const std::size_t n = bytes.size() / record;
  const std::size_t first = out.labels.size();
  out.labels.resize(first + n);
  out.features.resize((first + n) * kPixels);
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char* r = data + i * record;
    // Every label byte is checked, also the one not used, so a corrupt file is never half read.
    for (std::size_t b = 0; b < format.label_bytes; ++b) {
      if (r[b] >= format.classes[b]) {
        throw Error(fmt::format("{}: record {} (offset {}) has {} {}; expected a class in [0, {})",
                                name, i, i * record + b, format.label_name[b], int{r[b]},
                                format.classes[b]));
      }
    }
    out.labels[first + i] = r[label_byte];
    detail::convert_bytes_scaled(r + format.label_bytes, kPixels,
                                 out.features.data() + (first + i) * kPixels);
  }
}

/// The directory holding `files`: `dir` itself, or the folder the official archive unpacks to
/// inside it (so both the archive's folder and its parent may be passed).
fs::path cifar_dir(const fs::path& dir, const std::string& kind, const char* archive_folder,
                   const std::vector<std::string>& files) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error(
        fmt::format("{}: {} is not a directory; expected the directory of the unpacked "
                    "binary version ({}: {})",
                    kind, dir.string(), archive_folder, fmt::join(files, ", ")));
  }
  if (!fs::exists(dir / files.front(), ec) && fs::is_directory(dir / archive_folder, ec)) {
    return dir / archive_folder;
  }
  for (const std::string& file : files) {
    if (!fs::exists(dir / file, ec)) {
      throw Error(
          fmt::format("{}: {} has no {}; expected the files of the unpacked binary "
                      "version ({}: {})",
                      kind, dir.string(), file, archive_folder, fmt::join(files, ", ")));
    }
  }
  return dir;
}

Dataset cifar_dataset(const std::vector<fs::path>& files, const CifarFormat& format,
                      std::size_t label_byte, const std::vector<std::string>& class_names,
                      std::string dataset_name) {
  Dataset out;
  out.name = std::move(dataset_name);
  out.task = Task::kClassification;
  out.sample_shape = {3, 32, 32};
  out.num_classes = format.classes[label_byte];
  out.class_names = class_names;
  for (const fs::path& file : files) {
    append_records(io::read_file_bytes(file), file.string(), format, label_byte, out);
  }
  return out;
}

}  // namespace

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return names;
}

const std::vector<std::string>& cifar100_class_names(CifarLabel label) {
  static const std::vector<std::string> fine = {
      "apple",       "aquarium_fish", "baby",      "bear",       "beaver",       "bed",
      "bee",         "beetle",        "bicycle",   "bottle",     "bowl",         "boy",
      "bridge",      "bus",           "butterfly", "camel",      "can",          "castle",
      "caterpillar", "cattle",        "chair",     "chimpanzee", "clock",        "cloud",
      "cockroach",   "couch",         "crab",      "crocodile",  "cup",          "dinosaur",
      "dolphin",     "elephant",      "flatfish",  "forest",     "fox",          "girl",
      "hamster",     "house",         "kangaroo",  "keyboard",   "lamp",         "lawn_mower",
      "leopard",     "lion",          "lizard",    "lobster",    "man",          "maple_tree",
      "motorcycle",  "mountain",      "mouse",     "mushroom",   "oak_tree",     "orange",
      "orchid",      "otter",         "palm_tree", "pear",       "pickup_truck", "pine_tree",
      "plain",       "plate",         "poppy",     "porcupine",  "possum",       "rabbit",
      "raccoon",     "ray",           "road",      "rocket",     "rose",         "sea",
      "seal",        "shark",         "shrew",     "skunk",      "skyscraper",   "snail",
      "snake",       "spider",        "squirrel",  "streetcar",  "sunflower",    "sweet_pepper",
      "table",       "tank",          "telephone", "television", "tiger",        "tractor",
      "train",       "trout",         "tulip",     "turtle",     "wardrobe",     "whale",
      "willow_tree", "wolf",          "woman",     "worm"};
  static const std::vector<std::string> coarse = {"aquatic_mammals",
                                                  "fish",
                                                  "flowers",
                                                  "food_containers",
                                                  "fruit_and_vegetables",
                                                  "household_electrical_devices",
                                                  "household_furniture",
                                                  "insects",
                                                  "large_carnivores",
                                                  "large_man-made_outdoor_things",
                                                  "large_natural_outdoor_scenes",
                                                  "large_omnivores_and_herbivores",
                                                  "medium_mammals",
                                                  "non-insect_invertebrates",
                                                  "people",
                                                  "reptiles",
                                                  "small_mammals",
                                                  "trees",
                                                  "vehicles_1",
                                                  "vehicles_2"};
  return label == CifarLabel::kCoarse ? coarse : fine;
}

Dataset cifar10_dataset(std::string_view bytes, const std::string& name, std::string dataset_name) {
  Dataset out;
  out.name = std::move(dataset_name);
  out.sample_shape = {3, 32, 32};
  out.num_classes = 10;
  out.class_names = cifar10_class_names();
  append_records(bytes, name, kCifar10, 0, out);
  return out;
}

Dataset cifar100_dataset(std::string_view bytes, const std::string& name, CifarLabel label,
                         std::string dataset_name) {
  Dataset out;
  out.name = std::move(dataset_name);
  out.sample_shape = {3, 32, 32};
  const std::size_t byte = label == CifarLabel::kCoarse ? 0 : 1;
  out.num_classes = kCifar100.classes[byte];
  out.class_names = cifar100_class_names(label);
  append_records(bytes, name, kCifar100, byte, out);
  return out;
}

TrainTest load_cifar10(const fs::path& dir) {
  const std::vector<std::string> files = {"data_batch_1.bin", "data_batch_2.bin",
                                          "data_batch_3.bin", "data_batch_4.bin",
                                          "data_batch_5.bin", "test_batch.bin"};
  const fs::path root = cifar_dir(dir, "cifar10", "cifar-10-batches-bin", files);
  std::vector<fs::path> train;
  for (std::size_t k = 0; k < 5; ++k) train.push_back(root / files[k]);
  TrainTest out;
  out.train = cifar_dataset(train, kCifar10, 0, cifar10_class_names(), "cifar10/train");
  out.test = cifar_dataset({root / files[5]}, kCifar10, 0, cifar10_class_names(), "cifar10/test");
  return out;
}

TrainTest load_cifar100(const fs::path& dir, CifarLabel label) {
  const fs::path root = cifar_dir(dir, "cifar100", "cifar-100-binary", {"train.bin", "test.bin"});
  const std::size_t byte = label == CifarLabel::kCoarse ? 0 : 1;
  TrainTest out;
  out.train = cifar_dataset({root / "train.bin"}, kCifar100, byte, cifar100_class_names(label),
                            "cifar100/train");
  out.test = cifar_dataset({root / "test.bin"}, kCifar100, byte, cifar100_class_names(label),
                           "cifar100/test");
  return out;
}

}  // namespace quadra::data
