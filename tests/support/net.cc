// Loopback networking for end-to-end tests: free ports, connecting, waiting for listeners, and
// raw Visitors that send arbitrary bytes and report how the peer reacted.
#include "tests/support/net.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <utility>

namespace runewarp::test {
namespace {

using Clock = std::chrono::steady_clock;

struct Addr {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

Addr make_addr(const std::string& addr, std::uint16_t port) {
    Addr a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    std::string host = addr;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a.len = sizeof(sockaddr_in6);
    } else {
        throw std::runtime_error("not an IP literal: " + addr);
    }
    return a;
}

bool can_bind(const std::string& host, std::uint16_t port, int type) {
    Addr a = make_addr(host, port);
    int fd = ::socket(a.ss.ss_family, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a.ss), a.len) == 0;
    ::close(fd);
    return ok;
}

Millis remaining(Clock::time_point end) {
    return std::max(Millis{0}, std::chrono::duration_cast<Millis>(end - Clock::now()));
}

}  // namespace

// Claims `port` among the test processes of this machine (of its network namespace): an
// abstract unix socket named after the port. Kept open, the claim lasts until this process exits,
// however it ends. free_port() checks that a port is free and hands it out, the bind that uses it
// comes later (from this process or a daemon it starts): without the claim, a test process
// running alongside could check and hand out the same port in between. Invalid when another
// process (or this one, earlier) holds the claim.
Fd claim_port(std::uint16_t port) {
    Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return fd;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string name = "runewarp-test-port-" + std::to_string(port);
    std::memcpy(a.sun_path + 1, name.data(), name.size());  // sun_path[0] is 0: abstract
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
        const int err = errno;
        fd.reset();
        errno = err;
    }
    return fd;
}

std::string loopback(Family f) {
    return f == Family::kV4 ? "127.0.0.1" : "::1";
}

std::string host_port(std::string_view addr, std::uint16_t port) {
    std::string a(addr);
    if (a.find(':') != std::string::npos && a.front() != '[') a = "[" + a + "]";
    return a + ":" + std::to_string(port);
}

std::uint16_t free_port(Family f) {
    static std::mutex m;
    static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
    std::lock_guard lock(m);
    std::uniform_int_distribution<int> dist(20000, 32767);
    const std::string host = loopback(f);
    for (int attempt = 0; attempt < 10000; ++attempt) {
        auto port = static_cast<std::uint16_t>(dist(rng));
        // Claimed before the checks, so that no other test process checks it meanwhile; a port
        // this process handed out before is claimed already.
        Fd claim = claim_port(port);
        if (!claim.valid()) continue;
        if (can_bind(host, port, SOCK_STREAM) && can_bind(host, port, SOCK_DGRAM)) {
            (void)claim.release();  // held until the process exits
            return port;
        }
    }
    throw std::runtime_error("no free loopback port found");
}

Fd& Fd::operator=(Fd&& o) noexcept {
    if (this != &o) {
        reset();
        fd_ = o.release();
    }
    return *this;
}
Fd::~Fd() {
    reset();
}
int Fd::release() {
    return std::exchange(fd_, -1);
}
void Fd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

Fd tcp_connect(const std::string& addr, std::uint16_t port, Millis deadline, int* err) {
    return tcp_connect_from({}, addr, port, deadline, err);
}

Fd tcp_connect_from(const std::string& source, const std::string& addr, std::uint16_t port,
                    Millis deadline, int* err) {
    Addr a = make_addr(addr, port);
    Fd fd(::socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    auto fail = [&](int e) {
        if (err) *err = e;
        return Fd{};
    };
    if (!fd.valid()) return fail(errno);
    if (!source.empty()) {
        // The port is chosen at connect time, per destination: many sockets fit one source.
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        Addr s = make_addr(source, 0);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&s.ss), s.len) != 0) return fail(errno);
    }
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
        if (errno != EINPROGRESS) return fail(errno);
        pollfd p{fd.get(), POLLOUT, 0};
        int r;
        do {
            r = ::poll(&p, 1, static_cast<int>(deadline.count()));
        } while (r < 0 && errno == EINTR);
        if (r == 0) return fail(ETIMEDOUT);
        int so = 0;
        socklen_t sl = sizeof so;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so, &sl);
        if (so != 0) return fail(so);
    }
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (err) *err = 0;
    return fd;
}

