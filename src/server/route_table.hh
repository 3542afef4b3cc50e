// RouteTable: the immutable snapshot that maps a canonical SNI to a direct route or a Tunnel.
#pragma once

#include <sys/socket.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hh"
#include "runewarp/result.hh"

namespace runewarp::server {

// A resolved upstream socket address (spec 12.1: resolved at startup and on reload, never per
// connection).
struct UpstreamAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string text;  // "1.2.3.4:443" / "[::1]:443", for logs
};

struct DirectRoute {
    std::string label;
    std::string upstream_text;               // as configured (host:port)
    std::vector<UpstreamAddress> addresses;  // resolver order; the first is used
    bool proxy_v2 = false;
};

struct RouteTarget {
    enum class Kind { kDirect, kTunnel } kind = Kind::kDirect;
    const DirectRoute* direct = nullptr;  // kind == kDirect
    std::string_view tunnel_label;        // kind == kTunnel
};

class RouteTable {
public:
    // Builds the snapshot from a validated config, resolving every upstream address.
    static Result<std::shared_ptr<const RouteTable>> build(const config::ServerConfig& cfg);

    // Exact match on the canonical hostname; nullptr when no route or Tunnel owns it.
    const RouteTarget* find(std::string_view canonical_host) const;

    size_t size() const noexcept { return by_host_.size(); }
    const std::vector<std::unique_ptr<DirectRoute>>& routes() const noexcept { return routes_; }

private:
    std::vector<std::unique_ptr<DirectRoute>> routes_;
    std::vector<std::string> tunnel_labels_;
    std::unordered_map<std::string, RouteTarget> by_host_;
};

// Resolves "host:port" (or a literal) with the system resolver; used at startup and on reload,
// never on the event loop per connection.
Result<std::vector<UpstreamAddress>> resolve_upstream(const config::HostPort& hp);

}  // namespace runewarp::server
