// Reload planning for the Client: the Server address diff and the restart-only settings.
#include "client/reload_plan.hh"

#include <algorithm>

#include "preflight/preflight.hh"

namespace runewarp::client {

namespace {

bool same_acme(const std::optional<config::Acme>& a, const std::optional<config::Acme>& b) {
    if (a.has_value() != b.has_value()) return false;
    if (!a) return true;
    return a->email == b->email && a->state_dir == b->state_dir &&
           a->directory_url == b->directory_url && a->ca_file == b->ca_file;
}

std::string changed(const std::string& key) {
    return key + ": changed; applies on restart";
}

}  // namespace

AddressDiff diff_server_addresses(const std::vector<std::string>& running,
                                  const std::vector<config::HostPort>& next) {
    AddressDiff d;
    std::vector<std::string> next_text;
    next_text.reserve(next.size());
    for (const config::HostPort& hp : next) {
        std::string t = hp.text();
        // A repeated address starts one worker only.
        if (std::find(next_text.begin(), next_text.end(), t) != next_text.end()) continue;
        if (std::find(running.begin(), running.end(), t) == running.end()) d.added.push_back(hp);
        next_text.push_back(std::move(t));
    }
    for (const std::string& t : running) {
        if (std::find(next_text.begin(), next_text.end(), t) == next_text.end())
            d.removed.push_back(t);
    }
    return d;
}

RestartOnly keep_restart_only(const config::ClientConfig& running, config::ClientConfig& next,
                              const std::vector<std::string>& acme_hostnames) {
    RestartOnly r;
    // The metrics listener is bound once per process.
    if (next.metrics_bind != running.metrics_bind) {
        r.notes.push_back(changed("metrics.prometheus-bind-address"));
        next.metrics_bind = running.metrics_bind;
    }
    // The stream table is sized once, and every Server connection granted its stream limit in
    // its handshake.
    if (next.max_streams != running.max_streams) {
        r.notes.push_back(changed("client.max-streams"));
        next.max_streams = running.max_streams;
    }
    // The worker threads are started once.
    if (next.workers != running.workers) {
        r.notes.push_back(changed("client.workers"));
        next.workers = running.workers;
    }
    // The event loop is created once per process.
    if (next.event_backend != running.event_backend) {
        r.notes.push_back(changed("event-backend"));
        next.event_backend = running.event_backend;
    }
    // The ACME managers log through loggers made at startup: one format per process keeps the
    // stream parseable.
    if (next.log_format != running.log_format) {
        r.notes.push_back(changed("log-format"));
        next.log_format = running.log_format;
    }
    // The ACME managers (one per terminating hostname) live for the whole process, and with
    // them the choice between ACME and public-cert-dir.
    if (!same_acme(running.acme, next.acme)) {
        r.notes.push_back(changed("[client.acme]"));
        if (running.acme.has_value() != next.acme.has_value()) {
            r.keep_certificate_source = true;
            next.public_cert_dir = running.public_cert_dir;
        }
        next.acme = running.acme;
    }
    if (running.acme) {
        r.keep_certificate_source = true;
        for (const std::string& h : preflight::terminating_hostnames(next)) {
            if (!std::binary_search(acme_hostnames.begin(), acme_hostnames.end(), h)) {
                r.notes.push_back("[client.acme]: no certificate manager for new hostname " + h +
                                  " (its Visitors are refused); applies on restart");
            }
        }
    }
    return r;
}

std::string join_notes(const std::vector<std::string>& notes) {
    std::string out;
    for (const std::string& n : notes) {
        if (!out.empty()) out.push_back('\n');
        out += n;
    }
    return out;
}

}  // namespace runewarp::client
