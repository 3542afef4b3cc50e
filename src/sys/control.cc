// The control socket: a listener session and one short-lived session per peer, both on the
// role's loop. A peer sends one request and gets one answer; nothing else is spoken.
#include "sys/control.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "core/clock.hh"
#include "core/file.hh"
#include "core/unique_fd.hh"

namespace runewarp::sys {

namespace {

constexpr size_t kMaxMessage = 64 * 1024;
constexpr int64_t kRequestDeadlineNs = 5'000'000'000;
constexpr std::string_view kReloadVerb = "reload\n";

Result<sockaddr_un> unix_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof a.sun_path)
        return Error::msg("control socket path too long or empty: " + path);
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

class ControlServerImpl;

// One connected peer: reads its request (5 s), hands it over, sends the answer, closes.
class Peer final : public core::Session {
public:
    Peer(core::Worker& w, ControlServerImpl& owner, core::UniqueFd fd, uint64_t key) noexcept
        : core::Session(w), owner_(owner), fd_(std::move(fd)), key_(key) {}
    void start() noexcept;
    void answer(const ReloadOutcome& o) noexcept;
    uint64_t key() const noexcept { return key_; }

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

private:
    static constexpr uint8_t kOpRecv = 1;
    static constexpr uint8_t kOpDeadline = 2;
    static constexpr uint8_t kOpHangup = 3;
    ControlServerImpl& owner_;
    core::UniqueFd fd_;
    uint64_t key_;
    core::TimerHandle deadline_{};
    bool deadline_armed_ = false;
    bool handed_over_ = false;
    std::string buf_;
};

class ControlServerImpl final : public ControlServer, public core::Session {
public:
    ControlServerImpl(core::Worker& w, std::string path, obs::Logger& log,
                      ControlReloadFn on_reload) noexcept
        : core::Session(w), path_(std::move(path)), log_(log), on_reload_(std::move(on_reload)) {}
    ~ControlServerImpl() override { stop(); }

    Result<void> bind_and_listen();
    void stop() noexcept override;
    const std::string& path() const noexcept override { return path_; }
    size_t peers() const noexcept override { return peers_.size(); }

    obs::Logger& log() noexcept { return log_; }
    void on_request(Peer& p, const std::string& config_path) noexcept;
    void on_peer_gone(Peer& p) noexcept;

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override { close_fd(fd_); }

private:
    static constexpr uint8_t kOpAccept = 1;
    bool peer_allowed(int fd) noexcept;

