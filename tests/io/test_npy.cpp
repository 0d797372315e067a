// .npy / .npz: numpy-written fixtures (tests/fixtures/npy/make_npy_fixtures.py), round trips,
// byte equality with numpy's own output, and every error message.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>

namespace fs = std::filesystem;
using quadra::io::DType;
using quadra::io::NpyArray;
using Catch::Contains;

namespace {

fs::path fixture(const std::string& name) {
  return fs::path(QUADRA_SOURCE_DIR) / "tests" / "fixtures" / "npy" / name;
}

/// A fresh, empty directory for files this test writes.
fs::path scratch_dir() {
  const fs::path dir = fs::temp_directory_path() / ("quadra_test_npy_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string out("\x93NUMPY\x01\x00", 8);
  const std::string header = dict + "\n";
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

/// Raw deflate (as in ZIP entries) of `data`.
std::string deflate_raw(const std::string& data) {
  z_stream s{};
  deflateInit2(&s, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 9, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, static_cast<uLong>(data.size())) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

void put16(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
}
void put32(std::string& out, std::uint32_t v) {
  put16(out, v & 0xffff);
  put16(out, v >> 16);
}

/// A ZIP archive of one entry `name` holding `content`, deflated or stored, whose central
/// directory declares `declared` uncompressed bytes (the content's size unless given).
std::string zip_one(const std::string& name, const std::string& content, bool deflated,
                    std::size_t declared = std::string::npos) {
  if (declared == std::string::npos) declared = content.size();
  const std::string data = deflated ? deflate_raw(content) : content;
  const auto crc = static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(content.data()), static_cast<uInt>(content.size())));
  std::string out;
  put32(out, 0x04034b50);
  put16(out, 20);
  put16(out, 0);
  put16(out, deflated ? 8 : 0);
  put32(out, 0);  // time, date
  put32(out, crc);
  put32(out, static_cast<std::uint32_t>(data.size()));
  put32(out, static_cast<std::uint32_t>(declared));
  put16(out, static_cast<std::uint32_t>(name.size()));
  put16(out, 0);
  out += name + data;
  const auto cd = static_cast<std::uint32_t>(out.size());
  put32(out, 0x02014b50);
  put16(out, 20);
  put16(out, 20);
  put16(out, 0);
  put16(out, deflated ? 8 : 0);
  put32(out, 0);
  put32(out, crc);
  put32(out, static_cast<std::uint32_t>(data.size()));
  put32(out, static_cast<std::uint32_t>(declared));
  put16(out, static_cast<std::uint32_t>(name.size()));
  put32(out, 0);  // extra, comment
  put32(out, 0);  // disk, internal attributes
  put32(out, 0);  // external attributes
  put32(out, 0);  // local header offset
  out += name;
  const auto cd_size = static_cast<std::uint32_t>(out.size()) - cd;
  put32(out, 0x06054b50);
  put32(out, 0);
  put16(out, 1);
  put16(out, 1);
  put32(out, cd_size);
  put32(out, cd);
  put16(out, 0);
  return out;
}

std::string doubles(std::initializer_list<double> values) {
  std::string out(values.size() * sizeof(double), '\0');
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

}  // namespace

TEST_CASE("dtype names and sizes follow numpy", "[npy]") {
  CHECK(std::string(quadra::io::to_string(DType::kUInt8)) == "uint8");
  CHECK(std::string(quadra::io::to_string(DType::kInt32)) == "int32");
  CHECK(std::string(quadra::io::to_string(DType::kInt64)) == "int64");
  CHECK(std::string(quadra::io::to_string(DType::kFloat32)) == "float32");
  CHECK(std::string(quadra::io::to_string(DType::kFloat64)) == "float64");
  CHECK(quadra::io::itemsize(DType::kUInt8) == 1);
  CHECK(quadra::io::itemsize(DType::kInt64) == 8);
  CHECK(quadra::io::itemsize(DType::kFloat32) == 4);
}

TEST_CASE("numpy-written files of every supported dtype", "[npy]") {
  SECTION("float64 2x3") {
    const NpyArray a = quadra::io::read_npy(fixture("f8_2x3.npy"));
    CHECK(a.dtype == DType::kFloat64);
    CHECK(a.shape == std::vector<std::int64_t>{2, 3});
    CHECK(a.size() == 6);
    CHECK(a.to_vector<double>() == std::vector<double>{0, 0.5, 1, 1.5, 2, 2.5});
  }
  SECTION("float32 1-d") {
    const NpyArray a = quadra::io::read_npy(fixture("f4_4.npy"));
    CHECK(a.dtype == DType::kFloat32);
    CHECK(a.shape == std::vector<std::int64_t>{4});
    CHECK(a.to_vector<float>() == std::vector<float>{-1.5f, -0.5f, 0.5f, 1.5f});
    CHECK(a.to_vector<double>() == std::vector<double>{-1.5, -0.5, 0.5, 1.5});
  }
  SECTION("uint8 3-d") {
    const NpyArray a = quadra::io::read_npy(fixture("u1_2x2x2.npy"));
    CHECK(a.dtype == DType::kUInt8);
    CHECK(a.shape == std::vector<std::int64_t>{2, 2, 2});
    CHECK(a.to_vector<std::uint8_t>() == std::vector<std::uint8_t>{0, 30, 60, 90, 120, 150, 180, 210});
    CHECK(a.to_vector<std::int64_t>()[7] == 210);
    CHECK(a.to_vector<float>()[7] == 210.0f);
  }
  SECTION("int32 with extremes") {
    const NpyArray a = quadra::io::read_npy(fixture("i4_3.npy"));
    CHECK(a.dtype == DType::kInt32);
    CHECK(a.to_vector<std::int32_t>() == std::vector<std::int32_t>{-7, 0, 2147483647});
    CHECK(a.to_vector<std::int64_t>() == std::vector<std::int64_t>{-7, 0, 2147483647});
    REQUIRE_THROWS_WITH(a.to_vector<std::uint8_t>(),
                        Contains("element 0 is -7, outside the range of uint8"));
  }
  SECTION("int64") {
    const NpyArray a = quadra::io::read_npy(fixture("i8_2x1.npy"));
    CHECK(a.dtype == DType::kInt64);
    CHECK(a.shape == std::vector<std::int64_t>{2, 1});
    CHECK(a.to_vector<std::int64_t>() == std::vector<std::int64_t>{-(std::int64_t{1} << 40), 5});
    REQUIRE_THROWS_WITH(a.to_vector<std::int32_t>(),
                        Contains("cannot convert the int64 array to int32: element 0 (index (0, "
                                 "0)) is -1099511627776, outside the range of int32"));
  }
  SECTION("0-d scalar") {
    const NpyArray a = quadra::io::read_npy(fixture("f8_scalar.npy"));
    CHECK(a.shape.empty());
    CHECK(a.size() == 1);
    CHECK(a.to_vector<double>() == std::vector<double>{3.25});
  }
  SECTION("empty 0x3") {
    const NpyArray a = quadra::io::read_npy(fixture("f4_0x3.npy"));
    CHECK(a.shape == std::vector<std::int64_t>{0, 3});
    CHECK(a.size() == 0);
    CHECK(a.bytes.empty());
  }
  SECTION("float to integer is refused") {
    const NpyArray a = quadra::io::read_npy(fixture("f8_2x3.npy"));
    REQUIRE_THROWS_WITH(a.to_vector<std::int64_t>(),
                        Contains("cannot convert a float64 array to the integer type int64"));
  }
}

TEST_CASE("Fortran-ordered arrays are returned in C order", "[npy]") {
  const NpyArray a = quadra::io::read_npy(fixture("fortran_f8_3x4.npy"));
  CHECK(a.shape == std::vector<std::int64_t>{3, 4});
  std::vector<double> expected(12);
  for (int i = 0; i < 12; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(a.to_vector<double>() == expected);

  const NpyArray b = quadra::io::read_npy(fixture("fortran_i4_2x3x4.npy"));
  CHECK(b.shape == std::vector<std::int64_t>{2, 3, 4});
  std::vector<std::int32_t> expected_b(24);
  for (int i = 0; i < 24; ++i) expected_b[static_cast<std::size_t>(i)] = i;
  CHECK(b.to_vector<std::int32_t>() == expected_b);
}

TEST_CASE("format versions 2.0 and 3.0", "[npy]") {
  const NpyArray v2 = quadra::io::read_npy(fixture("v2_f4_2x2.npy"));
  CHECK(v2.shape == std::vector<std::int64_t>{2, 2});
  CHECK(v2.to_vector<float>() == std::vector<float>{0, 1, 2, 3});
  const NpyArray v3 = quadra::io::read_npy(fixture("v3_i8_3.npy"));
  CHECK(v3.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2});
}

TEST_CASE("encode_npy writes what numpy.save writes, byte for byte", "[npy]") {
  for (const char* name : {"f8_2x3.npy", "f4_4.npy", "u1_2x2x2.npy", "i4_3.npy", "i8_2x1.npy",
                           "f8_scalar.npy", "f4_0x3.npy"}) {
    INFO(name);
    const std::string original = quadra::io::read_file_bytes(fixture(name));
    const NpyArray a = quadra::io::parse_npy(original, name);
    const std::string encoded = quadra::io::encode_npy(a);
    CHECK(encoded.size() % 64 == a.bytes.size() % 64);
    CHECK(encoded == original);
  }
}

TEST_CASE("round trips through files", "[npy]") {
  const fs::path dir = scratch_dir();
  const std::vector<float> f{1.0f, -2.5f, 3.0e-8f, 4.0f, 5.0f, 6.0f};
  const std::vector<std::uint8_t> u{0, 1, 255};
  const std::vector<std::int64_t> i{std::int64_t{1} << 62, -3};
  const std::vector<double> d{0.1};
  const NpyArray af = NpyArray::from<float>({2, 3}, f.data());
  const NpyArray au = NpyArray::from<std::uint8_t>({3}, u.data());
  const NpyArray ai = NpyArray::from<std::int64_t>({1, 2, 1}, i.data());
  const NpyArray ad = NpyArray::from<double>({}, d.data());
  CHECK(af.dtype == DType::kFloat32);
  CHECK(ad.size() == 1);

  quadra::io::write_npy(dir / "f.npy", af);
  const NpyArray back = quadra::io::read_npy(dir / "f.npy");
  CHECK(back.shape == af.shape);
  CHECK(back.dtype == af.dtype);
  CHECK(back.to_vector<float>() == f);
  CHECK(quadra::io::read_file_bytes(dir / "f.npy").size() % 64 == f.size() * 4 % 64);

  quadra::io::write_npz(dir / "all.npz", {{"layer.0.weight", af}, {"u", au}, {"i", ai}, {"s", ad}});
  const auto arrays = quadra::io::read_npz(dir / "all.npz");
  REQUIRE(arrays.size() == 4);
  CHECK(quadra::io::require(arrays, "layer.0.weight", dir / "all.npz").to_vector<float>() == f);
  CHECK(arrays.at("u").to_vector<std::uint8_t>() == u);
  CHECK(arrays.at("i").shape == std::vector<std::int64_t>{1, 2, 1});
  CHECK(arrays.at("i").to_vector<std::int64_t>() == i);
  CHECK(arrays.at("s").shape.empty());
  CHECK(arrays.at("s").to_vector<double>() == d);
  // Deterministic bytes: the same arrays give the same archive.
  CHECK(quadra::io::encode_npz({{"u", au}}) == quadra::io::encode_npz({{"u", au}}));
  fs::remove_all(dir);
}

TEST_CASE("numpy-written .npz archives, stored and deflated", "[npy]") {
  const auto stored = quadra::io::read_npz(fixture("savez.npz"));
  REQUIRE(stored.size() == 2);
  CHECK(stored.at("a").to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2});
  CHECK(stored.at("b").shape == std::vector<std::int64_t>{2, 2});
  CHECK(stored.at("b").to_vector<float>() == std::vector<float>{0, 1, 2, 3});

  const auto deflated = quadra::io::read_npz(fixture("savez_compressed.npz"));
  REQUIRE(deflated.size() == 2);
  const auto w = deflated.at("weight").to_vector<double>();
  CHECK(deflated.at("weight").shape == std::vector<std::int64_t>{10, 20});
  REQUIRE(w.size() == 200);
  for (std::size_t k = 0; k < w.size(); ++k) CHECK(w[k] == static_cast<double>(k) / 7.0);
  CHECK(deflated.at("bias").to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2});
}