bool tcp_accepting(const std::string& addr, std::uint16_t port) {
    return tcp_connect(addr, port, Millis{500}).valid();
}

bool wait_tcp_accepting(const std::string& addr, std::uint16_t port, Millis deadline) {
    return wait_until([&] { return tcp_accepting(addr, port); }, deadline, Millis{10});
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

RawConnection::RawConnection(const std::string& addr, std::uint16_t port, Millis deadline) {
    int err = 0;
    fd_ = tcp_connect(addr, port, deadline, &err);
    if (!fd_.valid())
        throw std::runtime_error("connect " + host_port(addr, port) + ": " + std::strerror(err));
}

void RawConnection::shutdown_write() {
    ::shutdown(fd_.get(), SHUT_WR);
}

PeerReaction RawConnection::wait_closed(Millis deadline) {
    PeerReaction r;
    const auto start = Clock::now();
    const auto end = start + deadline;
    char buf[16384];
    for (;;) {
        pollfd p{fd_.get(), POLLIN, 0};
        int pr = ::poll(&p, 1, static_cast<int>(remaining(end).count()));
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) break;  // deadline
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n > 0) {
            r.received.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        r.closed = true;
        r.reset = n < 0 && errno == ECONNRESET;
        r.after = std::chrono::duration_cast<Millis>(Clock::now() - start);
        break;
    }
    return r;
}

std::string RawConnection::recv_at_least(std::size_t n, Millis deadline) {
    std::string out;
    const auto end = Clock::now() + deadline;
    char buf[16384];
    while (out.size() < n) {
        pollfd p{fd_.get(), POLLIN, 0};
        int pr = ::poll(&p, 1, static_cast<int>(remaining(end).count()));
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) break;
        ssize_t got = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
}

std::pair<std::string, std::uint16_t> RawConnection::local() const {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
        return {text, ntohs(v4->sin_port)};
    }
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    return {text, ntohs(v6->sin6_port)};
}

RawVisit raw_visit(const std::string& addr, std::uint16_t port, std::string_view bytes,
                   Millis deadline, bool half_close) {
    RawVisit v;
    Fd fd = tcp_connect(addr, port, Millis{5000});
    if (!fd.valid()) return v;
    v.connected = true;
    RawConnection c(std::move(fd));
    c.send(bytes);  // a peer that already closed is reported by wait_closed
    if (half_close) c.shutdown_write();
    v.reaction = c.wait_closed(deadline);
    return v;
}

}  // namespace runewarp::test

namespace runewarp::test {

std::string proxy_v2_header(const std::string& src_ip, std::uint16_t src_port,
                            const std::string& dst_ip, std::uint16_t dst_port) {
    static constexpr unsigned char kSig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                               0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    std::string h(reinterpret_cast<const char*>(kSig), sizeof kSig);
    unsigned char s6[16], d6[16];
    const bool v4 = ::inet_pton(AF_INET, src_ip.c_str(), s6) == 1 &&
                    ::inet_pton(AF_INET, dst_ip.c_str(), d6) == 1;
    if (!v4 && (::inet_pton(AF_INET6, src_ip.c_str(), s6) != 1 ||
                ::inet_pton(AF_INET6, dst_ip.c_str(), d6) != 1))
        throw std::runtime_error("proxy_v2_header: addresses must be IP literals of one family");
    const std::size_t alen = v4 ? 4 : 16;
    h.push_back('\x21');                   // version 2, command PROXY
    h.push_back(v4 ? '\x11' : '\x21');     // TCP over IPv4 / IPv6
    const std::size_t len = 2 * alen + 4;  // 12 or 36
    h.push_back(static_cast<char>(len >> 8));
    h.push_back(static_cast<char>(len & 0xFF));
    h.append(reinterpret_cast<const char*>(s6), alen);
    h.append(reinterpret_cast<const char*>(d6), alen);
    for (std::uint16_t p : {src_port, dst_port}) {
        h.push_back(static_cast<char>(p >> 8));
        h.push_back(static_cast<char>(p & 0xFF));
    }
    return h;
}

}  // namespace runewarp::test
