// `runewarp doctor` probes: bind tests with the holder of a busy port, TCP connects, name
// resolution and one QUIC handshake on a private event loop.
#include "cli/doctor_probe.hh"

#include <dirent.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <ngtcp2/ngtcp2.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "core/clock.hh"
#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "quic/close_info.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "sys/control.hh"

namespace runewarp::cli::doctor {

namespace {

std::string errno_text(int e) {
    return std::strerror(e);
}

// ---- who holds a port

struct Holder {
    int pid = 0;
    std::string comm;
};

// Socket inodes bound to `port` in /proc/net/<file> (TCP: listening sockets only; UDP: every
// bound socket). The kernel lists sockets of every user here, even when their owner is not ours.
void port_inodes(const char* file, std::uint16_t port, bool tcp, std::set<unsigned long>& out) {
    std::ifstream in(std::string("/proc/net/") + file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string sl, local, remote, state, queues, timer, retr, uid, timeout;
        unsigned long inode = 0;
        if (!(ls >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
              inode))
            continue;
        auto colon = local.rfind(':');
        if (colon == std::string::npos) continue;
        unsigned long p = std::strtoul(local.c_str() + colon + 1, nullptr, 16);
        if (p != port || inode == 0) continue;
        if (tcp && state != "0A") continue;  // TCP_LISTEN
        out.insert(inode);
    }
}

// The process whose descriptor table holds one of `inodes`. Only processes whose /proc/PID/fd
// this user may read are seen (all of them as root).
std::optional<Holder> inode_owner(const std::set<unsigned long>& inodes) {
    if (inodes.empty()) return std::nullopt;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) return std::nullopt;
    std::optional<Holder> found;
    while (dirent* d = ::readdir(proc)) {
        char* end = nullptr;
        long pid = std::strtol(d->d_name, &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        std::string fd_dir = std::string("/proc/") + d->d_name + "/fd";
        DIR* fds = ::opendir(fd_dir.c_str());
        if (fds == nullptr) continue;
        while (dirent* f = ::readdir(fds)) {
            if (f->d_name[0] == '.') continue;
            char link[64];
            ssize_t n = ::readlinkat(::dirfd(fds), f->d_name, link, sizeof link - 1);
            if (n <= 0) continue;
            link[n] = '\0';
            unsigned long inode = 0;
            if (std::sscanf(link, "socket:[%lu]", &inode) != 1) continue;
            if (inodes.count(inode) == 0) continue;
            Holder h;
            h.pid = static_cast<int>(pid);
            std::ifstream comm(std::string("/proc/") + d->d_name + "/comm");
            std::getline(comm, h.comm);
            found = h;
            break;
        }
        ::closedir(fds);
        if (found) break;
    }
    ::closedir(proc);
    return found;
}

// Whether a daemon of `role` answers on its control socket: connect() to a SOCK_SEQPACKET
// listener succeeds only while the daemon runs (a stale socket file refuses). Nothing is sent;
// the daemon drops a peer that closes without a request.
bool control_socket_answers(std::string_view role) {
    std::string path = sys::control_socket_path(role);
    sockaddr_un sa{};
    if (path.empty() || path.size() >= sizeof sa.sun_path) return false;
    core::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.data(), path.size());
    return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

// ---- QUIC handshake

struct ProbeHandler final : quic::ConnectionHandler {
    bool established = false;
    bool closed = false;
    quic::CloseInfo info;
    unsigned verify_status = 0;  // GnuTLS verification status of the Server's certificate
    bool verify_known = false;

    void on_established(quic::Connection&) noexcept override { established = true; }
    void on_stream_opened(quic::Connection&, quic::Stream& s) noexcept override { s.reset(0); }
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection& c, const quic::CloseInfo& i) noexcept override {
        closed = true;
        info = i;
        // The session still exists while the connection lingers: ask GnuTLS why it refused the
        // Server's certificate, if it did.
        auto* s = static_cast<gnutls_session_t>(ngtcp2_conn_get_tls_native_handle(c.raw()));
        if (s != nullptr) {
            verify_status = gnutls_session_get_verify_cert_status(s);
            verify_known = true;
        }
    }
};

std::string verify_text(unsigned status) {
    gnutls_datum_t out{};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) != 0)
        return "verification failed";
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
    return s;
}

bool is_access_denied(const quic::CloseInfo& info) {
    // How the Server refuses an identity it does not pin (as the Client daemon recognises it).
    return !info.application && info.code == quic::kCryptoErrorAccessDenied;
}

bool is_crypto_error(const quic::CloseInfo& info) {
    return !info.application && (info.code & ~std::uint64_t{0xff}) == NGTCP2_CRYPTO_ERROR;
}

}  // namespace

std::string address_text(const sockaddr_storage& ss) {
    auto e = proto::from_sockaddr(ss);
    return e ? proto::format_endpoint(proto::unmap_v4(*e)) : std::string("?");
}

