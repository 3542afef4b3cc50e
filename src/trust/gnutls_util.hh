// Owning wrappers for GnuTLS handles and datums used across the trust module.
#pragma once

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <memory>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::trust {

struct CrtDeleter {
    void operator()(gnutls_x509_crt_int* p) const noexcept { gnutls_x509_crt_deinit(p); }
};
struct X509KeyDeleter {
    void operator()(gnutls_x509_privkey_int* p) const noexcept { gnutls_x509_privkey_deinit(p); }
};
struct PrivkeyDeleter {
    void operator()(gnutls_privkey_st* p) const noexcept { gnutls_privkey_deinit(p); }
};
struct PubkeyDeleter {
    void operator()(gnutls_pubkey_st* p) const noexcept { gnutls_pubkey_deinit(p); }
};

struct TrustListDeleter {
    // 1: the list owns the certificates added to it.
    void operator()(gnutls_x509_trust_list_st* p) const noexcept {
        gnutls_x509_trust_list_deinit(p, 1);
    }
};

using Crt = std::unique_ptr<gnutls_x509_crt_int, CrtDeleter>;
using TrustList = std::unique_ptr<gnutls_x509_trust_list_st, TrustListDeleter>;
using X509Key = std::unique_ptr<gnutls_x509_privkey_int, X509KeyDeleter>;
using Privkey = std::unique_ptr<gnutls_privkey_st, PrivkeyDeleter>;
using Pubkey = std::unique_ptr<gnutls_pubkey_st, PubkeyDeleter>;

// A datum GnuTLS allocated (export2 and friends); freed with gnutls_free.
class OwnedDatum {
public:
    OwnedDatum() = default;
    OwnedDatum(const OwnedDatum&) = delete;
    OwnedDatum& operator=(const OwnedDatum&) = delete;
    ~OwnedDatum() { gnutls_free(d_.data); }
    gnutls_datum_t* out() noexcept { return &d_; }
    std::string str() const { return std::string(reinterpret_cast<const char*>(d_.data), d_.size); }
    const gnutls_datum_t& get() const noexcept { return d_; }

private:
    gnutls_datum_t d_{nullptr, 0};
};

// A non-owning datum over caller memory (GnuTLS takes `unsigned char*` but does not write).
inline gnutls_datum_t datum_of(std::string_view s) noexcept {
    return gnutls_datum_t{
        const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(s.data())),
        static_cast<unsigned int>(s.size())};
}

// "<what>: <gnutls error text>"
inline Error gnutls_error(std::string_view what, int rc) {
    std::string m(what);
    m.append(": ");
    m.append(gnutls_strerror(rc));
    return Error{0, std::move(m)};
}

// A GnuTLS return code as a Result: negative codes are errors about `what`.
inline Result<void> gnutls_check(int rc, const char* what) {
    if (rc < 0) return gnutls_error(what, rc);
    return {};
}

}  // namespace runewarp::trust