TEST_CASE("malformed .npy files: one message each, naming the file", "[npy][errors]") {
  const std::string data = doubles({1, 2, 3});
  const std::string good_dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
  REQUIRE(quadra::io::parse_npy(npy_with_header(good_dict, data), "x.npy").size() == 3);

  SECTION("bad magic") {
    REQUIRE_THROWS_WITH(quadra::io::parse_npy("PK\x03\x04 not numpy", "w.npy"),
                        Contains("w.npy: not a NumPy .npy file: it starts with 'PK\\x03\\x04 not'") &&
                            Contains("expected the magic string"));
    REQUIRE_THROWS_WITH(quadra::io::parse_npy("", "empty.npy"), Contains("empty.npy: not a NumPy"));
  }
  SECTION("truncated header") {
    REQUIRE_THROWS_WITH(quadra::io::parse_npy(std::string("\x93NUMPY\x01\x00", 8), "t.npy"),
                        Contains("t.npy: truncated header: the file has 8 bytes"));
    const std::string full = npy_with_header(good_dict, data);
    REQUIRE_THROWS_WITH(quadra::io::parse_npy(full.substr(0, 30), "t.npy"),
                        Contains("t.npy: truncated header: the header declares 58 bytes but only "
                                 "20 follow the preamble"));
    REQUIRE_THROWS_WITH(quadra::io::parse_npy(std::string("\x93NUMPY\x02\x00\x05\x00", 10), "t2.npy"),
                        Contains("t2.npy: truncated header: the file has 10 bytes, the version 2.0 "
                                 "preamble needs 12"));
  }
  SECTION("unsupported version") {
    std::string bytes = npy_with_header(good_dict, data);
    bytes[6] = '\x04';
    REQUIRE_THROWS_WITH(quadra::io::parse_npy(bytes, "v.npy"),
                        Contains("v.npy: unsupported .npy format version 4.0; expected 1.0, 2.0 or 3.0"));
  }
  SECTION("unparsable header dict") {
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header("['descr', '<f8']", data), "u.npy"),
        Contains("u.npy: unparsable header at character 0 of the header dict: expected '{', found "
                 "'['descr', '<f8']"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (3,), }", data), "u.npy"),
        Contains("expected True or False for 'fortran_order', found 'Maybe"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (3, x), }", data), "u.npy"),
        Contains("expected a non-negative integer dimension or ')' in 'shape', found 'x), }"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }", data), "u.npy"),
        Contains("expected a non-negative integer dimension"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header("{'descr': '<f8', 'shape': (3,), }", data), "u.npy"),
        Contains("u.npy: unparsable header: the key 'fortran_order' is missing"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'extra': 1}", data),
            "u.npy"),
        Contains("expected one of the keys 'descr', 'fortran_order', 'shape' (found key 'extra')"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header(good_dict + " trailing", data), "u.npy"),
        Contains("expected only padding after the closing '}', found 'trailing\\x0a'"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header("{'descr': '<f8", data), "u.npy"),
        Contains("expected the dtype string to end with '"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                            data),
            "u.npy"),
        Contains("expected a dimension that fits in 64 bits"));
  }
  SECTION("unsupported dtypes") {
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("bigendian_f8.npy")),
                        Contains("bigendian_f8.npy: unsupported dtype '>f8' (big-endian); expected "
                                 "one of '<u1', '|u1', '<i4', '<i8', '<f4', '<f8'"));
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("bool.npy")),
                        Contains("bool.npy: unsupported dtype '|b1' (bool; save it as uint8)"));
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("unicode.npy")),
                        Contains("unicode.npy: unsupported dtype '<U2' (strings)"));
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("object.npy")),
                        Contains("object.npy: unsupported dtype '|O' (Python objects)"));
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("complex.npy")),
                        Contains("complex.npy: unsupported dtype '<c16'; expected one of"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': [('x', '<f8')], 'fortran_order': False, 'shape': (3,), }", data),
            "s.npy"),
        Contains("s.npy: unsupported dtype: a structured (record) dtype [('x', '<f8')]"));
  }
  SECTION("shape and data size disagree") {
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header(good_dict, data.substr(0, 20)), "d.npy"),
        Contains("d.npy: data size mismatch (truncated data): the header says shape (3,) of "
                 "float64, which needs 24 bytes of data, but 20 bytes follow the 68-byte header"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(npy_with_header(good_dict, data + "xy"), "d.npy"),
        Contains("d.npy: data size mismatch (trailing bytes): the header says shape (3,) of float64, "
                 "which needs 24 bytes of data, but 26 bytes follow"));
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npy(
            npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, "
                            "100000000000, 100000000000), }",
                            data),
            "huge.npy"),
        Contains("huge.npy: data size mismatch (truncated data): the header says shape "
                 "(100000000000, 100000000000, 100000000000) of float64, which needs more than "
                 "2^62 bytes"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(quadra::io::read_npy("/nonexistent/dir/x.npy"),
                        Contains("cannot read /nonexistent/dir/x.npy: No such file or directory"));
    REQUIRE_THROWS_WITH(quadra::io::read_npy(fixture("")),
                        Contains("fixtures/npy/: it is a directory; expected a regular file"));
  }
  SECTION("encoding an inconsistent array") {
    NpyArray bad;
    bad.dtype = DType::kFloat32;
    bad.shape = {2, 2};
    bad.bytes.resize(12);
    REQUIRE_THROWS_WITH(quadra::io::encode_npy(bad),
                        Contains("shape (2, 2) of float32 needs 16 bytes, the array holds 12"));
  }
}

