// Listener: a listening TCP socket with multishot accept and transient-error backoff; bind_tcp.
#include "server/tcp_listener.hh"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/clock.hh"

namespace runewarp::server {

namespace {

constexpr int64_t kBackoffMinNs = 10'000'000;     // 10 ms
constexpr int64_t kBackoffMaxNs = 1'000'000'000;  // 1 s

// Errors after which accepting may work again later; any other one is fatal.
bool transient_accept_error(int err) noexcept {
    switch (err) {
        case EINTR:
        case EAGAIN:
        case ECONNABORTED:
        case ECONNRESET:
        case ETIMEDOUT:
        case ENOMEM:
        case ENFILE:
        case EMFILE:
        case ENOBUFS:
            return true;
        default:
            return false;
    }
}

}  // namespace

Listener::Listener(core::Worker& w, ListenerOwner& owner, obs::Logger& log, Kind kind,
                   core::UniqueFd fd, std::string bind_text,
                   obs::SharedRateLimiter* group_limit) noexcept
    : core::Session(w),
      owner_(owner),
      log_(log),
      kind_(kind),
      fd_(std::move(fd)),
      bind_text_(std::move(bind_text)),
      group_limit_(group_limit) {}

void Listener::start() noexcept {
    arm_accept();
}

void Listener::arm_accept() noexcept {
    accept_armed_ = true;
    accept(kOpAccept, fd_.get(), true);
}

void Listener::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpBackoff) {
        if (!aborting()) arm_accept();
        return;
    }
    if (c.token.op != kOpAccept) return;
    if (!c.more) accept_armed_ = false;
    if (c.result >= 0) {
        if (aborting()) {
            ::close(c.result);  // a connection that raced the stop: refuse it
            return;
        }
        backoff_ns_ = 0;
        if (group_limit_ != nullptr ? group_limit_->on_success() : retry_limit_.on_success())
            log_.info("server public listener accept recovered");
        owner_.on_accept(*this, c.result);
    } else if (!aborting() && c.result != -ECANCELED) {
        int err = -c.result;
        if (!transient_accept_error(err)) return owner_.on_listener_fatal(*this, err);
        if (err != EAGAIN && err != EINTR) {
            // fd exhaustion and friends: back off instead of spinning.
            backoff_ns_ =
                backoff_ns_ == 0 ? kBackoffMinNs : std::min(backoff_ns_ * 2, kBackoffMaxNs);
            if (accept_armed_) {
                worker().loop().cancel(token(kOpAccept));
            }
            // While exhaustion lasts this repeats every second: one line per 10 s, with the
            // number of retries since the last one.
            if (auto d = group_limit_ != nullptr ? group_limit_->on_saturated()
                                                 : retry_limit_.on_saturated();
                d.log) {
                log_.warn("server public listener accept retrying",
                          {{"next-retry-delay", std::chrono::milliseconds(backoff_ns_ / 1'000'000)},
                           {"count", d.count}},
                          std::strerror(err));
            }
            arm_timer(kOpBackoff, core::now_ns() + backoff_ns_);
            return;
        }
    }
    if (!c.more && !aborting() && backoff_ns_ == 0) arm_accept();
}

void Listener::on_quiesced() noexcept {
    close_fd(fd_);
    closed_ = true;
    owner_.on_listener_closed(*this);
}

Result<core::UniqueFd> bind_tcp(const proto::Endpoint& ep, const char* key, int backlog,
                                bool reuseport) {
    sockaddr_storage ss{};
    socklen_t len = proto::to_sockaddr(ep, ss);
    std::string where =
        std::string("failed to bind server.") + key + " " + proto::format_endpoint(ep);
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) return Error::sys(errno, where);
    core::UniqueFd owned(fd);
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        return Error::sys(errno, where);
    if (ss.ss_family == AF_INET6) {
        // `[::]` is dual-stack: IPv4 Visitors arrive as ::ffff:a.b.c.d and are unmapped later.
        int zero = 0;
        (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return Error::sys(errno, where);
    if (::listen(fd, backlog) != 0) return Error::sys(errno, where);
    return owned;
}

std::string local_text(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
    auto e = proto::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    return e ? proto::format_endpoint(*e) : "?";
}

std::string note_activated(obs::Logger& log, const char* event, int fd,
                           const proto::Endpoint& configured, const char* key) {
    std::string got = local_text(fd);
    std::string want = proto::format_endpoint(configured);
    if (got != want) {
        log.warn(event, {{"bind-address", got}, {"configured", want}},
                 std::string("the activated socket differs from server.") + key);
    }
    return got;
}

}  // namespace runewarp::server
