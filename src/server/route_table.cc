// RouteTable: the immutable snapshot that maps a canonical SNI to a direct route or a Tunnel.
#include "server/route_table.hh"

namespace runewarp::server {

std::shared_ptr<const RouteTable> RouteTable::build(const config::ServerConfig& cfg) {
    auto table = std::make_shared<RouteTable>();
    for (const auto& r : cfg.routes) {
        auto dr = std::make_unique<DirectRoute>();
        dr->label = r.label;
        dr->upstream = r.upstream;
        dr->upstream_text = r.upstream.text();
        dr->proxy_v2 = r.proxy_v2;
        net::ResolvedAddress lit;
        if (net::literal_address(r.upstream.host, r.upstream.port, lit)) {
            dr->set_addresses(std::make_shared<const std::vector<net::ResolvedAddress>>(1, lit));
        }
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
    return table;
}

const RouteTarget* RouteTable::find(std::string_view canonical_host) const {
    // C++20 heterogeneous lookup needs a transparent hash; the key is short, so build it.
    auto it = by_host_.find(std::string(canonical_host));
    return it == by_host_.end() ? nullptr : &it->second;
}

}  // namespace runewarp::server
