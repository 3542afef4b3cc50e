// Startup rules shared by `config check` and the daemons: what this build can run, and the trust
// material each role loads, checked and handed over.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.hh"
#include "runewarp/result.hh"
#include "trust/client_identity.hh"
#include "trust/public_cert.hh"
#include "trust/server_cert.hh"

namespace runewarp::preflight {

// What the Server starts with: its validated config and the certificate it serves Tunnels with.
struct ServerStartup {
    config::ServerConfig config;
    std::optional<trust::ServerCertMaterial> tunnel_cert;  // set when a Tunnel is configured
};

// The Client's trust and identity material, as one Tunnel attempt uses it.
struct ClientMaterial {
    trust::ClientIdentityFiles identity;
    config::Trust server_trust = config::Trust::kSystem;
    std::string server_ca_pem;  // server_trust == kCaFile: the exclusive CA bundle
};

struct ClientStartup {
    config::ClientConfig config;
    ClientMaterial material;
    // Every terminating hostname's certificate (public-cert-dir), loaded and checked.
    std::vector<trust::PublicCertMaterial> terminate_certs;
};

// The outcome of the startup rules: every problem, in the `config check` report format
// (config::format_report), or what the role starts with.
template <typename Startup>
struct Checked {
    config::LoadOutcome report;      // problems and hints; the config model is moved to `startup`
    std::optional<Startup> startup;  // set exactly when report.ok()
    bool ok() const noexcept { return startup.has_value(); }
};

// Loads and validates the config for the Server, then applies what the daemon checks before it
// binds anything: managed mode is refused, [server.acme] is checked offline (contact address,
// state directory), and with a Tunnel the cert-dir material must verify (chain to server-ca.crt for
// the hostname, CA flag, key match, key mode).
Checked<ServerStartup> check_server(const config::LoadOptions& options);

// The same for the Client: managed mode is refused, [client.acme] is checked offline; the identity
// directory, the server CA file (ca-file trust) or the system trust store (at least one anchor)
// must be usable, and every terminating hostname must have its certificate and key in
// public-cert-dir.
Checked<ClientStartup> check_client(const config::LoadOptions& options);

// The Client's material by the rules check_client applies. The Client reloads it before every
// Tunnel attempt; every problem is in the error, joined by "; ".
Result<ClientMaterial> load_client_material(const config::ClientConfig& cfg);

// An ACME contact address as config check accepts it: one '@', a dotted domain, no spaces.
bool email_ok(std::string_view e);

// Runtime only, after the checks passed (never from config check): a default ACME state
// directory is created with mode 0700 (missing parents too) or made 0700; an explicit one must
// exist.
Result<void> prepare_acme_state_dir(const config::Acme& a);

// The Public hostnames of tls-mode = terminate Services: canonical, sorted, without duplicates.
std::vector<std::string> terminating_hostnames(const config::ClientConfig& cfg);

}  // namespace runewarp::preflight
