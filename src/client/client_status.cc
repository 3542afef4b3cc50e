// The Client's metrics listener: /metrics (Prometheus text 0.0.4), /status.json and the status
// page. Labels are operator configuration only: Service labels and the configured Server
// address strings; never a Visitor's address or SNI.
#include <ngtcp2/ngtcp2.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>

#include "client/instance.hh"
#include "obs/metrics.hh"
#include "obs/status_page.hh"
#include "runewarp_version.h"
#include "sys/systemd.hh"

namespace runewarp::client {

void ClientMetrics::add_labels(const config::ClientConfig& cfg) {
    for (const auto& s : cfg.services) services.index(s.label);
    for (const auto& a : cfg.server_addresses) servers.index(a.text());
}

bool ClientInstance::start_metrics() noexcept {
    auto activated = sys::collect_activated_sockets({{"metrics", SOCK_STREAM}});
    if (!activated) {
        log_.error("client startup failed", {}, activated.error().message);
        return false;
    }
    core::UniqueFd fd;
    for (auto& a : *activated) {
        fd.reset(a.fd);
        int fl = ::fcntl(a.fd, F_GETFL);
        if (fl >= 0) (void)::fcntl(a.fd, F_SETFL, fl | O_NONBLOCK);
        log_.info("client metrics listener socket-activated",
                  {{"bind-address", obs::socket_local_text(a.fd)}});
    }
    if (!fd.valid() && cfg_->metrics_bind) {
        auto b = obs::bind_metrics_listener(*cfg_->metrics_bind);
        if (!b) {
            log_.error("client startup failed", {}, b.error().message);
            return false;
        }
        fd = std::move(*b);
    }
    if (!fd.valid()) return true;
    metrics_http_ = std::make_unique<obs::HttpServer>(
        *worker_, std::move(fd), [this](std::string_view path) { return serve_http(path); });
    if (!metrics_http_->start()) {
        log_.error("client startup failed", {}, "metrics listener: no event loop slot");
        return false;
    }
    log_.info("client metrics listener ready", {{"bind-address", metrics_http_->bind_text()}});
    return true;
}

obs::HttpResponse ClientInstance::serve_http(std::string_view path) {
    try {
        if (path == "/metrics") {
            return {200, std::string(obs::Exposition::kContentType), render_metrics()};
        }
        if (path == "/status.json") return {200, "application/json", render_status_json()};
        if (path == "/" || path == "/index.html") {
            return {200, "text/html; charset=utf-8", std::string(obs::status_page_html())};
        }
        return {404, {}, "not found: try /metrics, /status.json or /\n"};
    } catch (const std::exception&) {
        return {500, {}, "internal error\n"};
    }
}

std::vector<AddressView> ClientInstance::collect_addresses() const {
    // Each worker reads its own connections; one line per address (connected when any worker's
    // connection is, its RTT and cwnd from the first connected one).
    std::vector<AddressView> all;
    if (shards_.empty()) return all;
    shards_[0]->collect(all);
    if (shards_.size() > 1) {
        struct Pending {
            std::mutex mu;
            std::condition_variable cv;
            size_t left = 0;
            std::vector<AddressView> views;
        };
        auto p = std::make_shared<Pending>();
        p->left = shards_.size() - 1;
        for (size_t i = 1; i < shards_.size(); ++i) {
            ClientShard* sh = shards_[i].get();
            sh->post([p, sh] {
                std::vector<AddressView> mine;
                sh->collect(mine);
                std::lock_guard lock(p->mu);
                p->views.insert(p->views.end(), mine.begin(), mine.end());
                if (--p->left == 0) p->cv.notify_all();
            });
        }
        std::unique_lock lock(p->mu);
        p->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return p->left == 0; });
        all.insert(all.end(), p->views.begin(), p->views.end());
    }
    std::vector<AddressView> out;
    for (AddressView& v : all) {
        auto it = std::find_if(out.begin(), out.end(), [&](const AddressView& o) {
            return o.address == v.address && o.configured == v.configured;
        });
        if (it == out.end()) {
            v.connections = v.connected ? 1 : 0;
            out.push_back(std::move(v));
            continue;
        }
        if (!v.connected) continue;
        ++it->connections;
        if (!it->connected) {
            const uint32_t n = it->connections;
            *it = std::move(v);
            it->connections = n;
        }
    }
    return out;
}

