// CSV data sets: numeric feature columns plus one label column. See loaders.hpp.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>

#include <fmt/format.h>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {

namespace detail {

namespace {
std::string_view trim(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!text.empty() && blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && blank(text.back())) text.remove_suffix(1);
  return text;
}
}  // namespace

bool parse_double(std::string_view text, double& value) noexcept {
  text = trim(text);
  // from_chars takes no '+', but people and spreadsheets write it.
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, value);
  if (result.ec == std::errc::result_out_of_range && result.ptr == end) {
    // Overflow: report it as an infinity so that the finiteness check names it.
    value = text[0] == '-' ? -std::numeric_limits<double>::infinity()
                           : std::numeric_limits<double>::infinity();
    return true;
  }
  return result.ec == std::errc() && result.ptr == end;
}

bool parse_int64(std::string_view text, std::int64_t& value) noexcept {
  text = trim(text);
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, value);
  return result.ec == std::errc() && result.ptr == end;
}

}  // namespace detail

namespace {

/// Splits CSV lines into fields, reusing its storage from line to line.
class CsvReader {
 public:
  CsvReader(std::string_view text, const std::string& name, char delimiter)
      : text_(text), name_(name), delimiter_(delimiter) {}

  /// The next non-blank line, split into fields; false at the end of the text.
  bool next(std::vector<std::string>& fields) {
    while (pos_ < text_.size()) {
      std::size_t end = text_.find('\n', pos_);
      if (end == std::string_view::npos) end = text_.size();
      std::string_view line = text_.substr(pos_, end - pos_);
      pos_ = end + 1;
      ++line_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
      split(line, fields);
      return true;
    }
    return false;
  }

  /// 1-based number of the line last returned.
  [[nodiscard]] std::int64_t line() const noexcept { return line_; }

 private:
  void split(std::string_view line, std::vector<std::string>& fields) {
    std::size_t count = 0;
    std::size_t i = 0;
    while (true) {
      if (count == fields.size()) fields.emplace_back();
      std::string& field = fields[count++];
      field.clear();
      std::size_t j = i;
      while (j < line.size() && (line[j] == ' ' || line[j] == '\t')) ++j;
      if (j < line.size() && line[j] == '"') {
        // RFC 4180 quoting: "" inside quotes is one quote; blanks may follow the closing quote.
        ++j;
        while (true) {
          if (j >= line.size()) {
            throw Error(fmt::format("{}: line {}, column {}: unterminated quoted field (quoted fields "
                                    "cannot span lines)",
                                    name_, line_, count));
          }
          if (line[j] == '"') {
            if (j + 1 < line.size() && line[j + 1] == '"') {
              field.push_back('"');
              j += 2;
              continue;
            }
            ++j;
            break;
          }
          field.push_back(line[j++]);
        }
        while (j < line.size() && (line[j] == ' ' || line[j] == '\t')) ++j;
        if (j < line.size() && line[j] != delimiter_) {
          throw Error(fmt::format("{}: line {}, column {}: text after the closing quote", name_, line_,
                                  count));
        }
        i = j;
      } else {
        std::size_t end = line.find(delimiter_, i);
        if (end == std::string_view::npos) end = line.size();
        field.assign(line.substr(i, end - i));
        i = end;
      }
      if (i >= line.size()) break;
      ++i;  // the delimiter
    }
    fields.resize(count);
  }

