// ClientShard: one worker's share of the Client — its event loop, its resolver, one AddressWorker
// (one Tunnel connection) per Server address, and the stream sessions of the streams the Server
// opens on those connections. Shard 0 runs on the main thread beside signals, reload, ACME and
// the metrics listener; shards 1..N-1 run on threads of their own. Nothing is shared between
// shards but the process-wide parts the instance owns (logger, counters, terminate TLS settings,
// the ACME challenge board, the stream-handler budget) and the immutable snapshots each shard
// holds.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client/client_metrics.hh"
#include "client/reload_plan.hh"
#include "client/terminate_tls.hh"
#include "config/config.hh"
#include "core/mailbox.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "net/resolver.hh"
#include "obs/log.hh"
#include "quic/connection.hh"
#include "quic/tls.hh"
#include "runewarp/result.hh"

namespace runewarp::acme {
class ChallengeBoard;
}

namespace runewarp::client {

class AddressWorker;
class ClientInstance;
class StreamSession;

using ConfigRef = std::shared_ptr<const config::ClientConfig>;

// The short cause of a nested error for operator lines: the text before the first ": " (the
// whole chain goes to a DEBUG "... detail" line).
std::string short_cause(const std::string& s);

// Service label and Server address -> its counters in the process's ClientMetrics. Built on the
// main thread after a configuration's labels were added, then read-only: shards look counters up
// here, never in the metrics' own (growing) index.
struct ClientLabelCounts {
    obs::LabelLookup<ServiceCounts> services;
    obs::LabelLookup<ServerAddressCounts> servers;
    static std::shared_ptr<const ClientLabelCounts> build(ClientMetrics& m) {
        return std::make_shared<const ClientLabelCounts>(
            ClientLabelCounts{obs::LabelLookup<ServiceCounts>(m.services),
                              obs::LabelLookup<ServerAddressCounts>(m.servers)});
    }
};

// What a shard's new streams and connections start under; replaced as a whole by a reload (and
// by an ACME certificate).
struct ClientSnapshot {
    ConfigRef cfg;
    TerminateCertsRef certs;
    std::shared_ptr<const ClientLabelCounts> counts;
};

// One Server address as one shard sees it, for /metrics and /status.json.
struct AddressView {
    std::string address;
    bool connected = false;
    bool configured = true;
    std::string remote;
    bool has_rtt = false;
    double rtt_seconds = 0;
    uint64_t cwnd = 0;
    uint32_t connections = 0;  // merged view: authenticated connections over every worker
};

class ClientShard {
public:
    ClientShard(ClientInstance& inst, uint32_t index) noexcept;
    ~ClientShard();
    ClientShard(const ClientShard&) = delete;
    ClientShard& operator=(const ClientShard&) = delete;

    uint32_t index() const noexcept { return index_; }

    // Shard 0: builds its parts on the main thread's worker.
    Result<void> setup_primary(core::Worker& w, ClientSnapshot snap);
    // Shards 1..N-1: starts the thread, which creates its own loop (an io_uring is used by the
    // thread that created it) and parts; returns once they exist or failed.
    Result<void> start_thread(const core::WorkerOptions& wo, ClientSnapshot snap);
    // Runs `fn` on this shard's loop thread (any thread may call; dropped once stopped).
    void post(std::function<void()> fn);
    // Joins the thread of shards 1..N-1 (main thread, after their stop was posted).
    void join() noexcept;

    // --- on this shard's loop thread -----------------------------------------------------------
    // Starts dialling every configured Server address (their AddressWorkers exist since setup).
    void start_addresses() noexcept;
    // Shutdown: stop dialling, close every connection (application 0), stop the resolver. On
    // shards 1..N-1 the loop then lets the CONNECTION_CLOSE frames leave and the thread ends.
    void stop() noexcept;
    // A reload: the new snapshot for new streams and connections, then the Server address
    // diff (retire removed addresses, take back draining ones, dial added ones). Error when an
    // added address found no slot (the snapshot applies all the same).
    Result<void> apply(ClientSnapshot snap, const AddressDiff& diff) noexcept;
    void set_certs(TerminateCertsRef certs) noexcept { snap_.certs = std::move(certs); }
    // This shard's Server addresses (configured, and retired ones still connected).
    void collect(std::vector<AddressView>& out) const;
    // The Server addresses this shard dials (shard 0 is the reference for reload diffs).
    std::vector<std::string> address_texts() const;
    // Whether some address worker of a retired address still serves `text`.
    bool draining(const std::string& text) const;

    // --- for AddressWorker and StreamSession (this shard's loop thread) -------------------------
    obs::Logger& log() noexcept;
    const config::ClientConfig& cfg() const noexcept { return *snap_.cfg; }
    const ConfigRef& config_snapshot() const noexcept { return snap_.cfg; }
    const TerminateCertsRef& terminate_certs() const noexcept { return snap_.certs; }
    ServiceCounts* service_counts(std::string_view label) const noexcept {
        return snap_.counts != nullptr ? snap_.counts->services.find(label) : nullptr;
    }
    ServerAddressCounts* server_counts(std::string_view address) const noexcept {
        return snap_.counts != nullptr ? snap_.counts->servers.find(address) : nullptr;
    }
    ClientMetrics& metrics() noexcept;
    const TerminateTls* terminate_tls() const noexcept;
    const acme::ChallengeBoard* acme_board() const noexcept;
    core::Worker& worker() noexcept { return *worker_; }
    // nullptr once shutdown began.
    net::Resolver* resolver() noexcept { return stopping_ ? nullptr : resolver_.get(); }
    uint64_t random() noexcept { return rng_(); }
    Result<std::unique_ptr<quic::ClientTls>> load_tls(const std::string& server_name);
    // Local material failed: the whole Client stops (exit 1).
    void fatal(const std::string& message) noexcept;
    void on_connected(AddressWorker& w) noexcept;
    void on_disconnected(AddressWorker& w) noexcept;
    // A Server-opened stream: a StreamSession takes it, or it is reset when the process's
    // handler budget is spent.
    void accept_stream(quic::Stream& s) noexcept;
    // The session in `slot` ended: frees it.
    void stream_done(core::SlotId slot) noexcept;

private:
    Result<void> setup(ClientSnapshot snap);
    void thread_main(core::WorkerOptions wo, ClientSnapshot snap) noexcept;
    std::unique_ptr<AddressWorker> make_worker(const config::HostPort& hp) noexcept;
    void teardown() noexcept;

    ClientInstance& inst_;
    const uint32_t index_;
    core::Worker* worker_ = nullptr;
    std::unique_ptr<core::Worker> own_worker_;  // shards 1..N-1
    std::unique_ptr<core::Mailbox> mailbox_;
    std::unique_ptr<net::Resolver> resolver_;
    ClientSnapshot snap_;
    // The configured Server addresses, and those a reload removed whose connection may still
    // serve (kept until exit: a retired worker is never re-dialled).
    std::vector<std::unique_ptr<AddressWorker>> workers_;
    std::vector<std::unique_ptr<AddressWorker>> retired_;
    std::unique_ptr<core::Slab<StreamSession>> streams_;
    std::mt19937_64 rng_{std::random_device{}()};
    bool stopping_ = false;

    // The thread of shards 1..N-1.
    std::thread thread_;
    bool stop_ = false;  // loop thread only
    std::mutex start_mu_;
    std::condition_variable start_cv_;
    bool started_ = false;
    std::string start_error_;
};

}  // namespace runewarp::client
