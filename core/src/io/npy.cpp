// NumPy .npy / .npz reading and writing. See npy.hpp; the format is documented in
// numpy/lib/format.py, the ZIP container in PKWARE's APPNOTE.TXT.

#include <quadra/io/npy.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <set>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <zlib.h>

#include <quadra/error.hpp>
#include <quadra/io/atomic_file.hpp>

static_assert(std::endian::native == std::endian::little,
              "quadra's .npy code assumes a little-endian host");

namespace quadra::io {

namespace {

constexpr std::string_view kMagic("\x93NUMPY", 6);
constexpr const char* kSupportedDescrs = "'<u1', '|u1', '<i4', '<i8', '<f4', '<f8'";

// ---- small helpers ---------------------------------------------------------------------------

/// Printable rendering of untrusted bytes for messages: printable ASCII as is, the rest as \xNN,
/// cut after `limit` bytes.
std::string quote_bytes(std::string_view bytes, std::size_t limit = 40) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (bytes.size() > limit) out += "...";
  return out;
}

std::uint16_t load_u16(std::string_view bytes, std::size_t at) {
  std::uint16_t v = 0;
  std::memcpy(&v, bytes.data() + at, sizeof v);
  return v;
}

std::uint32_t load_u32(std::string_view bytes, std::size_t at) {
  std::uint32_t v = 0;
  std::memcpy(&v, bytes.data() + at, sizeof v);
  return v;
}

void put_u16(std::string& out, std::uint16_t v) { out.append(reinterpret_cast<const char*>(&v), 2); }
void put_u32(std::string& out, std::uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

std::string shape_string(const std::vector<std::int64_t>& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

/// Product of `shape`, or -1 when it exceeds `limit` (so hostile headers cannot overflow).
std::int64_t checked_product(const std::vector<std::int64_t>& shape, std::int64_t limit) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) return -1;
    if (d == 0) return 0;
  }
  for (std::int64_t d : shape) {
    if (n > limit / d) return -1;
    n *= d;
  }
  return n;
}

// ---- the header dict: a Python literal such as {'descr': '<f4', 'fortran_order': False,
// 'shape': (3, 4), } -------------------------------------------------------------------------

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  Header parse() {
    Header header;
    bool have_descr = false;
    bool have_order = false;
    bool have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string("a quoted key");
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() == '[') {
          throw Error(fmt::format("{}: unsupported dtype: a structured (record) dtype {}; expected "
                                  "one of {}",
                                  name_, quote_bytes(text_.substr(pos_), 60), kSupportedDescrs));
        }
        header.descr = parse_string("the dtype string");
        have_descr = true;
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        header.shape = parse_shape();
        have_shape = true;
      } else {
        fail(fmt::format("one of the keys 'descr', 'fortran_order', 'shape' (found key '{}')",
                         quote_bytes(key)));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      expect('}');
      break;
    }
    // numpy pads with spaces and ends with '\n'; anything else after the dict is garbage.
    skip_space();
    if (pos_ != text_.size()) fail("only padding after the closing '}'");
    if (!have_descr || !have_order || !have_shape) {
      const char* missing = !have_descr ? "descr" : !have_order ? "fortran_order" : "shape";
      throw Error(fmt::format("{}: unparsable header: the key '{}' is missing; header: {}", name_,
                              missing, quote_bytes(text_, 120)));
    }
    return header;
  }

 private:
  [[noreturn]] void fail(const std::string& expected) const {
    const std::string found =
        pos_ < text_.size() ? fmt::format("'{}'", quote_bytes(text_.substr(pos_), 20)) : "the end";
    throw Error(fmt::format("{}: unparsable header at character {} of the header dict: expected "
                            "{}, found {}; header: {}",
                            name_, pos_, expected, found, quote_bytes(text_, 120)));
  }

  [[nodiscard]] char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect(char c) {
    if (peek() != c || pos_ >= text_.size()) fail(fmt::format("'{}'", c));
    ++pos_;
  }

  std::string parse_string(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail(what);
    const std::size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) fail(fmt::format("{} to end with {}", what, quote));
    std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return value;
  }

  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("True or False for 'fortran_order'");
  }

  std::vector<std::int64_t> parse_shape() {
    expect('(');
    std::vector<std::int64_t> shape;
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++pos_;
        return shape;
      }
      if (peek() < '0' || peek() > '9') fail("a non-negative integer dimension or ')' in 'shape'");
      std::int64_t value = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = peek() - '0';
        if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10) {
          fail("a dimension that fits in 64 bits");
        }
        value = value * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 wrote long integers as 3L
      shape.push_back(value);
      if (shape.size() > 32) fail("at most 32 dimensions (numpy's limit)");
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        fail("',' or ')' in 'shape'");
      }
    }
  }

  std::string_view text_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

