// Placeholder loader.
#include "trust/public_cert.hh"

#include "core/file.hh"
#include "trust/material.hh"

namespace runewarp::trust {

Result<PublicCertMaterial> load_public_cert(const std::string& dir, const std::string& hostname) {
    std::string hd = join_path(dir, hostname);
    std::string crt = join_path(hd, "public.crt");
    std::string key = join_path(hd, "public.key");
    if (!path_exists(crt) && !path_exists(key)) {
        return Error::msg("missing certificate for terminating hostname " + hostname +
                          ": run `runewarp client public-cert init --hostname " + hostname + "`");
    }
    auto c = core::read_file(crt);
    if (!c) return c.error();
    auto k = read_private_key(key);
    if (!k) return k.error();
    PublicCertMaterial m;
    m.hostname = hostname;
    m.cert_pem = std::move(*c);
    m.key_pem = std::move(*k);
    m.cert_path = crt;
    return m;
}

bool public_cert_absent(const std::string& dir, const std::string& hostname) {
    std::string hd = join_path(dir, hostname);
    return !path_exists(join_path(hd, "public.crt")) && !path_exists(join_path(hd, "public.key"));
}

}  // namespace runewarp::trust
