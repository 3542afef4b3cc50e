// Fuzz target for the strict DER walker that finds a peer certificate's SubjectPublicKeyInfo
// (the Server runs it on every Client certificate, inside the handshake): it never reads outside
// the input, what it returns lies inside it, and strictness holds at the edges.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz/fuzz_target.hh"
#include "trust/identity.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::trust;
    std::span<const std::uint8_t> in(data, size);

    auto spki = find_certificate_spki(in);
    auto id = identity_of_certificate_der(in);
    check(spki.ok() == id.ok());
    if (!spki.ok()) {
        check(!spki.error().message.empty());
        return 0;
    }
    // The SPKI is a SEQUENCE strictly inside the certificate, and the identity is its hash.
    check(!spki->empty() && (*spki)[0] == 0x30);
    check(spki->data() > data && spki->data() + spki->size() <= data + size);
    check(is_valid_identity(*id));
    check(*id == identity_of_spki(*spki));

    // The certificate is one DER element spanning the whole input: one byte less is truncated,
    // one byte more is trailing data. Either is refused.
    check(!find_certificate_spki(in.first(size - 1)).ok());
    std::vector<std::uint8_t> longer(data, data + size);
    longer.push_back(0);
    check(!find_certificate_spki(longer).ok());
    return 0;
}
