// Resolved socket addresses and the order in which a Happy Eyeballs race tries them.
#include "net/address.hh"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "proto/endpoint.hh"

namespace runewarp::net {

std::string format_address(const ResolvedAddress& a) {
    auto e = proto::from_sockaddr(a.sa(), a.len);
    return e ? proto::format_endpoint(*e) : "unknown";
}

bool literal_address(const std::string& host, uint16_t port, ResolvedAddress& out) noexcept {
    out = ResolvedAddress{};
    auto e = proto::parse_ip(host);
    if (!e) return false;
    e->port = port;
    out.len = proto::to_sockaddr(*e, out.addr);
    return out.len != 0;
}

namespace {

bool same_address(const ResolvedAddress& a, const ResolvedAddress& b) noexcept {
    return a.len == b.len && std::memcmp(&a.addr, &b.addr, a.len) == 0;
}

}  // namespace

void interleave_families(std::vector<ResolvedAddress>& addrs) {
    if (addrs.size() < 2) return;
    int first = addrs.front().family();
    std::vector<ResolvedAddress> primary, secondary;
    for (const ResolvedAddress& a : addrs) {
        auto& v = a.family() == first ? primary : secondary;
        bool dup = std::any_of(v.begin(), v.end(),
                               [&](const ResolvedAddress& b) { return same_address(a, b); });
        if (!dup) v.push_back(a);
    }
    addrs.clear();
    for (size_t i = 0; i < std::max(primary.size(), secondary.size()); ++i) {
        if (i < primary.size()) addrs.push_back(primary[i]);
        if (i < secondary.size()) addrs.push_back(secondary[i]);
    }
}

}  // namespace runewarp::net
