// Client role entry point: Service selection, what this build can run, run_client().
#include "client/client.hh"

#include "client/instance.hh"
#include "obs/log.hh"
#include "sys/limits.hh"

namespace runewarp::client {

const config::Service* select_service(const std::vector<config::Service>& services,
                                      std::string_view sni) noexcept {
    if (services.size() == 1 && services.front().catch_all()) return &services.front();
    for (const config::Service& s : services) {
        for (const std::string& h : s.public_hostnames) {
            if (h == sni) return &s;
        }
    }
    return nullptr;
}

Result<void> check_supported(const config::ClientConfig& cfg) {
    for (const config::Service& s : cfg.services) {
        if (s.tls_mode == config::TlsMode::kTerminate) {
            return Error::msg("service \"" + s.label +
                              "\" uses tls-mode = terminate, which this build does not support "
                              "yet; use tls-mode = passthrough");
        }
    }
    if (cfg.services.empty()) return Error::msg("no [service] is configured");
    if (cfg.server_addresses.empty()) return Error::msg("no server address is configured");
    return {};
}

int run_client(const config::ClientConfig& cfg) noexcept {
    obs::Logger& log = obs::process_logger();
    if (auto s = check_supported(cfg); !s) {
        log.error("client startup failed", {}, s.error().message);
        return 1;
    }
    // Every Visitor stream holds a backend socket: up to 1024 per connection.
    sys::raise_nofile_limit();
    // The instance (and with it every session) lives until process exit: closing connections
    // may still hold it when the flush window ends.
    static ClientInstance* instance = nullptr;
    instance = new ClientInstance(cfg, log);
    return instance->run();
}

}  // namespace runewarp::client
