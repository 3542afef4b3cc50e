// Material files: private directories, O_EXCL creation, atomic replacement, private key reads.
#pragma once

#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runewarp/result.hh"

namespace runewarp::trust {

// Creates `dir` (and missing parents) with `mode` when it does not exist; an existing directory
// keeps its mode. Fails when the path exists but is not a directory.
Result<void> ensure_dir(const std::string& dir, mode_t mode);

// Sets the exact mode on a directory (umask does not apply).
Result<void> set_dir_mode(const std::string& dir, mode_t mode);

// Creates a new file with O_EXCL and its final mode (set with fchmod, so the umask does not
// narrow or widen it), writes `content` and fsyncs it. Fails if the file already exists.
Result<void> write_new_file(const std::string& path, std::string_view content, mode_t mode);

// Replaces `path` atomically: writes `.<name>.runewarp-tmp-<pid>-<n>` in the same directory
// with the final mode, fsyncs, rename(2)s it over `path` and fsyncs the directory. The temporary
// file is removed on failure.
Result<void> replace_file(const std::string& path, std::string_view content, mode_t mode);

// Reads a private key file (server.key, client.key, a CA key). A key that group or others may
// read or write is refused, naming the file and the fix: "... run `chmod 600 <path>`". The mode
// is checked on the very file that was read. nullopt when the file does not exist.
Result<std::optional<std::string>> read_private_key_if_exists(const std::string& path);

// Like read_private_key_if_exists; a missing file is an error naming the path.
Result<std::string> read_private_key(const std::string& path);

// Which of a set of material files exist in a directory, in the order asked.
struct MaterialSurvey {
    std::vector<std::string_view> present;
    std::vector<std::string_view> missing;
};
MaterialSurvey survey_files(const std::string& dir, std::span<const std::string_view> names);

// "<what> in <dir> is incomplete or inconsistent; present: a, b; missing: c; <detail>.
// <advice>" (parts left out when empty).
Error incomplete_material(std::string_view what, const std::string& dir,
                          const MaterialSurvey& files, const std::string& detail,
                          std::string_view advice);

// True when something exists at `path` (lstat).
bool path_exists(const std::string& path) noexcept;

// `dir` + "/" + `name`.
std::string join_path(const std::string& dir, std::string_view name);

// Removes ASCII whitespace at both ends.
std::string_view trim(std::string_view s) noexcept;

}  // namespace runewarp::trust
