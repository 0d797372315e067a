// libFuzzer target: CSV. The input is the CSV text; the options (header mode, task, label
// column, delimiter) are chosen from the input's length so that plain CSV files work as corpus.
// quadra::Error is the only acceptable failure, and a data set that parses must validate (which
// includes finite features and targets, and at most kMaxClasses classes).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  quadra::data::CsvOptions options;
  options.header = static_cast<quadra::data::CsvHeader>(size % 3);
  options.task = (size / 3) % 2 == 0 ? quadra::data::Task::kClassification : quadra::data::Task::kRegression;
  static const char* const kLabels[] = {"", "0", "-1", "label"};
  options.label = kLabels[(size / 6) % 4];
  options.delimiter = (size / 24) % 4 == 3 ? ';' : ',';
  if ((size / 96) % 2 == 1) options.class_names = {"a", "b", "setosa"};
  quadra::data::Dataset parsed;
  try {
    parsed = quadra::data::parse_csv(text, "fuzz.csv", options, "fuzz");
  } catch (const quadra::Error&) {
    return 0;
  }
  parsed.validate();  // a data set that loads is valid: an exception here is a bug (crash)
  if (parsed.task == quadra::data::Task::kClassification &&
      parsed.num_classes > quadra::data::kMaxClasses) {
    std::abort();
  }
  return 0;
}
