// ClientInstance: one running Client process — its workers (ClientShard: a loop, a resolver, one
// Tunnel connection per Server address, the streams on them), the process-wide stream-handler
// budget, signals, reload, ACME, readiness and sd_notify status, and orderly shutdown.
#pragma once

#include <signal.h>
#include <sys/signalfd.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "acme/challenge.hh"
#include "acme/manager.hh"
#include "client/client_metrics.hh"
#include "client/client_shard.hh"
#include "client/terminate_tls.hh"
#include "config/config.hh"
#include "core/mailbox.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "net/resolver.hh"
#include "obs/http_server.hh"
#include "obs/log.hh"
#include "preflight/preflight.hh"
#include "quic/connection.hh"
#include "quic/tls.hh"
#include "runewarp/result.hh"
#include "sys/reload.hh"
#include "sys/role_reload.hh"
#include "sys/watchdog.hh"

namespace runewarp::client {

class DailyCheck;

// What a reload's check produced (on the reload thread): the validated configuration and the
// terminate certificates it names, loaded (null when no Service terminates or under ACME).
struct ClientReloadSnapshot {
    config::ClientConfig config;
    TerminateCertsRef certs;
};

class ClientInstance final : public core::SignalListener {
public:
    // `options`: how the startup configuration was loaded; every reload loads it the same way.
    ClientInstance(config::LoadOptions options, ConfigRef cfg, obs::Logger& log);
    ~ClientInstance();
    int run(const std::vector<trust::PublicCertMaterial>& terminate_certs) noexcept;

    // --- any thread ----------------------------------------------------------------------------
    obs::Logger& log() noexcept { return log_; }
    ClientMetrics& metrics() noexcept { return metrics_; }
    // Terminate mode's process-wide session settings (null when no Service terminates; once
    // set, kept until exit).
    const TerminateTls* terminate_tls() const noexcept {
        return terminate_tls_ptr_.load(std::memory_order_acquire);
    }
    // Client ACME: the challenges the managers wait on (null without [client.acme]).
    const acme::ChallengeBoard* acme_board() const noexcept { return acme_board_.get(); }
    // Runs `fn` on the main thread's loop (dropped once shutdown ended it).
    void post_main(std::function<void()> fn);
    // The process-wide stream-handler budget ([client] max-streams over every worker): true
    // when a handler was taken.
    bool take_stream_handler() noexcept;
    void release_stream_handler() noexcept {
        streams_active_.fetch_sub(1, std::memory_order_relaxed);
    }
    // A stream was reset for want of a handler (rate-limited line), and one found a handler
    // (the recovery line once after such a line).
    void note_handlers_saturated() noexcept;
    void note_handler_taken() noexcept {
        if (saturation_pending_.load(std::memory_order_relaxed)) note_recovered();
    }
    // A worker's Tunnel connection to `address` was authenticated, or ended.
    void address_connected(const std::string& address) noexcept;
    void address_disconnected(const std::string& address) noexcept;

    // --- main thread ---------------------------------------------------------------------------
    // The configuration now (a reload replaces it; each worker holds its own snapshot).
    const config::ClientConfig& cfg() const noexcept { return *cfg_; }
    void fatal(const std::string& message) noexcept;
    // WARN within 21 days of a terminate certificate's notAfter, ERROR once past it (startup,
    // after each re-read, then daily).
    void check_terminate_expiry() noexcept;

    void on_signal(const signalfd_siginfo& info) noexcept override;

    // The metrics listener's answers (loop thread): /metrics, /status.json and the status page.
    obs::HttpResponse serve_http(std::string_view path);
    std::string render_metrics() const;
    std::string render_status_json() const;

private:
    // [metrics]: the socket-activated `metrics` or prometheus-bind-address; false after logging.
    bool start_metrics() noexcept;
    void begin_shutdown() noexcept;
    // Reload thread: the startup rules on the file again (preflight::check_client), the
    // terminate certificates loaded; the problems as `config check` prints them otherwise.
    static sys::Reloader::Prepared check_reload(const config::LoadOptions& options);
    // Loop thread: applies a checked snapshot (restart-only settings keep their running value),
    // then calls `done` with the notes.
    void apply_reload(std::shared_ptr<void> snapshot, sys::Reloader::Done done) noexcept;
    // The snapshot workers start new streams and connections under: the configuration, the
    // certificates and the label counters now (after the configuration's labels were added).
    ClientSnapshot make_snapshot();
    // Runs `fn` on every worker: shard 0 now, the others through their mailboxes.
    void for_each_shard(const std::function<void(ClientShard&)>& fn);
    // Every worker's view of the Server addresses, merged by address (workers 1..N-1 answer
    // through their mailboxes, within 500 ms).
    std::vector<AddressView> collect_addresses() const;
    void note_recovered() noexcept;
    // Starts workers 1..N-1 (startup); false after logging.
    bool start_shards(const core::WorkerOptions& wo) noexcept;
    // "connected k/n server addresses" over the configured (not retired) addresses.
    std::string status_text() const;
    void update_status() noexcept;
    // [client.acme]: the state directory, then one manager per terminating hostname (their
    // cached certificates go into the snapshot). Needs the Worker (the managers post through
    // the mailbox). False after logging `client startup failed`.
    bool create_acme_managers() noexcept;
    // Loop thread: a manager issued or renewed `host`'s certificate: new streams use it.
    void install_acme_certificate(const std::string& host,
                                  const std::shared_ptr<const acme::Certificate>& cert) noexcept;
    void stop_acme_managers() noexcept;
    // Terminate certificates changed (reload, ACME): every worker's new streams use them.
    void publish_certs() noexcept;

    const config::LoadOptions options_;
    ConfigRef cfg_;
    obs::Logger& log_;
    std::unique_ptr<core::Worker> worker_;
    // Declared before the workers: terminating sessions use them until they are freed.
    std::unique_ptr<TerminateTls> terminate_tls_;
    std::atomic<const TerminateTls*> terminate_tls_ptr_{nullptr};
    TerminateCertsRef terminate_certs_;
    std::unique_ptr<sys::Watchdog> watchdog_;
    std::unique_ptr<DailyCheck> expiry_check_;
    // Client ACME: the managers' hand-off to the loop, the board they publish challenges on,
    // and the managers (one per terminating hostname, for the whole process).
    std::unique_ptr<core::Mailbox> mailbox_;
    std::shared_ptr<acme::ChallengeBoard> acme_board_;
    std::vector<std::unique_ptr<acme::Manager>> acme_managers_;
    std::vector<std::string> acme_hostnames_;  // sorted: the hostnames with a manager
    std::unique_ptr<sys::RoleReload> reload_;
    ClientMetrics metrics_;
    std::unique_ptr<obs::HttpServer> metrics_http_;
    // The workers: shard 0 runs on this thread.
    std::vector<std::unique_ptr<ClientShard>> shards_;
    // Stream handlers taken over every worker, against [client] max-streams (fixed at startup).
    std::atomic<uint32_t> streams_active_{0};
    uint32_t max_streams_ = 0;
    obs::SharedRateLimiter saturation_limiter_;
    std::atomic<bool> saturation_pending_{false};
    // Authenticated Tunnel connections per Server address, over every worker.
    mutable std::mutex connected_mu_;
    std::map<std::string, uint32_t> connected_;
    std::atomic<bool> ready_logged_{false};
    int64_t started_unix_ = 0;
    bool shutting_down_ = false;
    int exit_code_ = 0;
};

}  // namespace runewarp::client