Finding check_bindable(const proto::Endpoint& addr, Transport t, std::string_view role) {
    const bool tcp = t == Transport::kTcp;
    const std::string text = proto::format_endpoint(addr);
    if (addr.port == 0) return {Verdict::kOk, text + ": port 0, a free port is picked at startup"};
    sockaddr_storage ss{};
    socklen_t len = proto::to_sockaddr(addr, ss);
    core::UniqueFd fd(::socket(ss.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0));
    if (!fd) return {Verdict::kFail, text + ": socket: " + errno_text(errno)};
    // As the daemon binds: TCP with SO_REUSEADDR (a port left in TIME_WAIT is bindable, a
    // listening one is not); UDP without it, so any bound socket on the port counts as busy.
    int one = 1;
    if (tcp) (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr.family == proto::Family::kV6) {
        // The daemon's [::] listeners are dual-stack.
        int zero = 0;
        (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0)
        return {Verdict::kOk, text + " is free"};
    const int e = errno;
    if (e == EACCES) {
        return {Verdict::kFail, text + ": " + errno_text(e) +
                                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"};
    }
    if (e == EADDRNOTAVAIL)
        return {Verdict::kFail, text + ": no interface of this host has that address"};
    if (e != EADDRINUSE) return {Verdict::kFail, text + ": bind: " + errno_text(e)};

    // Busy. The holder is found through the socket inode: /proc/net lists the port's sockets for
    // every user, /proc/PID/fd maps the inode to a process (visible to root, or for our own
    // processes). A holder named runewarp is the daemon already serving there. When /proc hides
    // the holder (another user, no privileges), the role's control socket answering shows that
    // a runewarp daemon of this role runs, which is the usual reason for the port to be busy.
    std::set<unsigned long> inodes;
    port_inodes(tcp ? "tcp" : "udp", addr.port, tcp, inodes);
    port_inodes(tcp ? "tcp6" : "udp6", addr.port, tcp, inodes);
    if (auto h = inode_owner(inodes)) {
        std::string who = h->comm + " (pid " + std::to_string(h->pid) + ")";
        if (h->comm == "runewarp")
            return {Verdict::kOk, text + " is held by the running runewarp " + std::string(role) +
                                      ", pid " + std::to_string(h->pid)};
        return {Verdict::kFail, text + " is in use by " + who};
    }
    if (control_socket_answers(role)) {
        return {Verdict::kOk, text + " is in use, and the runewarp " + std::string(role) +
                                  " control socket answers: the running daemon holds it"};
    }
    return {Verdict::kFail,
            text + " is in use by another process (not visible to this user; try as root)"};
}

Resolved resolve(const config::HostPort& target, int socktype) {
    Resolved r;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    hints.ai_flags = target.host_is_literal ? AI_NUMERICHOST : AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    std::string port = std::to_string(target.port);
    int rc = ::getaddrinfo(target.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        r.error = "DNS: " + std::string(rc == EAI_SYSTEM ? errno_text(errno) : gai_strerror(rc));
        return r;
    }
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
        sockaddr_storage ss{};
        std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
        bool dup = false;
        for (std::size_t i = 0; i < r.addrs.size(); ++i)
            dup = dup ||
                  (r.lens[i] == a->ai_addrlen && std::memcmp(&r.addrs[i], &ss, a->ai_addrlen) == 0);
        if (dup) continue;
        r.addrs.push_back(ss);
        r.lens.push_back(a->ai_addrlen);
    }
    ::freeaddrinfo(res);
    if (r.addrs.empty()) r.error = "DNS: no IPv4 or IPv6 address";
    return r;
}

namespace {

// "" when the connect succeeded within `timeout`, else the reason.
std::string tcp_connect(const sockaddr_storage& ss, socklen_t len,
                        std::chrono::milliseconds timeout) {
    core::UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return "socket: " + errno_text(errno);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) == 0) return {};
    if (errno != EINPROGRESS) return errno_text(errno);
    pollfd p{fd.get(), POLLOUT, 0};
    const int64_t deadline = core::now_ns() + timeout.count() * core::kNsPerMs;
    for (;;) {
        int64_t left_ms = (deadline - core::now_ns()) / core::kNsPerMs;
        if (left_ms <= 0) return "timeout after " + std::to_string(timeout.count() / 1000) + " s";
        int n = ::poll(&p, 1, static_cast<int>(left_ms));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return "poll: " + errno_text(errno);
        if (n == 0) continue;
        int err = 0;
        socklen_t el = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
        return err == 0 ? std::string() : errno_text(err);
    }
}

}  // namespace

