#pragma once
// A plain-text table with aligned columns, for terminal output.

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace quadra::cli {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  /// Columns separated by two spaces; the last column is not padded.
  [[nodiscard]] std::string str() const {
    std::vector<std::size_t> width;
    for (const auto& row : rows_) {
      width.resize(std::max(width.size(), row.size()), 0);
      for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    std::string out;
    for (const auto& row : rows_) {
      for (std::size_t c = 0; c < row.size(); ++c) {
        out += c + 1 < row.size() ? fmt::format("{:<{}}  ", row[c], width[c]) : row[c];
      }
      out += '\n';
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace quadra::cli
