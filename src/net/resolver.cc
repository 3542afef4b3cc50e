// Resolver: DNS on the event loop with c-ares (sockets polled by the loop, no threads).
#include "net/resolver.hh"

#include <ares.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>

namespace runewarp::net {

struct Resolver::Request {
    Resolver* self;
    uint64_t id;
};

struct Hooks {
    static ares_socket_t open(int family, int type, int protocol, void* user) {
        return static_cast<Resolver*>(user)->open_socket(family, type, protocol);
    }
    static int close(ares_socket_t fd, void* user) {
        return static_cast<Resolver*>(user)->close_socket(fd);
    }
    static int connect(ares_socket_t fd, const sockaddr* sa, ares_socklen_t len, void*) {
        return ::connect(fd, sa, len);
    }
    static ares_ssize_t recvfrom(ares_socket_t fd, void* buf, size_t len, int flags, sockaddr* from,
                                 ares_socklen_t* fromlen, void*) {
        return ::recvfrom(fd, buf, len, flags, from, fromlen);
    }
    static ares_ssize_t sendv(ares_socket_t fd, const iovec* iov, int iovcnt, void*) {
        msghdr m{};
        m.msg_iov = const_cast<iovec*>(iov);
        m.msg_iovlen = static_cast<size_t>(iovcnt);
        return ::sendmsg(fd, &m, MSG_NOSIGNAL);
    }
    static void sock_state(void* user, ares_socket_t fd, int readable, int writable) {
        static_cast<Resolver*>(user)->on_sock_state(fd, readable != 0, writable != 0);
    }
    static void answer(void* arg, int status, int timeouts, ares_addrinfo* result) {
        // c-ares hands back the request it was given: ownership returns here, exactly once.
        std::unique_ptr<Resolver::Request> req(static_cast<Resolver::Request*>(arg));
        req->self->on_answer(*req, status, timeouts, result);
    }
};

namespace {

const ares_socket_functions kSocketFunctions = {
    Hooks::open, Hooks::close, Hooks::connect, Hooks::recvfrom, Hooks::sendv,
};

std::once_flag g_ares_init;
int g_ares_init_status = ARES_SUCCESS;

ares_channel chan(void* p) noexcept {
    return static_cast<ares_channel>(p);
}

}  // namespace

Result<std::unique_ptr<Resolver>> Resolver::create(core::Worker& w, const ResolverOptions& opts) {
    std::call_once(g_ares_init, [] { g_ares_init_status = ares_library_init(ARES_LIB_INIT_ALL); });
    if (g_ares_init_status != ARES_SUCCESS)
        return Error::msg(std::string("c-ares: ") + ares_strerror(g_ares_init_status));
    std::unique_ptr<Resolver> r(new Resolver(w));
    if (!r->open()) return Error::msg("resolver: no handler slot");
    r->socks_.reserve(kMaxSockets);
    ares_options o{};
    o.sock_state_cb = Hooks::sock_state;
    o.sock_state_cb_data = r.get();
    o.timeout = opts.timeout_ms;
    o.tries = opts.tries;
    ares_channel ch = nullptr;
    int rc =
        ares_init_options(&ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        r->abort(0);
        return Error::msg(std::string("c-ares: ") + ares_strerror(rc));
    }
    r->channel_ = ch;
    ares_set_socket_functions(ch, &kSocketFunctions, r.get());
    if (!opts.servers.empty()) {
        rc = ares_set_servers_ports_csv(ch, opts.servers.c_str());
        if (rc != ARES_SUCCESS) {
            r->abort(0);
            return Error::msg(std::string("c-ares: name servers '") + opts.servers +
                              "': " + ares_strerror(rc));
        }
    }
    return r;
}

Resolver::~Resolver() {
    if (channel_ != nullptr) {
        in_shutdown_ = true;
        ares_destroy(chan(channel_));
        channel_ = nullptr;
    }
    // Only reached with ops in flight when the Worker itself is going away.
    for (Sock& s : socks_) {
        if (s.fd >= 0) ::close(s.fd);
    }
}

uint64_t Resolver::resolve(const std::string& host, uint16_t port, int socktype,
                           ResolveListener& l) {
    uint64_t id = next_id_++;
    pending_[id] = &l;
    if (channel_ == nullptr || aborting()) {
        Resolution r;
        r.error = "resolver stopped";
        done_.emplace_back(id, std::move(r));
        deliver();
        return id;
    }
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    std::string service = std::to_string(port);
    auto req = std::make_unique<Request>(Request{this, id});
    // c-ares may answer at once (numeric host, /etc/hosts): on_answer queues the result, and
    // the listener hears of it from the loop, after resolve() returned the id.
    ares_getaddrinfo(chan(channel_), host.c_str(), service.c_str(), &hints, Hooks::answer,
                     req.release());
    update_timer();
    return id;
}

void Resolver::cancel(uint64_t id) noexcept {
    pending_.erase(id);
}

void Resolver::on_answer(const Request& req, int status, int, void* result) noexcept {
    auto* ai = static_cast<ares_addrinfo*>(result);
    uint64_t id = req.id;
    Resolution r;
    if (status != ARES_SUCCESS) {
        r.error = ares_strerror(status);
    } else {
        int min_ttl = INT_MAX;
        for (ares_addrinfo_node* n = ai != nullptr ? ai->nodes : nullptr; n != nullptr;
             n = n->ai_next) {
            if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
            if (n->ai_addrlen > sizeof(sockaddr_storage)) continue;
            ResolvedAddress a;
            std::memcpy(&a.addr, n->ai_addr, n->ai_addrlen);
            a.len = n->ai_addrlen;
            r.addrs.push_back(a);
            min_ttl = std::min(min_ttl, std::max(n->ai_ttl, 0));
        }
        if (r.addrs.empty()) {
            r.error = "no IPv4 or IPv6 address";
        } else {
            r.ttl_ns = static_cast<int64_t>(min_ttl) * core::kNsPerSec;
        }
    }
    if (ai != nullptr) ares_freeaddrinfo(ai);
    if (in_shutdown_) return;
    done_.emplace_back(id, std::move(r));
    deliver();
}

// Results reach listeners from a zero-delay timer: never from inside resolve() or from deep
// inside c-ares, so a listener may start or cancel lookups freely.
void Resolver::deliver() noexcept {
    if (deliver_armed_ || aborting()) return;
    deliver_armed_ = true;
    arm_timer(kOpDeliver, core::now_ns());
}

int Resolver::open_socket(int family, int type, int protocol) noexcept {
    size_t idx = socks_.size();
    for (size_t i = 0; i < socks_.size(); ++i) {
        if (socks_[i].fd < 0) {
            idx = i;
            break;
        }
    }
    if (idx >= kMaxSockets) {
        errno = EMFILE;
        return ARES_SOCKET_BAD;
    }
    int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) return ARES_SOCKET_BAD;
    if (idx == socks_.size()) socks_.emplace_back();
    socks_[idx] = Sock{};
    socks_[idx].fd = fd;
    return fd;
}

