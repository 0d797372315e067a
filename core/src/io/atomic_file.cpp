// Atomic file writes. See atomic_file.hpp.

#include <quadra/io/atomic_file.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/error.hpp>

namespace quadra::io {

namespace {

const char* file_type(mode_t mode) {
  return S_ISDIR(mode)    ? "a directory"
         : S_ISFIFO(mode) ? "a FIFO (named pipe)"
         : S_ISCHR(mode)  ? "a character device"
         : S_ISBLK(mode)  ? "a block device"
         : S_ISSOCK(mode) ? "a socket"
                          : "not a regular file";
}

/// The file a write to `path` lands in: `path` itself, or the end of its chain of symbolic
/// links (which need not exist yet). Throws for a loop.
std::filesystem::path resolve_links(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  fs::path target = path;
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(target, ec))) return target;
    const fs::path link = fs::read_symlink(target, ec);
    if (ec) {
      throw Error(fmt::format("cannot write {}: cannot read the symbolic link {}: {}", path, target,
                              ec.message()));
    }
    target = link.is_absolute() ? link : target.parent_path() / link;
  }
  throw Error(fmt::format("cannot write {}: too many levels of symbolic links", path));
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  // Through symbolic links: the link stays a link to the replaced file.
  const std::filesystem::path target = resolve_links(path);
  const std::string via =
      target == path ? std::string() : fmt::format(" (a symbolic link to {})", target);
  struct stat info {};
  if (::lstat(target.c_str(), &info) == 0) {
    // rename() would replace a device node, a FIFO or a socket by a regular file, and detach a
    // hard-linked file from its other names; none of that is what writing to it means.
    if (!S_ISREG(info.st_mode)) {
      throw Error(
          fmt::format("cannot write {}{}: it is {}; expected a regular file or a new "
                      "file (left untouched)",
                      path, via, file_type(info.st_mode)));
    }
    if (info.st_nlink > 1) {
      throw Error(
          fmt::format("cannot write {}{}: it has {} hard links, and replacing it "
                      "atomically would break its other links (they would keep the old "
                      "content); expected a file with one link (left untouched)",
                      path, via, info.st_nlink));
    }
  } else if (errno != ENOENT) {
    throw Error(fmt::format("cannot write {}{}: {}", path, via, std::strerror(errno)));
  }

  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  // Built piecewise: GCC 12 -O3 reports a false -Wrestrict on "." + std::string + "...".
  std::string name = ".";
  name += target.filename().string();
  name += ".tmp-XXXXXX";
  std::string temp = (dir / name).string();
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    throw Error(fmt::format("cannot write {}: cannot create a temporary file in {}: {}", path, dir,
                            std::strerror(errno)));
  }
  auto fail = [&](const char* what) {
    const int error = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    throw Error(fmt::format("cannot write {}: {}: {}", path, what, std::strerror(error)));
  };
  const char* data = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed");
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) fail("chmod failed");
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw Error(fmt::format("cannot write {}: close failed: {}", path, std::strerror(error)));
  }
  if (std::rename(temp.c_str(), target.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw Error(fmt::format("cannot write {}: rename failed: {}", path, std::strerror(error)));
  }
  // Make the rename itself durable.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace quadra::io
