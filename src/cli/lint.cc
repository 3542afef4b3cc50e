// `runewarp lint` rules over validated configuration models.
#include "cli/lint.hh"

#include <algorithm>
#include <set>
#include <string_view>

namespace runewarp::cli {

namespace {

// Whether two canonical hostname patterns can match the same SNI. Matching is exact today
// (spec 4.4); a leading "*." label is honoured as one-label wildcard so the rule keeps its
// meaning once wildcard hostnames exist (10.6).
bool hostnames_overlap(std::string_view a, std::string_view b) {
    if (a == b) return true;
    auto covers = [](std::string_view wild, std::string_view name) {
        if (!wild.starts_with("*.")) return false;
        std::string_view suffix = wild.substr(1);  // ".example.com"
        if (name.starts_with("*.")) return name.substr(1) == suffix;
        if (name.size() <= suffix.size() || !name.ends_with(suffix)) return false;
        std::string_view label = name.substr(0, name.size() - suffix.size());
        return label.find('.') == std::string_view::npos;
    };
    return covers(a, b) || covers(b, a);
}

bool is_loopback(const proto::Endpoint& raw) noexcept {
    proto::Endpoint e = proto::unmap_v4(raw);
    if (e.family == proto::Family::kV4) return e.addr[0] == 127;
    static constexpr std::array<std::uint8_t, 16> kLoop{0, 0, 0, 0, 0, 0, 0, 0,
                                                        0, 0, 0, 0, 0, 0, 0, 1};
    return e.addr == kLoop;
}

std::string quoted(std::string_view kind, const std::string& label) {
    return std::string(kind) + " \"" + label + "\"";
}

void proxy_to_public(std::vector<LintFinding>& out, const std::string& owner,
                     const config::HostPort& target, std::string_view what,
                     const AddressLookup& lookup) {
    for (const proto::Endpoint& e : lookup(target)) {
        if (!is_public_address(e)) continue;
        std::string addr = proto::format_ip(proto::unmap_v4(e));
        std::string msg =
            owner + ": proxy-protocol = v2 to " + std::string(what) + " " + target.text();
        if (!target.host_is_literal) msg += " (" + addr + ")";
        msg +=
            ", a public address: the Visitor addresses travel in clear text beyond this host, "
            "and anything able to reach that port can forge them";
        out.push_back({"proxy-to-public", std::move(msg)});
        return;  // one finding per target
    }
}

}  // namespace

bool is_public_address(const proto::Endpoint& raw) noexcept {
    proto::Endpoint e = proto::unmap_v4(raw);
    const auto& a = e.addr;
    if (e.family == proto::Family::kV4) {
        if (a[0] == 0 || a[0] == 10 || a[0] == 127) return false;  // this, private, loop
        if (a[0] == 169 && a[1] == 254) return false;              // link-local
        if (a[0] == 172 && (a[1] & 0xf0) == 16) return false;      // 172.16/12
        if (a[0] == 192 && a[1] == 168) return false;              // 192.168/16
        if (a[0] == 100 && (a[1] & 0xc0) == 64) return false;      // 100.64/10 (CGN)
        if (a[0] >= 224) return false;                             // multicast, 240/4
        return true;
    }
    if (is_loopback(e)) return false;
    if (std::all_of(a.begin(), a.end(), [](std::uint8_t b) { return b == 0; })) return false;
    if ((a[0] & 0xfe) == 0xfc) return false;                  // fc00::/7 unique local
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return false;  // fe80::/10 link-local
    if (a[0] == 0xff) return false;                           // multicast
    return true;
}

std::vector<LintFinding> lint_server(const config::ServerConfig& cfg, const AddressLookup& lookup) {
    std::vector<LintFinding> out;
    for (const config::Route& r : cfg.routes) {
        for (const config::Tunnel& t : cfg.tunnels) {
            for (const std::string& rh : r.public_hostnames) {
                for (const std::string& th : t.public_hostnames) {
                    if (!hostnames_overlap(rh, th)) continue;
                    out.push_back({"route-tunnel-overlap",
                                   quoted("route", r.label) + " (" + rh + ") and " +
                                       quoted("tunnel", t.label) + " (" + th +
                                       ") claim the same hostname: which one serves it is "
                                       "not what either section says"});
                }
            }
        }
    }
    if (cfg.public_bind.port != 443) {
        out.push_back({"public-port",
                       "server.public-bind-address " + proto::format_endpoint(cfg.public_bind) +
                           ": the public port is not 443, so Visitors must name the port "
                           "and ACME TLS-ALPN-01 validation (which always uses 443) cannot "
                           "reach this listener unless something forwards 443 to it"});
    }
    if (cfg.readiness_bind && !is_loopback(*cfg.readiness_bind)) {
        out.push_back({"readiness-exposed",
                       "server.readiness-bind-address " +
                           proto::format_endpoint(*cfg.readiness_bind) +
                           ": the readiness listener is not on a loopback address, so anyone "
                           "who can reach it learns whether this Server is up"});
    }
    for (const config::Tunnel& t : cfg.tunnels) {
        if (t.identities.size() != 1) continue;
        out.push_back({"single-member-pool",
                       quoted("tunnel", t.label) + ": a single client identity (" +
                           t.identities.front().substr(0, 12) +
                           "...) is pinned, so its hostnames go down whenever that Client does; "
                           "pin a second Client for redundancy"});
    }
    for (const config::Route& r : cfg.routes) {
        if (r.proxy_v2)
            proxy_to_public(out, quoted("route", r.label), r.upstream, "upstream", lookup);
    }
    return out;
}

std::vector<LintFinding> lint_client(const config::ClientConfig& cfg, const AddressLookup& lookup) {
    std::vector<LintFinding> out;
    for (const config::Service& s : cfg.services) {
        if (s.proxy_v2)
            proxy_to_public(out, quoted("service", s.label), s.backend, "backend", lookup);
    }
    return out;
}

std::vector<LintFinding> lint_pair(const config::ServerConfig& server,
                                   const config::ClientConfig& client,
                                   const std::optional<std::string>& client_identity,
                                   const std::string& identity_error) {
    std::vector<LintFinding> out;
    std::vector<const config::Tunnel*> mine;
    if (client_identity) {
        for (const config::Tunnel& t : server.tunnels) {
            if (std::find(t.identities.begin(), t.identities.end(), *client_identity) !=
                t.identities.end())
                mine.push_back(&t);
        }
    }
    std::vector<const config::Tunnel*> compared = mine;
    if (compared.empty()) {
        for (const config::Tunnel& t : server.tunnels) compared.push_back(&t);
    }

    bool catch_all = false;
    std::set<std::string> served;
    for (const config::Service& s : client.services) {
        if (s.catch_all()) catch_all = true;
        served.insert(s.public_hostnames.begin(), s.public_hostnames.end());
    }
    auto tunneled = [&](const std::string& h) {
        for (const config::Tunnel* t : compared) {
            for (const std::string& th : t->public_hostnames)
                if (hostnames_overlap(h, th)) return true;
        }
        return false;
    };
    for (const config::Service& s : client.services) {
        for (const std::string& h : s.public_hostnames) {
            if (tunneled(h)) continue;
            out.push_back({"service-not-tunneled",
                           quoted("service", s.label) + ": public hostname " + h +
                               " is in no [tunnel] of the Server" +
                               (mine.empty() ? std::string() : " pinning this Client") +
                               ", so no Visitor reaches it through the tunnel"});
        }
    }
    if (!catch_all) {
        for (const config::Tunnel* t : compared) {
            for (const std::string& h : t->public_hostnames) {
                bool has = std::any_of(served.begin(), served.end(), [&](const std::string& s) {
                    return hostnames_overlap(s, h);
                });
                if (has) continue;
                out.push_back({"tunnel-without-service",
                               quoted("tunnel", t->label) + ": public hostname " + h +
                                   " has no [service] on the Client, which resets every "
                                   "Visitor stream for it"});
            }
        }
    }
    if (!client_identity) {
        out.push_back({"identity-not-pinned", "the Client's identity could not be read (" +
                                                  identity_error +
                                                  "), so whether the Server pins it is unknown"});
    } else if (mine.empty()) {
        out.push_back({"identity-not-pinned",
                       "client identity " + *client_identity +
                           " is pinned by no [tunnel] of the Server: it will be refused "
                           "(unauthorized)"});
    }
    return out;
}

std::string format_finding(const LintFinding& f) {
    return "warn " + f.rule + ": " + f.message + "\n";
}

}  // namespace runewarp::cli