TEST_CASE("malformed .npz archives: one message each, naming file and entry", "[npy][errors]") {
  const std::vector<double> values{1, 2, 3};
  const NpyArray a = NpyArray::from<double>({3}, values.data());
  const std::string good = quadra::io::encode_npz({{"a", a}, {"b", a}});
  REQUIRE(quadra::io::parse_npz(good, "g.npz").size() == 2);
  // Layout of encode_npz: local header (30 + 5 name bytes) then the .npy bytes of "a".
  const std::size_t a_data = 30 + 5;

  SECTION("missing array") {
    const auto arrays = quadra::io::parse_npz(good, "g.npz");
    REQUIRE_THROWS_WITH(quadra::io::require(arrays, "weight", "model.npz"),
                        Contains("model.npz: missing array 'weight'; found: a, b"));
    REQUIRE_THROWS_WITH(quadra::io::require({}, "weight", "empty.npz"),
                        Contains("empty.npz: missing array 'weight'; found: no arrays"));
  }
  SECTION("not a zip") {
    REQUIRE_THROWS_WITH(quadra::io::parse_npz("hello", "h.npz"),
                        Contains("h.npz: not a NumPy .npz file (a ZIP archive): no "
                                 "end-of-central-directory record found"));
    REQUIRE_THROWS_WITH(
        quadra::io::read_npz(fixture("f8_2x3.npy")),
        Contains("f8_2x3.npy: not a NumPy .npz file") && Contains("this is a .npy file, read it with read_npy"));
  }
  SECTION("CRC mismatch") {
    std::string bad = good;
    bad[a_data + 128 + 3] ^= 0x40;  // a byte of the first array's data
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "c.npz"),
                        Contains("c.npz[a.npy]: corrupt ZIP entry: CRC-32 is 0x") &&
                            Contains(", the directory says 0x"));
  }
  SECTION("truncated archive") {
    // Cut out the middle of the archive, keeping the end record: the entries point past the end.
    const std::string cut = good.substr(0, 50) + good.substr(good.size() - 22);
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(cut, "t.npz"),
                        Contains("t.npz: truncated or corrupt ZIP archive: the central directory"));
    std::string short_entry = good;
    // Make entry a's stored size claim more than the file holds (central directory field).
    const std::size_t cd = good.size() - 22 - 2 * (46 + 5);
    short_entry[cd + 20] = '\xff';
    short_entry[cd + 21] = '\xff';
    short_entry[cd + 22] = '\x0f';
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(short_entry, "t.npz"),
                        Contains("t.npz[a.npy]: truncated ZIP archive: the entry's 1048575 bytes at "
                                 "offset 35 run past the end"));
  }
  SECTION("bad central directory and local header") {
    std::string bad = good;
    const std::size_t cd = good.size() - 22 - 2 * (46 + 5);
    bad[cd] = 'X';
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "b.npz"),
                        Contains("b.npz: corrupt ZIP archive: central directory entry 1 of 2 at offset"));
    bad = good;
    bad[0] = 'X';
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "b.npz"),
                        Contains("b.npz[a.npy]: corrupt ZIP archive: no local header at offset 0"));
  }
  SECTION("unsupported compression, encryption and names") {
    const std::size_t cd = good.size() - 22 - 2 * (46 + 5);
    std::string bad = good;
    bad[cd + 10] = 12;  // bzip2
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "m.npz"),
                        Contains("m.npz[a.npy]: unsupported ZIP compression method 12; expected 0 "
                                 "(stored) or 8 (deflated)"));
    bad = good;
    bad[cd + 8] = 1;
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "e.npz"),
                        Contains("e.npz[a.npy]: encrypted ZIP entries are not supported"));
    bad = good;
    bad[cd + 46 + 3] = 'x';  // a.npy -> a.nxy in the central directory
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "n.npz"),
                        Contains("n.npz[a.nxy]: not a .npy entry"));
    bad = good;
    bad[cd + 46 + 51] = 'a';  // b.npy -> a.npy
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "d.npz"), Contains("d.npz[a.npy]: duplicate entry"));
  }
  SECTION("ZIP64 is refused clearly") {
    std::string zip64 = good;
    const std::string locator = std::string("\x50\x4b\x06\x07") + std::string(16, '\0');
    zip64.insert(zip64.size() - 22, locator);
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(zip64, "z.npz"),
                        Contains("z.npz: ZIP64 archives (over 4 GiB or 65535 entries) are not supported"));
    std::string big = good;
    const std::size_t cd = good.size() - 22 - 2 * (46 + 5);
    for (int k = 0; k < 4; ++k) big[cd + 24 + static_cast<std::size_t>(k)] = '\xff';
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(big, "z.npz"),
                        Contains("z.npz[a.npy]: ZIP64 entries (over 4 GiB) are not supported"));
  }
  SECTION("a broken .npy inside names the entry") {
    std::string bad = good;
    bad[a_data] = 'X';  // the .npy magic of entry a; fix the CRC so the entry itself is intact
    const auto crc = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const unsigned char*>(bad.data() + a_data), 128 + 24));
    const std::size_t cd = good.size() - 22 - 2 * (46 + 5);
    std::memcpy(bad.data() + 14, &crc, 4);
    std::memcpy(bad.data() + cd + 16, &crc, 4);
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "i.npz"),
                        Contains("i.npz[a.npy]: not a NumPy .npy file: it starts with 'XNUMPY"));
  }
}

