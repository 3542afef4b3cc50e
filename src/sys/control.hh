// The daemon's control socket: an AF_UNIX SOCK_SEQPACKET listener (mode 0600) in the service's
// RuntimeDirectory through which `runewarp reload` asks the running daemon to reload and gets
// the outcome back. Peers must be root or the daemon's own user (SO_PEERCRED).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/worker.hh"
#include "obs/log.hh"
#include "runewarp/result.hh"
#include "sys/reload.hh"

namespace runewarp::sys {

// Where the control socket of `role` ("server" or "client") lives:
// $RUNTIME_DIRECTORY/control.sock when the service manager set RUNTIME_DIRECTORY (its first
// entry), else /run/runewarp-<role>/control.sock for root, else
// $XDG_RUNTIME_DIR/runewarp-<role>/control.sock;
// empty when none applies.
std::string control_socket_path(std::string_view role);

// Daemon side. `on_reload(config_path, reply)`: a peer asked for a reload of `config_path`
// (the file it validated; may be empty); `reply` must be called exactly once (later is fine).
// If the peer went away meanwhile, the reply is dropped.
using ControlReloadFn = std::function<void(const std::string& config_path, ReloadReply reply)>;

class ControlServer {
public:
    // Creates the socket at `path` (its directory is created 0700 when missing; a stale socket
    // file is replaced, a live one (another daemon answers on it) is an error) and serves it on
    // the Worker's loop.
    static Result<std::unique_ptr<ControlServer>> start(core::Worker& w, std::string path,
                                                        obs::Logger& log,
                                                        ControlReloadFn on_reload);
    virtual ~ControlServer() = default;
    // Loop thread: stops accepting, drops the peers (replies still owed are discarded), removes
    // the socket file. Safe to call more than once; the destructor of the implementation calls
    // it too.
    virtual void stop() noexcept = 0;
    virtual const std::string& path() const noexcept = 0;
    // Peers connected right now (tests).
    virtual size_t peers() const noexcept = 0;
};

// The wire format (one SOCK_SEQPACKET message each way):
//   request  "reload\n<config path>"
//   answer   "ok <generation>\n<notes>" or "failed <generation>\n<problems>"
std::string encode_reload_answer(const ReloadOutcome& o);
Result<ReloadOutcome> decode_reload_answer(std::string_view msg);

// `runewarp reload` side: sends the request for `config_path` and waits up to `timeout` for
// the daemon's outcome. Errors: no socket, connection refused, permission denied, timeout, a
// malformed answer (each a clear message naming the socket path).
Result<ReloadOutcome> request_reload(const std::string& socket_path, const std::string& config_path,
                                     std::chrono::milliseconds timeout);

}  // namespace runewarp::sys
