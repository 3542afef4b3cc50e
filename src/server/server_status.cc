// The Server's metrics listener answers: /metrics (Prometheus text 0.0.4), /status.json and the
// status page. Everything is read on the loop thread at scrape time: the counters, the live
// Visitor list (bytes of relays still running), the Tunnel pools and their QUIC connections.
// Labels are operator configuration only (route and Tunnel labels, Client identities,
// certificate files) and fixed reason sets; never a Visitor's address or SNI.
#include <ngtcp2/ngtcp2.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "obs/metrics.hh"
#include "obs/status_page.hh"
#include "quic/connection.hh"
#include "runewarp_version.h"
#include "server/edge_server.hh"

namespace runewarp::server {

// ---- ServerMetrics ------------------------------------------------------------------------------

const char* handshake_failure_name(HandshakeFailure f) noexcept {
    switch (f) {
        case HandshakeFailure::kUnauthorized:
            return "unauthorized";
        case HandshakeFailure::kSaturated:
            return "handshakes-saturated";
        case HandshakeFailure::kNoCertificate:
            return "no-certificate";
        case HandshakeFailure::kError:
            return "handshake-error";
        case HandshakeFailure::kJoinRefused:
            return "pool-saturated";
        case HandshakeFailure::kCount:
            break;
    }
    return "unknown";
}

const char* drop_reason_name(size_t slot) noexcept {
    if (slot == kDropGlobalSaturated) return "visitor-global-saturated";
    return reason_text(static_cast<CloseReason>(slot));
}

bool drop_reason_listed(size_t slot) noexcept {
    if (slot == kDropGlobalSaturated) return true;
    if (slot <= static_cast<size_t>(CloseReason::kDone)) return false;
    return slot <= static_cast<size_t>(CloseReason::kAcmeHandshakeTimeout);
}

void ServerMetrics::add_labels(const config::ServerConfig& cfg) {
    for (const auto& r : cfg.routes) direct.index(r.label);
    for (const auto& t : cfg.tunnels) tunnel.index(t.label);
}

// ---- what a scrape reads ------------------------------------------------------------------------

namespace {

// One Tunnel connection as the scrape sees it.
struct MemberView {
    const TunnelMember* m = nullptr;
    std::string label;
    size_t index = 0;  // position in its pool
    std::string address;
    bool has_info = false;
    double rtt_seconds = 0;
    uint64_t cwnd = 0;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
};

}  // namespace

struct ScrapeView {
    std::unordered_map<const RouteCounts*, LiveBytes> live;
    std::unordered_map<const TunnelMember*, LiveBytes> member_live;
    std::vector<MemberView> members;
};

static ScrapeView scrape_view(LiveView live, TunnelRegistry* reg) {
    ScrapeView v;
    v.live = std::move(live.live);
    v.member_live = std::move(live.member_live);
    if (reg == nullptr) return v;
    std::unordered_map<int, size_t> next_index;
    for (const auto& m : reg->all()) {
        MemberView mv;
        mv.m = m.get();
        mv.label = m->tunnel >= 0 && static_cast<size_t>(m->tunnel) < reg->table()->tunnel_count()
                       ? reg->table()->label(static_cast<size_t>(m->tunnel))
                       : std::string("-");
        mv.index = next_index[m->tunnel]++;
        // Read by the worker that owns the connection (collect_live).
        if (auto st = live.member_stats.find(m.get()); st != live.member_stats.end()) {
            mv.has_info = true;
            mv.rtt_seconds = st->second.rtt_seconds;
            mv.cwnd = st->second.cwnd;
            mv.address = st->second.address;
        }
        auto it = v.member_live.find(m.get());
        mv.bytes_in = m->bytes_in + (it != v.member_live.end() ? it->second.in : 0);
        mv.bytes_out = m->bytes_out + (it != v.member_live.end() ? it->second.out : 0);
        v.members.push_back(std::move(mv));
    }
    return v;
}

obs::HttpResponse EdgeServer::serve_http(std::string_view path) {
    try {
        if (path == "/metrics") {
            return {200, std::string(obs::Exposition::kContentType), render_metrics()};
        }
        if (path == "/status.json") {
            return {200, "application/json", render_status_json()};
        }
        if (path == "/" || path == "/index.html") {
            return {200, "text/html; charset=utf-8", std::string(obs::status_page_html())};
        }
        return {404, {}, "not found: try /metrics, /status.json or /\n"};
    } catch (const std::exception&) {
        return {500, {}, "internal error\n"};
    }
}

std::string EdgeServer::render_metrics() const {
    const ServerMetrics& m = metrics_;
    TunnelRegistry* reg = tunnel_ ? &tunnel_->registry() : nullptr;
    const LiveView lv = collect_live();
    ScrapeView view = scrape_view(lv, reg);
    obs::Exposition x;

    x.family("runewarp_build_info", "Build of this runewarp daemon (always 1).", "gauge");
    x.sample("runewarp_build_info", {{"version", RUNEWARP_VERSION}, {"role", "server"}},
             uint64_t{1});
    x.family("runewarp_start_time_seconds", "When the daemon started (unix seconds).", "gauge");
    x.sample("runewarp_start_time_seconds", {}, started_unix_);
    x.family("runewarp_config_generation",
             "Configuration generation serving now (1 = as started, +1 per applied reload).",
             "gauge");
    x.sample("runewarp_config_generation", {}, generation());
    x.family("runewarp_config_reload_success", "Whether the last reload succeeded (1 before any).",
             "gauge");
    x.sample("runewarp_config_reload_success", {},
             uint64_t{reload_ == nullptr || reload_->last_reload_ok() ? 1u : 0u});

    x.family("runewarp_visitor_connections_accepted_total",
             "Visitor TCP connections accepted on the public listener.", "counter");
    x.sample("runewarp_visitor_connections_accepted_total", {}, m.accepted.value());
    x.family("runewarp_worker_visitor_connections_accepted_total",
             "Visitor TCP connections accepted, by the worker (event loop thread) that accepted "
             "them.",
             "counter");
    for (const auto& sh : shards_) {
        const std::string w = std::to_string(sh->index());
        x.sample("runewarp_worker_visitor_connections_accepted_total", {{"worker", w}},
                 sh->accepted());
    }
    x.family("runewarp_visitor_connections_dropped_total",
             "Visitor connections closed before relaying, by reason.", "counter");
    for (size_t i = 0; i < kDropSlots; ++i) {
        if (!drop_reason_listed(i)) continue;
        x.sample("runewarp_visitor_connections_dropped_total", {{"reason", drop_reason_name(i)}},
                 m.dropped[i].value());
    }
    x.family("runewarp_visitor_connections_active",
             "Visitor connections open now (in intake, connecting or relaying).", "gauge");
    x.sample("runewarp_visitor_connections_active", {}, lv.visitors);
    x.family("runewarp_visitor_intake_duration_seconds",
             "Time from accepting a Visitor to its routing decision.", "histogram");
    x.histogram("runewarp_visitor_intake_duration_seconds", {}, m.intake);
    x.family("runewarp_relay_duration_seconds", "Lifetime of finished relays.", "histogram");
    x.histogram("runewarp_relay_duration_seconds", {}, m.relay);

    auto live_of = [&](const RouteCounts& c) {
        auto it = view.live.find(&c);
        return it == view.live.end() ? LiveBytes{} : it->second;
    };
    x.family("runewarp_relayed_bytes_total",
             "Bytes relayed, by direction (in = from Visitors), target kind and route or Tunnel "
             "label; relays still running included.",
             "counter");
    for (size_t i = 0; i < m.direct.size(); ++i) {
        const RouteCounts& c = m.direct.at(i);
        LiveBytes l = live_of(c);
        x.sample("runewarp_relayed_bytes_total",
                 {{"direction", "in"}, {"target_kind", "direct"}, {"route", m.direct.name(i)}},
                 c.bytes_in.value() + l.in);
        x.sample("runewarp_relayed_bytes_total",
                 {{"direction", "out"}, {"target_kind", "direct"}, {"route", m.direct.name(i)}},
                 c.bytes_out.value() + l.out);
    }
    for (size_t i = 0; i < m.tunnel.size(); ++i) {
        const RouteCounts& c = m.tunnel.at(i);
        LiveBytes l = live_of(c);
        x.sample("runewarp_relayed_bytes_total",
                 {{"direction", "in"}, {"target_kind", "tunnel"}, {"route", m.tunnel.name(i)}},
                 c.bytes_in.value() + l.in);
        x.sample("runewarp_relayed_bytes_total",
                 {{"direction", "out"}, {"target_kind", "tunnel"}, {"route", m.tunnel.name(i)}},
                 c.bytes_out.value() + l.out);
    }
    x.family("runewarp_relays_started_total", "Relays started, by target kind and route label.",
             "counter");
    for (size_t i = 0; i < m.direct.size(); ++i)
        x.sample("runewarp_relays_started_total",
                 {{"target_kind", "direct"}, {"route", m.direct.name(i)}},
                 m.direct.at(i).relays.value());
    for (size_t i = 0; i < m.tunnel.size(); ++i)
        x.sample("runewarp_relays_started_total",
                 {{"target_kind", "tunnel"}, {"route", m.tunnel.name(i)}},
                 m.tunnel.at(i).relays.value());
    x.family("runewarp_relays_active", "Relays running now, by target kind and route label.",
             "gauge");
    for (size_t i = 0; i < m.direct.size(); ++i)
        x.sample("runewarp_relays_active", {{"target_kind", "direct"}, {"route", m.direct.name(i)}},
                 live_of(m.direct.at(i)).active);
    for (size_t i = 0; i < m.tunnel.size(); ++i)
        x.sample("runewarp_relays_active", {{"target_kind", "tunnel"}, {"route", m.tunnel.name(i)}},
                 live_of(m.tunnel.at(i)).active);

    // Tunnel pools.
    x.family("runewarp_tunnel_streams_opened_total", "Tunnel streams opened, by Tunnel.",
             "counter");
    for (size_t i = 0; i < m.tunnel.size(); ++i)
        x.sample("runewarp_tunnel_streams_opened_total", {{"tunnel", m.tunnel.name(i)}},
                 m.tunnel.at(i).relays.value());
    x.family("runewarp_tunnel_streams_reset_total",
             "Tunnel streams that ended with a reset or error, by Tunnel.", "counter");
    for (size_t i = 0; i < m.tunnel.size(); ++i)
        x.sample("runewarp_tunnel_streams_reset_total", {{"tunnel", m.tunnel.name(i)}},
                 m.tunnel.at(i).resets.value());
    x.family("runewarp_tunnel_streams_active", "Tunnel streams relaying now, by Tunnel.", "gauge");
    for (size_t i = 0; i < m.tunnel.size(); ++i)
        x.sample("runewarp_tunnel_streams_active", {{"tunnel", m.tunnel.name(i)}},
                 live_of(m.tunnel.at(i)).active);
    x.family("runewarp_tunnel_connections", "Live Tunnel connections in each Tunnel's pool.",
             "gauge");
    for (size_t i = 0; i < m.tunnel.size(); ++i) {
        int idx = reg != nullptr ? reg->table()->tunnel_index(m.tunnel.name(i)) : -1;
        x.sample("runewarp_tunnel_connections", {{"tunnel", m.tunnel.name(i)}},
                 static_cast<uint64_t>(idx >= 0 ? reg->members(idx) : 0));
    }
    x.family("runewarp_worker_tunnel_connections",
             "Live Tunnel connections, by the worker (event loop thread) that owns them.", "gauge");
    {
        std::vector<uint64_t> per_worker(shards_.size(), 0);
        for (const MemberView& mv : view.members) {
            if (mv.m->shard < per_worker.size()) ++per_worker[mv.m->shard];
        }
        for (size_t w = 0; w < per_worker.size(); ++w) {
            x.sample("runewarp_worker_tunnel_connections", {{"worker", std::to_string(w)}},
                     per_worker[w]);
        }
    }
    x.family("runewarp_tunnel_connections_accepted_total",
             "Tunnel connections that completed the handshake and joined a pool.", "counter");
    x.sample("runewarp_tunnel_connections_accepted_total", {},
             m.tunnel_connections_accepted.value());
    x.family("runewarp_tunnel_handshakes_in_flight", "QUIC handshakes in progress.", "gauge");
    x.sample("runewarp_tunnel_handshakes_in_flight", {}, lv.handshakes);
    x.family("runewarp_tunnel_handshake_failures_total",
             "Tunnel connection attempts that failed, by reason.", "counter");
    for (size_t i = 0; i < m.handshake_failures.size(); ++i)
        x.sample("runewarp_tunnel_handshake_failures_total",
                 {{"reason", handshake_failure_name(static_cast<HandshakeFailure>(i))}},
                 m.handshake_failures[i].value());

    x.family("runewarp_tunnel_connection_rtt_seconds",
             "Smoothed RTT of each Tunnel connection (by Tunnel, member index in the pool and "
             "Client identity).",
             "gauge");
    for (const MemberView& mv : view.members) {
        if (!mv.has_info) continue;
        std::string idx = std::to_string(mv.index);
        x.sample("runewarp_tunnel_connection_rtt_seconds",
                 {{"tunnel", mv.label}, {"member", idx}, {"client_identity", mv.m->identity}},
                 mv.rtt_seconds);
    }
    x.family("runewarp_tunnel_connection_cwnd_bytes",
             "Congestion window of each Tunnel connection.", "gauge");
    for (const MemberView& mv : view.members) {
        if (!mv.has_info) continue;
        std::string idx = std::to_string(mv.index);
        x.sample("runewarp_tunnel_connection_cwnd_bytes",
                 {{"tunnel", mv.label}, {"member", idx}, {"client_identity", mv.m->identity}},
                 mv.cwnd);
    }
    x.family("runewarp_tunnel_connection_streams_active",
             "Streams relaying now on each Tunnel connection.", "gauge");
    for (const MemberView& mv : view.members) {
        std::string idx = std::to_string(mv.index);
        x.sample("runewarp_tunnel_connection_streams_active",
                 {{"tunnel", mv.label}, {"member", idx}, {"client_identity", mv.m->identity}},
                 uint64_t{mv.m->active_streams.load()});
    }

    x.family("runewarp_admission_saturation_events_total",
             "Work refused because a fixed admission limit was reached, by scope.", "counter");
    for (size_t i = 0; i < static_cast<size_t>(AdmissionScope::kCount); ++i) {
        auto s = static_cast<AdmissionScope>(i);
        x.sample("runewarp_admission_saturation_events_total", {{"scope", scope_name(s)}},
                 admission_log_.saturations(s).value());
    }
    x.family("runewarp_certificate_expiry_timestamp_seconds",
             "notAfter of each certificate the Server serves (unix seconds).", "gauge");
    for (const auto& c : cert_watch_.served())
        x.sample("runewarp_certificate_expiry_timestamp_seconds", {{"cert", c.path}},
                 static_cast<int64_t>(c.not_after));

    const obs::ProcessGauges proc = obs::process_gauges();
    x.family("process_open_fds",
             "Open file descriptors of the process (read at most once a second).", "gauge");
    x.sample("process_open_fds", {}, proc.open_fds);
    x.family("process_resident_memory_bytes", "Resident memory of the process in bytes.", "gauge");
    x.sample("process_resident_memory_bytes", {}, proc.resident_memory_bytes);
    return x.take();
}

std::string EdgeServer::render_status_json() const {
    using nlohmann::json;
    const ServerMetrics& m = metrics_;
    TunnelRegistry* reg = tunnel_ ? &tunnel_->registry() : nullptr;
    const LiveView lv = collect_live();
    ScrapeView view = scrape_view(lv, reg);
    auto live_of = [&](const RouteCounts& c) {
        auto it = view.live.find(&c);
        return it == view.live.end() ? LiveBytes{} : it->second;
    };
    const auto now = std::chrono::system_clock::now();
    json j;
    j["role"] = "server";
    j["version"] = RUNEWARP_VERSION;
    j["generation"] = generation();
    j["reload_ok"] = reload_ == nullptr || reload_->last_reload_ok();
    j["now"] = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    j["now_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    j["started"] = started_unix_;

    uint64_t total_in = 0, total_out = 0, dropped = 0, streams = 0;
    json routes = json::array();
    auto route_row = [&](const std::string& label, const char* kind,
                         const std::vector<std::string>& hosts, const std::string& target,
                         const obs::LabelSlots<RouteCounts>& slots) {
        json r;
        r["label"] = label;
        r["kind"] = kind;
        r["hostnames"] = hosts;
        r["target"] = target;
        size_t i = slots.find(label);
        LiveBytes l = i == SIZE_MAX ? LiveBytes{} : live_of(slots.at(i));
        r["active"] = l.active;
        r["relays"] = i == SIZE_MAX ? 0 : slots.at(i).relays.value();
        r["bytes_in"] = (i == SIZE_MAX ? 0 : slots.at(i).bytes_in.value()) + l.in;
        r["bytes_out"] = (i == SIZE_MAX ? 0 : slots.at(i).bytes_out.value()) + l.out;
        routes.push_back(std::move(r));
    };
    for (const auto& r : cfg_->routes)
        route_row(r.label, "direct", r.public_hostnames, r.upstream.text(), m.direct);
    for (const auto& t : cfg_->tunnels)
        route_row(t.label, "tunnel", t.public_hostnames, "tunnel " + t.label, m.tunnel);
    j["routes"] = std::move(routes);
    // Totals cover every label ever served (a reload may have removed some).
    for (const auto* slots : {&m.direct, &m.tunnel}) {
        for (size_t i = 0; i < slots->size(); ++i) {
            LiveBytes l = live_of(slots->at(i));
            total_in += slots->at(i).bytes_in.value() + l.in;
            total_out += slots->at(i).bytes_out.value() + l.out;
        }
    }
    for (size_t i = 0; i < kDropSlots; ++i) dropped += m.dropped[i].value();

    json tunnels = json::array();
    for (const auto& t : cfg_->tunnels) {
        json tj;
        tj["label"] = t.label;
        tj["hostnames"] = t.public_hostnames;
        size_t i = m.tunnel.find(t.label);
        LiveBytes l = i == SIZE_MAX ? LiveBytes{} : live_of(m.tunnel.at(i));
        tj["streams_active"] = l.active;
        tj["streams_opened"] = i == SIZE_MAX ? 0 : m.tunnel.at(i).relays.value();
        tj["bytes_in"] = (i == SIZE_MAX ? 0 : m.tunnel.at(i).bytes_in.value()) + l.in;
        tj["bytes_out"] = (i == SIZE_MAX ? 0 : m.tunnel.at(i).bytes_out.value()) + l.out;
        json members = json::array();
        for (const MemberView& mv : view.members) {
            if (mv.label != t.label) continue;
            json mj;
            mj["index"] = mv.index;
            mj["identity"] = mv.m->identity;
            mj["worker"] = mv.m->shard;
            mj["address"] = mv.address;
            mj["rtt_seconds"] = mv.has_info ? json(mv.rtt_seconds) : json(nullptr);
            mj["cwnd_bytes"] = mv.cwnd;
            mj["active_streams"] = mv.m->active_streams.load();
            mj["bytes_in"] = mv.bytes_in;
            mj["bytes_out"] = mv.bytes_out;
            mj["connected_since"] = mv.m->joined_unix;
            streams += mv.m->active_streams.load();
            members.push_back(std::move(mj));
        }
        tj["members"] = std::move(members);
        tunnels.push_back(std::move(tj));
    }
    j["tunnels"] = std::move(tunnels);

    json certs = json::array();
    for (const auto& c : cert_watch_.served()) {
        json cj;
        cj["cert"] = c.path;
        cj["not_after"] = static_cast<int64_t>(c.not_after);
        certs.push_back(std::move(cj));
    }
    j["certificates"] = std::move(certs);

    json totals;
    totals["visitors_accepted"] = m.accepted.value();
    totals["visitors_active"] = lv.visitors;
    totals["visitors_dropped"] = dropped;
    totals["bytes_in"] = total_in;
    totals["bytes_out"] = total_out;
    totals["tunnel_connections"] = reg != nullptr ? reg->total() : 0;
    totals["streams_active"] = streams;
    totals["handshakes_in_flight"] = lv.handshakes;
    j["totals"] = std::move(totals);
    return j.dump();
}

}  // namespace runewarp::server
