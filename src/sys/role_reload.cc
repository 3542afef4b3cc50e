// RoleReload: SIGHUP and the control socket in front of one Reloader.
#include "sys/role_reload.hh"

#include <sys/stat.h>

namespace runewarp::sys {

void configure_logging(config::LogLevel level, config::LogFormat format) noexcept {
    obs::Level l = obs::Level::kInfo;
    switch (level) {
        case config::LogLevel::kOff:
            l = obs::Level::kOff;
            break;
        case config::LogLevel::kError:
            l = obs::Level::kError;
            break;
        case config::LogLevel::kWarn:
            l = obs::Level::kWarn;
            break;
        case config::LogLevel::kInfo:
            l = obs::Level::kInfo;
            break;
        case config::LogLevel::kDebug:
        case config::LogLevel::kTrace:
            l = obs::Level::kDebug;
            break;  // trace equals debug
    }
    obs::configure_process_logger(
        l, format == config::LogFormat::kJson ? obs::Format::kJson : obs::Format::kText);
}

bool same_file(const std::string& a, const std::string& b) noexcept {
    struct stat sa {
    }, sb{};
    if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

Result<std::unique_ptr<RoleReload>> RoleReload::start(
    core::Worker& w, obs::Logger& log, std::string_view role, std::string config_path,
    Reloader::CheckFn check, Reloader::ApplyFn apply, Reloader::StatusFn status) {
    std::unique_ptr<RoleReload> rr(new RoleReload(log, std::move(config_path)));
    auto r = Reloader::create(w, log, std::move(check), std::move(apply), std::move(status));
    if (!r) return std::move(r).error();
    rr->reloader_ = std::move(*r);

    const std::string path = control_socket_path(role);
    const std::string event = std::string(role) + " control socket unavailable";
    if (path.empty()) {
        log.warn(event, {},
                 "no runtime directory (RUNTIME_DIRECTORY or XDG_RUNTIME_DIR); `runewarp reload` "
                 "cannot reach this daemon, SIGHUP still reloads");
        return rr;
    }
    RoleReload* self = rr.get();
    auto c = ControlServer::start(w, path, log, [self](const std::string& p, ReloadReply reply) {
        self->on_request(p, std::move(reply));
    });
    if (!c) {
        log.warn(event, {{"path", path}},
                 c.error().message +
                     "; `runewarp reload` cannot reach this daemon, SIGHUP still "
                     "reloads");
        return rr;
    }
    rr->control_ = std::move(*c);
    log.info(std::string(role) + " control socket ready", {{"path", path}});
    return rr;
}

RoleReload::~RoleReload() {
    stop();
}

void RoleReload::on_sighup() noexcept {
    reloader_->request({});
}

void RoleReload::on_request(const std::string& path, ReloadReply reply) noexcept {
    // An empty path asks for whatever the daemon serves.
    if (!path.empty() && path != config_path_ && !same_file(path, config_path_)) {
        std::string text = config_path_.empty()
                               ? "this daemon was started without a config file; " + path +
                                     " is not its configuration"
                               : "this daemon serves " + config_path_ + ", not " + path;
        reply(ReloadOutcome{false, reloader_->generation(), std::move(text)});
        return;
    }
    reloader_->request(std::move(reply));
}

void RoleReload::stop() noexcept {
    if (reloader_ != nullptr) reloader_->shutdown();
    if (control_ != nullptr) control_->stop();
}

std::string RoleReload::socket_path() const {
    return control_ != nullptr ? control_->path() : std::string();
}

}  // namespace runewarp::sys
