// Reading whole regular files. See file.hpp.

#include <quadra/io/file.hpp>

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <quadra/error.hpp>

namespace quadra::io {

namespace {

std::string not_regular(mode_t mode) {
  const char* what = S_ISDIR(mode)    ? "a directory"
                     : S_ISFIFO(mode) ? "a FIFO (named pipe)"
                     : S_ISCHR(mode)  ? "a character device"
                     : S_ISBLK(mode)  ? "a block device"
                     : S_ISSOCK(mode) ? "a socket"
                                      : "not a regular file";
  return fmt::format("it is {}; expected a regular file", what);
}

class Descriptor {
 public:
  explicit Descriptor(int fd) : fd_(fd) {}
  ~Descriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string try_read_file_bytes(const std::filesystem::path& file, std::string& bytes) {
  bytes.clear();
  struct stat info {};
  // Checked on the path first: opening a FIFO for reading would wait for a writer, and opening
  // some devices has effects of its own.
  if (::stat(file.c_str(), &info) != 0) return std::strerror(errno);
  if (!S_ISREG(info.st_mode)) return not_regular(info.st_mode);
  // O_NONBLOCK: should the path have become a FIFO since the stat, open must not wait for a
  // writer; the fstat below then refuses it. Reads of a regular file ignore the flag.
  const Descriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return std::strerror(errno);
  if (::fstat(fd.get(), &info) != 0) return std::strerror(errno);
  if (!S_ISREG(info.st_mode)) return not_regular(info.st_mode);
  bytes.reserve(static_cast<std::size_t>(info.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      bytes.clear();
      return std::strerror(error);
    }
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
  return {};
}

std::string read_file_bytes(const std::filesystem::path& file) {
  std::string bytes;
  const std::string why = try_read_file_bytes(file, bytes);
  if (!why.empty()) throw Error(fmt::format("cannot read {}: {}", file.string(), why));
  return bytes;
}

}  // namespace quadra::io
