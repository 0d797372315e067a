// Output-directory locks. See directory_lock.hpp.

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/std.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <quadra/error.hpp>
#include <quadra/io/directory_lock.hpp>
#include <string>
#include <system_error>

namespace quadra::io {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLockName = ".quadra.lock";

std::string read_owner(int fd) {
  char buffer[256] = {};
  const ssize_t n = ::pread(fd, buffer, sizeof buffer - 1, 0);
  std::string owner = n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  while (!owner.empty() && (owner.back() == '\n' || owner.back() == '\r')) owner.pop_back();
  return owner.empty() ? std::string("a process that wrote no pid") : owner;
}

}  // namespace

DirectoryLock::DirectoryLock(fs::path dir, const std::string& what) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (!fs::is_directory(dir_, ec)) {
    throw Error(fmt::format("{} {}: {}; expected a directory", what, dir_,
                            fs::exists(dir_) ? "exists and is not a directory"
                                             : "cannot be created (" + ec.message() + ")"));
  }
  const fs::path file = dir_ / kLockName;
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) {
    throw Error(fmt::format("{} {}: cannot create the lock file {}: {}", what, dir_, file,
                            std::strerror(errno)));
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string owner = read_owner(fd_);
    ::close(fd_);
    fd_ = -1;
    if (error == EWOULDBLOCK) {
      throw Error(
          fmt::format("{} {} is in use by another quadra run ({}); wait for it to end or "
                      "choose another directory",
                      what, dir_, owner));
    }
    throw Error(fmt::format("{} {}: cannot lock {}: {}", what, dir_, file, std::strerror(error)));
  }
  // Ours now; a previous owner's text (a killed run) is replaced.
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char started[32];
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &utc);
  const std::string owner = fmt::format("pid {}, started {}\n", ::getpid(), started);
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, owner.data(), owner.size(), 0) != static_cast<ssize_t>(owner.size())) {
    // The lock holds without the text; only the message for a competing run is poorer.
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ < 0) return;
  // The file stays (removing it would race with a run opening it right now); emptied, it names
  // no owner, and closing the descriptor releases the lock.
  static_cast<void>(::ftruncate(fd_, 0));
  ::close(fd_);
}

int remove_stale_temporaries(const fs::path& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const auto tmp = name.rfind(".tmp-");
    // ".NAME.tmp-XXXXXX": mkstemp's six characters after the marker.
    if (name.size() > 1 && name[0] == '.' && tmp != std::string::npos && tmp > 0 &&
        name.size() == tmp + 5 + 6 && entry.is_regular_file(ec)) {
      if (fs::remove(entry.path(), ec)) ++removed;
    }
  }
  return removed;
}

}  // namespace quadra::io
