// `runewarp lint` rules: warnings a valid configuration may still deserve. Pure functions over the
// validated models (addresses of hostnames come through a caller-supplied lookup), so they are
// unit-tested without files or network.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hh"
#include "proto/endpoint.hh"

namespace runewarp::cli {

// One warning: a short rule name (stable, for scripts) and the sentence shown to the operator.
struct LintFinding {
    std::string rule;
    std::string message;
};

// The addresses a host:port names; a literal gives itself. Empty when it does not resolve (no
// finding is made about an address that cannot be known).
using AddressLookup = std::function<std::vector<proto::Endpoint>(const config::HostPort&)>;

// True for addresses reachable from the public Internet: not loopback, private (RFC 1918,
// fc00::/7), link-local, shared (100.64/10), unspecified or multicast. IPv4-mapped IPv6
// addresses are judged as IPv4.
bool is_public_address(const proto::Endpoint& e) noexcept;

// Server file alone:
//   route-tunnel-overlap   a [route] and a [tunnel] claim the same hostname
//   public-port            server.public-bind-address is not on port 443
//   readiness-exposed      server.readiness-bind-address is not a loopback address
//   single-member-pool     a [tunnel] pins exactly one client identity
//   proxy-to-public        a [route] sends PROXY v2 to an upstream on a public address
std::vector<LintFinding> lint_server(const config::ServerConfig& cfg, const AddressLookup& lookup);

// Client file alone:
//   proxy-to-public        a [service] sends PROXY v2 to a backend on a public address
std::vector<LintFinding> lint_client(const config::ClientConfig& cfg, const AddressLookup& lookup);

// The two files together (spec 10.9, hostname mirroring):
//   service-not-tunneled   a Service hostname that no Tunnel of the Server routes
//   tunnel-without-service a Tunnel hostname no Service of the Client serves (not reported when
//                          the Client has a Catch-all Service)
//   identity-not-pinned    the Client's identity is pinned by no Tunnel
// `client_identity` is the Client's identity when it could be read; `identity_error` says why
// not otherwise. Tunnels pinning the Client's identity are the ones compared for hostnames when
// there are any; otherwise every Tunnel is.
std::vector<LintFinding> lint_pair(const config::ServerConfig& server,
                                   const config::ClientConfig& client,
                                   const std::optional<std::string>& client_identity,
                                   const std::string& identity_error);

// "warn <rule>: <message>\n"
std::string format_finding(const LintFinding& f);

}  // namespace runewarp::cli
