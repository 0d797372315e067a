#pragma once
// Helpers for the data tests: IDX and gzip bytes made in memory, scratch files.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

namespace quadra::test {

/// An IDX file: magic 0x0000TTNN, big-endian dimensions, then `data` (already big-endian).
inline std::string idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& dims,
                             const std::string& data) {
  std::string out;
  out.push_back('\0');
  out.push_back('\0');
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(dims.size()));
  for (std::uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  return out + data;
}

inline std::string bytes_of(const std::vector<std::uint8_t>& values) {
  return std::string(values.begin(), values.end());
}

/// `raw` as one gzip member (zlib's deflate with a gzip wrapper).
inline std::string gzip(const std::string& raw) {
  z_stream s{};
  deflateInit2(&s, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, static_cast<uLong>(raw.size())) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  s.avail_in = static_cast<uInt>(raw.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

/// Pixel (c, y, x) of generated CIFAR record `record`: distinct values across channels, rows
/// and columns, so a misplaced pixel shows.
inline std::uint8_t cifar_pixel(int record, int c, int y, int x) {
  return static_cast<std::uint8_t>((record * 7 + c * 85 + y * 3 + x) & 0xff);
}

/// One CIFAR record: the label bytes (one for CIFAR-10; coarse then fine for CIFAR-100), then
/// 3072 pixel bytes, red plane, green plane, blue plane, each 32 x 32 row-major.
inline std::string cifar_record(const std::vector<std::uint8_t>& labels, int record) {
  std::string out(labels.begin(), labels.end());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) out.push_back(static_cast<char>(cifar_pixel(record, c, y, x)));
    }
  }
  return out;
}

/// A scratch directory unique to this process, removed by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() /
              ("quadra_" + tag + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// Writes `bytes` to NAME in the directory and returns its path.
  std::filesystem::path write(const std::string& name, const std::string& bytes) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << bytes;
    return file;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace quadra::test