Resolver::Sock* Resolver::find(int fd) noexcept {
    for (Sock& s : socks_) {
        if (s.fd == fd && !s.closing) return &s;
    }
    return nullptr;
}

int Resolver::close_socket(int fd) noexcept {
    Sock* s = find(fd);
    if (s == nullptr) return ::close(fd);
    s->want_read = s->want_write = false;
    if (!s->read_armed && !s->write_armed) {
        worker().loop().close(fd);
        *s = Sock{};
        return 0;
    }
    s->closing = true;
    size_t idx = static_cast<size_t>(s - socks_.data());
    if (s->read_armed) worker().loop().cancel(token(static_cast<uint8_t>(kOpSockBase + 2 * idx)));
    if (s->write_armed)
        worker().loop().cancel(token(static_cast<uint8_t>(kOpSockBase + 2 * idx + 1)));
    return 0;
}

void Resolver::on_sock_state(int fd, bool readable, bool writable) noexcept {
    Sock* s = find(fd);
    if (s == nullptr) return;
    s->want_read = readable;
    s->want_write = writable;
    arm_polls(static_cast<size_t>(s - socks_.data()));
}

void Resolver::arm_polls(size_t idx) noexcept {
    Sock& s = socks_[idx];
    if (aborting() || s.closing || s.fd < 0) return;
    if (s.want_read && !s.read_armed) {
        s.read_armed = true;
        poll(static_cast<uint8_t>(kOpSockBase + 2 * idx), s.fd, POLLIN);
    }
    if (s.want_write && !s.write_armed) {
        s.write_armed = true;
        poll(static_cast<uint8_t>(kOpSockBase + 2 * idx + 1), s.fd, POLLOUT);
    }
}

