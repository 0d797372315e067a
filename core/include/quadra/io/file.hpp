#pragma once
/// \file
/// Reading whole input files. Only regular files are read (a symbolic link to one is fine): a
/// directory, a FIFO, a character or block device or a socket is refused before anything is
/// read from it, so that `/dev/zero` given as an input cannot fill memory and a FIFO without a
/// writer cannot block the process. The check is made on the path (stat) and again on the
/// opened descriptor (fstat), which is opened without blocking, so a path swapped between the
/// two cannot slip through.

#include <filesystem>
#include <string>

namespace quadra::io {

/// Reads the whole regular file `file` into `bytes`. Returns the empty string on success, or
/// why the file cannot be read: the system's reason ("No such file or directory") or, for
/// anything but a regular file, e.g. "it is a FIFO (named pipe); expected a regular file".
/// For callers that phrase the message themselves.
std::string try_read_file_bytes(const std::filesystem::path& file, std::string& bytes);

/// The whole content of the regular file `file`, or an Error "cannot read FILE: REASON" with
/// the reason of try_read_file_bytes.
std::string read_file_bytes(const std::filesystem::path& file);

}  // namespace quadra::io
