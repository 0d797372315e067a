#pragma once
/// \file
/// Atomic file writes: the bytes go to a temporary file beside the target, are flushed to disk
/// (fsync), and the temporary is renamed over the target. A reader sees the old file or the new
/// one, never a half-written one, even if the process is killed mid-write.

#include <filesystem>
#include <string_view>

namespace quadra::io {

/// Writes `bytes` to `path` atomically. Throws quadra::Error naming the file on any failure;
/// the target is then untouched and the temporary removed.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace quadra::io
