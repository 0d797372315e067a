// Atomic writes: new files, replaced files, symbolic links written through, and the targets
// that must be refused and left untouched (devices, FIFOs, directories, hard-linked files).

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <quadra/error.hpp>
#include <quadra/io/atomic_file.hpp>

namespace fs = std::filesystem;
using Catch::Contains;
using quadra::io::write_file_atomically;

namespace {

struct Scratch {
  fs::path path = fs::temp_directory_path() / ("quadra_test_atomic_" + std::to_string(::getpid()));
  Scratch() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  /// The names in the directory, sorted: no temporary may be left behind.
  [[nodiscard]] std::string listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& name : names) out += name + " ";
    return out;
  }
};

std::string content(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("new and replaced regular files", "[io][atomic]") {
  Scratch dir;
  write_file_atomically(dir.path / "a", "one");
  CHECK(content(dir.path / "a") == "one");
  write_file_atomically(dir.path / "a", "two");
  CHECK(content(dir.path / "a") == "two");
  CHECK(dir.listing() == "a ");
}

TEST_CASE("a symbolic link is written through and stays a link", "[io][atomic]") {
  Scratch dir;
  fs::create_directories(dir.path / "real");
  write_file_atomically(dir.path / "real" / "target", "old");
  fs::create_symlink("real/target", dir.path / "link");  // relative, as people make them
  fs::create_symlink(dir.path / "link", dir.path / "link2");
  write_file_atomically(dir.path / "link2", "new");
  CHECK(fs::is_symlink(dir.path / "link2"));
  CHECK(fs::is_symlink(dir.path / "link"));
  CHECK(content(dir.path / "real" / "target") == "new");
  CHECK(dir.listing() == "link link2 real ");  // the temporary went beside the target
  // A dangling link creates its target.
  fs::create_symlink("real/later", dir.path / "dangling");
  write_file_atomically(dir.path / "dangling", "created");
  CHECK(fs::is_symlink(dir.path / "dangling"));
  CHECK(content(dir.path / "real" / "later") == "created");
  // A loop is an error, not a hang.
  fs::create_symlink("loop_b", dir.path / "loop_a");
  fs::create_symlink("loop_a", dir.path / "loop_b");
  REQUIRE_THROWS_WITH(write_file_atomically(dir.path / "loop_a", "x"),
                      Contains("loop_a\": too many levels of symbolic links"));
}

TEST_CASE("targets that are not regular files are refused and left untouched",
          "[io][atomic][errors]") {
  Scratch dir;
  SECTION("a FIFO") {
    const fs::path fifo = dir.path / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE_THROWS_WITH(write_file_atomically(fifo, "x"),
                        "cannot write \"" + fifo.string() +
                            "\": it is a FIFO (named pipe); expected a regular file or a new file "
                            "(left untouched)");
    CHECK(fs::is_fifo(fifo));
    CHECK(dir.listing() == "fifo ");
  }
  SECTION("a device node, directly or through a link") {
    REQUIRE_THROWS_WITH(write_file_atomically("/dev/null", "x"),
                        "cannot write \"/dev/null\": it is a character device; expected a regular "
                        "file or a new file (left untouched)");
    CHECK(fs::is_character_file("/dev/null"));
    fs::create_symlink("/dev/null", dir.path / "null");
    REQUIRE_THROWS_WITH(write_file_atomically(dir.path / "null", "x"),
                        Contains("null\" (a symbolic link to \"/dev/null\"): it is a character "
                                 "device; expected a regular file"));
    CHECK(fs::is_symlink(dir.path / "null"));
    CHECK(fs::is_character_file("/dev/null"));
    CHECK(dir.listing() == "null ");
  }
  SECTION("a directory") {
    fs::create_directories(dir.path / "d");
    REQUIRE_THROWS_WITH(write_file_atomically(dir.path / "d", "x"),
                        Contains("d\": it is a directory; expected a regular file"));
    CHECK(fs::is_directory(dir.path / "d"));
  }
  SECTION("a hard-linked file") {
    write_file_atomically(dir.path / "a", "shared");
    fs::create_hard_link(dir.path / "a", dir.path / "b");
    REQUIRE_THROWS_WITH(write_file_atomically(dir.path / "a", "x"),
                        "cannot write \"" + (dir.path / "a").string() +
                            "\": it has 2 hard links, and replacing it atomically would break its "
                            "other links (they would keep the old content); expected a file with "
                            "one link (left untouched)");
    CHECK(content(dir.path / "a") == "shared");
    CHECK(fs::hard_link_count(dir.path / "b") == 2);
    CHECK(dir.listing() == "a b ");
  }
}
