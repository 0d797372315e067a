#pragma once
/// \file
/// NumPy `.npy` and `.npz` files: the format PyTorch users already have, used for model weights
/// (state_dict-style names) and for data sets (X.npy / y.npy pairs).
///
/// Reading accepts format versions 1.0, 2.0 and 3.0, C or Fortran order (Fortran arrays are
/// converted to C order on reading), and the dtypes uint8 ('<u1', '|u1'), int32 ('<i4'),
/// int64 ('<i8'), float32 ('<f4') and float64 ('<f8'). Everything else (big-endian, bool,
/// object, unicode, structured dtypes) is refused. An `.npz` is a ZIP archive of `.npy` entries,
/// stored or deflated; ZIP64 archives (> 4 GiB) are refused, but the ZIP64 extra fields that
/// `numpy.savez` always writes into its local headers are understood.
///
/// Writing produces what `numpy.save` produces byte for byte (version 1.0, header padded to a
/// multiple of 64 bytes), and `.npz` files as stored (uncompressed) ZIP archives, which
/// `numpy.load` reads. Files are written atomically.
///
/// Every malformed input throws one quadra::Error that names the file (and the npz entry), what
/// was found and what was expected. The host must be little-endian (checked at compile time).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <quadra/io/file.hpp>

namespace quadra::io {

enum class DType { kUInt8, kInt32, kInt64, kFloat32, kFloat64 };

/// NumPy's name of the dtype: "uint8", "int32", "int64", "float32", "float64".
const char* to_string(DType dtype);
/// Bytes per element: 1, 4, 8, 4, 8.
std::size_t itemsize(DType dtype);

/// An n-dimensional array as stored in a `.npy` file: raw little-endian bytes in C order.
struct NpyArray {
  DType dtype = DType::kFloat64;
  std::vector<std::int64_t> shape;   ///< C order; empty for a 0-d (scalar) array
  std::vector<unsigned char> bytes;  ///< little-endian, C order, size() * itemsize(dtype) bytes

  /// Product of the shape (1 for a 0-d array).
  [[nodiscard]] std::int64_t size() const;

  /// The elements converted to T, in C order. Integer to integer conversions check the range;
  /// integer to float and float to float convert as static_cast does, except that a finite
  /// float64 outside float32's range is refused rather than turned into an infinity (NaN and
  /// infinities are converted as they are: see require_finite). Converting a float dtype to an
  /// integer T, or an out-of-range value, throws quadra::Error naming `name_for_errors` (the
  /// file, or the file and the array) when given, the dtypes and the element.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector(std::string_view name_for_errors = {}) const;

  /// An array of `shape` holding a copy of the size-of-shape elements at `data` (C order).
  /// T is one of uint8_t, int32_t, int64_t, float, double.
  template <class T>
  static NpyArray from(std::vector<std::int64_t> shape, const T* data);
};

extern template std::vector<std::uint8_t> NpyArray::to_vector<std::uint8_t>(std::string_view) const;
extern template std::vector<std::int32_t> NpyArray::to_vector<std::int32_t>(std::string_view) const;
extern template std::vector<std::int64_t> NpyArray::to_vector<std::int64_t>(std::string_view) const;
extern template std::vector<float> NpyArray::to_vector<float>(std::string_view) const;
extern template std::vector<double> NpyArray::to_vector<double>(std::string_view) const;
extern template NpyArray NpyArray::from<std::uint8_t>(std::vector<std::int64_t>, const std::uint8_t*);
extern template NpyArray NpyArray::from<std::int32_t>(std::vector<std::int64_t>, const std::int32_t*);
extern template NpyArray NpyArray::from<std::int64_t>(std::vector<std::int64_t>, const std::int64_t*);
extern template NpyArray NpyArray::from<float>(std::vector<std::int64_t>, const float*);
extern template NpyArray NpyArray::from<double>(std::vector<std::int64_t>, const double*);

/// Parses the complete bytes of one `.npy` file. `name_for_errors` names it in messages.
NpyArray parse_npy(std::string_view file_bytes, const std::string& name_for_errors);
/// Reads and parses one `.npy` file.
NpyArray read_npy(const std::filesystem::path& file);

/// Called by parse_npz for each entry once its .npy header is read, before its data is inflated
/// or copied, with the key (entry name without ".npy"), the dtype and the shape. A reader that
/// knows which arrays it wants throws quadra::Error for the others, so that they cost no memory.
using NpzEntryCheck = std::function<void(const std::string& key, DType dtype,
                                         const std::vector<std::int64_t>& shape)>;

/// Parses the complete bytes of one `.npz` archive: entry name without ".npy" -> array. Each
/// entry's .npy header is read first (from the first inflated bytes of a deflated entry), and
/// the entry is refused unless the ZIP directory's uncompressed size is exactly what the header's
/// shape and dtype need; a deflated entry is never inflated beyond that size.
std::map<std::string, NpyArray> parse_npz(std::string_view file_bytes,
                                          const std::string& name_for_errors,
                                          const NpzEntryCheck& check = {});
/// Reads and parses one `.npz` archive. Keys are the entry names without ".npy".
std::map<std::string, NpyArray> read_npz(const std::filesystem::path& file,
                                         const NpzEntryCheck& check = {});

/// arrays.at(key), or an Error "FILE: missing array 'KEY'; found: a, b".
const NpyArray& require(const std::map<std::string, NpyArray>& arrays, const std::string& key,
                        const std::filesystem::path& file);

/// The bytes of a `.npy` file (version 1.0), exactly as numpy.save writes them.
std::string encode_npy(const NpyArray& array);
/// The bytes of a stored (uncompressed) `.npz` archive; entry names are key + ".npy".
std::string encode_npz(const std::vector<std::pair<std::string, NpyArray>>& arrays);

/// Writes encode_npy(array) atomically.
void write_npy(const std::filesystem::path& file, const NpyArray& array);
/// Writes encode_npz(arrays) atomically. Keys must be unique and non-empty.
void write_npz(const std::filesystem::path& file,
               const std::vector<std::pair<std::string, NpyArray>>& arrays);

/// C-order flat index of the first NaN or infinity of a float array; nullopt when every element
/// is finite (always for the integer dtypes).
std::optional<std::int64_t> first_non_finite(const NpyArray& array);

/// Throws quadra::Error at the first NaN or infinity of `array`:
/// "NAME: element 17 (index (3, 2)) is nan; expected finite numbers" (the index only for arrays
/// of more than one dimension). `name_for_errors` names the file (and the array in an .npz).
void require_finite(const NpyArray& array, const std::string& name_for_errors);

/// "element K", followed by " (index (i, j, ...))" for arrays of more than one dimension: how
/// messages name element K (C order) of an array of `shape`.
std::string element_name(const std::vector<std::int64_t>& shape, std::int64_t flat_index);

}  // namespace quadra::io
