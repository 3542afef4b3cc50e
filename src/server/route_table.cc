// RouteTable: the immutable snapshot that maps a canonical SNI to a direct route or a Tunnel.
#include "server/route_table.hh"

#include <netdb.h>
#include <netinet/in.h>

#include <cstring>

#include "proto/endpoint.hh"

namespace runewarp::server {

namespace {

std::string sockaddr_text(const sockaddr_storage& ss) {
    auto e = proto::from_sockaddr(ss);
    return e ? proto::format_endpoint(*e) : "?";
}

}  // namespace

Result<std::vector<UpstreamAddress>> resolve_upstream(const config::HostPort& hp) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = hp.host_is_literal ? AI_NUMERICHOST : AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    std::string port = std::to_string(hp.port);
    int rc = getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return Error::msg("cannot resolve " + hp.text() + ": " + gai_strerror(rc));
    std::vector<UpstreamAddress> out;
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        UpstreamAddress u;
        std::memcpy(&u.addr, ai->ai_addr, ai->ai_addrlen);
        u.len = ai->ai_addrlen;
        u.text = sockaddr_text(u.addr);
        out.push_back(std::move(u));
    }
    freeaddrinfo(res);
    if (out.empty()) return Error::msg("cannot resolve " + hp.text() + ": no IPv4 or IPv6 address");
    return out;
}

Result<std::shared_ptr<const RouteTable>> RouteTable::build(const config::ServerConfig& cfg) {
    auto table = std::make_shared<RouteTable>();
    for (const auto& r : cfg.routes) {
        auto addrs = resolve_upstream(r.upstream);
        if (!addrs) {
            return Error::msg("route \"" + r.label + "\": upstream-address " + r.upstream.text() +
                              ": " + addrs.error().message);
        }
        auto dr = std::make_unique<DirectRoute>();
        dr->label = r.label;
        dr->upstream_text = r.upstream.text();
        dr->addresses = std::move(*addrs);
        dr->proxy_v2 = r.proxy_v2;
        for (const auto& h : r.public_hostnames) {
            RouteTarget t;
            t.kind = RouteTarget::Kind::kDirect;
            t.direct = dr.get();
            table->by_host_.emplace(h, t);
        }
        table->routes_.push_back(std::move(dr));
    }
    table->tunnel_labels_.reserve(cfg.tunnels.size());
    for (const auto& tn : cfg.tunnels) table->tunnel_labels_.push_back(tn.label);
    for (size_t i = 0; i < cfg.tunnels.size(); ++i) {
        for (const auto& h : cfg.tunnels[i].public_hostnames) {
            RouteTarget t;
            t.kind = RouteTarget::Kind::kTunnel;
            t.tunnel_label = table->tunnel_labels_[i];
            table->by_host_.emplace(h, t);
        }
    }
    return std::shared_ptr<const RouteTable>(std::move(table));
}

const RouteTarget* RouteTable::find(std::string_view canonical_host) const {
    // C++20 heterogeneous lookup needs a transparent hash; the key is short, so build it.
    auto it = by_host_.find(std::string(canonical_host));
    return it == by_host_.end() ? nullptr : &it->second;
}

}  // namespace runewarp::server
