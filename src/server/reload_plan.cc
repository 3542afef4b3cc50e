// Restart-only Server keys, kept at their running values across a reload.
#include "server/reload_plan.hh"

namespace runewarp::server {

namespace {

std::string endpoint_text(const std::optional<proto::Endpoint>& e) {
    return e ? proto::format_endpoint(*e) : std::string("(none)");
}

std::string note(const std::string& key, const std::string& wanted, const std::string& kept) {
    return key + ": changed to " + wanted + "; needs a restart, the running value " + kept +
           " stays";
}

}  // namespace

std::vector<std::string> keep_restart_only(const config::ServerConfig& running,
                                           config::ServerConfig& next, bool tunnel_bound) {
    std::vector<std::string> notes;
    if (next.public_bind != running.public_bind) {
        notes.push_back(note("server.public-bind-address", proto::format_endpoint(next.public_bind),
                             proto::format_endpoint(running.public_bind)));
        next.public_bind = running.public_bind;
    }
    if (next.readiness_bind != running.readiness_bind) {
        notes.push_back(note("server.readiness-bind-address", endpoint_text(next.readiness_bind),
                             endpoint_text(running.readiness_bind)));
        next.readiness_bind = running.readiness_bind;
    }
    if (tunnel_bound && next.tunnel_bind != running.tunnel_bind) {
        notes.push_back(note("server.tunnel-bind-address", proto::format_endpoint(next.tunnel_bind),
                             proto::format_endpoint(running.tunnel_bind)));
        next.tunnel_bind = running.tunnel_bind;
    }
    if (tunnel_bound && next.tunnel_retry != running.tunnel_retry) {
        auto name = [](config::TunnelRetry r) {
            return r == config::TunnelRetry::kAlways  ? "always"
                   : r == config::TunnelRetry::kNever ? "never"
                                                      : "auto";
        };
        notes.push_back(
            note("server.tunnel-retry", name(next.tunnel_retry), name(running.tunnel_retry)));
        next.tunnel_retry = running.tunnel_retry;
    }
    if (next.visitor_proxy_v2 != running.visitor_proxy_v2) {
        auto name = [](bool v2) { return v2 ? "v2" : "none"; };
        notes.push_back(note("server.visitor-proxy-protocol", name(next.visitor_proxy_v2),
                             name(running.visitor_proxy_v2)));
        next.visitor_proxy_v2 = running.visitor_proxy_v2;
    }
    if (next.metrics_bind != running.metrics_bind) {
        notes.push_back(note("metrics.prometheus-bind-address", endpoint_text(next.metrics_bind),
                             endpoint_text(running.metrics_bind)));
        next.metrics_bind = running.metrics_bind;
    }
    if (next.event_backend != running.event_backend) {
        notes.push_back(note("event-backend", config::event_backend_name(next.event_backend),
                             config::event_backend_name(running.event_backend)));
        next.event_backend = running.event_backend;
    }
    // The worker threads and their sockets are set up once.
    if (next.workers != running.workers) {
        notes.push_back(note("server.workers", config::workers_text(next.workers),
                             config::workers_text(running.workers)));
        next.workers = running.workers;
    }
    // The session and pipe tables are sized for these limits at startup.
    if (next.max_active_streams != running.max_active_streams) {
        notes.push_back(note("server.max-active-streams", std::to_string(next.max_active_streams),
                             std::to_string(running.max_active_streams)));
        next.max_active_streams = running.max_active_streams;
    }
    if (next.max_pending_stream_opens != running.max_pending_stream_opens) {
        notes.push_back(note("server.max-pending-stream-opens",
                             std::to_string(next.max_pending_stream_opens),
                             std::to_string(running.max_pending_stream_opens)));
        next.max_pending_stream_opens = running.max_pending_stream_opens;
    }
    // The ACME manager runs for one hostname and one account for the whole process.
    const bool acme = running.acme.has_value() || next.acme.has_value();
    if (next.acme != running.acme) {
        notes.push_back(std::string("[server.acme]: ") +
                        (!running.acme ? "added"
                         : next.acme   ? "changed"
                                       : "removed") +
                        "; needs a restart, the running ACME settings stay");
        next.acme = running.acme;
        next.cert_dir = running.cert_dir;
    }
    if (acme && next.hostname != running.hostname) {
        notes.push_back(note("server.hostname", next.hostname, running.hostname));
        next.hostname = running.hostname;
    }
    return notes;
}

}  // namespace runewarp::server
