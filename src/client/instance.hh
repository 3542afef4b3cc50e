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

#include "client/terminate_tls.hh"
#include "config/config.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "net/resolver.hh"
#include "obs/log.hh"
#include "quic/connection.hh"
#include "quic/tls.hh"
#include "runewarp/result.hh"
#include "sys/watchdog.hh"

namespace runewarp::client {

class AddressWorker;
class StreamSession;

// The short cause of a nested error for operator lines: the text before the first ": " (the
// whole chain goes to a DEBUG "... detail" line).
std::string short_cause(const std::string& s);

class ClientInstance final : public core::SignalListener {
public:
    ClientInstance(const config::ClientConfig& cfg, obs::Logger& log);
    ~ClientInstance();
    int run(const std::vector<trust::PublicCertMaterial>& terminate_certs) noexcept;

    obs::Logger& log() noexcept { return log_; }
    const config::ClientConfig& cfg() const noexcept { return cfg_; }
    core::Worker& worker() noexcept { return *worker_; }
    // nullptr once shutdown began.
    net::Resolver* resolver() noexcept { return shutting_down_ ? nullptr : resolver_.get(); }
    uint64_t random() noexcept { return rng_(); }
    bool shutting_down() const noexcept { return shutting_down_; }
    // Terminate mode: the certificates now (each stream keeps the snapshot it started with)
    // and the process-wide session settings (null when no Service terminates).
    const TerminateCertsRef& terminate_certs() const noexcept { return terminate_certs_; }
    const TerminateTls* terminate_tls() const noexcept { return terminate_tls_.get(); }

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

private:
    void begin_shutdown() noexcept;
    // SIGHUP: re-reads every terminating hostname's certificate. One that loads replaces the
    // old; one whose files are gone is dropped (its streams fail closed); one that exists but
    // does not load keeps the previous certificate, with an ERROR.
    void reload_terminate_certs() noexcept;
    void update_status() noexcept;

    const config::ClientConfig& cfg_;
    obs::Logger& log_;
    std::unique_ptr<core::Worker> worker_;
    // Declared before the stream slab: terminating sessions use them until they are freed.
    std::unique_ptr<TerminateTls> terminate_tls_;
    TerminateCertsRef terminate_certs_;
    std::unique_ptr<net::Resolver> resolver_;
    std::unique_ptr<sys::Watchdog> watchdog_;
    std::vector<std::unique_ptr<AddressWorker>> workers_;
    std::unique_ptr<core::Slab<StreamSession>> streams_;
    std::mt19937_64 rng_{std::random_device{}()};
    obs::RateLimiter saturation_limiter_;
    unsigned connected_count_ = 0;
    bool ready_logged_ = false;
    bool shutting_down_ = false;
    int exit_code_ = 0;
};

}  // namespace runewarp::client
