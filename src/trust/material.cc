// Material file helpers: O_EXCL creation, temp-file + fsync + rename(2) replacement, reads.
#include "trust/material.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "core/file.hh"
#include "core/unique_fd.hh"

namespace runewarp::trust {

namespace {

using core::base_of;
using core::dir_of;

std::atomic<unsigned> g_tmp_counter{0};

// close(2) reports deferred write errors on some filesystems (NFS): a file that was written must
// be closed explicitly and the result checked, not left to the destructor.
int close_reporting(core::UniqueFd& fd) noexcept {
    return ::close(fd.release());
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
    core::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return Error::sys(errno, "cannot open directory " + dir);
    if (::fsync(fd.get()) != 0 && errno != EINVAL) return Error::sys(errno, "cannot fsync " + dir);
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

MaterialSurvey survey_files(const std::string& dir, std::span<const std::string_view> names) {
    MaterialSurvey s;
    for (std::string_view n : names)
        (path_exists(join_path(dir, n)) ? s.present : s.missing).push_back(n);
    return s;
}

Error incomplete_material(std::string_view what, const std::string& dir,
                          const MaterialSurvey& files, const std::string& detail,
                          std::string_view advice) {
    auto list = [](const std::vector<std::string_view>& names) {
        std::string out;
        for (std::string_view n : names) {
            if (!out.empty()) out.append(", ");
            out.append(n);
        }
        return out;
    };
    std::string m(what);
    m.append(" in " + dir + " is incomplete or inconsistent");
    if (!files.present.empty()) m.append("; present: " + list(files.present));
    if (!files.missing.empty()) m.append("; missing: " + list(files.missing));
    if (!detail.empty()) m.append("; " + detail);
    m.append(". ");
    m.append(advice);
    return Error::msg(std::move(m));
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
    core::UniqueFd fd(
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) return Error::sys(errno, "cannot create " + path);
    if (::fchmod(fd.get(), mode) != 0) {
        int err = errno;
        ::unlink(path.c_str());
        return Error::sys(err, "cannot chmod " + path);
    }
    if (auto w = write_all_and_sync(fd.get(), content, path); !w) {
        ::unlink(path.c_str());
        return w;
    }
    if (close_reporting(fd) != 0) {
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
    core::UniqueFd fd(
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!fd) return Error::sys(errno, "cannot create " + tmp);
    auto fail = [&](Error e) -> Result<void> {
        ::unlink(tmp.c_str());
        return e;
    };
    if (::fchmod(fd.get(), mode) != 0) return fail(Error::sys(errno, "cannot chmod " + tmp));
    if (auto w = write_all_and_sync(fd.get(), content, tmp); !w) return fail(std::move(w).error());
    if (close_reporting(fd) != 0) return fail(Error::sys(errno, "cannot close " + tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        return fail(Error::sys(errno, "cannot rename " + tmp + " to " + path));
    }
    return sync_dir(dir);
}

Result<std::optional<std::string>> read_private_key_if_exists(const std::string& path) {
    struct stat st {};
    auto r = core::read_file_if_exists(path, core::kMaxSmallFile, &st);
    if (!r || !r->has_value()) return r;
    // Whoever else can read the key can impersonate this Server or Client; whoever can write it
    // can swap it. Only the owner may have access (0600 or 0400).
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return Error::msg("private key " + path + " has mode " + mode +
                          ", which lets group or others access it; run `chmod 600 " + path + "`");
    }
    return r;
}

Result<std::string> read_private_key(const std::string& path) {
    auto r = read_private_key_if_exists(path);
    if (!r) return std::move(r).error();
    if (!r->has_value()) return Error::sys(ENOENT, "cannot read " + path);
    return std::move(**r);
}

}  // namespace runewarp::trust
