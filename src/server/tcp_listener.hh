// Listener: a listening TCP socket of the Server (public or readiness) with multishot accept and
// a backoff on transient accept errors; binding and the socket-address helpers listeners share.
#pragma once

#include <cstdint>
#include <string>

#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "proto/endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::server {

class Listener;

// Told about every accepted connection and the end of a listener.
class ListenerOwner {
public:
    virtual void on_accept(Listener& l, int fd) noexcept = 0;
    // A non-transient accept error: the listener is useless from now on.
    virtual void on_listener_fatal(Listener& l, int err) noexcept = 0;
    // The listener stopped and closed its socket.
    virtual void on_listener_closed(Listener& l) noexcept = 0;

protected:
    ~ListenerOwner() = default;
};

// Transient accept errors (fd exhaustion and friends) stop accepting and re-arm after a backoff
// of 10 ms doubling to 1 s, reset on the next success, so exhaustion never spins the loop. The
// `accept retrying` warning is written at most once per 10 s, then `accept recovered` once.
class Listener final : public core::Session {
public:
    enum class Kind : uint8_t { kPublic, kReadiness };
    // `group_limit`: the `accept retrying` rate limit shared by every listener of a group (one
    // line per 10 s for the group, not per worker); null: this listener's own.
    Listener(core::Worker& w, ListenerOwner& owner, obs::Logger& log, Kind kind, core::UniqueFd fd,
             std::string bind_text, obs::SharedRateLimiter* group_limit = nullptr) noexcept;
    void start() noexcept;
    void stop() noexcept { abort(0); }
    bool stopped() const noexcept { return closed_; }
    Kind kind() const noexcept { return kind_; }
    const std::string& bind_text() const noexcept { return bind_text_; }

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

private:
    enum Op : uint8_t { kOpAccept = 1, kOpBackoff = 2 };
    void arm_accept() noexcept;

    ListenerOwner& owner_;
    obs::Logger& log_;
    Kind kind_;
    core::UniqueFd fd_;
    std::string bind_text_;
    int64_t backoff_ns_ = 0;
    obs::RateLimiter retry_limit_;
    obs::SharedRateLimiter* group_limit_ = nullptr;
    bool accept_armed_ = false;
    bool closed_ = false;
};

// Binds and listens (SO_REUSEADDR; `[::]` is dual-stack). A failure names the config key:
// "failed to bind server.<key> <address>: <os error>". `reuseport`: SO_REUSEPORT, so more sockets
// bound to the same address form a group the kernel spreads new connections over.
Result<core::UniqueFd> bind_tcp(const proto::Endpoint& ep, const char* key, int backlog,
                                bool reuseport = false);

// The local address of a socket as text ("127.0.0.1:443", "[::1]:443"), "?" if unknown.
std::string local_text(int fd);

// An activated socket is used as it is; one that differs from the configured address (`key`)
// is worth a warning (`event`). Returns the socket's address.
std::string note_activated(obs::Logger& log, const char* event, int fd,
                           const proto::Endpoint& configured, const char* key);

}  // namespace runewarp::server