    std::string path_;
    obs::Logger& log_;
    ControlReloadFn on_reload_;
    core::UniqueFd fd_;
    // Peers by key: a reply closure finds its peer here, so one that went away in the
    // meantime is simply not found.
    std::unordered_map<uint64_t, std::unique_ptr<Peer>> peers_;
    uint64_t next_key_ = 0;
    bool listening_ = false;
    bool stopped_ = false;
    bool bound_ = false;
};

void Peer::start() noexcept {
    buf_.resize(kMaxMessage);
    recv(kOpRecv, fd_.get(), buf_.data(), static_cast<uint32_t>(buf_.size()));
    deadline_ = arm_timer(kOpDeadline, core::now_ns() + kRequestDeadlineNs);
    deadline_armed_ = true;
}

void Peer::on_event(const core::Completion& c) noexcept {
    if (aborting()) return;
    if (c.token.op == kOpDeadline) {
        deadline_armed_ = false;
        if (!handed_over_) {
            owner_.log().debug("control request dropped", {{"reason", "request-timeout"}});
            abort(0);
        }
        return;
    }
    if (c.token.op == kOpHangup) {
        abort(0);  // the peer left before its answer: the answer is dropped
        return;
    }
    if (c.token.op != kOpRecv) return;
    if (c.result <= 0) {
        // The peer left (or never spoke): whatever it was owed is dropped.
        abort(0);
        return;
    }
    std::string_view msg(buf_.data(), static_cast<size_t>(c.result));
    if (msg.substr(0, kReloadVerb.size()) != kReloadVerb) {
        answer(ReloadOutcome{false, 0, "unknown control request"});
        return;
    }
    std::string path(msg.substr(kReloadVerb.size()));
    buf_.clear();
    buf_.shrink_to_fit();
    handed_over_ = true;
    if (deadline_armed_) {
        worker().cancel_timer(deadline_);
        deadline_armed_ = false;
    }
    // Wait for the peer hanging up while the reload runs, so its slot goes at once.
    poll(kOpHangup, fd_.get(), POLLRDHUP);
    owner_.on_request(*this, path);
}

void Peer::answer(const ReloadOutcome& o) noexcept {
    if (aborting()) return;
    std::string msg = encode_reload_answer(o);
    // One small message on a fresh socket: it fits the send buffer, so it never blocks.
    (void)::send(fd_.get(), msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    abort(0);
}

void Peer::on_quiesced() noexcept {
    if (deadline_armed_) worker().cancel_timer(deadline_);
    close_fd(fd_);
    owner_.on_peer_gone(*this);
}

Result<void> ControlServerImpl::bind_and_listen() {
    auto addr = unix_address(path_);
    if (!addr) return std::move(addr).error();
    std::string dir = core::dir_of(path_);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return Error::sys(errno, "cannot create the control socket directory " + dir);

    // A socket file left by a daemon that died is replaced; one another daemon answers on is
    // not taken over.
    {
        core::UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        if (probe.valid() &&
            ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0)
            return Error::msg("control socket " + path_ + " is in use by another running daemon");
    }
    (void)::unlink(path_.c_str());

    fd_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_.valid()) return Error::sys(errno, "control socket");
    // Created with no access for anybody else from the start, then opened to the owner only.
    mode_t old = ::umask(0177);
    int rc = ::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
    int err = errno;
    ::umask(old);
    if (rc != 0) return Error::sys(err, "cannot bind the control socket " + path_);
    bound_ = true;
    if (::chmod(path_.c_str(), 0600) != 0) return Error::sys(errno, "chmod " + path_);
    if (::listen(fd_.get(), 16) != 0) return Error::sys(errno, "listen on " + path_);
    if (!open()) return Error::msg("event loop: no slot for the control socket");
    accept(kOpAccept, fd_.get(), true);
    listening_ = true;
    return {};
}

bool ControlServerImpl::peer_allowed(int fd) noexcept {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
    return cred.uid == 0 || cred.uid == ::geteuid();
}

void ControlServerImpl::on_event(const core::Completion& c) noexcept {
    if (c.token.op != kOpAccept) return;
    if (c.result < 0) {
        if (!aborting() && !c.more && c.result != -ECANCELED) accept(kOpAccept, fd_.get(), true);
        return;
    }
    core::UniqueFd fd(c.result);
    if (aborting() || stopped_) return;
    if (!c.more) accept(kOpAccept, fd_.get(), true);
    if (!peer_allowed(fd.get())) {
        log_.warn("control request refused", {{"reason", "peer-not-authorized"}},
                  "only root and the daemon's own user may use the control socket");
        return;
    }
    uint64_t key = ++next_key_;
    auto p = std::make_unique<Peer>(worker(), *this, std::move(fd), key);
    if (!p->open()) return;
    Peer& ref = *p;
    peers_.emplace(key, std::move(p));
    ref.start();
}

void ControlServerImpl::on_request(Peer& p, const std::string& config_path) noexcept {
    uint64_t key = p.key();
    on_reload_(config_path, [this, key](const ReloadOutcome& o) {
        auto it = peers_.find(key);
        if (it != peers_.end()) it->second->answer(o);
    });
}

void ControlServerImpl::on_peer_gone(Peer& p) noexcept {
    // Last thing the peer's on_quiesced does: nothing touches it afterwards.
    peers_.erase(p.key());
}

void ControlServerImpl::stop() noexcept {
    if (stopped_) return;
    stopped_ = true;
    if (listening_) abort(0);
    std::vector<Peer*> ps;
    for (auto& [k, p] : peers_) ps.push_back(p.get());
    for (Peer* p : ps) p->abort(0);
    if (bound_) (void)::unlink(path_.c_str());
}

}  // namespace