TEST_CASE("deflated entries: corrupt and truncated streams", "[npy][errors]") {
  const std::string original = quadra::io::read_file_bytes(fixture("savez_compressed.npz"));
  // The first entry's data starts after its local header; its name and extra lengths say where.
  auto u16 = [&](std::size_t at) {
    return static_cast<std::size_t>(static_cast<unsigned char>(original[at])) |
           static_cast<std::size_t>(static_cast<unsigned char>(original[at + 1])) << 8;
  };
  const std::size_t data_at = 30 + u16(26) + u16(28);
  std::string bad = original;
  for (std::size_t k = 0; k < 8; ++k) bad[data_at + k] = '\xff';
  REQUIRE_THROWS_WITH(quadra::io::parse_npz(bad, "zc.npz"),
                      Contains("zc.npz[weight.npy]: corrupt entry: corrupt deflate data"));
}

TEST_CASE("non-finite elements are found and named with their index", "[npy][finite]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> ok{1, 2, 3, 4, 5, 6};
  CHECK_FALSE(quadra::io::first_non_finite(NpyArray::from<double>({6}, ok.data())).has_value());
  const std::vector<std::int64_t> ints{1, 2};
  CHECK_FALSE(quadra::io::first_non_finite(NpyArray::from<std::int64_t>({2}, ints.data())));

  const std::vector<double> bad{1, 2, 3, inf, nan, 6};
  const NpyArray flat = NpyArray::from<double>({6}, bad.data());
  CHECK(quadra::io::first_non_finite(flat) == 3);
  REQUIRE_THROWS_WITH(quadra::io::require_finite(flat, "v.npy"),
                      "v.npy: element 3 is inf; expected finite numbers");
  const NpyArray matrix = NpyArray::from<double>({3, 2}, bad.data());
  REQUIRE_THROWS_WITH(quadra::io::require_finite(matrix, "X.npy"),
                      "X.npy: element 3 (index (1, 1)) is inf; expected finite numbers");
  const std::vector<float> floats{0, 0, 0, 0, 0, 0, -std::numeric_limits<float>::infinity(), 0};
  REQUIRE_THROWS_WITH(
      quadra::io::require_finite(NpyArray::from<float>({2, 2, 2}, floats.data()), "f.npy"),
      "f.npy: element 6 (index (1, 1, 0)) is -inf; expected finite numbers");
  const std::vector<float> nan32{std::numeric_limits<float>::quiet_NaN()};
  REQUIRE_THROWS_WITH(quadra::io::require_finite(NpyArray::from<float>({}, nan32.data()), "s.npy"),
                      "s.npy: element 0 is nan; expected finite numbers");
  CHECK(quadra::io::element_name({4, 5}, 17) == "element 17 (index (3, 2))");
}

