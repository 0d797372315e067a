#pragma once
/// \file
/// Exclusive use of an output directory for the lifetime of a run, so that two runs started
/// into the same directory do not interleave their files. The lock is a file `.quadra.lock` in
/// the directory holding the owner's pid and start time, locked with flock(2): the kernel drops
/// the lock when its process dies, so a lock file left by a killed run is stale and is taken
/// over, and a live owner is named in the refusal. The file stays when the run ends.

#include <filesystem>
#include <string>

namespace quadra::io {

class DirectoryLock {
 public:
  /// Creates `dir` (and its parents) if needed and locks it. `what` names the directory in
  /// messages (e.g. "train.out"). Throws quadra::Error when it cannot be created, is not a
  /// directory, or another live process holds the lock (naming its pid and start time).
  DirectoryLock(std::filesystem::path dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  std::filesystem::path dir_;
  int fd_ = -1;
};

/// Removes the temporary files an interrupted atomic write left in `dir` (".NAME.tmp-XXXXXX",
/// see atomic_file.hpp); returns how many.
int remove_stale_temporaries(const std::filesystem::path& dir);

}  // namespace quadra::io
