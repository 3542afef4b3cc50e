// Fuzz target for the ACME JSON parsers (directory, order, authorization, problem): every
// response body from the ACME server goes through them on the manager thread. They never throw,
// never crash, and what they accept holds the members the protocol flow relies on.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "acme/jws.hh"
#include "acme/messages.hh"
#include "fuzz/fuzz_target.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::acme;
    std::string_view in(reinterpret_cast<const char*>(data), size);

    if (auto d = parse_directory(in); d.ok()) {
        check(!d->new_nonce.empty() && !d->new_account.empty() && !d->new_order.empty());
    } else {
        check(!d.error().message.empty());
    }
    if (auto o = parse_order(in); o.ok()) {
        if (o->error) check(!o->error->type.empty() || !o->error->detail.empty());
    } else {
        check(!o.error().message.empty());
    }
    if (auto a = parse_authorization(in); a.ok()) {
        for (const auto& c : a->challenges) {
            if (c.error) check(!describe(*c.error).empty());
        }
    } else {
        check(!a.error().message.empty());
    }
    if (auto p = parse_problem(in); p.ok()) {
        check(!p->type.empty() || !p->detail.empty());
        check(p->status >= 0 && p->status <= 999);
        check(!describe(*p).empty());
    } else {
        check(!p.error().message.empty());
    }
    // A certificate chain download and a nonce header are just bytes: b64url round-trips.
    auto back = b64url_decode(b64url(in));
    check(back.has_value() && *back == in);
    return 0;
}
