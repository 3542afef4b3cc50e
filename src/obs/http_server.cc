// HttpServer: accept, read bounded request heads, answer, keep alive or close — all as loop ops.
#include "obs/http_server.hh"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/clock.hh"

namespace runewarp::obs {

const char* http_status_text(int status) noexcept {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Internal Server Error";
    }
}

std::string http_response_text(const HttpResponse& r, bool head_only, bool keep_alive) {
    std::string out =
        "HTTP/1.1 " + std::to_string(r.status) + " " + http_status_text(r.status) + "\r\n";
    out += "Content-Type: " +
           (r.content_type.empty() ? std::string("text/plain; charset=utf-8") : r.content_type) +
           "\r\n";
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    out += "Cache-Control: no-store\r\n";
    out += "X-Content-Type-Options: nosniff\r\n";
    if (r.status == 405) out += "Allow: GET, HEAD\r\n";
    out += keep_alive ? "\r\n" : "Connection: close\r\n\r\n";
    if (!head_only) out += r.body;
    return out;
}

// The listening socket: multishot accept, re-armed after each final completion; errors back off
// 100 ms so descriptor exhaustion never spins the loop.
class HttpServer::Acceptor final : public core::Session {
public:
    Acceptor(core::Worker& w, HttpServer& owner, core::UniqueFd fd) noexcept
        : core::Session(w), owner_(owner), fd_(std::move(fd)) {}
    void start() noexcept { accept(kOpAccept, fd_.get(), true); }
    bool closed() const noexcept { return closed_; }

protected:
    void on_event(const core::Completion& c) noexcept override {
        if (c.token.op == kOpBackoff) {
            if (!aborting()) start();
            return;
        }
        if (c.result >= 0) {
            if (aborting()) {
                ::close(c.result);
                return;
            }
            owner_.on_accept(c.result);
        } else if (!aborting() && c.result != -ECANCELED && c.result != -EAGAIN &&
                   c.result != -EINTR && c.result != -ECONNABORTED) {
            if (c.more) worker().loop().cancel(token(kOpAccept));
            backing_off_ = true;
            arm_timer(kOpBackoff, core::now_ns() + 100'000'000);
            return;
        }
        if (!c.more && !aborting()) {
            if (backing_off_) {
                backing_off_ = false;
                return;  // the backoff timer re-arms
            }
            start();
        }
    }
    void on_quiesced() noexcept override {
        close_fd(fd_);
        closed_ = true;
    }

public:
    ~Acceptor() override = default;

private:
    enum Op : uint8_t { kOpAccept = 1, kOpBackoff = 2 };
    HttpServer& owner_;
    core::UniqueFd fd_;
    bool backing_off_ = false;
    bool closed_ = false;
};

// One client connection: read a head (bounded, 5 s from its first byte), answer, and either close
// or, when the request allows it, wait up to kIdleTimeoutNs for the next one on the same
// connection (Prometheus keeps its scrape connection open between scrapes).
class HttpServer::Conn final : public core::Session {
public:
    Conn(core::Worker& w, HttpServer& owner, int fd) noexcept
        : core::Session(w), owner_(owner), fd_(fd) {}
    ~Conn() override = default;

    void start() noexcept {
        deadline_ = arm_timer(kOpTimeout, core::now_ns() + kTimeoutNs);
        read_more();
    }
    void cut() noexcept { abort(1); }
    // Between requests with nothing buffered: may be closed to make room for a new connection.
    bool idle() const noexcept { return idle_ && !aborting(); }
    int64_t idle_since() const noexcept { return idle_since_; }

protected:
    void on_event(const core::Completion& c) noexcept override {
        if (aborting()) return;
        switch (c.token.op) {
            case kOpTimeout:
                return abort(idle_ ? 0 : 1);
            case kOpRecv:
                return on_read(c.result);
            case kOpSend:
                return on_sent(c.result);
            default:
                return;
        }
    }
    void on_quiesced() noexcept override {
        close_fd(fd_);
        owner_.on_conn_closed(this);  // destroys *this
    }

private:
    enum Op : uint8_t { kOpRecv = 1, kOpSend = 2, kOpTimeout = 3 };

    void read_more() noexcept {
        recv(kOpRecv, fd_.get(), buf_ + len_, static_cast<uint32_t>(sizeof buf_ - len_));
    }

    void set_deadline(int64_t in_ns) noexcept {
        const int64_t at = core::now_ns() + in_ns;
        if (worker().rearm_timer(deadline_, at)) return;
        try {
            deadline_ = arm_timer(kOpTimeout, at);
        } catch (...) {
            abort(1);
        }
    }

    void on_read(int result) noexcept {
        if (result == -EAGAIN || result == -EINTR) return read_more();
        // Closed between requests is the normal end of a kept-alive connection.
        if (result <= 0) return abort(idle_ && result == 0 ? 0 : 1);
        len_ += static_cast<size_t>(result);
        if (idle_) {
            idle_ = false;
            set_deadline(kTimeoutNs);
            if (aborting()) return;
        }
        handle_buffered();
    }

    void handle_buffered() noexcept {
        HttpRequest req;
        keep_alive_ = false;
        switch (parse_http_request(std::string_view(reinterpret_cast<char*>(buf_), len_), req)) {
            case HttpParse::kIncomplete:
                if (len_ < sizeof buf_) return read_more();
                return answer({431, {}, "request head too large\n"}, false);
            case HttpParse::kTooLarge:
                return answer({431, {}, "request head too large\n"}, false);
            case HttpParse::kBad:
                return answer({400, {}, "bad request\n"}, false);
            case HttpParse::kOk:
                break;
        }
        owner_.requests_++;
        consumed_ = req.head_length;
        const bool head = req.method == "HEAD";
        if (req.method != "GET" && !head) return answer({405, {}, "method not allowed\n"}, false);
        keep_alive_ = req.keep_alive && !owner_.stopping_;
        answer(owner_.handler_(req.path), head);
    }