std::string ClientInstance::render_metrics() const {
    const ClientMetrics& m = metrics_;
    obs::Exposition x;
    x.family("runewarp_build_info", "Build of this runewarp daemon (always 1).", "gauge");
    x.sample("runewarp_build_info", {{"version", RUNEWARP_VERSION}, {"role", "client"}},
             uint64_t{1});
    x.family("runewarp_start_time_seconds", "When the daemon started (unix seconds).", "gauge");
    x.sample("runewarp_start_time_seconds", {}, started_unix_);
    x.family("runewarp_config_generation",
             "Configuration generation serving now (1 = as started, +1 per applied reload).",
             "gauge");
    x.sample("runewarp_config_generation", {},
             uint64_t{reload_ != nullptr ? reload_->generation() : 1});
    x.family("runewarp_config_reload_success", "Whether the last reload succeeded (1 before any).",
             "gauge");
    x.sample("runewarp_config_reload_success", {},
             uint64_t{reload_ == nullptr || reload_->last_reload_ok() ? 1u : 0u});

    auto views = collect_addresses();
    x.family("runewarp_client_server_connected",
             "Whether the Tunnel connection to each configured Server address is up (1) or not.",
             "gauge");
    for (const auto& v : views)
        x.sample("runewarp_client_server_connected", {{"server_address", v.address}},
                 uint64_t{v.connected ? 1u : 0u});
    x.family("runewarp_client_connected_servers", "Server addresses connected now.", "gauge");
    uint64_t connected = 0;
    for (const auto& v : views) connected += v.connected ? 1 : 0;
    x.sample("runewarp_client_connected_servers", {}, connected);
    x.family("runewarp_client_server_connects_total",
             "Tunnel connections established, by configured Server address.", "counter");
    for (size_t i = 0; i < m.servers.size(); ++i)
        x.sample("runewarp_client_server_connects_total", {{"server_address", m.servers.name(i)}},
                 m.servers.at(i).connects.value());
    x.family("runewarp_client_reconnects_total",
             "Tunnel connections re-established after an earlier one closed, by Server address.",
             "counter");
    for (size_t i = 0; i < m.servers.size(); ++i)
        x.sample("runewarp_client_reconnects_total", {{"server_address", m.servers.name(i)}},
                 m.servers.at(i).reconnects.value());
    x.family("runewarp_client_connection_rtt_seconds",
             "Smoothed RTT of the Tunnel connection to each Server address.", "gauge");
    for (const auto& v : views) {
        if (v.has_rtt)
            x.sample("runewarp_client_connection_rtt_seconds", {{"server_address", v.address}},
                     v.rtt_seconds);
    }

    x.family("runewarp_client_streams_total", "Streams routed to each Service.", "counter");
    for (size_t i = 0; i < m.services.size(); ++i)
        x.sample("runewarp_client_streams_total", {{"service", m.services.name(i)}},
                 m.services.at(i).streams.value());
    x.family("runewarp_client_streams_active", "Streams open now, by Service.", "gauge");
    for (size_t i = 0; i < m.services.size(); ++i)
        x.sample("runewarp_client_streams_active", {{"service", m.services.name(i)}},
                 m.services.at(i).active.value());
    x.family("runewarp_client_streams_unmatched_total",
             "Streams reset because no Service takes their hostname.", "counter");
    x.sample("runewarp_client_streams_unmatched_total", {}, m.unmatched_streams.value());
    x.family("runewarp_client_backend_connect_failures_total",
             "Backend resolutions or connects that failed or timed out, by Service.", "counter");
    for (size_t i = 0; i < m.services.size(); ++i)
        x.sample("runewarp_client_backend_connect_failures_total",
                 {{"service", m.services.name(i)}}, m.services.at(i).backend_failures.value());
    x.family("runewarp_client_backend_connect_duration_seconds",
             "Time to resolve and connect a backend.", "histogram");
    x.histogram("runewarp_client_backend_connect_duration_seconds", {}, m.backend_connect);
    x.family("runewarp_client_relayed_bytes_total",
             "Bytes relayed by finished streams, by direction (in = from Visitors) and Service.",
             "counter");
    for (size_t i = 0; i < m.services.size(); ++i) {
        x.sample("runewarp_client_relayed_bytes_total",
                 {{"direction", "in"}, {"service", m.services.name(i)}},
                 m.services.at(i).bytes_in.value());
        x.sample("runewarp_client_relayed_bytes_total",
                 {{"direction", "out"}, {"service", m.services.name(i)}},
                 m.services.at(i).bytes_out.value());
    }
    x.family("runewarp_certificate_expiry_timestamp_seconds",
             "notAfter of each terminate-mode certificate (unix seconds).", "gauge");
    if (terminate_certs_) {
        terminate_certs_->for_each([&](const std::string&, const TerminateCredential& c) {
            x.sample("runewarp_certificate_expiry_timestamp_seconds", {{"cert", c.cert_path()}},
                     static_cast<int64_t>(c.not_after()));
        });
    }
    const obs::ProcessGauges proc = obs::process_gauges();
    x.family("process_open_fds",
             "Open file descriptors of the process (read at most once a second).", "gauge");
    x.sample("process_open_fds", {}, proc.open_fds);
    x.family("process_resident_memory_bytes", "Resident memory of the process in bytes.", "gauge");
    x.sample("process_resident_memory_bytes", {}, proc.resident_memory_bytes);
    return x.take();
}