  std::string_view text_;
  const std::string& name_;
  char delimiter_;
  std::size_t pos_ = 0;
  std::int64_t line_ = 0;
};

std::string column_label(const std::vector<std::string>& header, std::size_t column) {
  if (column < header.size() && !header[column].empty()) {
    return fmt::format("column {} ('{}')", column + 1, header[column]);
  }
  return fmt::format("column {}", column + 1);
}

std::string trimmed(const std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

std::string shorten(const std::string& text) {
  return text.size() <= 40 ? text : text.substr(0, 40) + "...";
}

}  // namespace

Dataset parse_csv(std::string_view text, const std::string& name, const CsvOptions& options,
                  std::string dataset_name) {
  CsvReader reader(text, name, options.delimiter);
  std::vector<std::string> fields;
  if (!reader.next(fields)) throw Error(fmt::format("{}: no data: the file is empty", name));
  const std::size_t columns = fields.size();
  const std::int64_t first_line = reader.line();
  if (columns < 2) {
    throw Error(fmt::format("{}: line {} has {} column; expected at least one feature column and "
                            "a label column (delimiter '{}')",
                            name, first_line, columns, options.delimiter));
  }

  // Which column is the label. A name needs a header; an integer is an index.
  std::int64_t label_index = 0;
  const bool label_is_index = options.label.empty() || detail::parse_int64(options.label, label_index);
  if (options.label.empty()) label_index = -1;
  auto resolve_index = [&]() -> std::size_t {
    const std::int64_t resolved = label_index < 0 ? label_index + static_cast<std::int64_t>(columns)
                                                  : label_index;
    if (resolved < 0 || resolved >= static_cast<std::int64_t>(columns)) {
      throw Error(fmt::format("{}: label column {} is out of range: the file has {} columns "
                              "(0-based indices 0..{}, or -1 for the last)",
                              name, label_index, columns, columns - 1));
    }
    return static_cast<std::size_t>(resolved);
  };

  bool has_header = options.header == CsvHeader::kYes;
  if (options.header == CsvHeader::kAuto) {
    if (!label_is_index) {
      has_header = true;
    } else {
      // A header only when none of its cells is a number: a data row with one bad cell is then
      // reported, never dropped as if it were a header.
      resolve_index();
      double ignored = 0;
      has_header = std::none_of(fields.begin(), fields.end(), [&](const std::string& cell) {
        return detail::parse_double(cell, ignored);
      });
    }
  }
  std::vector<std::string> header;
  std::size_t label_column = 0;
  if (has_header) {
    for (const std::string& h : fields) header.push_back(trimmed(h));
  }
  if (label_is_index) {
    label_column = resolve_index();
  } else {
    if (!has_header) {
      throw Error(fmt::format("{}: the label column '{}' is a name, but the file has no header "
                              "(header=no); give a 0-based column index",
                              name, options.label));
    }
    const auto it = std::find(header.begin(), header.end(), options.label);
    if (it == header.end()) {
      throw Error(fmt::format("{}: no column named '{}' in the header on line {}; columns: {}", name,
                              options.label, first_line, fmt::join(header, ", ")));
    }
    label_column = static_cast<std::size_t>(it - header.begin());
  }

  const auto d = static_cast<std::int64_t>(columns - 1);
  Dataset data;
  data.name = std::move(dataset_name);
  data.task = options.task;
  data.sample_shape = {d};
  // Labels are kept as text and as numbers until every row is seen: the column is numeric only
  // if every cell is.
  std::vector<double> label_values;
  std::vector<std::int64_t> label_lines;
  std::map<std::string, std::int64_t> text_ids;
  std::vector<std::int64_t> label_text_id;
  bool all_numeric = true;

  bool pending = !has_header;  // the first line is data
  while (pending || reader.next(fields)) {
    pending = false;
    const std::int64_t line = reader.line();
    if (fields.size() != columns) {
      throw Error(fmt::format("{}: line {} has {} fields, expected {} (as on line {})", name, line,
                              fields.size(), columns, first_line));
    }
    for (std::size_t c = 0; c < columns; ++c) {
      double value = 0;
      const bool numeric = detail::parse_double(fields[c], value);
      if (c == label_column) {
        label_lines.push_back(line);
        if (options.task == Task::kRegression && !numeric) {
          throw Error(fmt::format("{}: line {}, {}: target '{}' is not a number", name, line,
                                  column_label(header, c), shorten(fields[c])));
        }
        if (numeric && !std::isfinite(value)) {
          throw Error(fmt::format("{}: line {}, {}: label '{}' is not finite; expected a finite "
                                  "number",
                                  name, line, column_label(header, c), shorten(fields[c])));
        }
        label_values.push_back(numeric ? value : 0.0);
        all_numeric = all_numeric && numeric;
        if (options.task == Task::kClassification) {
          // Blanks around a text label do not make another class.
          const auto it =
              text_ids.emplace(trimmed(fields[c]), static_cast<std::int64_t>(text_ids.size())).first;
          label_text_id.push_back(it->second);
        }
        continue;
      }
      if (!numeric) {
        const bool first_line_auto = options.header == CsvHeader::kAuto && line == first_line;
        throw Error(fmt::format("{}: line {}, {}: '{}' is not a number; expected a number{}", name,
                                line, column_label(header, c), shorten(fields[c]),
                                first_line_auto ? " (header=auto takes the first line as a header "
                                                  "only when none of its cells is a number; if "
                                                  "it is a header, use header=yes)"
                                                : ""));
      }
      const auto f = static_cast<float>(value);
      if (!std::isfinite(f)) {
        throw Error(fmt::format("{}: line {}, {}: '{}' is not finite{}; expected a finite number",
                                name, line, column_label(header, c), shorten(fields[c]),
                                std::isfinite(value) ? " as float32" : ""));
      }
      data.features.push_back(f);
    }
  }
  const std::size_t n = label_lines.size();
  if (n == 0) throw Error(fmt::format("{}: no data rows after the header on line {}", name, first_line));

  if (options.task == Task::kRegression) {
    data.target_dim = 1;
    data.targets.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto f = static_cast<float>(label_values[i]);
      if (!std::isfinite(f)) {
        throw Error(fmt::format("{}: line {}, {}: target {} is not finite as float32", name,
                                label_lines[i], column_label(header, label_column), label_values[i]));
      }
      data.targets[i] = f;
    }
    return data;
  }

