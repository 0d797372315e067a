// Helper of the multi-process CLI tests: makes a random batch and compares output directories.
//   npy_tool batch DIR N FEATURES CLASSES SEED   writes X.npy (N x FEATURES), y.npy (N labels in
//                                                [0, CLASSES)) and Y.npy (N x CLASSES floats)
//   npy_tool like FILE OUT SEED                  writes OUT, normal values of FILE's length
//   npy_tool compare A B TOLERANCE [SUFFIX=TOL]...
//                                                every .npy of A (and every entry of every .npz)
//                                                against the same file in B:
//                                                max |a - b| <= TOLERANCE * max |a| (0: bitwise);
//                                                TOL instead for arrays whose name ends in SUFFIX
//   npy_tool parameters A.npz B.npz TOLERANCE    two model files' parameters as one vector each,
//                                                compared as by compare

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <quadra/io/npy.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using quadra::io::NpyArray;

namespace {

int make_batch(const fs::path& dir, std::int64_t n, std::int64_t features, std::int64_t classes,
               unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(n * features));
  for (double& value : x) value = normal(rng);
  std::vector<std::int64_t> y(static_cast<std::size_t>(n));
  for (std::int64_t& label : y)
    label = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(classes));
  std::vector<double> targets(static_cast<std::size_t>(n * classes));
  for (double& value : targets) value = normal(rng);
  fs::create_directories(dir);
  quadra::io::write_npy(dir / "X.npy", NpyArray::from<double>({n, features}, x.data()));
  quadra::io::write_npy(dir / "y.npy", NpyArray::from<std::int64_t>({n}, y.data()));
  quadra::io::write_npy(dir / "Y.npy", NpyArray::from<double>({n, classes}, targets.data()));
  return 0;
}

int like(const fs::path& file, const fs::path& out, unsigned seed) {
  const auto size = static_cast<std::int64_t>(quadra::io::read_npy(file).size());
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> v(static_cast<std::size_t>(size));
  for (double& value : v) value = normal(rng);
  quadra::io::write_npy(out, NpyArray::from<double>({size}, v.data()));
  return 0;
}

/// The arrays of one .npy file (keyed by its name) or of every entry of one .npz (NAME:KEY).
std::map<std::string, std::vector<double>> arrays_of(const fs::path& file) {
  std::map<std::string, std::vector<double>> out;
  const std::string name = file.filename().string();
  if (file.extension() == ".npy") {
    out[name] = quadra::io::read_npy(file).to_vector<double>();
  } else {
    for (const auto& [key, array] : quadra::io::read_npz(file)) {
      out[name + ":" + key] = array.to_vector<double>();
    }
  }
  return out;
}

/// The tolerance for the array `name`: the first override whose suffix ends it, else `tolerance`.
double tolerance_for(const std::string& name, double tolerance,
                     const std::vector<std::pair<std::string, double>>& overrides) {
  for (const auto& [suffix, value] : overrides) {
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return value;
  }
  return tolerance;
}

