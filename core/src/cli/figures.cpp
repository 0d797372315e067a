// See figures.hpp.

#include "figures.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <quadra/io/atomic_file.hpp>
#include <sstream>

namespace quadra::cli {

namespace fs = std::filesystem;

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (const char c : text + " ") {
    if (c == ' ' || c == ',' || c == '\t') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  return out;
}

namespace {

bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

bool render_figure(const fs::path& dir, const std::string& name, const std::string& script,
                   const std::string& prefix) {
  if (!on_path("gnuplot")) {
    std::cout << fmt::format("{}install gnuplot to render {}.png\n", prefix, name);
    return false;
  }
  io::write_file_atomically(dir / (name + ".gp"), script);
  const std::string command =
      fmt::format("cd '{}' && gnuplot {}.gp 2>{}.log", dir.string(), name, name);
  if (std::system(command.c_str()) != 0) {
    std::cerr << fmt::format("quadra: gnuplot failed; see {}\n", (dir / (name + ".log")).string());
    return false;
  }
  return true;
}

}  // namespace quadra::cli
