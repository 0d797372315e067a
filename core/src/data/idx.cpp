// gzip, IDX files and the MNIST-style directory layout. See loaders.hpp.
//
// Speed matters here (Fashion-MNIST is 47 MB of pixels): each file is read whole, inflated
// with zlib into one buffer sized from the gzip trailer, parsed without copying, and converted
// to float with a 256-entry lookup table.

#include <quadra/data/loaders.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#include <fmt/format.h>
#include <zlib.h>

#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {
namespace fs = std::filesystem;

namespace {

bool is_gzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

/// Inflates gzip data piece by piece: several members back to back, as gzip allows, and
/// nothing but members.
class GzipStream {
 public:
  GzipStream(std::string_view bytes, const std::string& name) : bytes_(bytes), name_(name) {
    if (bytes.size() > UINT_MAX) {
      throw Error(fmt::format("{}: gzip files over 4 GiB are not supported", name));
    }
    if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      throw Error(fmt::format("{}: cannot initialise zlib", name));
    }
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
    stream_.avail_in = static_cast<uInt>(bytes.size());
  }
  ~GzipStream() { inflateEnd(&stream_); }
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  /// Inflates up to `n` bytes to `out` and returns how many: fewer only at the end of the data.
  std::size_t read(char* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n && !done_) {
      const std::size_t room = std::min<std::size_t>(n - got, UINT_MAX);
      stream_.next_out = reinterpret_cast<Bytef*>(out + got);
      stream_.avail_out = static_cast<uInt>(room);
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      got += room - stream_.avail_out;
      produced_ += room - stream_.avail_out;
      const std::size_t offset = bytes_.size() - stream_.avail_in;
      if (rc == Z_STREAM_END) {
        if (stream_.avail_in == 0) {
          done_ = true;
          break;
        }
        // gzip allows several members back to back; anything else after a member is garbage.
        if (!is_gzip(bytes_.substr(offset))) {
          fail(
              fmt::format("corrupt gzip file: {} bytes of trailing garbage at offset {} after the "
                          "compressed data",
                          stream_.avail_in, offset));
        }
        inflateReset(&stream_);
        continue;
      }
      if (rc == Z_OK) continue;
      if (rc == Z_BUF_ERROR && stream_.avail_in == 0) {
        fail(
            fmt::format("truncated gzip data: the file ends at offset {} after {} decompressed "
                        "bytes, before the end of the compressed stream",
                        bytes_.size(), produced_));
      }
      fail(
          fmt::format("corrupt gzip data at compressed offset {} (after {} decompressed bytes): {}",
                      offset, produced_, stream_.msg != nullptr ? stream_.msg : zError(rc)));
    }
    return got;
  }

  /// Inflates the rest, keeping none of it, and returns how many bytes that was.
  std::size_t skip_rest() {
    std::array<char, 1 << 16> scratch{};
    std::size_t skipped = 0;
    while (!done_) skipped += read(scratch.data(), scratch.size());
    return skipped;
  }

  [[nodiscard]] bool done() const { return done_; }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(fmt::format("{}: {}", name_, why));
  }

  std::string_view bytes_;
  const std::string& name_;
  z_stream stream_{};
  std::size_t produced_ = 0;
  bool done_ = false;
};

std::string gunzip(std::string_view bytes, const std::string& name) {
  GzipStream stream(bytes, name);
  // The trailer's ISIZE is the (last member's) size mod 2^32: a good first guess, never trusted
  // beyond deflate's maximum ratio so that a hostile trailer cannot force a huge allocation.
  std::size_t guess = bytes.size() * 4;
  if (bytes.size() >= 18) {
    std::uint32_t isize = 0;
    std::memcpy(&isize, bytes.data() + bytes.size() - 4, 4);
    guess = std::min<std::size_t>(isize, bytes.size() * 1032);
  }
  std::string out;
  std::size_t produced = 0;
  try {
    out.resize(std::max<std::size_t>(guess, 64));
    while (!stream.done()) {
      if (produced == out.size()) out.resize(out.size() * 2);
      produced += stream.read(out.data() + produced, out.size() - produced);
    }
  } catch (const std::bad_alloc&) {
    throw Error(
        fmt::format("{}: the decompressed data does not fit in memory ({} bytes inflated "
                    "so far, {} compressed)",
                    name, produced, bytes.size()));
  }
  out.resize(produced);
  return out;
}

const char* idx_type_name(std::uint8_t type) {
  switch (type) {
    case 0x08: return "ubyte";
    case 0x09: return "byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return nullptr;
  }
}