std::string ClientInstance::render_status_json() const {
    using nlohmann::json;
    const ClientMetrics& m = metrics_;
    const auto now = std::chrono::system_clock::now();
    json j;
    j["role"] = "client";
    j["version"] = RUNEWARP_VERSION;
    j["generation"] = reload_ != nullptr ? reload_->generation() : 1;
    j["reload_ok"] = reload_ == nullptr || reload_->last_reload_ok();
    j["now"] = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    j["now_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    j["started"] = started_unix_;
    json servers = json::array();
    uint64_t connected = 0;
    for (const auto& v : collect_addresses()) {
        json a;
        a["address"] = v.address;
        a["configured"] = v.configured;
        a["connected"] = v.connected;
        a["connections"] = v.connections;
        a["remote"] = v.remote;
        a["rtt_seconds"] = v.has_rtt ? json(v.rtt_seconds) : json(nullptr);
        a["cwnd_bytes"] = v.cwnd;
        size_t i = m.servers.find(v.address);
        a["reconnects"] = i == SIZE_MAX ? 0 : m.servers.at(i).reconnects.value();
        connected += v.connected ? 1 : 0;
        servers.push_back(std::move(a));
    }
    j["servers"] = std::move(servers);
    json services = json::array();
    uint64_t streams = 0, active = 0, in = 0, out = 0, failures = 0;
    for (const auto& s : cfg_->services) {
        json sj;
        sj["label"] = s.label;
        sj["hostnames"] = s.public_hostnames;
        sj["backend"] = s.backend.text();
        size_t i = m.services.find(s.label);
        const ServiceCounts* c = i == SIZE_MAX ? nullptr : &m.services.at(i);
        sj["streams_total"] = c ? c->streams.value() : 0;
        sj["streams_active"] = c ? c->active.value() : 0;
        sj["backend_failures"] = c ? c->backend_failures.value() : 0;
        sj["bytes_in"] = c ? c->bytes_in.value() : 0;
        sj["bytes_out"] = c ? c->bytes_out.value() : 0;
        services.push_back(std::move(sj));
    }
    for (size_t i = 0; i < m.services.size(); ++i) {
        const ServiceCounts& c = m.services.at(i);
        streams += c.streams.value();
        active += static_cast<uint64_t>(std::max<int64_t>(0, c.active.value()));
        in += c.bytes_in.value();
        out += c.bytes_out.value();
        failures += c.backend_failures.value();
    }
    j["services"] = std::move(services);
    json certs = json::array();
    if (terminate_certs_) {
        terminate_certs_->for_each([&](const std::string&, const TerminateCredential& c) {
            json cj;
            cj["cert"] = c.cert_path();
            cj["not_after"] = static_cast<int64_t>(c.not_after());
            certs.push_back(std::move(cj));
        });
    }
    j["certificates"] = std::move(certs);
    json totals;
    totals["servers_connected"] = connected;
    totals["streams_total"] = streams;
    totals["streams_active"] = active;
    totals["backend_failures"] = failures;
    totals["bytes_in"] = in;
    totals["bytes_out"] = out;
    j["totals"] = std::move(totals);
    return j.dump();
}

}  // namespace runewarp::client
