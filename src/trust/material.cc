// Material file helpers: O_EXCL creation, temp-file + fsync + rename(2) replacement, reads.
#include "trust/material.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace runewarp::trust {

namespace {

std::atomic<unsigned> g_tmp_counter{0};

class Fd {
public:
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const noexcept { return fd_; }
    // close(2) reports deferred write errors on some filesystems: surface them.
    int close() noexcept {
        int rc = ::close(fd_);
        fd_ = -1;
        return rc;
    }

private:
    int fd_;
};

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

Result<void> write_all_and_sync(int fd, std::string_view content, const std::string& path) {
    while (!content.empty()) {
        ssize_t n = ::write(fd, content.data(), content.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::sys(errno, "cannot write " + path);
        }
        content.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fsync(fd) != 0) return Error::sys(errno, "cannot fsync " + path);
    return {};
}

// Makes a rename or creation durable.
Result<void> sync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Error::sys(errno, "cannot open directory " + dir);
    Fd owner(fd);
    if (::fsync(fd) != 0 && errno != EINVAL) return Error::sys(errno, "cannot fsync " + dir);
    return {};
}

}  // namespace

std::string join_path(const std::string& dir, std::string_view name) {
    std::string out = dir;
    if (out.empty() || out.back() != '/') out.push_back('/');
    out.append(name);
    return out;
}

std::string_view trim(std::string_view s) noexcept {
    auto is_space = [](char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    };
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

bool path_exists(const std::string& path) noexcept {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

Result<void> set_dir_mode(const std::string& dir, mode_t mode) {
    if (::chmod(dir.c_str(), mode) != 0) return Error::sys(errno, "cannot chmod " + dir);
    return {};
}

Result<void> ensure_dir(const std::string& dir, mode_t mode) {
    if (dir.empty()) return Error::msg("empty directory path");
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return Error::msg(dir + " exists and is not a directory");
        return {};
    }
    if (errno != ENOENT) return Error::sys(errno, "cannot access " + dir);
    std::string parent = dir_of(dir);
    if (parent != dir && parent != "." && parent != "/") {
        // Missing parents are private too: they hold nothing but material.
        auto p = ensure_dir(parent, 0700);
        if (!p) return p;
    }
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
        return Error::sys(errno, "cannot create directory " + dir);
    }
    // mkdir(2) applies the umask; the mode is part of the contract.
    return set_dir_mode(dir, mode);
}

Result<void> write_new_file(const std::string& path, std::string_view content, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return Error::sys(errno, "cannot create " + path);
    Fd owner(fd);
    if (::fchmod(fd, mode) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return Error::sys(err, "cannot chmod " + path);
    }
    if (auto w = write_all_and_sync(fd, content, path); !w) {
        ::unlink(path.c_str());
        return w;
    }
    if (owner.close() != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return Error::sys(err, "cannot close " + path);
    }
    return sync_dir(dir_of(path));
}

Result<void> replace_file(const std::string& path, std::string_view content, mode_t mode) {
    std::string dir = dir_of(path);
    std::string tmp =
        join_path(dir, "." + base_of(path) + ".runewarp-tmp-" + std::to_string(::getpid()) + "-" +
                           std::to_string(g_tmp_counter.fetch_add(1)));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return Error::sys(errno, "cannot create " + tmp);
    Fd owner(fd);
    auto fail = [&](Error e) -> Result<void> {
        ::unlink(tmp.c_str());
        return e;
    };
    if (::fchmod(fd, mode) != 0) return fail(Error::sys(errno, "cannot chmod " + tmp));
    if (auto w = write_all_and_sync(fd, content, tmp); !w) return fail(std::move(w).error());
    if (owner.close() != 0) return fail(Error::sys(errno, "cannot close " + tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return fail(Error::sys(errno, "cannot rename " + tmp + " to " + path));
    }
    return sync_dir(dir);
}

Result<std::optional<std::string>> read_file_if_exists(const std::string& path,
                                                       std::size_t max_bytes) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return std::optional<std::string>{};
        return Error::sys(errno, "cannot open " + path);
    }
    Fd owner(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return Error::sys(errno, "cannot stat " + path);
    if (!S_ISREG(st.st_mode)) return Error::msg(path + " is not a regular file");
    std::string out;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::sys(errno, "cannot read " + path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > max_bytes) return Error::msg(path + " is too large");
    }
    return std::optional<std::string>(std::move(out));
}

Result<std::string> read_file(const std::string& path, std::size_t max_bytes) {
    auto r = read_file_if_exists(path, max_bytes);
    if (!r) return std::move(r).error();
    if (!r->has_value()) return Error::sys(ENOENT, "cannot open " + path);
    return std::move(**r);
}

}  // namespace runewarp::trust
