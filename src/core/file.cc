// Bounded whole-file reads through one open file description (open, fstat, read to EOF).
#include "core/file.hh"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "core/unique_fd.hh"

namespace runewarp::core {

Result<std::optional<std::string>> read_file_if_exists(const std::string& path,
                                                       std::size_t max_bytes, struct stat* info) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) {
        if (errno == ENOENT) return std::optional<std::string>{};
        return Error::sys(errno, "cannot read " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::sys(errno, "cannot stat " + path);
    // A directory, FIFO or device would read as something else than a file's content (or block).
    if (!S_ISREG(st.st_mode)) return Error::msg(path + " is not a regular file");
    if (static_cast<unsigned long long>(st.st_size) > max_bytes) {
        return Error::msg(path + " is too large (more than " + std::to_string(max_bytes) +
                          " bytes)");
    }
    std::string out;
    out.reserve(static_cast<std::size_t>(st.st_size));
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::sys(errno, "cannot read " + path);
        }
        if (n == 0) break;
        // The file may grow while it is read: the bound holds for what is actually read.
        if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
            return Error::msg(path + " is too large (more than " + std::to_string(max_bytes) +
                              " bytes)");
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    if (info != nullptr) *info = st;
    return std::optional<std::string>(std::move(out));
}

Result<std::string> read_file(const std::string& path, std::size_t max_bytes, struct stat* info) {
    auto r = read_file_if_exists(path, max_bytes, info);
    if (!r) return std::move(r).error();
    if (!r->has_value()) return Error::sys(ENOENT, "cannot read " + path);
    return std::move(**r);
}

std::string dir_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace runewarp::core