    void answer(const HttpResponse& r, bool head_only) noexcept {
        try {
            out_ = http_response_text(r, head_only, keep_alive_);
        } catch (...) {
            return abort(1);
        }
        sent_ = 0;
        send_more();
    }

    void send_more() noexcept {
        send(kOpSend, fd_.get(), out_.data() + sent_,
             static_cast<uint32_t>(std::min<size_t>(out_.size() - sent_, 1u << 20)), MSG_NOSIGNAL);
    }

    void on_sent(int result) noexcept {
        if (result == -EAGAIN || result == -EINTR) return send_more();
        if (result <= 0) return abort(1);
        sent_ += static_cast<size_t>(result);
        if (sent_ < out_.size()) return send_more();
        if (!keep_alive_ || owner_.stopping_) {
            // Everything queued: FIN after the bytes, then close.
            (void)::shutdown(fd_.get(), SHUT_WR);
            worker().cancel_timer(deadline_);
            return abort(0);
        }
        // The next request: already buffered (pipelined), or wait for it.
        std::memmove(buf_, buf_ + consumed_, len_ - consumed_);
        len_ -= consumed_;
        consumed_ = 0;
        if (len_ > 0) {
            set_deadline(kTimeoutNs);
            if (!aborting()) handle_buffered();
            return;
        }
        idle_ = true;
        idle_since_ = core::now_ns();
        set_deadline(kIdleTimeoutNs);
        if (!aborting()) read_more();
    }

    HttpServer& owner_;
    core::UniqueFd fd_;
    core::TimerHandle deadline_{};
    uint8_t buf_[kMaxRequestHead];
    size_t len_ = 0;
    size_t consumed_ = 0;
    std::string out_;
    size_t sent_ = 0;
    int64_t idle_since_ = 0;
    bool keep_alive_ = false;
    bool idle_ = false;
};

HttpServer::HttpServer(core::Worker& w, core::UniqueFd listen_fd, HttpHandler handler)
    : worker_(w), handler_(std::move(handler)), bind_text_(socket_local_text(listen_fd.get())) {
    acceptor_ = std::make_unique<Acceptor>(w, *this, std::move(listen_fd));
}

HttpServer::~HttpServer() = default;

bool HttpServer::start() noexcept {
    if (!acceptor_->open()) return false;
    acceptor_->start();
    return true;
}

void HttpServer::stop() noexcept {
    if (stopping_) return;
    stopping_ = true;
    acceptor_->abort(0);
    // Copy: cut() only queues teardown, but be robust against the vector changing.
    std::vector<Conn*> live;
    for (auto& c : conns_) live.push_back(c.get());
    for (Conn* c : live) c->cut();
}

bool HttpServer::stopped() const noexcept {
    return acceptor_->closed() && conns_.empty();
}

void HttpServer::on_accept(int fd) noexcept {
    if (stopping_) {
        ::close(fd);
        return;
    }
    // Full: the connection idle the longest between requests makes room (its client reconnects);
    // with none idle the new one is refused. Bounded either way: a scraper that floods gets
    // refused, the loop is unharmed. Connections already closing do not count.
    size_t open_conns = 0;
    Conn* oldest = nullptr;
    for (auto& c : conns_) {
        if (c->aborting()) continue;
        ++open_conns;
        if (c->idle() && (oldest == nullptr || c->idle_since() < oldest->idle_since())) {
            oldest = c.get();
        }
    }
    if (open_conns >= kMaxConnections) {
        if (oldest == nullptr) {
            ::close(fd);
            return;
        }
        oldest->cut();
    }
    std::unique_ptr<Conn> c;
    try {
        c = std::make_unique<Conn>(worker_, *this, fd);
        conns_.reserve(2 * kMaxConnections);  // open ones plus those closing
    } catch (...) {
        ::close(fd);
        return;
    }
    if (!c->open()) return;  // no loop slot: the Conn's destructor closes the fd
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn* raw = c.get();
    conns_.push_back(std::move(c));
    raw->start();
}

void HttpServer::on_conn_closed(Conn* c) noexcept {
    auto it = std::find_if(conns_.begin(), conns_.end(),
                           [c](const std::unique_ptr<Conn>& p) { return p.get() == c; });
    if (it == conns_.end()) return;
    std::unique_ptr<Conn> gone = std::move(*it);
    *it = std::move(conns_.back());
    conns_.pop_back();
    // `gone` is destroyed here, as the last thing its on_quiesced() does.
}

Result<core::UniqueFd> bind_metrics_listener(const proto::Endpoint& ep) {
    sockaddr_storage ss{};
    socklen_t len = proto::to_sockaddr(ep, ss);
    std::string where =
        "failed to bind metrics.prometheus-bind-address " + proto::format_endpoint(ep);
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) return Error::sys(errno, where);
    core::UniqueFd owned(fd);
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) {
        int zero = 0;
        (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return Error::sys(errno, where);
    if (::listen(fd, 64) != 0) return Error::sys(errno, where);
    return owned;
}

std::string socket_local_text(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
    auto e = proto::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    return e ? proto::format_endpoint(*e) : "?";
}

}  // namespace runewarp::obs