void Resolver::update_timer() noexcept {
    if (channel_ == nullptr || aborting()) return;
    timeval tv{};
    timeval* t = ares_timeout(chan(channel_), nullptr, &tv);
    if (t == nullptr) {
        if (timer_armed_) {
            worker().cancel_timer(timer_);
            timer_armed_ = false;
        }
        return;
    }
    int64_t deadline = core::now_ns() + static_cast<int64_t>(t->tv_sec) * core::kNsPerSec +
                       static_cast<int64_t>(t->tv_usec) * 1000;
    if (timer_armed_ && worker().rearm_timer(timer_, deadline)) return;
    timer_ = arm_timer(kOpTimer, deadline);
    timer_armed_ = true;
}

void Resolver::on_event(const core::Completion& c) noexcept {
    if (c.flags & core::kCompletionTimer) {
        if (c.token.op == kOpDeliver) {
            deliver_armed_ = false;
            std::vector<std::pair<uint64_t, Resolution>> batch;
            batch.swap(done_);
            for (auto& [id, r] : batch) {
                auto it = pending_.find(id);
                if (it == pending_.end()) continue;
                ResolveListener* l = it->second;
                pending_.erase(it);
                l->on_resolved(id, r);
                if (aborting()) return;
            }
            return;
        }
        if (c.token.op == kOpTimer) {
            timer_armed_ = false;
            if (channel_ != nullptr)
                ares_process_fd(chan(channel_), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            update_timer();
        }
        return;
    }
    if (c.token.op < kOpSockBase) return;
    size_t idx = (c.token.op - kOpSockBase) / 2;
    bool write = ((c.token.op - kOpSockBase) % 2) == 1;
    if (idx >= socks_.size()) return;
    Sock& s = socks_[idx];
    (write ? s.write_armed : s.read_armed) = false;
    if (s.closing) {
        if (!s.read_armed && !s.write_armed) {
            worker().loop().close(s.fd);
            s = Sock{};
        }
        return;
    }
    if (aborting() || channel_ == nullptr || s.fd < 0) return;
    int fd = s.fd;
    if (c.result >= 0) {
        ares_process_fd(chan(channel_), write ? ARES_SOCKET_BAD : fd, write ? fd : ARES_SOCKET_BAD);
    }
    // c-ares may have closed (or closed and reopened) sockets meanwhile: look again.
    if (Sock* again = find(fd)) arm_polls(static_cast<size_t>(again - socks_.data()));
    update_timer();
}

void Resolver::shutdown() noexcept {
    if (in_shutdown_) return;
    in_shutdown_ = true;
    pending_.clear();
    done_.clear();
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (channel_ != nullptr) {
        // Answers every outstanding lookup with ARES_EDESTRUCTION (ignored) and closes the
        // sockets through close_socket().
        ares_destroy(chan(channel_));
        channel_ = nullptr;
    }
    abort(0);
}

void Resolver::on_quiesced() noexcept {
    for (Sock& s : socks_) {
        if (s.fd >= 0) worker().loop().close(s.fd);
        s = Sock{};
    }
    quiesced_ = true;
}

}  // namespace runewarp::net
