// Reading input files: only regular files (and symbolic links to them) are read; directories,
// FIFOs, devices and sockets are refused at once, without blocking or reading.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <quadra/config.hpp>
#include <quadra/error.hpp>
#include <quadra/io/file.hpp>
#include <quadra/io/npy.hpp>

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

/// A fresh directory for this test's files, removed at the end.
struct Scratch {
  fs::path path = fs::temp_directory_path() / ("quadra_test_file_" + std::to_string(::getpid()));
  Scratch() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("regular files and symbolic links to them are read whole", "[io][file]") {
  Scratch dir;
  std::ofstream(dir.path / "a.txt", std::ios::binary) << std::string("ab\0c", 4);
  fs::create_symlink(dir.path / "a.txt", dir.path / "link");
  CHECK(quadra::io::read_file_bytes(dir.path / "a.txt") == std::string("ab\0c", 4));
  CHECK(quadra::io::read_file_bytes(dir.path / "link") == std::string("ab\0c", 4));
  std::string bytes = "stale";
  CHECK(quadra::io::try_read_file_bytes(dir.path / "a.txt", bytes).empty());
  CHECK(bytes == std::string("ab\0c", 4));
  std::ofstream(dir.path / "empty");
  CHECK(quadra::io::read_file_bytes(dir.path / "empty").empty());
}

TEST_CASE("anything but a regular file is refused before it is read", "[io][file][errors]") {
  Scratch dir;
  const std::string tail = "; expected a regular file";
  SECTION("a missing file") {
    REQUIRE_THROWS_WITH(
        quadra::io::read_file_bytes(dir.path / "none"),
        "cannot read " + (dir.path / "none").string() + ": No such file or directory");
  }
  SECTION("a directory") {
    REQUIRE_THROWS_WITH(quadra::io::read_file_bytes(dir.path),
                        "cannot read " + dir.path.string() + ": it is a directory" + tail);
  }
  SECTION("a FIFO without a writer does not block") {
    const fs::path fifo = dir.path / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE_THROWS_WITH(quadra::io::read_file_bytes(fifo),
                        "cannot read " + fifo.string() + ": it is a FIFO (named pipe)" + tail);
    fs::create_symlink(fifo, dir.path / "to_fifo");
    REQUIRE_THROWS_WITH(quadra::io::read_npy(dir.path / "to_fifo"),
                        Contains("to_fifo: it is a FIFO (named pipe)" + tail));
    REQUIRE_THROWS_WITH(quadra::io::read_npz(fifo), Contains("it is a FIFO (named pipe)" + tail));
  }
  SECTION("character devices: /dev/zero would never end, /dev/null is empty") {
    REQUIRE_THROWS_WITH(quadra::io::read_file_bytes("/dev/zero"),
                        "cannot read /dev/zero: it is a character device" + tail);
    REQUIRE_THROWS_WITH(quadra::io::read_npy("/dev/urandom"),
                        "cannot read /dev/urandom: it is a character device" + tail);
    std::string bytes;
    CHECK(quadra::io::try_read_file_bytes("/dev/null", bytes) == "it is a character device" + tail);
  }
  SECTION("a socket") {
    const fs::path socket_path = dir.path / "sock";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string p = socket_path.string();
    REQUIRE(p.size() < sizeof address.sun_path);
    std::copy(p.begin(), p.end(), address.sun_path);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    CHECK_THROWS_WITH(quadra::io::read_file_bytes(socket_path),
                      "cannot read " + p + ": it is a socket" + tail);
    ::close(fd);
  }
}

TEST_CASE("config files are regular files too", "[io][file][config]") {
  Scratch dir;
  REQUIRE_THROWS_WITH(quadra::Config::from_file(dir.path),
                      "config file \"" + dir.path.string() +
                          "\": cannot be opened: it is a directory; expected a regular file");
  REQUIRE_THROWS_WITH(quadra::Config::from_file("/dev/zero"),
                      "config file \"/dev/zero\": cannot be opened: it is a character device; "
                      "expected a regular file");
  const fs::path fifo = dir.path / "fifo.ini";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(quadra::Config::from_file(fifo), Contains("it is a FIFO (named pipe)"));
  REQUIRE_THROWS_WITH(quadra::Config::from_file(dir.path / "none.ini"),
                      Contains("none.ini\": cannot be opened: No such file or directory"));
  std::ofstream(dir.path / "ok.ini") << "[train]\nseed = 3\n";
  CHECK(quadra::Config::from_file(dir.path / "ok.ini").get("train.seed") == "3");
}
