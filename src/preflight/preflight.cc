// Startup rules: the config loader's outcome plus build support and trust material, per role.
#include "preflight/preflight.hh"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <utility>

#include "trust/anchors.hh"
#include "trust/material.hh"

namespace runewarp::preflight {

namespace {

constexpr const char* kManaged = "managed mode is not supported by this build";

// Problems found after the config itself validated: not tied to a line of the file.
class Problems {
public:
    void add(std::string message) { list_.push_back(std::move(message)); }
    bool empty() const noexcept { return list_.empty(); }
    const std::vector<std::string>& list() const noexcept { return list_; }

    void into(config::LoadOutcome& outcome, const std::string& path) const {
        for (const auto& m : list_) outcome.problems.push_back(config::Problem{path, 0, m});
    }

private:
    std::vector<std::string> list_;
};

std::optional<trust::ServerCertMaterial> server_material(const config::ServerConfig& cfg,
                                                         Problems& problems) {
    if (cfg.tunnels.empty() || cfg.cert_dir.empty()) return std::nullopt;
    auto cert = trust::load_server_cert_dir(cfg.cert_dir, cfg.hostname);
    if (!cert) {
        problems.add("server.cert-dir: server certificate material in " + cfg.cert_dir +
                     " is not usable: " + cert.error().message);
        return std::nullopt;
    }
    return std::move(*cert);
}

// What can be checked of an ACME section without the network: the contact address and the
// state directory (an explicit one must be a writable directory; the default one is created at
// startup, so it only has to be creatable).
void acme_offline(const config::Acme& a, const char* section, Problems& problems) {
    if (!email_ok(a.email)) {
        problems.add(std::string(section) + ".email: " + a.email +
                     " is not an email address (local@domain, no spaces)");
    }
    if (!a.state_dir_is_default && ::access(a.state_dir.c_str(), W_OK | X_OK) != 0) {
        problems.add(std::string(section) + ".state-dir: directory " + a.state_dir +
                     " is not writable");
    }
}

void server_support(const config::ServerConfig& cfg, Problems& problems) {
    if (cfg.managed_requested) problems.add(kManaged);
    if (cfg.acme) acme_offline(*cfg.acme, "server.acme", problems);
}

void client_support(const config::ClientConfig& cfg, Problems& problems) {
    if (cfg.managed_requested) problems.add(kManaged);
    if (cfg.acme) acme_offline(*cfg.acme, "client.acme", problems);
    // The loader requires both outside managed mode; the runtime relies on it.
    if (!cfg.managed_requested) {
        if (cfg.services.empty()) problems.add("no [service] is configured");
        if (cfg.server_addresses.empty()) problems.add("no Server address is configured");
    }
}

ClientMaterial client_material(const config::ClientConfig& cfg, Problems& problems) {
    ClientMaterial m;
    m.server_trust = cfg.server_trust;
    auto id = trust::load_client_identity_files(cfg.identity_dir);
    if (id) {
        m.identity = std::move(*id);
    } else {
        problems.add("client.identity-dir: client identity in " + cfg.identity_dir +
                     " is not usable: " + id.error().message);
    }
    if (cfg.server_trust == config::Trust::kCaFile) {
        auto ca = trust::load_ca_file(cfg.server_ca_file);
        if (ca) {
            m.server_ca_pem = std::move(*ca);
        } else {
            problems.add("client.server-ca-file: " + ca.error().message);
        }
    } else {
        auto n = trust::count_system_trust_anchors();
        if (!n) {
            problems.add("client.server-trust = system: " + n.error().message);
        } else if (*n == 0) {
            problems.add(
                "client.server-trust = system: the system trust store holds no CA certificates "
                "(install the distribution's ca-certificates package, or use "
                "client.server-trust = ca-file)");
        }
    }
    return m;
}

// The config loader, then the role's rules on the model it built: `apply` adds its problems and
// returns what the role would start with.
// Every terminating hostname's certificate from public-cert-dir (none with ACME, which this
// build refuses).
std::vector<trust::PublicCertMaterial> terminate_material(const config::ClientConfig& cfg,
                                                          Problems& problems) {
    std::vector<trust::PublicCertMaterial> out;
    if (cfg.public_cert_dir.empty()) return out;
    for (const std::string& h : terminating_hostnames(cfg)) {
        auto m = trust::load_public_cert(cfg.public_cert_dir, h);
        if (m) {
            out.push_back(std::move(*m));
        } else {
            problems.add(m.error().message);
        }
    }
    return out;
}

template <typename Startup, typename Model, typename Apply>
Checked<Startup> check(const config::LoadOptions& options,
                       std::optional<Model> config::LoadOutcome::*model, Apply apply) {
    Checked<Startup> out;
    out.report = config::load(options);
    if (!out.report.ok()) return out;
    Problems problems;
    Startup start = apply(std::move(*(out.report.*model)), problems);
    (out.report.*model).reset();
    if (problems.empty()) {
        out.startup = std::move(start);
    } else {
        problems.into(out.report, options.path);
    }
    return out;
}

}  // namespace

bool email_ok(std::string_view e) {
    auto at = e.find('@');
    if (at == std::string_view::npos || at == 0 || at + 1 >= e.size()) return false;
    if (e.find('@', at + 1) != std::string_view::npos) return false;
    for (unsigned char c : e) {
        if (c <= 0x20 || c >= 0x7f || c == ',' || c == '<' || c == '>' || c == '"') return false;
    }
    std::string_view domain = e.substr(at + 1);
    return domain.find('.') != std::string_view::npos && domain.front() != '.' &&
           domain.back() != '.';
}

Result<void> prepare_acme_state_dir(const config::Acme& a) {
    struct stat st {};
    if (!a.state_dir_is_default) {
        if (::stat(a.state_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
            return Error::msg("ACME state directory " + a.state_dir + " does not exist");
        }
        return {};
    }
    // Created private with any missing parents; an existing one that group or others can enter
    // is made private too, since it holds the account key.
    if (auto r = trust::ensure_dir(a.state_dir, 0700); !r) return r;
    if (::stat(a.state_dir.c_str(), &st) != 0) {
        return Error::sys(errno, "cannot access ACME state directory " + a.state_dir);
    }
    if ((st.st_mode & 077) != 0) return trust::set_dir_mode(a.state_dir, 0700);
    return {};
}

Checked<ServerStartup> check_server(const config::LoadOptions& options) {
    return check<ServerStartup>(options, &config::LoadOutcome::server,
                                [](config::ServerConfig cfg, Problems& problems) {
                                    server_support(cfg, problems);
                                    auto cert = server_material(cfg, problems);
                                    return ServerStartup{std::move(cfg), std::move(cert)};
                                });
}

Checked<ClientStartup> check_client(const config::LoadOptions& options) {
    return check<ClientStartup>(
        options, &config::LoadOutcome::client, [](config::ClientConfig cfg, Problems& problems) {
            client_support(cfg, problems);
            ClientMaterial m = client_material(cfg, problems);
            auto certs = terminate_material(cfg, problems);
            return ClientStartup{std::move(cfg), std::move(m), std::move(certs)};
        });
}

std::vector<std::string> terminating_hostnames(const config::ClientConfig& cfg) {
    std::vector<std::string> out;
    for (const config::Service& s : cfg.services) {
        if (s.tls_mode != config::TlsMode::kTerminate) continue;
        out.insert(out.end(), s.public_hostnames.begin(), s.public_hostnames.end());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Result<ClientMaterial> load_client_material(const config::ClientConfig& cfg) {
    Problems problems;
    ClientMaterial m = client_material(cfg, problems);
    if (problems.empty()) return m;
    std::string joined;
    for (const auto& p : problems.list()) {
        if (!joined.empty()) joined.append("; ");
        joined.append(p);
    }
    return Error::msg(std::move(joined));
}

}  // namespace runewarp::preflight
