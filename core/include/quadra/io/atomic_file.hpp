#pragma once
/// \file
/// Atomic file writes: the bytes go to a temporary file beside the target, are flushed to disk
/// (fsync), and the temporary is renamed over the target. A reader sees the old file or the new
/// one, never a half-written one, even if the process is killed mid-write.
///
/// Only regular files are replaced. A target that exists and is anything else (a device node, a
/// FIFO, a socket, a directory) is refused and left untouched, as is a regular file with more
/// than one hard link: renaming over it would detach it from its other names, which would keep
/// the old content. A symbolic link is written through: the temporary goes beside the file the
/// link (or chain of links) resolves to and is renamed over that file, so the link stays a link
/// to the new content; a dangling link creates its target.

#include <filesystem>
#include <string_view>

namespace quadra::io {

/// Writes `bytes` to `path` atomically (through symbolic links). Throws quadra::Error naming the
/// file on any failure, and for targets that are not regular files or have several hard links;
/// the target is then untouched and the temporary removed.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace quadra::io