TEST_CASE("float64 values beyond float32's range are refused, not made infinite", "[npy][finite]") {
  const std::vector<double> big{1, 2, -1e300, 4};
  const NpyArray a = NpyArray::from<double>({2, 2}, big.data());
  CHECK(a.to_vector<double>() == big);
  REQUIRE_THROWS_WITH(a.to_vector<float>("W.npz: array '0.weight'"),
                      "W.npz: array '0.weight': element 2 (index (1, 0)) is -1e+300, which "
                      "overflows float32; expected finite numbers of magnitude at most "
                      "3.4028235e+38 (float32's largest)");
  // Small values round to zero or a subnormal, as static_cast does; NaN stays NaN (the finiteness
  // check is require_finite's).
  const std::vector<double> small{1e-300, std::numeric_limits<double>::quiet_NaN()};
  const auto converted = NpyArray::from<double>({2}, small.data()).to_vector<float>();
  CHECK(converted[0] == 0.0f);
  CHECK(std::isnan(converted[1]));
}

TEST_CASE(".npz entries: the .npy header is checked before the data is inflated", "[npy][errors]") {
  const std::vector<double> values{1, 2, 3};
  const std::string npy = quadra::io::encode_npy(NpyArray::from<double>({3}, values.data()));
  SECTION("well-formed entries, stored and deflated") {
    for (bool deflated : {false, true}) {
      const auto arrays = quadra::io::parse_npz(zip_one("a.npy", npy, deflated), "ok.npz");
      CHECK(arrays.at("a").to_vector<double>() == values);
    }
  }
  SECTION("an inflation bomb: 8 MiB of zeros behind a header for 24 bytes") {
    const std::string bomb = zip_one("a.npy", npy + std::string(8 << 20, '\0'), true);
    REQUIRE(bomb.size() < 20000);
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(bomb, "bomb.npz"),
                        "bomb.npz[a.npy]: the ZIP directory declares 8388760 uncompressed bytes, "
                        "but the .npy header says shape (3,) of float64, which needs 24 bytes of "
                        "data after the 128-byte header");
  }
  SECTION("a declared size that disagrees with the header, stored or deflated") {
    for (bool deflated : {false, true}) {
      REQUIRE_THROWS_WITH(
          quadra::io::parse_npz(zip_one("a.npy", npy.substr(0, npy.size() - 8), deflated), "s.npz"),
          "s.npz[a.npy]: the ZIP directory declares 144 uncompressed bytes, but the .npy header "
          "says shape (3,) of float64, which needs 24 bytes of data after the 128-byte header");
    }
  }
  SECTION("a stream longer than the size it declares stops at that size") {
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npz(zip_one("a.npy", npy + "extra", true, npy.size()), "x.npz"),
        "x.npz[a.npy]: corrupt entry: it inflates to more than the declared 152 bytes");
    REQUIRE_THROWS_WITH(
        quadra::io::parse_npz(zip_one("a.npy", npy.substr(0, 100), true, npy.size()), "y.npz"),
        "y.npz[a.npy]: corrupt entry: it inflates to 100 bytes, the directory declares 152");
  }
  SECTION("a header longer than any numpy writes") {
    std::string huge("\x93NUMPY\x02\x00", 8);
    put32(huge, 1U << 24);
    huge += std::string(1U << 24, ' ');
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(zip_one("h.npy", huge, true), "h.npz"),
                        "h.npz[h.npy]: the header declares 16777216 bytes; expected at most "
                        "1048576 (numpy writes a few hundred)");
  }
  SECTION("a reader refuses arrays from their headers") {
    const std::string two = quadra::io::encode_npz(
        {{"a", quadra::io::parse_npy(npy, "a")}, {"b", quadra::io::parse_npy(npy, "b")}});
    std::vector<std::string> seen;
    const auto check = [&](const std::string& key, DType dtype,
                           const std::vector<std::int64_t>& shape) {
      seen.push_back(key);
      CHECK(dtype == DType::kFloat64);
      CHECK(shape == std::vector<std::int64_t>{3});
      if (key == "b") throw quadra::Error("no b wanted");
    };
    REQUIRE_THROWS_WITH(quadra::io::parse_npz(two, "two.npz", check), "no b wanted");
    CHECK(seen == std::vector<std::string>{"a", "b"});
  }
}