DType parse_descr(const std::string& descr, const std::string& name) {
  if (descr == "<u1" || descr == "|u1") return DType::kUInt8;
  if (descr == "<i4") return DType::kInt32;
  if (descr == "<i8") return DType::kInt64;
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<f8") return DType::kFloat64;
  std::string why;
  if (!descr.empty() && descr[0] == '>') {
    why = " (big-endian)";
  } else if (descr.find('O') != std::string::npos) {
    why = " (Python objects)";
  } else if (descr.find('U') != std::string::npos || descr.find('S') != std::string::npos) {
    why = " (strings)";
  } else if (descr.find('b') != std::string::npos) {
    why = " (bool; save it as uint8)";
  }
  throw Error(fmt::format("{}: unsupported dtype '{}'{}; expected one of {}", name,
                          quote_bytes(descr), why, kSupportedDescrs));
}

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::kUInt8: return "|u1";
    case DType::kInt32: return "<i4";
    case DType::kInt64: return "<i8";
    case DType::kFloat32: return "<f4";
    case DType::kFloat64: return "<f8";
  }
  return "?";
}

bool is_float(DType dtype) { return dtype == DType::kFloat32 || dtype == DType::kFloat64; }

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, std::uint8_t>) return DType::kUInt8;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::kInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::kInt64;
  else if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  else if constexpr (std::is_same_v<T, double>) return DType::kFloat64;
  else static_assert(!sizeof(T), "NpyArray supports uint8_t, int32_t, int64_t, float, double");
}

/// Fortran-ordered bytes -> C-ordered bytes (an n-dimensional transpose).
std::vector<unsigned char> fortran_to_c(const unsigned char* src, const std::vector<std::int64_t>& shape,
                                        std::size_t item, std::int64_t count) {
  std::vector<unsigned char> out(static_cast<std::size_t>(count) * item);
  const std::size_t rank = shape.size();
  if (count == 0) return out;
  std::vector<std::int64_t> stride(rank), index(rank, 0);
  std::int64_t s = 1;
  for (std::size_t k = 0; k < rank; ++k) {
    stride[k] = s;
    s *= shape[k];
  }
  // Walk the C order with an odometer over the last index first, tracking the Fortran offset.
  std::int64_t offset = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    std::memcpy(out.data() + static_cast<std::size_t>(i) * item,
                src + static_cast<std::size_t>(offset) * item, item);
    for (std::size_t k = rank; k-- > 0;) {
      if (++index[k] < shape[k]) {
        offset += stride[k];
        break;
      }
      offset -= stride[k] * (shape[k] - 1);
      index[k] = 0;
    }
  }
  return out;
}

}  // namespace

// ---- NpyArray --------------------------------------------------------------------------------

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "?";
}

