// Client role entry point: Service selection, run_client().
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

int run_client(config::LoadOptions options, preflight::ClientStartup startup) noexcept {
    obs::Logger& log = obs::process_logger();
    // Every Visitor stream holds a backend socket: up to [client] max-streams of them.
    if (std::uint64_t nofile = sys::raise_nofile_limit(); nofile < sys::kMinimumNofile)
        log.warn(
            "client open file limit low",
            {{"limit", std::to_string(nofile)}, {"wanted", std::to_string(sys::kWantedNofile)}},
            "streams past the limit fail their backend connect; raise LimitNOFILE= or "
            "`ulimit -Hn`");
    // The instance (and with it every session) lives until process exit: closing connections
    // may still hold it when the flush window ends.
    static ClientInstance* instance = nullptr;
    instance = new ClientInstance(
        std::move(options), std::make_shared<const config::ClientConfig>(std::move(startup.config)),
        log);
    return instance->run(startup.terminate_certs);
}

}  // namespace runewarp::client