Finding check_tcp_reachable(const config::HostPort& target, std::chrono::milliseconds timeout) {
    Resolved r = resolve(target, SOCK_STREAM);
    if (r.addrs.empty()) return {Verdict::kFail, target.text() + ": " + r.error};
    std::vector<std::string> good, bad;
    for (std::size_t i = 0; i < r.addrs.size(); ++i) {
        // A literal target names its one address already.
        std::string a = target.host_is_literal ? std::string() : address_text(r.addrs[i]);
        std::string why = tcp_connect(r.addrs[i], r.lens[i], timeout);
        if (why.empty()) {
            good.push_back(a);
        } else {
            bad.push_back(a.empty() ? why : a + ": " + why);
        }
    }
    auto join = [](const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
        return s;
    };
    if (bad.empty())
        return {Verdict::kOk, target.text() + " accepts connections (" + join(good) + ")"};
    if (good.empty()) return {Verdict::kFail, target.text() + ": " + join(bad)};
    return {Verdict::kWarn,
            target.text() + " accepts on " + join(good) + " but not on " + join(bad)};
}

Finding quic_handshake(const sockaddr_storage& remote, socklen_t remote_len,
                       const quic::ClientTls& tls, std::chrono::milliseconds timeout) {
    const std::string text = address_text(remote);
    // An ICMP port unreachable is swallowed by the QUIC socket (a per-datagram error), so a
    // connected UDP socket of our own sends one byte to the same port and is read for the error.
    // A QUIC server drops a datagram that short without answering.
    core::UniqueFd probe(::socket(remote.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!probe) return {Verdict::kFail, text + ": socket: " + errno_text(errno)};
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&remote), remote_len) != 0) {
        int e = errno;
        if (e == ENETUNREACH || e == EHOSTUNREACH)
            return {Verdict::kFail, text + ": no route: " + errno_text(e)};
        return {Verdict::kFail, text + ": " + errno_text(e)};
    }
    const char zero = 0;
    (void)::send(probe.get(), &zero, 1, 0);

    auto worker = core::Worker::create(core::WorkerOptions{.loop = {}, .max_slots = 64});
    if (!worker) return {Verdict::kFail, "event loop: " + worker.error().message};
    core::Worker& w = **worker;
    ProbeHandler h;
    quic::DialOptions opts;
    opts.conn.handshake_timeout_ns = timeout.count() * core::kNsPerMs;
    auto c = quic::dial(w, reinterpret_cast<const sockaddr*>(&remote), remote_len, tls, h, opts);
    if (!c) {
        const std::string& m = c.error().message;
        bool no_route = m.find(errno_text(ENETUNREACH)) != std::string::npos ||
                        m.find(errno_text(EHOSTUNREACH)) != std::string::npos;
        return {Verdict::kFail, text + (no_route ? ": no route: " : ": ") + m};
    }
    quic::Connection* conn = *c;

    bool unreachable = false;
    const int64_t deadline = core::now_ns() + timeout.count() * core::kNsPerMs;
    while (!h.established && !h.closed) {
        int64_t left = deadline - core::now_ns();
        if (left <= 0) break;
        auto r = w.run_once(std::min<int64_t>(left, 50 * core::kNsPerMs));
        if (!r) return {Verdict::kFail, "event loop: " + r.error().message};
        char b;
        if (::recv(probe.get(), &b, 1, MSG_DONTWAIT) < 0 && errno == ECONNREFUSED) {
            unreachable = true;
            break;
        }
    }

    Finding out;
    if (h.established) {
        out = {Verdict::kOk, text +
                                 ": handshake complete (server certificate trusted, client "
                                 "identity admitted)"};
    } else if (unreachable) {
        out = {Verdict::kFail,
               text + ": port unreachable (ICMP): nothing listens on that UDP port"};
    } else if (!h.closed || h.info.kind == quic::CloseInfo::Kind::handshake_timeout) {
        out = {Verdict::kFail, text + ": timeout: no QUIC answer within " +
                                   std::to_string(timeout.count() / 1000) +
                                   " s (UDP port closed or filtered, or no Server there)"};
    } else if (is_access_denied(h.info)) {
        out = {Verdict::kFail, text +
                                   ": identity not pinned: the Server refused this client identity "
                                   "(unauthorized); add it to the client-identities of a [tunnel]"};
    } else if (h.info.kind == quic::CloseInfo::Kind::local && is_crypto_error(h.info) &&
               h.verify_known && h.verify_status != 0) {
        out = {Verdict::kFail, text + ": certificate not trusted: " + verify_text(h.verify_status)};
    } else {
        out = {Verdict::kFail,
               text + ": handshake failed: " + quic::describe_close(h.info, "server")};
    }

    // Close cleanly (application 0) and let the loop send it and retire the connection.
    if (!h.closed) {
        if (h.established) {
            conn->close(quic::kAppCloseCode, "doctor check done");
        } else {
            conn->terminate();
        }
    }
    (void)w.run_until([&] { return w.attached_count() == 0; },
                      core::now_ns() + 3 * core::kNsPerSec);
    return out;
}

}  // namespace runewarp::cli::doctor
