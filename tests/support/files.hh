// Temporary directories, file helpers and SHA-256 (GnuTLS) for end-to-end tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tests/support/process.hh"

namespace runewarp::test {

// mkdtemp under $TMPDIR (default /tmp); removed recursively on destruction and, as a backstop
// for tests aborted by a failed assertion, when the test process exits. Set RUNEWARP_TEST_KEEP=1
// to keep it for inspection.
class TempDir {
public:
    explicit TempDir(std::string_view prefix = "runewarp-test");
    TempDir(TempDir&& o) noexcept;
    TempDir& operator=(TempDir&& o) noexcept;
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir();

    const std::string& path() const { return path_; }
    std::string operator/(std::string_view name) const;

private:
    std::string path_;
};

// Removes a file tree (no symlink following). Errors are ignored.
void remove_tree(const std::string& path);
void make_dirs(const std::string& path);

std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view data, unsigned mode = 0644);
bool file_exists(const std::string& path);
std::uint64_t file_size(const std::string& path);

// Writes `size` bytes of a deterministic pseudo-random stream (seeded) to path; fast enough for
// hundreds of MiB. Returns the SHA-256 of what was written.
std::string write_random_file(const std::string& path, std::uint64_t size, std::uint64_t seed = 1);

// Polls until the file exists and contains needle (e.g. a log line), or the deadline passes.
bool wait_file_contains(const std::string& path, std::string_view needle, Millis deadline);

// Lower-case hex SHA-256 (GnuTLS).
std::string sha256_hex(std::string_view data);
std::string sha256_file(const std::string& path);
std::string to_hex(const unsigned char* p, std::size_t n);

}  // namespace runewarp::test