std::string control_socket_path(std::string_view role) {
    if (const char* rd = std::getenv("RUNTIME_DIRECTORY"); rd != nullptr && *rd != '\0') {
        std::string dir(rd);
        if (auto colon = dir.find(':'); colon != std::string::npos) dir.resize(colon);
        return dir + "/control.sock";
    }
    // The same directory the unit's RuntimeDirectory=runewarp-<role> names, so a shell
    // `runewarp reload` finds a daemon systemd started.
    if (::geteuid() == 0) return "/run/runewarp-" + std::string(role) + "/control.sock";
    if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0')
        return std::string(x) + "/runewarp-" + std::string(role) + "/control.sock";
    return {};
}

std::string encode_reload_answer(const ReloadOutcome& o) {
    std::string msg = o.ok ? "ok " : "failed ";
    msg += std::to_string(o.generation);
    msg.push_back('\n');
    msg += o.text.substr(0, kMaxMessage - 64);
    return msg;
}

Result<ReloadOutcome> decode_reload_answer(std::string_view msg) {
    ReloadOutcome o;
    size_t nl = msg.find('\n');
    std::string_view head = msg.substr(0, nl);
    std::string_view num;
    if (head.substr(0, 3) == "ok ") {
        o.ok = true;
        num = head.substr(3);
    } else if (head.substr(0, 7) == "failed ") {
        num = head.substr(7);
    } else {
        return Error::msg("malformed answer from the daemon");
    }
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), o.generation);
    if (ec != std::errc() || p != num.data() + num.size() || num.empty())
        return Error::msg("malformed answer from the daemon");
    if (nl != std::string_view::npos) o.text = std::string(msg.substr(nl + 1));
    return o;
}

Result<std::unique_ptr<ControlServer>> ControlServer::start(core::Worker& w, std::string path,
                                                            obs::Logger& log,
                                                            ControlReloadFn on_reload) {
    auto s = std::make_unique<ControlServerImpl>(w, std::move(path), log, std::move(on_reload));
    if (auto r = s->bind_and_listen(); !r) return std::move(r).error();
    return std::unique_ptr<ControlServer>(std::move(s));
}

Result<ReloadOutcome> request_reload(const std::string& socket_path, const std::string& config_path,
                                     std::chrono::milliseconds timeout) {
    auto addr = unix_address(socket_path);
    if (!addr) return std::move(addr).error();
    core::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Error::sys(errno, "socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
        int err = errno;
        if (err == ENOENT || err == ECONNREFUSED)
            return Error::msg("no running daemon answers on " + socket_path);
        return Error::sys(err, "cannot connect to " + socket_path);
    }
    std::string req(kReloadVerb);
    req += config_path;
    if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) < 0)
        return Error::sys(errno, "cannot send to " + socket_path);
    pollfd p{fd.get(), POLLIN, 0};
    int64_t deadline = core::now_ns() + static_cast<int64_t>(timeout.count()) * 1'000'000;
    for (;;) {
        int64_t left_ms = (deadline - core::now_ns()) / 1'000'000;
        if (left_ms <= 0)
            return Error::msg("the daemon did not answer within " +
                              std::to_string(timeout.count() / 1000) + " s");
        int n = ::poll(&p, 1, static_cast<int>(left_ms));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::sys(errno, "poll");
        if (n == 1) break;
    }
    std::string buf(kMaxMessage, '\0');
    ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n < 0) return Error::sys(errno, "cannot read the answer from " + socket_path);
    if (n == 0) return Error::msg("the daemon closed the control connection without answering");
    return decode_reload_answer(std::string_view(buf.data(), static_cast<size_t>(n)));
}

}  // namespace runewarp::sys
