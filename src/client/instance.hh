// ClientInstance: one running Client process — its Worker, resolver, address workers, stream
// handler slots, signals, readiness and sd_notify status, and orderly shutdown.
#pragma once

#include <signal.h>
#include <sys/signalfd.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "acme/challenge.hh"
#include "acme/manager.hh"
#include "client/client_metrics.hh"
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

class AddressWorker;
class StreamSession;
class DailyCheck;

using ConfigRef = std::shared_ptr<const config::ClientConfig>;

// What a reload's check produced (on the reload thread): the validated configuration and the
// terminate certificates it names, loaded (null when no Service terminates or under ACME).
struct ClientReloadSnapshot {
    config::ClientConfig config;
    TerminateCertsRef certs;
};

// The short cause of a nested error for operator lines: the text before the first ": " (the
// whole chain goes to a DEBUG "... detail" line).
std::string short_cause(const std::string& s);

class ClientInstance final : public core::SignalListener {
public:
    // `options`: how the startup configuration was loaded; every reload loads it the same way.
    ClientInstance(config::LoadOptions options, ConfigRef cfg, obs::Logger& log);
    ~ClientInstance();
    int run(const std::vector<trust::PublicCertMaterial>& terminate_certs) noexcept;

    obs::Logger& log() noexcept { return log_; }
    // The configuration now; a reload replaces it, and each stream keeps the one it started
    // with (its Service stays valid until the stream ends).
    const config::ClientConfig& cfg() const noexcept { return *cfg_; }
    const ConfigRef& config_snapshot() const noexcept { return cfg_; }
    core::Worker& worker() noexcept { return *worker_; }
    // nullptr once shutdown began.
    net::Resolver* resolver() noexcept { return shutting_down_ ? nullptr : resolver_.get(); }
    uint64_t random() noexcept { return rng_(); }
    bool shutting_down() const noexcept { return shutting_down_; }
    // Terminate mode: the certificates now (each stream keeps the snapshot it started with)
    // and the process-wide session settings (null when no Service terminates).
    const TerminateCertsRef& terminate_certs() const noexcept { return terminate_certs_; }
    const TerminateTls* terminate_tls() const noexcept { return terminate_tls_.get(); }
    // Client ACME: the challenges the managers wait on (null without [client.acme]).
    const acme::ChallengeBoard* acme_board() const noexcept { return acme_board_.get(); }
    // Replaces the certificate snapshot (reload, ACME): new streams use it, streams in flight
    // keep the one they hold.
    void set_terminate_certs(TerminateCertsRef certs) noexcept {
        terminate_certs_ = std::move(certs);
    }
    // WARN within 21 days of a terminate certificate's notAfter, ERROR once past it (startup,
    // after each re-read, then daily).
    void check_terminate_expiry() noexcept;

    // Re-reads the Client identity and the Server trust (every attempt does).
    Result<std::unique_ptr<quic::ClientTls>> load_tls(const std::string& server_name);
    void fatal(const std::string& message) noexcept;
    void on_connected(AddressWorker& w) noexcept;
    void on_disconnected() noexcept;
    // A Server-opened stream: a StreamSession takes it, or it is reset when the handler slots
    // are all taken.
    void accept_stream(quic::Stream& s) noexcept;
    // The session in `slot` ended: frees it.
    void stream_done(core::SlotId slot) noexcept;

    void on_signal(const signalfd_siginfo& info) noexcept override;

    ClientMetrics& metrics() noexcept { return metrics_; }
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
    // Starts (and opens) the AddressWorker for `hp`; nullptr after logging when no slot is free.
    std::unique_ptr<AddressWorker> make_worker(const config::HostPort& hp) noexcept;
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

    const config::LoadOptions options_;
    ConfigRef cfg_;
    obs::Logger& log_;
    std::unique_ptr<core::Worker> worker_;
    // Declared before the stream slab: terminating sessions use them until they are freed.
    std::unique_ptr<TerminateTls> terminate_tls_;
    TerminateCertsRef terminate_certs_;
    std::unique_ptr<net::Resolver> resolver_;
    std::unique_ptr<sys::Watchdog> watchdog_;
    std::unique_ptr<DailyCheck> expiry_check_;
    // Client ACME: the managers' hand-off to the loop, the board they publish challenges on,
    // and the managers (one per terminating hostname, for the whole process).
    std::unique_ptr<core::Mailbox> mailbox_;
    std::shared_ptr<acme::ChallengeBoard> acme_board_;
    std::vector<std::unique_ptr<acme::Manager>> acme_managers_;
    std::vector<std::string> acme_hostnames_;  // sorted: the hostnames with a manager
    // The configured Server addresses, and those a reload removed whose connection may still
    // serve (kept until exit: a retired worker is never re-dialled).
    std::vector<std::unique_ptr<AddressWorker>> workers_;
    std::vector<std::unique_ptr<AddressWorker>> retired_;
    std::unique_ptr<sys::RoleReload> reload_;
    std::unique_ptr<core::Slab<StreamSession>> streams_;
    std::mt19937_64 rng_{std::random_device{}()};
    obs::RateLimiter saturation_limiter_;
    ClientMetrics metrics_;
    std::unique_ptr<obs::HttpServer> metrics_http_;
    int64_t started_unix_ = 0;
    bool ready_logged_ = false;
    bool shutting_down_ = false;
    int exit_code_ = 0;
};

}  // namespace runewarp::client
