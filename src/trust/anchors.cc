// Client trust anchors: the exclusive CA file and the system store, checked before any attempt.
#include "trust/anchors.hh"

#include <memory>

#include "core/file.hh"
#include "trust/gnutls_util.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

Result<std::string> load_ca_file(const std::string& path) {
    auto pem = core::read_file(path);
    if (!pem) return std::move(pem).error();
    auto certs = import_crt_list_pem(*pem, path);
    if (!certs) return std::move(certs).error();
    return std::move(*pem);
}

Result<unsigned> count_system_trust_anchors() {
    gnutls_x509_trust_list_t raw = nullptr;
    if (int rc = gnutls_x509_trust_list_init(&raw, 0); rc < 0) {
        return gnutls_error("cannot allocate trust list", rc);
    }
    TrustList list(raw);
    int rc = gnutls_x509_trust_list_add_system_trust(list.get(), 0, 0);
    if (rc < 0) return gnutls_error("cannot load the system trust store", rc);
    return static_cast<unsigned>(rc);
}

}  // namespace runewarp::trust
