// RoleReload: how both roles take reload requests — SIGHUP and the control socket feed one
// Reloader. The control socket is a convenience for `runewarp reload` (it returns the outcome);
// when it cannot be created (no runtime directory, another daemon holds it) the daemon warns and
// still reloads on SIGHUP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "runewarp/result.hh"
#include "sys/control.hh"
#include "sys/reload.hh"

namespace runewarp::sys {

class RoleReload {
public:
    // `role`: "server" or "client" (names the socket). `config_path`: the file the daemon
    // serves (empty for a CLI-only start); a control request naming another file is refused,
    // so a reload never applies a file the daemon does not run with.
    static Result<std::unique_ptr<RoleReload>> start(core::Worker& w, obs::Logger& log,
                                                     std::string_view role, std::string config_path,
                                                     Reloader::CheckFn check,
                                                     Reloader::ApplyFn apply,
                                                     Reloader::StatusFn status);
    ~RoleReload();

    // Loop thread: SIGHUP.
    void on_sighup() noexcept;
    // Loop thread, orderly shutdown: no reload starts any more, waiting requesters are answered,
    // the control socket goes away.
    void stop() noexcept;
    uint64_t generation() const noexcept { return reloader_->generation(); }
    bool last_reload_ok() const noexcept { return reloader_->last_ok(); }
    // Empty when the daemon runs without a control socket.
    std::string socket_path() const;

private:
    RoleReload(obs::Logger& log, std::string config_path) noexcept
        : log_(log), config_path_(std::move(config_path)) {}
    void on_request(const std::string& path, ReloadReply reply) noexcept;

    obs::Logger& log_;
    std::string config_path_;
    std::unique_ptr<Reloader> reloader_;
    std::unique_ptr<ControlServer> control_;
};

// The process logger's level and format from a validated config (startup, and every reload:
// log-level applies at once).
void configure_logging(config::LogLevel level, config::LogFormat format) noexcept;

// Whether `a` and `b` name the same existing file (same device and inode); false when either
// cannot be read.
bool same_file(const std::string& a, const std::string& b) noexcept;

}  // namespace runewarp::sys
