// Fuzz target for hostname normalisation: a canonical name normalizes to itself, obeys the
// rules, and IP literal detection agrees with the endpoint parser and formatter.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_target.hh"
#include "proto/endpoint.hh"
#include "proto/hostname.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::proto;
    std::string_view raw(reinterpret_cast<const char*>(data), size);

    auto r = normalize_hostname(raw);
    check(hostname_error_text(r.error) != nullptr);
    if (r.ok()) {
        check(!r.canonical.empty() && r.canonical.size() <= 253);
        for (char c : r.canonical) check(c != '*' && !(c >= 'A' && c <= 'Z'));
        check(!is_ip_literal(r.canonical));
        auto again = normalize_hostname(r.canonical);
        check(again.ok() && again.canonical == r.canonical);
    } else {
        check(r.canonical.empty());
    }

    auto ip = parse_ip(raw);
    check(ip.has_value() == is_ip_literal(raw));
    if (ip) {
        auto back = parse_ip(format_ip(*ip));
        check(back.has_value() && back->family == ip->family && back->addr == ip->addr);
        auto ep = *ip;
        ep.port = 443;
        auto parsed = parse_endpoint(format_endpoint(ep));
        check(parsed.has_value() && *parsed == ep);
    }
    return 0;
}