  data.labels.resize(n);
  if (all_numeric && options.class_names.empty()) {
    std::int64_t max_label = -1;
    for (std::size_t i = 0; i < n; ++i) {
      const double v = label_values[i];
      if (v < 0 || v != std::floor(v)) {
        throw Error(fmt::format("{}: line {}, {}: label {} is not a class index (an integer >= 0); "
                                "use task=regression for real-valued targets",
                                name, label_lines[i], column_label(header, label_column), v));
      }
      if (v >= static_cast<double>(kMaxClasses)) {
        throw Error(fmt::format(
            "{}: line {}, {}: label {} is not a class index below {} (labels "
            "must be class indices 0..C-1 of at most {} classes); is this a "
            "regression target? use task=regression",
            name, label_lines[i], column_label(header, label_column), v, kMaxClasses, kMaxClasses));
      }
      data.labels[i] = static_cast<std::int64_t>(v);
      max_label = std::max(max_label, data.labels[i]);
    }
    data.num_classes = max_label + 1;
    return data;
  }

  // Text labels: classes named by their text, sorted, or the given class list.
  if (options.class_names.empty() && static_cast<std::int64_t>(text_ids.size()) > kMaxClasses) {
    throw Error(
        fmt::format("{}: {} holds {} distinct text labels; expected at most {} classes; "
                    "is this a regression target? use task=regression",
                    name, column_label(header, label_column), text_ids.size(), kMaxClasses));
  }
  std::vector<std::string> classes = options.class_names;
  if (classes.empty()) {
    for (const auto& entry : text_ids) classes.push_back(entry.first);  // std::map: sorted
  }
  std::vector<std::int64_t> class_of_id(text_ids.size(), -1);
  for (const auto& [text_label, id] : text_ids) {
    const auto it = std::find(classes.begin(), classes.end(), text_label);
    if (it != classes.end()) class_of_id[static_cast<std::size_t>(id)] = it - classes.begin();
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t cls = class_of_id[static_cast<std::size_t>(label_text_id[i])];
    if (cls < 0) {
      std::string text_label;
      for (const auto& [t, id] : text_ids) {
        if (id == label_text_id[i]) text_label = t;
      }
      throw Error(fmt::format("{}: line {}, {}: label '{}' is not one of the {} training classes: {}",
                              name, label_lines[i], column_label(header, label_column),
                              shorten(text_label), classes.size(), fmt::join(classes, ", ")));
    }
    data.labels[i] = cls;
  }
  data.num_classes = static_cast<std::int64_t>(classes.size());
  data.class_names = std::move(classes);
  return data;
}

Dataset load_csv(const std::filesystem::path& file, const CsvOptions& options,
                 std::string dataset_name) {
  return parse_csv(read_maybe_gzip(file), file.string(), options, std::move(dataset_name));
}

}  // namespace quadra::data
