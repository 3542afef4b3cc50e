// Public hostname certificates for terminate mode (placeholder loader; replaced by the full module).
#pragma once

#include <ctime>
#include <string>

#include "runewarp/result.hh"

namespace runewarp::trust {

struct PublicCertMaterial {
    std::string hostname;
    std::string cert_pem;
    std::string key_pem;
    std::string cert_path;
    std::time_t not_before = 0, not_after = 0;
};

Result<PublicCertMaterial> load_public_cert(const std::string& dir, const std::string& hostname);
bool public_cert_absent(const std::string& dir, const std::string& hostname);

}  // namespace runewarp::trust