std::size_t idx_type_size(std::uint8_t type) {
  switch (type) {
    case 0x08:
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C:
    case 0x0D: return 4;
    default: return 8;
  }
}

bool idx_is_integer(std::uint8_t type) { return type <= 0x0C; }

// IDX is big-endian (std::byteswap is C++23).
std::uint32_t load_be32(const char* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

/// Element k of an IDX array as double (big-endian decode).
double idx_element(const IdxArray& a, std::size_t k) {
  const char* p = a.data.data() + k * idx_type_size(a.type);
  switch (a.type) {
    case 0x08: return static_cast<unsigned char>(*p);
    case 0x09: return static_cast<signed char>(*p);
    case 0x0B: {
      std::uint16_t v = 0;
      std::memcpy(&v, p, 2);
      return static_cast<std::int16_t>(__builtin_bswap16(v));
    }
    case 0x0C: return static_cast<std::int32_t>(load_be32(p));
    case 0x0D: return std::bit_cast<float>(load_be32(p));
    default: {
      std::uint64_t v = 0;
      std::memcpy(&v, p, 8);
      return std::bit_cast<double>(__builtin_bswap64(v));
    }
  }
}

std::string dims_string(const std::vector<std::int64_t>& dims) {
  return fmt::format("{}", fmt::join(dims, " x "));
}

/// x / 255 for every byte value, computed once: exact, and a table lookup is the fastest
/// conversion for 47 million pixels.
const std::array<float, 256>& byte_scale_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<std::size_t>(i)] = static_cast<float>(i) / 255.0f;
    return t;
  }();
  return table;
}

}  // namespace