std::size_t itemsize(DType dtype) {
  switch (dtype) {
    case DType::kUInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 1;
}

std::int64_t NpyArray::size() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

template <class T>
std::vector<T> NpyArray::to_vector(std::string_view name_for_errors) const {
  const std::string prefix =
      name_for_errors.empty() ? std::string() : fmt::format("{}: ", name_for_errors);
  const std::int64_t n = size();
  std::vector<T> out(static_cast<std::size_t>(n));
  const unsigned char* p = bytes.data();
  auto convert = [&](auto tag) {
    using S = decltype(tag);
    for (std::int64_t i = 0; i < n; ++i) {
      S v;
      std::memcpy(&v, p + static_cast<std::size_t>(i) * sizeof(S), sizeof(S));
      if constexpr (std::is_integral_v<T> && std::is_integral_v<S>) {
        if (!std::in_range<T>(v)) {
          throw Error(
              fmt::format("{}cannot convert the {} array to {}: {} is {}, outside the "
                          "range of {}",
                          prefix, to_string(dtype), to_string(dtype_of<T>()),
                          element_name(shape, i), v, to_string(dtype_of<T>())));
        }
      }
      if constexpr (std::is_same_v<T, float> && std::is_same_v<S, double>) {
        // static_cast would turn these into infinities, which nothing downstream expects.
        if (std::isfinite(v) && std::abs(v) > std::numeric_limits<float>::max()) {
          throw Error(
              fmt::format("{}{} is {}, which overflows float32; expected finite numbers "
                          "of magnitude at most {} (float32's largest)",
                          prefix, element_name(shape, i), v, std::numeric_limits<float>::max()));
        }
      }
      out[static_cast<std::size_t>(i)] = static_cast<T>(v);
    }
  };
  if constexpr (std::is_integral_v<T>) {
    if (is_float(dtype)) {
      throw Error(fmt::format("{}cannot convert a {} array to the integer type {}", prefix,
                              to_string(dtype), to_string(dtype_of<T>())));
    }
  }
  switch (dtype) {
    case DType::kUInt8: convert(std::uint8_t{}); break;
    case DType::kInt32: convert(std::int32_t{}); break;
    case DType::kInt64: convert(std::int64_t{}); break;
    case DType::kFloat32:
      if constexpr (std::is_floating_point_v<T>) convert(float{});
      break;
    case DType::kFloat64:
      if constexpr (std::is_floating_point_v<T>) convert(double{});
      break;
  }
  return out;
}

std::string element_name(const std::vector<std::int64_t>& shape, std::int64_t flat_index) {
  if (shape.size() <= 1) return fmt::format("element {}", flat_index);
  std::vector<std::int64_t> index(shape.size());
  std::int64_t rest = flat_index;
  for (std::size_t k = shape.size(); k-- > 0;) {
    const std::int64_t d = std::max<std::int64_t>(shape[k], 1);
    index[k] = rest % d;
    rest /= d;
  }
  return fmt::format("element {} (index ({}))", flat_index, fmt::join(index, ", "));
}

std::optional<std::int64_t> first_non_finite(const NpyArray& array) {
  auto scan = [&](auto tag) -> std::optional<std::int64_t> {
    using S = decltype(tag);
    const std::size_t n = array.bytes.size() / sizeof(S);
    for (std::size_t i = 0; i < n; ++i) {
      S v;
      std::memcpy(&v, array.bytes.data() + i * sizeof(S), sizeof(S));
      if (!std::isfinite(v)) return static_cast<std::int64_t>(i);
    }
    return std::nullopt;
  };
  if (array.dtype == DType::kFloat32) return scan(float{});
  if (array.dtype == DType::kFloat64) return scan(double{});
  return std::nullopt;
}

void require_finite(const NpyArray& array, const std::string& name_for_errors) {
  const std::optional<std::int64_t> bad = first_non_finite(array);
  if (!bad) return;
  const auto at = static_cast<std::size_t>(*bad);
  double value = 0;
  if (array.dtype == DType::kFloat32) {
    float v = 0;
    std::memcpy(&v, array.bytes.data() + at * sizeof v, sizeof v);
    value = v;
  } else {
    std::memcpy(&value, array.bytes.data() + at * sizeof value, sizeof value);
  }
  throw Error(fmt::format("{}: {} is {}; expected finite numbers", name_for_errors,
                          element_name(array.shape, *bad), value));
}

template <class T>
NpyArray NpyArray::from(std::vector<std::int64_t> shape, const T* data) {
  NpyArray array;
  array.dtype = dtype_of<T>();
  array.shape = std::move(shape);
  const auto n = static_cast<std::size_t>(array.size());
  array.bytes.resize(n * sizeof(T));
  if (n > 0) std::memcpy(array.bytes.data(), data, n * sizeof(T));
  return array;
}

template std::vector<std::uint8_t> NpyArray::to_vector<std::uint8_t>(std::string_view) const;
template std::vector<std::int32_t> NpyArray::to_vector<std::int32_t>(std::string_view) const;
template std::vector<std::int64_t> NpyArray::to_vector<std::int64_t>(std::string_view) const;
template std::vector<float> NpyArray::to_vector<float>(std::string_view) const;
template std::vector<double> NpyArray::to_vector<double>(std::string_view) const;
template NpyArray NpyArray::from<std::uint8_t>(std::vector<std::int64_t>, const std::uint8_t*);
template NpyArray NpyArray::from<std::int32_t>(std::vector<std::int64_t>, const std::int32_t*);
template NpyArray NpyArray::from<std::int64_t>(std::vector<std::int64_t>, const std::int64_t*);
template NpyArray NpyArray::from<float>(std::vector<std::int64_t>, const float*);
template NpyArray NpyArray::from<double>(std::vector<std::int64_t>, const double*);

// ---- .npy ------------------------------------------------------------------------------------

namespace {

// numpy writes headers of a few hundred bytes (and numpy.load refuses more than 10000 by
// default); the limit keeps a hostile length from making an .npz entry inflate gigabytes of
// "header".
constexpr std::size_t kMaxHeaderLen = std::size_t{1} << 20;

/// What the preamble and the header dict of a .npy say.
struct Layout {
  std::size_t data_offset = 0;  ///< preamble + header: where the data starts
  DType dtype = DType::kFloat64;
  std::vector<std::int64_t> shape;
  bool fortran_order = false;
  std::int64_t count = 0;  ///< elements; -1 when they need more than 2^62 bytes

  [[nodiscard]] std::size_t data_size() const {
    return static_cast<std::size_t>(count) * itemsize(dtype);
  }
  [[nodiscard]] std::string type_text() const {
    return fmt::format("shape {} of {}", shape_string(shape), to_string(dtype));
  }
  [[nodiscard]] std::string need_text() const {
    return count < 0 ? std::string("more than 2^62 bytes") : fmt::format("{} bytes", data_size());
  }
};

/// Parses the preamble and header dict from `prefix`, the first bytes of a .npy of `total`
/// bytes. Returns 0 when `layout` is filled in, or the length of prefix needed to hold the
/// header when `prefix` is shorter (never more than `total`).
std::size_t parse_layout(std::string_view prefix, std::size_t total, const std::string& name,
                         Layout& layout) {
  const std::size_t preamble = std::min<std::size_t>(total, 12);
  if (prefix.size() < preamble) return preamble;
  if (total < kMagic.size() || prefix.substr(0, kMagic.size()) != kMagic) {
    throw Error(
        fmt::format("{}: not a NumPy .npy file: it starts with '{}', expected the magic "
                    "string '\\x93NUMPY'",
                    name, quote_bytes(prefix.substr(0, 8))));
  }
  if (total < 10) {
    throw Error(
        fmt::format("{}: truncated header: the file has {} bytes, the .npy preamble needs "
                    "at least 10",
                    name, total));
  }
  const auto major = static_cast<unsigned char>(prefix[6]);
  const auto minor = static_cast<unsigned char>(prefix[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    throw Error(fmt::format("{}: unsupported .npy format version {}.{}; expected 1.0, 2.0 or 3.0",
                            name, major, minor));
  }
  std::size_t header_start = 10;
  std::size_t header_len = load_u16(prefix, 8);
  if (major >= 2) {
    header_start = 12;
    if (total < 12) {
      throw Error(
          fmt::format("{}: truncated header: the file has {} bytes, the version {}.0 "
                      "preamble needs 12",
                      name, total, major));
    }
    header_len = load_u32(prefix, 8);
  }
  if (header_len > total - header_start) {
    throw Error(
        fmt::format("{}: truncated header: the header declares {} bytes but only {} follow "
                    "the preamble",
                    name, header_len, total - header_start));
  }
  if (header_len > kMaxHeaderLen) {
    throw Error(
        fmt::format("{}: the header declares {} bytes; expected at most {} (numpy writes "
                    "a few hundred)",
                    name, header_len, kMaxHeaderLen));
  }
  if (prefix.size() < header_start + header_len) return header_start + header_len;
  const Header header = HeaderParser(prefix.substr(header_start, header_len), name).parse();
  layout.data_offset = header_start + header_len;
  layout.dtype = parse_descr(header.descr, name);
  layout.shape = header.shape;
  layout.fortran_order = header.fortran_order;
  // Bounded so that a hostile shape cannot overflow the product (or count * item).
  const auto item = static_cast<std::int64_t>(itemsize(layout.dtype));
  layout.count = checked_product(layout.shape, (std::int64_t{1} << 62) / item);
  return 0;
}

/// The array of `layout` from its data bytes (C order, or transposed from Fortran order).
NpyArray array_from(Layout&& layout, const unsigned char* data) {
  NpyArray array;
  array.dtype = layout.dtype;
  array.shape = std::move(layout.shape);
  if (layout.fortran_order && array.shape.size() > 1) {
    array.bytes = fortran_to_c(data, array.shape, itemsize(array.dtype), layout.count);
  } else {
    array.bytes.assign(data, data + layout.data_size());
  }
  return array;
}

}  // namespace

NpyArray parse_npy(std::string_view file_bytes, const std::string& name_for_errors) {
  const std::string& name = name_for_errors;
  Layout layout;
  parse_layout(file_bytes, file_bytes.size(), name, layout);
  const std::size_t available = file_bytes.size() - layout.data_offset;
  // Nothing is allocated before the size matches the bytes present.
  if (layout.count < 0 || layout.data_size() != available) {
    const bool truncated = layout.count < 0 || layout.data_size() > available;
    throw Error(
        fmt::format("{}: data size mismatch{}: the header says {}, which needs {} of "
                    "data, but {} bytes follow the {}-byte header",
                    name, truncated ? " (truncated data)" : " (trailing bytes)", layout.type_text(),
                    layout.need_text(), available, layout.data_offset));
  }
  const auto* data = reinterpret_cast<const unsigned char*>(file_bytes.data() + layout.data_offset);
  return array_from(std::move(layout), data);
}

NpyArray read_npy(const std::filesystem::path& file) {
  return parse_npy(read_file_bytes(file), file.string());
}

std::string encode_npy(const NpyArray& array) {
  const std::size_t expected = static_cast<std::size_t>(array.size()) * itemsize(array.dtype);
  if (array.bytes.size() != expected) {
    throw Error(fmt::format("cannot encode a .npy array: shape {} of {} needs {} bytes, the array "
                            "holds {}",
                            shape_string(array.shape), to_string(array.dtype), expected,
                            array.bytes.size()));
  }
  // Exactly numpy.lib.format._write_array_header (numpy >= 1.23): keys sorted, spare spaces
  // for growing the first axis in place, then padding to 64 bytes and a newline.
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 descr_of(array.dtype), shape_string(array.shape));
  if (!array.shape.empty()) {
    constexpr std::size_t kGrowthAxisMaxDigits = 21;
    const std::size_t digits = std::to_string(array.shape[0]).size();
    if (digits < kGrowthAxisMaxDigits) dict.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  constexpr std::size_t kAlign = 64;
  const std::size_t hlen = dict.size() + 1;
  const std::size_t padlen = kAlign - ((kMagic.size() + 2 + 2 + hlen) % kAlign);
  if (hlen + padlen > 0xffff) {
    throw Error(fmt::format("cannot encode a .npy array of shape {}: the header is too long for "
                            "format version 1.0",
                            shape_string(array.shape)));
  }
  std::string out;
  out.reserve(kMagic.size() + 4 + hlen + padlen + array.bytes.size());
  out.append(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  put_u16(out, static_cast<std::uint16_t>(hlen + padlen));
  out += dict;
  out.append(padlen, ' ');
  out.push_back('\n');
  out.append(reinterpret_cast<const char*>(array.bytes.data()), array.bytes.size());
  return out;
}

void write_npy(const std::filesystem::path& file, const NpyArray& array) {
  write_file_atomically(file, encode_npy(array));
}

// ---- .npz (ZIP) ------------------------------------------------------------------------------

namespace {

constexpr std::uint32_t kLocalSig = 0x04034b50;
constexpr std::uint32_t kCentralSig = 0x02014b50;
constexpr std::uint32_t kEndSig = 0x06054b50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50;
constexpr std::size_t kLocalSize = 30;
constexpr std::size_t kCentralSize = 46;
constexpr std::size_t kEndSize = 22;
// DOS date 1980-01-01, time 00:00: fixed so that the same arrays give the same bytes.
constexpr std::uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr std::uint16_t kDosTime = 0;

/// Inflates one deflated entry piece by piece, so that its .npy header can be checked before
/// its data is inflated, and never beyond the size the directory declares.
class EntryInflater {
 public:
  EntryInflater(std::string_view compressed, std::size_t size, const std::string& where)
      : size_(size), where_(where) {
    // Deflate cannot expand more than ~1032:1; a larger declared size is a corrupt header, and
    // refusing it keeps a hostile archive from making us allocate gigabytes.
    if (size / 1032 > compressed.size() + 64) {
      throw Error(
          fmt::format("{}: corrupt entry: {} compressed bytes cannot inflate to the "
                      "declared {} bytes",
                      where, compressed.size(), size));
    }
    if (inflateInit2(&stream_, -MAX_WBITS) != Z_OK) {
      throw Error(fmt::format("{}: cannot initialise zlib", where));
    }
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
    stream_.avail_in = static_cast<uInt>(compressed.size());
  }
  ~EntryInflater() { inflateEnd(&stream_); }
  EntryInflater(const EntryInflater&) = delete;
  EntryInflater& operator=(const EntryInflater&) = delete;

  /// Inflates exactly `n` more bytes to `out`, or throws naming the entry.
  void read(void* out, std::size_t n) {
    auto* next = static_cast<unsigned char*>(out);
    while (n > 0) {
      if (ended_) fail_short();
      const auto room = static_cast<uInt>(std::min<std::size_t>(n, std::size_t{1} << 30));
      stream_.next_out = next;
      stream_.avail_out = room;
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      const std::size_t got = room - stream_.avail_out;
      next += got;
      n -= got;
      if (rc == Z_STREAM_END) {
        ended_ = true;
      } else if (rc == Z_DATA_ERROR) {
        fail_corrupt();
      } else if (rc == Z_BUF_ERROR && got == 0) {
        fail_truncated();
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        throw Error(fmt::format("{}: corrupt entry: zlib error {}", where_, zError(rc)));
      }
    }
  }

  /// Checks that the stream ends exactly at the declared size.
  void finish() {
    unsigned char extra = 0;
    while (!ended_) {
      stream_.next_out = &extra;
      stream_.avail_out = 1;
      const int rc = inflate(&stream_, Z_NO_FLUSH);
      if (stream_.avail_out == 0) {
        throw Error(fmt::format("{}: corrupt entry: it inflates to more than the declared {} bytes",
                                where_, size_));
      }
      if (rc == Z_STREAM_END) return;
      if (rc == Z_DATA_ERROR) fail_corrupt();
      if (rc != Z_OK) fail_truncated();
    }
  }

 private:
  [[noreturn]] void fail_corrupt() const {
    throw Error(fmt::format("{}: corrupt entry: corrupt deflate data ({}) at compressed byte {}",
                            where_, stream_.msg != nullptr ? stream_.msg : "", stream_.total_in));
  }
  [[noreturn]] void fail_truncated() const {
    throw Error(
        fmt::format("{}: corrupt entry: truncated deflate data: it ends after {} of the "
                    "declared {} bytes",
                    where_, stream_.total_out, size_));
  }
  [[noreturn]] void fail_short() const {
    throw Error(fmt::format("{}: corrupt entry: it inflates to {} bytes, the directory declares {}",
                            where_, stream_.total_out, size_));
  }

  z_stream stream_{};
  std::size_t size_;
  const std::string& where_;
  bool ended_ = false;
};

/// The entry's declared uncompressed size must be what its .npy header needs.
void check_entry_size(const Layout& layout, std::size_t declared, const std::string& where) {
  if (layout.count >= 0 && layout.data_offset + layout.data_size() == declared) return;
  throw Error(
      fmt::format("{}: the ZIP directory declares {} uncompressed bytes, but the .npy "
                  "header says {}, which needs {} of data after the {}-byte header",
                  where, declared, layout.type_text(), layout.need_text(), layout.data_offset));
}

/// One entry's array: its header is parsed and checked (sizes, then `check`) before any of its
/// data is inflated or copied.
NpyArray read_entry(std::string_view stored, bool deflated, std::size_t size, std::uint32_t crc,
                    const std::string& key, const std::string& where, const NpzEntryCheck& check) {
  Layout layout;
  auto verify_crc = [&](std::uint32_t actual) {
    if (actual != crc) {
      throw Error(
          fmt::format("{}: corrupt ZIP entry: CRC-32 is {:#010x}, the directory says "
                      "{:#010x}",
                      where, actual, crc));
    }
  };
  auto crc_of = [](std::uint32_t running, const void* data, std::size_t n) {
    return static_cast<std::uint32_t>(
        crc32(running, static_cast<const Bytef*>(data), static_cast<uInt>(n)));
  };
  if (!deflated) {
    parse_layout(stored, size, where, layout);
    check_entry_size(layout, size, where);
    if (check) check(key, layout.dtype, layout.shape);
    verify_crc(crc_of(0, stored.data(), stored.size()));
    return array_from(std::move(layout),
                      reinterpret_cast<const unsigned char*>(stored.data() + layout.data_offset));
  }
  EntryInflater inflater(stored, size, where);
  std::string head(std::min<std::size_t>(size, 12), '\0');
  inflater.read(head.data(), head.size());
  if (const std::size_t need = parse_layout(head, size, where, layout); need > 0) {
    const std::size_t have = head.size();
    head.resize(need);
    inflater.read(head.data() + have, need - have);
    parse_layout(head, size, where, layout);
  }
  check_entry_size(layout, size, where);
  if (check) check(key, layout.dtype, layout.shape);
  // The head may already hold the first data bytes.
  const std::size_t early = head.size() - layout.data_offset;
  std::vector<unsigned char> data;
  try {
    data.resize(layout.data_size());
  } catch (const std::bad_alloc&) {
    throw Error(fmt::format("{}: cannot allocate the {} bytes of data its header declares ({})",
                            where, layout.data_size(), layout.type_text()));
  }
  if (early > 0) std::memcpy(data.data(), head.data() + layout.data_offset, early);
  inflater.read(data.data() + early, data.size() - early);
  inflater.finish();
  verify_crc(crc_of(crc_of(0, head.data(), layout.data_offset), data.data(), data.size()));
  if (layout.fortran_order && layout.shape.size() > 1) {
    return array_from(std::move(layout), data.data());
  }
  NpyArray array;
  array.dtype = layout.dtype;
  array.shape = std::move(layout.shape);
  array.bytes = std::move(data);
  return array;
}

}  // namespace

std::map<std::string, NpyArray> parse_npz(std::string_view file_bytes,
                                          const std::string& name_for_errors,
                                          const NpzEntryCheck& check) {
  const std::string& name = name_for_errors;
  const std::size_t n = file_bytes.size();
  // The end-of-central-directory record is the last 22 bytes plus an optional comment.
  std::size_t end = std::string_view::npos;
  if (n >= kEndSize) {
    const std::size_t lowest = n - kEndSize > 0xffff ? n - kEndSize - 0xffff : 0;
    for (std::size_t at = n - kEndSize + 1; at-- > lowest;) {
      if (load_u32(file_bytes, at) == kEndSig) {
        end = at;
        break;
      }
    }
  }
  if (end == std::string_view::npos) {
    const bool is_npy = file_bytes.substr(0, kMagic.size()) == kMagic;
    throw Error(fmt::format("{}: not a NumPy .npz file (a ZIP archive): no end-of-central-directory "
                            "record found{}",
                            name, is_npy ? "; this is a .npy file, read it with read_npy" : ""));
  }
  const std::uint16_t disk = load_u16(file_bytes, end + 4);
  const std::uint16_t cd_disk = load_u16(file_bytes, end + 6);
  const std::uint16_t entries_here = load_u16(file_bytes, end + 8);
  const std::uint16_t entries = load_u16(file_bytes, end + 10);
  const std::uint32_t cd_size = load_u32(file_bytes, end + 12);
  const std::uint32_t cd_offset = load_u32(file_bytes, end + 16);
  const bool zip64_locator = end >= 20 && load_u32(file_bytes, end - 20) == kZip64LocatorSig;
  if (zip64_locator || entries == 0xffff || cd_size == 0xffffffffU || cd_offset == 0xffffffffU) {
    throw Error(fmt::format("{}: ZIP64 archives (over 4 GiB or 65535 entries) are not supported; "
                            "expected a plain ZIP archive",
                            name));
  }
  if (disk != 0 || cd_disk != 0 || entries_here != entries) {
    throw Error(fmt::format("{}: multi-volume ZIP archives are not supported", name));
  }
  if (std::size_t{cd_offset} + cd_size > end) {
    throw Error(fmt::format("{}: truncated or corrupt ZIP archive: the central directory "
                            "(offset {}, {} bytes) does not end before the end record at offset {}",
                            name, cd_offset, cd_size, end));
  }

  std::map<std::string, NpyArray> arrays;
  std::size_t at = cd_offset;
  const std::size_t cd_end = std::size_t{cd_offset} + cd_size;
  for (std::uint16_t e = 0; e < entries; ++e) {
    if (at + kCentralSize > cd_end || load_u32(file_bytes, at) != kCentralSig) {
      throw Error(fmt::format("{}: corrupt ZIP archive: central directory entry {} of {} at offset "
                              "{} is missing or has a bad signature",
                              name, e + 1, entries, at));
    }
    const std::uint16_t flags = load_u16(file_bytes, at + 8);
    const std::uint16_t method = load_u16(file_bytes, at + 10);
    const std::uint32_t crc = load_u32(file_bytes, at + 16);
    const std::uint32_t csize = load_u32(file_bytes, at + 20);
    const std::uint32_t usize = load_u32(file_bytes, at + 24);
    const std::uint16_t name_len = load_u16(file_bytes, at + 28);
    const std::uint16_t extra_len = load_u16(file_bytes, at + 30);
    const std::uint16_t comment_len = load_u16(file_bytes, at + 32);
    const std::uint32_t local = load_u32(file_bytes, at + 42);
    if (at + kCentralSize + name_len > cd_end) {
      throw Error(fmt::format("{}: corrupt ZIP archive: the name of entry {} runs past the central "
                              "directory",
                              name, e + 1));
    }
    const std::string entry(file_bytes.substr(at + kCentralSize, name_len));
    const std::string where = fmt::format("{}[{}]", name, quote_bytes(entry, 200));
    at += kCentralSize + name_len + extra_len + comment_len;
    if (csize == 0xffffffffU || usize == 0xffffffffU || local == 0xffffffffU) {
      throw Error(fmt::format("{}: ZIP64 entries (over 4 GiB) are not supported", where));
    }
    if ((flags & 1U) != 0) throw Error(fmt::format("{}: encrypted ZIP entries are not supported", where));
    if (method != 0 && method != 8) {
      throw Error(fmt::format("{}: unsupported ZIP compression method {}; expected 0 (stored) or 8 "
                              "(deflated)",
                              where, method));
    }
    if (entry.size() < 4 || entry.compare(entry.size() - 4, 4, ".npy") != 0) {
      throw Error(fmt::format("{}: not a .npy entry; a .npz archive holds only NAME.npy entries",
                              where));
    }
    const std::string key = entry.substr(0, entry.size() - 4);
    if (arrays.count(key) != 0) throw Error(fmt::format("{}: duplicate entry", where));
    if (std::size_t{local} + kLocalSize > n || load_u32(file_bytes, local) != kLocalSig) {
      throw Error(fmt::format("{}: corrupt ZIP archive: no local header at offset {}", where, local));
    }
    // Sizes come from the central directory: numpy.savez writes ZIP64 extra fields into local
    // headers, and streamed entries have zero sizes there.
    const std::size_t data_at = std::size_t{local} + kLocalSize + load_u16(file_bytes, local + 26) +
                                load_u16(file_bytes, local + 28);
    if (data_at > n || csize > n - data_at) {
      throw Error(fmt::format("{}: truncated ZIP archive: the entry's {} bytes at offset {} run past "
                              "the end of the {}-byte file",
                              where, csize, data_at, n));
    }
    if (method == 0 && csize != usize) {
      throw Error(fmt::format("{}: corrupt ZIP entry: stored with {} bytes but declares {} "
                              "uncompressed bytes",
                              where, csize, usize));
    }
    arrays.emplace(key, read_entry(file_bytes.substr(data_at, csize), method == 8, usize, crc, key,
                                   where, check));
  }
  return arrays;
}

std::map<std::string, NpyArray> read_npz(const std::filesystem::path& file,
                                         const NpzEntryCheck& check) {
  return parse_npz(read_file_bytes(file), file.string(), check);
}

const NpyArray& require(const std::map<std::string, NpyArray>& arrays, const std::string& key,
                        const std::filesystem::path& file) {
  const auto it = arrays.find(key);
  if (it != arrays.end()) return it->second;
  std::vector<std::string> keys;
  for (const auto& entry : arrays) keys.push_back(entry.first);
  throw Error(fmt::format("{}: missing array '{}'; found: {}", file.string(), key,
                          keys.empty() ? std::string("no arrays") : fmt::format("{}", fmt::join(keys, ", "))));
}

std::string encode_npz(const std::vector<std::pair<std::string, NpyArray>>& arrays) {
  if (arrays.size() >= 0xffff) {
    throw Error(fmt::format("cannot encode a .npz archive of {} arrays: at most 65534 without ZIP64",
                            arrays.size()));
  }
  struct Entry {
    std::string name;
    std::uint32_t crc, size, offset;
  };
  std::vector<Entry> entries;
  std::set<std::string> seen;
  std::string out;
  for (const auto& [key, array] : arrays) {
    if (key.empty() || key.size() > 0xff00 || !seen.insert(key).second) {
      throw Error(fmt::format("cannot encode a .npz archive: array names must be unique and "
                              "non-empty; found '{}'{}",
                              quote_bytes(key), key.empty() || key.size() > 0xff00 ? "" : " twice"));
    }
    const std::string data = encode_npy(array);
    if (data.size() >= 0xffffffffU || out.size() + data.size() + 0x20000 >= 0xffffffffU) {
      throw Error(fmt::format("cannot encode a .npz archive: array '{}' takes it past 4 GiB, which "
                              "needs ZIP64",
                              key));
    }
    Entry entry{key + ".npy",
                static_cast<std::uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data.data()),
                                                 static_cast<uInt>(data.size()))),
                static_cast<std::uint32_t>(data.size()), static_cast<std::uint32_t>(out.size())};
    put_u32(out, kLocalSig);
    put_u16(out, 20);  // version needed: 2.0
    put_u16(out, 0);   // flags
    put_u16(out, 0);   // stored
    put_u16(out, kDosTime);
    put_u16(out, kDosDate);
    put_u32(out, entry.crc);
    put_u32(out, entry.size);
    put_u32(out, entry.size);
    put_u16(out, static_cast<std::uint16_t>(entry.name.size()));
    put_u16(out, 0);  // extra
    out += entry.name;
    out += data;
    entries.push_back(std::move(entry));
  }
  const auto cd_offset = static_cast<std::uint32_t>(out.size());
  for (const Entry& entry : entries) {
    put_u32(out, kCentralSig);
    put_u16(out, 20);  // made by: 2.0, MS-DOS attributes
    put_u16(out, 20);  // needed
    put_u16(out, 0);
    put_u16(out, 0);
    put_u16(out, kDosTime);
    put_u16(out, kDosDate);
    put_u32(out, entry.crc);
    put_u32(out, entry.size);
    put_u32(out, entry.size);
    put_u16(out, static_cast<std::uint16_t>(entry.name.size()));
    put_u16(out, 0);  // extra
    put_u16(out, 0);  // comment
    put_u16(out, 0);  // disk
    put_u16(out, 0);  // internal attributes
    put_u32(out, 0);  // external attributes
    put_u32(out, entry.offset);
    out += entry.name;
  }
  const auto cd_size = static_cast<std::uint32_t>(out.size() - cd_offset);
  put_u32(out, kEndSig);
  put_u16(out, 0);
  put_u16(out, 0);
  put_u16(out, static_cast<std::uint16_t>(entries.size()));
  put_u16(out, static_cast<std::uint16_t>(entries.size()));
  put_u32(out, cd_size);
  put_u32(out, cd_offset);
  put_u16(out, 0);  // comment
  return out;
}

void write_npz(const std::filesystem::path& file,
               const std::vector<std::pair<std::string, NpyArray>>& arrays) {
  write_file_atomically(file, encode_npz(arrays));
}

}  // namespace quadra::io