int compare(const fs::path& a_dir, const fs::path& b_dir, double default_tolerance,
            const std::vector<std::pair<std::string, double>>& overrides = {}) {
  int files = 0;
  int failures = 0;
  for (const auto& entry : fs::directory_iterator(a_dir)) {
    if (entry.path().extension() != ".npy" && entry.path().extension() != ".npz") continue;
    ++files;
    const auto a_arrays = arrays_of(entry.path());
    const auto b_arrays = arrays_of(b_dir / entry.path().filename());
    if (a_arrays.size() != b_arrays.size()) {
      std::printf("FAIL %s: %zu arrays against %zu\n", entry.path().filename().c_str(),
                  a_arrays.size(), b_arrays.size());
      ++failures;
      continue;
    }
    for (const auto& [name, a] : a_arrays) {
      const auto found = b_arrays.find(name);
      if (found == b_arrays.end()) {
        std::printf("FAIL %s: missing in %s\n", name.c_str(), b_dir.c_str());
        ++failures;
        continue;
      }
      const std::vector<double>& b = found->second;
      const double tolerance = tolerance_for(name, default_tolerance, overrides);
      if (a.size() != b.size()) {
        std::printf("FAIL %s: %zu values against %zu\n", name.c_str(), a.size(), b.size());
        ++failures;
        continue;
      }
      double scale = 0;
      double diff = 0;
      bool bitwise = true;
      for (std::size_t i = 0; i < a.size(); ++i) {
        scale = std::max(scale, std::abs(a[i]));
        diff = std::max(diff, std::abs(a[i] - b[i]));
        bitwise = bitwise && std::memcmp(&a[i], &b[i], sizeof(double)) == 0;
      }
      const bool ok = tolerance == 0 ? bitwise : diff <= tolerance * scale;
      std::printf("%s %s: max difference %.3g relative to max %.3g (%s)\n", ok ? "ok  " : "FAIL",
                  name.c_str(), diff, scale, bitwise ? "bitwise equal" : "not bitwise equal");
      if (!ok) ++failures;
    }
  }
  if (files == 0) {
    std::printf("no .npy or .npz files in %s\n", a_dir.c_str());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

/// The parameters of two model files as one vector each (every entry but the __metadata__):
/// max |a - b| <= tolerance * max |a| over all of them (0: bitwise).
int compare_parameters(const fs::path& a_file, const fs::path& b_file, double tolerance) {
  const auto a_arrays = arrays_of(a_file);
  const auto b_arrays = arrays_of(b_file);
  double scale = 0;
  double diff = 0;
  bool bitwise = true;
  std::size_t count = 0;
  for (const auto& [name, a] : a_arrays) {
    if (name.find(":__") != std::string::npos) continue;
    const auto found = b_arrays.find(name);
    if (found == b_arrays.end() || found->second.size() != a.size()) {
      std::printf("FAIL %s: missing or of another size in %s\n", name.c_str(), b_file.c_str());
      return 1;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, std::abs(a[i]));
      diff = std::max(diff, std::abs(a[i] - found->second[i]));
      bitwise = bitwise && std::memcmp(&a[i], &found->second[i], sizeof(double)) == 0;
    }
    count += a.size();
  }
  if (count == 0) {
    std::printf("FAIL no parameters in %s\n", a_file.c_str());
    return 1;
  }
  const bool ok = tolerance == 0 ? bitwise : diff <= tolerance * scale;
  std::printf("%s %zu parameters: max difference %.3g relative to max %.3g (%s)\n",
              ok ? "ok  " : "FAIL", count, diff, scale,
              bitwise ? "bitwise equal" : "not bitwise equal");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 6 && args[0] == "batch") {
      return make_batch(args[1], std::stoll(args[2]), std::stoll(args[3]), std::stoll(args[4]),
                        static_cast<unsigned>(std::stoul(args[5])));
    }
    if (args.size() == 4 && args[0] == "like") {
      return like(args[1], args[2], static_cast<unsigned>(std::stoul(args[3])));
    }
    if (args.size() >= 4 && args[0] == "compare") {
      std::vector<std::pair<std::string, double>> overrides;
      for (std::size_t i = 4; i < args.size(); ++i) {
        const std::size_t equals = args[i].rfind('=');
        if (equals == std::string::npos)
          throw std::runtime_error("expected SUFFIX=TOL: " + args[i]);
        overrides.emplace_back(args[i].substr(0, equals), std::stod(args[i].substr(equals + 1)));
      }
      return compare(args[1], args[2], std::stod(args[3]), overrides);
    }
    if (args.size() == 4 && args[0] == "parameters")
      return compare_parameters(args[1], args[2], std::stod(args[3]));
    std::fprintf(stderr,
                 "usage: npy_tool batch DIR N FEATURES CLASSES SEED | like FILE OUT SEED | compare "
                 "A B TOLERANCE [SUFFIX=TOL]... | parameters A.npz B.npz TOLERANCE\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "npy_tool: %s\n", e.what());
    return 1;
  }
}