void detail::convert_bytes_scaled(const unsigned char* in, std::size_t n, float* out) noexcept {
  const auto& table = byte_scale_table();
  for (std::size_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

std::string gunzip_if_compressed(std::string_view bytes, const std::string& name) {
  return is_gzip(bytes) ? gunzip(bytes, name) : std::string(bytes);
}

std::string read_maybe_gzip(const fs::path& file) {
  std::string raw = io::read_file_bytes(file);
  if (!is_gzip(raw)) return raw;
  return gunzip(raw, file.string());
}

namespace {

/// The magic number and dimensions at the start of `bytes` (the data is not checked, and
/// `data` not set); `data_size` is the bytes they need, or npos beyond 2^62.
IdxArray parse_idx_header(std::string_view bytes, const std::string& name, std::size_t& data_size) {
  if (bytes.size() < 4) {
    throw Error(fmt::format("{}: truncated IDX file: {} bytes, expected at least the 4-byte magic "
                            "number",
                            name, bytes.size()));
  }
  const std::uint32_t magic = load_be32(bytes.data());
  IdxArray a;
  a.type = static_cast<std::uint8_t>((magic >> 8) & 0xff);
  const std::uint32_t rank = magic & 0xff;
  if ((magic >> 16) != 0 || idx_type_name(a.type) == nullptr || rank == 0) {
    throw Error(fmt::format("{}: wrong IDX magic number 0x{:08x} at offset 0; expected 0x0000TTNN "
                            "with TT an IDX type (08 ubyte, 09 byte, 0B short, 0C int, 0D float, "
                            "0E double) and NN >= 1 dimensions, e.g. 0x00000803 for images and "
                            "0x00000801 for labels",
                            name, magic));
  }
  a.header_size = 4 + 4 * std::size_t{rank};
  if (bytes.size() < a.header_size) {
    throw Error(fmt::format("{}: truncated IDX header: {} dimensions need a {}-byte header, the file "
                            "has {} bytes",
                            name, rank, a.header_size, bytes.size()));
  }
  const std::size_t item = idx_type_size(a.type);
  for (std::uint32_t k = 0; k < rank; ++k) a.dims.push_back(load_be32(bytes.data() + 4 + 4 * std::size_t{k}));
  // Bounded so that a hostile header cannot overflow the product (or count * item).
  const std::size_t limit = (std::size_t{1} << 62) / item;
  std::size_t count = 1;
  if (std::find(a.dims.begin(), a.dims.end(), 0) != a.dims.end()) {
    count = 0;
  } else {
    for (std::int64_t d : a.dims) {
      if (count > limit / static_cast<std::size_t>(d)) {
        data_size = std::string::npos;
        return a;
      }
      count *= static_cast<std::size_t>(d);
    }
  }
  data_size = count * item;
  return a;
}

/// The data after the header of `a` must be exactly the `data_size` bytes its dimensions need;
/// `available` bytes follow the header.
void check_idx_data(const IdxArray& a, std::size_t data_size, std::size_t available,
                    const std::string& name) {
  if (data_size == available) return;
  const bool too_big = data_size == std::string::npos;
  const std::string need =
      too_big ? std::string("more than 2^62 bytes") : fmt::format("{} bytes", data_size);
  const bool truncated = too_big || data_size > available;
  throw Error(fmt::format(
      "{}: {} IDX data: dimensions {} of {} need {} after the {}-byte header, "
      "but {} bytes follow (the file ends at offset {})",
      name, truncated ? "truncated" : "oversized", dims_string(a.dims), idx_type_name(a.type), need,
      a.header_size, available, a.header_size + available));
}

/// A gzip-compressed IDX file inflated: its header first, then exactly the data its dimensions
/// need, so that the buffer is sized by the header (and only when the compressed bytes can hold
/// that much), never by a hostile stream or trailer.
std::string inflate_idx(std::string_view bytes, const std::string& name) {
  GzipStream stream(bytes, name);
  std::string out(4, '\0');
  out.resize(stream.read(out.data(), 4));
  if (out.size() == 4) {
    const std::size_t header = 4 + 4 * std::size_t{static_cast<unsigned char>(out[3])};
    out.resize(header);
    out.resize(4 + stream.read(out.data() + 4, header - 4));
  }
  std::size_t data_size = 0;
  const IdxArray a = parse_idx_header(out, name, data_size);
  // Deflate expands at most ~1032:1; more declared data cannot be in the stream.
  const std::size_t most = bytes.size() * 1032 + 1024;
  if (data_size != std::string::npos && data_size <= most) {
    try {
      out.resize(a.header_size + data_size);
    } catch (const std::bad_alloc&) {
      throw Error(fmt::format("{}: cannot allocate the {} bytes its IDX header declares "
                              "(dimensions {} of {})",
                              name, data_size, dims_string(a.dims), idx_type_name(a.type)));
    }
    const std::size_t got = stream.read(out.data() + a.header_size, data_size);
    check_idx_data(a, data_size, got + stream.skip_rest(), name);
    return out;
  }
  check_idx_data(a, data_size, stream.skip_rest(), name);
  return out;
}

}  // namespace

IdxArray parse_idx(std::string_view bytes, const std::string& name) {
  std::size_t data_size = 0;
  IdxArray a = parse_idx_header(bytes, name, data_size);
  check_idx_data(a, data_size, bytes.size() - a.header_size, name);
  a.data = bytes.substr(a.header_size);
  return a;
}

namespace {

/// Features of an IDX array: uint8 scaled by 1/255, other types converted, all checked finite.
void idx_features(const IdxArray& a, const std::string& name, std::vector<float>& out) {
  const std::size_t n = a.data.size() / idx_type_size(a.type);
  out.resize(n);
  if (a.type == 0x08) {
    detail::convert_bytes_scaled(reinterpret_cast<const unsigned char*>(a.data.data()), n, out.data());
    return;
  }
  for (std::size_t k = 0; k < n; ++k) {
    const double v = idx_element(a, k);
    const auto f = static_cast<float>(v);
    if (!std::isfinite(f)) {
      throw Error(fmt::format("{}: element {} (offset {}) is {}{}; expected a finite number", name, k,
                              a.header_size + k * idx_type_size(a.type), v,
                              std::isfinite(v) ? ", which overflows float32" : ""));
    }
    out[k] = f;
  }
}

}  // namespace

Dataset idx_dataset(std::string_view image_bytes, const std::string& image_name,
                    std::string_view label_bytes, const std::string& label_name,
                    std::string dataset_name) {
  // Inflate only what is compressed; raw bytes are parsed in place.
  std::string images_inflated;
  std::string labels_inflated;
  if (is_gzip(image_bytes)) image_bytes = images_inflated = inflate_idx(image_bytes, image_name);
  if (is_gzip(label_bytes)) label_bytes = labels_inflated = inflate_idx(label_bytes, label_name);
  const IdxArray images = parse_idx(image_bytes, image_name);
  const IdxArray labels = parse_idx(label_bytes, label_name);

  Dataset data;
  data.name = std::move(dataset_name);
  data.task = Task::kClassification;
  const std::vector<std::int64_t>& d = images.dims;
  if (d.size() == 1) {
    data.sample_shape = {1};
  } else if (d.size() == 3) {
    data.sample_shape = {1, d[1], d[2]};
  } else {
    data.sample_shape.assign(d.begin() + 1, d.end());
  }
  if (std::find(data.sample_shape.begin(), data.sample_shape.end(), 0) != data.sample_shape.end()) {
    throw Error(fmt::format("{}: images of dimensions {} have no pixels; expected N x H x W with "
                            "H, W >= 1",
                            image_name, dims_string(d)));
  }
  detail::checked_sample_size(data.sample_shape, image_name);
  if (!idx_is_integer(labels.type) || labels.dims.size() > 2 ||
      (labels.dims.size() == 2 && labels.dims[1] != 1)) {
    throw Error(fmt::format("{}: labels must be N integers (IDX magic 0x00000801, ubyte); found {} "
                            "of dimensions {}",
                            label_name, idx_type_name(labels.type), dims_string(labels.dims)));
  }
  if (labels.dims[0] != d[0]) {
    throw Error(fmt::format("image and label counts disagree: {} holds {} images but {} holds {} "
                            "labels",
                            image_name, d[0], label_name, labels.dims[0]));
  }
  idx_features(images, image_name, data.features);
  const auto n = static_cast<std::size_t>(labels.dims[0]);
  data.labels.resize(n);
  std::int64_t max_label = -1;
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int64_t>(idx_element(labels, i));
    if (label < 0) {
      throw Error(fmt::format("{}: label {} (offset {}) is {}; expected a class index >= 0",
                              label_name, i, labels.header_size + i * idx_type_size(labels.type),
                              label));
    }
    if (label >= kMaxClasses) {
      throw Error(
          fmt::format("{}: label {} (offset {}) is {}; expected a class index below {} "
                      "(labels must be class indices 0..C-1 of at most {} classes)",
                      label_name, i, labels.header_size + i * idx_type_size(labels.type), label,
                      kMaxClasses, kMaxClasses));
    }
    data.labels[i] = label;
    max_label = std::max(max_label, label);
  }
  data.num_classes = max_label + 1;
  return data;
}

Dataset load_idx(const fs::path& images, const fs::path& labels, std::string dataset_name) {
  // Images first, so that a missing file is reported in a predictable order.
  const std::string image_bytes = io::read_file_bytes(images);
  const std::string label_bytes = io::read_file_bytes(labels);
  return idx_dataset(image_bytes, images.string(), label_bytes, labels.string(),
                     std::move(dataset_name));
}

fs::path default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                 "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

TrainTest load_mnist_style(const fs::path& dir, const std::string& name) {
  static constexpr std::array<const char*, 4> kFiles = {
      "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
      "t10k-labels-idx1-ubyte"};
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error(fmt::format("{}: {} is not a directory; expected a directory holding {}, {}, {} and "
                            "{} (optionally .gz){}",
                            name, dir.string(), kFiles[0], kFiles[1], kFiles[2], kFiles[3],
                            name == "fashion-mnist" ? "; on Debian: apt-get install dataset-fashion-mnist"
                                                    : ""));
  }
  std::array<fs::path, 4> paths;
  for (std::size_t k = 0; k < kFiles.size(); ++k) {
    const fs::path plain = dir / kFiles[k];
    const fs::path gz = dir / (std::string(kFiles[k]) + ".gz");
    if (fs::exists(plain, ec)) {
      paths[k] = plain;
    } else if (fs::exists(gz, ec)) {
      paths[k] = gz;
    } else {
      throw Error(fmt::format("{}: {} has no {} (or {}.gz); expected the four files {}, {}, {} and {}",
                              name, dir.string(), kFiles[k], kFiles[k], kFiles[0], kFiles[1],
                              kFiles[2], kFiles[3]));
    }
  }
  TrainTest out;
  out.train = load_idx(paths[0], paths[1], name + "/train");
  out.test = load_idx(paths[2], paths[3], name + "/test");
  for (Dataset* data : {&out.train, &out.test}) {
    const bool train = data == &out.train;
    for (std::size_t i = 0; i < data->labels.size(); ++i) {
      if (data->labels[i] >= 10) {
        throw Error(fmt::format("{}: label {} is {}; expected a class in [0, 10)",
                                paths[train ? 1 : 3].string(), i, data->labels[i]));
      }
    }
    data->num_classes = 10;
    if (name == "fashion-mnist") {
      data->class_names = fashion_mnist_class_names();
    } else {
      data->class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    }
  }
  if (out.train.sample_shape != out.test.sample_shape) {
    throw Error(fmt::format("{}: training images are ({}) but test images are ({})", name,
                            fmt::join(out.train.sample_shape, ", "), fmt::join(out.test.sample_shape, ", ")));
  }
  return out;
}

TrainTest load_fashion_mnist(const fs::path& dir) { return load_mnist_style(dir, "fashion-mnist"); }

}  // namespace quadra::data
