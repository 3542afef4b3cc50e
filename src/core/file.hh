// Bounded whole-file reads: configuration, certificates and keys, corpora. Usable by every module.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <optional>
#include <string>

#include "runewarp/result.hh"

namespace runewarp::core {

// Material and config files are small; anything bigger is a mistake, not something to load.
inline constexpr std::size_t kMaxSmallFile = std::size_t{1} << 20;

// Reads a whole regular file of at most `max_bytes`. A missing file is an error with code ENOENT
// ("cannot read <path>: No such file or directory"). When `info` is given it receives the fstat
// of the very file that was read, so callers can check its mode without a second lookup.
Result<std::string> read_file(const std::string& path, std::size_t max_bytes = kMaxSmallFile,
                              struct stat* info = nullptr);

// The directory part of a path ("." without a slash, "/" for a file in the root) and the last
// component.
std::string dir_of(const std::string& path);
std::string base_of(const std::string& path);

// Like read_file, but a missing file is nullopt instead of an error.
Result<std::optional<std::string>> read_file_if_exists(const std::string& path,
                                                       std::size_t max_bytes = kMaxSmallFile,
                                                       struct stat* info = nullptr);

}  // namespace runewarp::core
