// Temporary directories, file helpers and SHA-256 (GnuTLS) for end-to-end tests.
#include "tests/support/files.hh"

#include <dirent.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

namespace runewarp::test {
namespace {

// Never destroyed: the at-exit sweep may run after static destructors.
std::mutex& dirs_mutex() {
    static auto* m = new std::mutex;
    return *m;
}
std::set<std::string>& live_dirs() {
    static auto* s = new std::set<std::string>;
    return *s;
}

bool keep_dirs() {
    const char* k = std::getenv("RUNEWARP_TEST_KEEP");
    return k && *k && std::strcmp(k, "0") != 0;
}

void sweep_dirs() {
    std::lock_guard lock(dirs_mutex());
    if (!keep_dirs()) {
        for (const auto& d : live_dirs()) remove_tree(d);
    }
    live_dirs().clear();
}

void remove_at(int dirfd, const char* name) {
    if (::unlinkat(dirfd, name, 0) == 0 || errno != EISDIR) return;
    int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR* d = ::fdopendir(fd);
        if (d) {
            while (dirent* e = ::readdir(d)) {
                if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
                remove_at(::dirfd(d), e->d_name);
            }
            ::closedir(d);
        } else {
            ::close(fd);
        }
    }
    ::unlinkat(dirfd, name, AT_REMOVEDIR);
}

void write_all(int fd, const void* p, std::size_t n, const std::string& what) {
    auto* c = static_cast<const char*>(p);
    while (n > 0) {
        ssize_t w = ::write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw std::runtime_error("write " + what + ": " + std::strerror(errno));
        c += w;
        n -= static_cast<std::size_t>(w);
    }
}

class Sha256 {
public:
    Sha256() {
        if (gnutls_hash_init(&h_, GNUTLS_DIG_SHA256) < 0)
            throw std::runtime_error("gnutls_hash_init");
    }
    ~Sha256() {
        if (h_) gnutls_hash_deinit(h_, nullptr);
    }
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* p, std::size_t n) { gnutls_hash(h_, p, n); }
    std::string hex() {
        unsigned char out[32];
        gnutls_hash_deinit(h_, out);
        h_ = nullptr;
        return to_hex(out, sizeof out);
    }

private:
    gnutls_hash_hd_t h_ = nullptr;
};

}  // namespace

TempDir::TempDir(std::string_view prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base && *base ? base : "/tmp") + "/" + std::string(prefix) + ".XXXXXX";
    if (!::mkdtemp(tmpl.data()))
        throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    path_ = tmpl;
    static std::once_flag once;
    std::call_once(once, [] { std::atexit(sweep_dirs); });
    std::lock_guard lock(dirs_mutex());
    live_dirs().insert(path_);
}

TempDir::TempDir(TempDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& o) noexcept {
    if (this != &o) {
        this->~TempDir();
        path_ = std::exchange(o.path_, {});
    }
    return *this;
}

TempDir::~TempDir() {
    if (path_.empty()) return;
    if (!keep_dirs()) remove_tree(path_);
    std::lock_guard lock(dirs_mutex());
    live_dirs().erase(path_);
    path_.clear();
}

std::string TempDir::operator/(std::string_view name) const {
    return path_ + "/" + std::string(name);
}

void remove_tree(const std::string& path) {
    remove_at(AT_FDCWD, path.c_str());
}

void make_dirs(const std::string& path) {
    for (std::size_t i = 1; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            std::string part = path.substr(0, i);
            if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
                throw std::runtime_error("mkdir " + part + ": " + std::strerror(errno));
        }
    }
}

std::string read_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

void write_file(const std::string& path, std::string_view data, unsigned mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) throw std::runtime_error("create " + path + ": " + std::strerror(errno));
    write_all(fd, data.data(), data.size(), path);
    ::fchmod(fd, mode);
    ::close(fd);
}

bool file_exists(const std::string& path) {
    struct stat sb {};
    return ::stat(path.c_str(), &sb) == 0;
}

std::uint64_t file_size(const std::string& path) {
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0) return 0;
    return static_cast<std::uint64_t>(sb.st_size);
}

std::string write_random_file(const std::string& path, std::uint64_t size, std::uint64_t seed) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("create " + path + ": " + std::strerror(errno));
    Sha256 h;
    std::vector<std::uint64_t> chunk(1 << 17);  // 1 MiB
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    while (size > 0) {
        for (auto& w : chunk) {  // xorshift64*: not cryptographic, just incompressible
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w = x * 0x2545F4914F6CDD1DULL;
        }
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size, chunk.size() * 8));
        write_all(fd, chunk.data(), n, path);
        h.update(chunk.data(), n);
        size -= n;
    }
    ::close(fd);
    return h.hex();
}

bool wait_file_contains(const std::string& path, std::string_view needle, Millis deadline) {
    return wait_until(
        [&] { return file_exists(path) && read_file(path).find(needle) != std::string::npos; },
        deadline, Millis{10});
}

std::string to_hex(const unsigned char* p, std::size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    s.reserve(n * 2);
    for (std::size_t i = 0; i < n; ++i) {
        s.push_back(digits[p[i] >> 4]);
        s.push_back(digits[p[i] & 15]);
    }
    return s;
}

std::string sha256_hex(std::string_view data) {
    unsigned char out[32];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data.data(), data.size(), out) < 0)
        throw std::runtime_error("gnutls_hash_fast failed");
    return to_hex(out, sizeof out);
}

std::string sha256_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
    Sha256 h;
    std::vector<char> buf(1 << 20);
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        h.update(buf.data(), static_cast<std::size_t>(n));
    }
    ::close(fd);
    return h.hex();
}

}  // namespace runewarp::test
