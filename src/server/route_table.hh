// RouteTable: the immutable snapshot that maps a canonical SNI to a direct route or a Tunnel.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hh"
#include "net/address.hh"
#include "runewarp/result.hh"

namespace runewarp::server {

using AddressSet = std::shared_ptr<const std::vector<net::ResolvedAddress>>;

struct DirectRoute {
    DirectRoute() = default;
    // Copies take the address set the source holds at that moment.
    DirectRoute(const DirectRoute& o)
        : label(o.label),
          upstream(o.upstream),
          upstream_text(o.upstream_text),
          proxy_v2(o.proxy_v2),
          addresses_(o.addresses()) {}
    DirectRoute& operator=(const DirectRoute& o) {
        if (this != &o) {
            label = o.label;
            upstream = o.upstream;
            upstream_text = o.upstream_text;
            proxy_v2 = o.proxy_v2;
            set_addresses(o.addresses());
        }
        return *this;
    }

    std::string label;
    config::HostPort upstream;
    std::string upstream_text;  // as configured (host:port), for logs
    bool proxy_v2 = false;

    // Every address of the upstream in Happy Eyeballs order. Resolved when the table is built
    // and again whenever the answer's TTL runs out (UpstreamResolver); a new answer replaces the
    // set, so a connection racing an older set keeps it. Null until a name is first resolved.
    // Any thread may read the set while the resolver's thread replaces it.
    AddressSet addresses() const noexcept {
        std::lock_guard lock(addresses_mu_);
        return addresses_;
    }
    void set_addresses(AddressSet set) const noexcept {
        std::lock_guard lock(addresses_mu_);
        addresses_.swap(set);  // the previous set is released after the lock
    }

private:
    // A mutex rather than std::atomic<AddressSet>: libstdc++ 12's atomic<shared_ptr>::load drops
    // its lock bit with a relaxed store after reading the pointer (ThreadSanitizer reports it).
    mutable std::mutex addresses_mu_;
    mutable AddressSet addresses_;
};

struct RouteTarget {
    enum class Kind { kDirect, kTunnel } kind = Kind::kDirect;
    const DirectRoute* direct = nullptr;  // kind == kDirect
    std::string_view tunnel_label;        // kind == kTunnel
};

class RouteTable {
public:
    // Builds the snapshot from a validated config. IP-literal upstreams get their address now;
    // names are resolved on the loop (UpstreamResolver).
    static std::shared_ptr<const RouteTable> build(const config::ServerConfig& cfg);

    // Exact match on the canonical hostname; nullptr when no route or Tunnel owns it.
    const RouteTarget* find(std::string_view canonical_host) const;

    size_t size() const noexcept { return by_host_.size(); }
    const std::vector<std::unique_ptr<DirectRoute>>& routes() const noexcept { return routes_; }

private:
    std::vector<std::unique_ptr<DirectRoute>> routes_;
    std::vector<std::string> tunnel_labels_;
    std::unordered_map<std::string, RouteTarget> by_host_;
};

}  // namespace runewarp::server
