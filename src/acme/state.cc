#include "acme/state.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/file.hh"
#include "trust/material.hh"
#include "trust/private_ca.hh"

namespace runewarp::acme {

namespace {

Result<void> fsync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Error::sys(errno, "cannot open " + dir);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Error::sys(err, "cannot fsync " + dir);
    return {};
}

// A 0600 temp file next to `path` holding `content`, fsynced; its name in `tmp`.
Result<void> write_temp(const std::string& path, std::string_view content, std::string& tmp) {
    tmp = path + ".tmp-XXXXXX";
    int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0) return Error::sys(errno, "cannot create a file next to " + path);
    auto failed = [&](const char* what) {
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return Error::sys(err, std::string(what) + " " + tmp);
    };
    if (::fchmod(fd, 0600) != 0) return failed("cannot chmod");
    std::size_t off = 0;
    while (off < content.size()) {
        ssize_t n = ::write(fd, content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return failed("cannot write");
        }
        off += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) return failed("cannot fsync");
    if (::close(fd) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return Error::sys(err, "cannot write " + tmp);
    }
    return {};
}

}  // namespace

Result<EcKey> load_or_create_account_key(const std::string& state_dir) {
    const std::string path = state_dir + "/account.key";
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto existing = trust::read_private_key_if_exists(path);
        if (!existing) return std::move(existing).error();
        if (*existing) return EcKey::from_pem(**existing, path);

        auto key = EcKey::generate();
        if (!key) return std::move(key).error();
        auto pem = key->pem();
        if (!pem) return std::move(pem).error();
        std::string tmp;
        if (auto r = write_temp(path, *pem, tmp); !r) return std::move(r).error();
        int rc = ::link(tmp.c_str(), path.c_str());
        int err = errno;
        ::unlink(tmp.c_str());
        if (rc == 0) {
            if (auto r = fsync_dir(state_dir); !r) return std::move(r).error();
            return key;
        }
        if (err != EEXIST) return Error::sys(err, "cannot create " + path);
        // Another manager published its key first: use that one.
    }
    return Error::msg("cannot create " + path + ": it keeps changing");
}

std::string certificate_path(const std::string& state_dir, const std::string& hostname) {
    return state_dir + "/" + hostname + "/certificate.pem";
}

std::string private_key_path(const std::string& state_dir, const std::string& hostname) {
    return state_dir + "/" + hostname + "/private.key";
}

CacheEntry load_cached(const std::string& state_dir, const std::string& hostname, std::time_t now) {
    CacheEntry e;
    const std::string crt = certificate_path(state_dir, hostname);
    const std::string key = private_key_path(state_dir, hostname);
    struct stat st {};
    bool have_crt = ::lstat(crt.c_str(), &st) == 0;
    bool have_key = ::lstat(key.c_str(), &st) == 0;
    if (!have_crt && !have_key) return e;
    auto leaf = trust::load_leaf(crt, key, hostname, nullptr, false);
    if (!leaf) {
        e.status = CacheStatus::kUnreadable;
        e.error = leaf.error().message;
        return e;
    }
    e.cert.cert_pem = std::move(leaf->cert_pem);
    e.cert.key_pem = std::move(leaf->key_pem);
    e.cert.not_before = leaf->not_before;
    e.cert.not_after = leaf->not_after;
    e.status = now >= e.cert.not_after ? CacheStatus::kExpired : CacheStatus::kReady;
    return e;
}

Result<void> store_certificate(const std::string& state_dir, const std::string& hostname,
                               const Certificate& cert) {
    const std::string dir = trust::join_path(state_dir, hostname);
    const bool created = !trust::path_exists(dir);
    // 0700 whatever the umask; an existing directory keeps its mode.
    if (auto r = trust::ensure_dir(dir, 0700); !r) return r;
    if (created) {
        if (auto r = fsync_dir(state_dir); !r) return r;
    }
    if (auto r = trust::replace_file(private_key_path(state_dir, hostname), cert.key_pem, 0600);
        !r) {
        return r;
    }
    return trust::replace_file(certificate_path(state_dir, hostname), cert.cert_pem, 0600);
}

std::time_t renewal_time(const Certificate& cert) {
    std::time_t window = cert.not_after - cert.not_before;
    if (window <= 0) return cert.not_before;
    return cert.not_before + window * 2 / 3;
}

}  // namespace runewarp::acme
