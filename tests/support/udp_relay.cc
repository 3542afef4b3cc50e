// UdpRelay: poll loop on its own thread, seeded impairments, outbound socket rebinding.
#include "tests/support/udp_relay.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>

#include "tests/support/net.hh"

namespace runewarp::test {
namespace {

constexpr std::size_t kMaxDatagram = 65535;
constexpr std::size_t kHeldSlots = 4;  // reordered datagrams waiting per direction
constexpr int kBufferBytes = 4 << 20;  // socket buffers: the relay should not add loss itself
constexpr int kDrainBatch = 256;       // datagrams read per socket per poll round

std::uint64_t mono_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("udp relay: " + what + ": " + std::strerror(errno));
}

void size_buffers(int fd) {
    int v = kBufferBytes;
    // The FORCE variants need CAP_NET_ADMIN (tests run as root); fall back to the capped ones.
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v) != 0)
        (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) != 0)
        (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

std::uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) fail("getsockname");
    return ntohs(a.sin_port);
}

// On failure the socket closes after fail() has read errno (while the exception unwinds).
Fd bound_socket() {
    Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) fail("socket");
    size_buffers(fd.get());
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fail("bind");
    return fd;
}

// A uniform double in [0, 1) from exactly one PRNG draw, so every datagram consumes the same
// number of draws and a seed gives the same decisions for the same datagram sequence.
double uniform(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

struct UdpRelay::Held {
    std::array<unsigned char, kMaxDatagram> data;
    std::size_t size = 0;
    int copies = 0;
    std::uint64_t since_ns = 0;
    bool used = false;
};

struct UdpRelay::Direction {
    std::mt19937_64 rng;
    UdpImpairment imp;
    std::array<Held, kHeldSlots> held;
};

UdpRelay::UdpRelay(UdpRelayOptions opts)
    : opts_(std::move(opts)), dirs_(new Direction[2]), rx_buf_(new unsigned char[kMaxDatagram]) {
    dirs_[0].rng.seed(opts_.seed * 2 + 1);
    dirs_[0].imp = opts_.to_upstream;
    dirs_[1].rng.seed(opts_.seed * 2 + 2);
    dirs_[1].imp = opts_.to_downstream;

    start_ns_ = mono_ns();
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) fail("eventfd");
    try {
        listen_fd_ = bound_socket().release();
        listen_port_ = local_port(listen_fd_);
        out_fd_ = open_outbound_();
        outbound_port_.store(local_port(out_fd_));
    } catch (...) {
        if (listen_fd_ >= 0) ::close(listen_fd_);
        ::close(wake_fd_);
        throw;
    }
    if (!opts_.trace_path.empty()) trace_file_ = std::fopen(opts_.trace_path.c_str(), "w");
    thread_ = std::thread([this] { run_(); });
}

std::unique_ptr<UdpRelay> UdpRelay::start(UdpRelayOptions opts) {
    return std::unique_ptr<UdpRelay>(new UdpRelay(std::move(opts)));
}

UdpRelay::~UdpRelay() {
    stop_.store(true);
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
    ::close(listen_fd_);
    ::close(out_fd_);
    ::close(wake_fd_);
    if (trace_file_ != nullptr) std::fclose(trace_file_);
}

void UdpRelay::trace_(RelayDir d, std::size_t n, const char* what) {
    if (trace_file_ == nullptr) return;
    std::fprintf(trace_file_, "%.3f %s %zu %s gen=%llu\n",
                 static_cast<double>(mono_ns() - start_ns_) / 1e6,
                 d == RelayDir::kToUpstream ? "up" : "down", n, what,
                 static_cast<unsigned long long>(rebinds_done_.load()));
}

int UdpRelay::open_outbound_() {
    Fd fd = bound_socket();
    sockaddr_in up{};
    up.sin_family = AF_INET;
    up.sin_port = htons(opts_.upstream_port);
    if (::inet_pton(AF_INET, opts_.upstream_address.c_str(), &up.sin_addr) != 1) {
        errno = EINVAL;
        fail("upstream address " + opts_.upstream_address);
    }
    // Connected: only the upstream's datagrams arrive on it.
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&up), sizeof up) != 0)
        fail("connect upstream");
    return fd.release();
}

std::uint16_t UdpRelay::rebind() {
    std::unique_lock lk(mu_);
    const std::uint64_t target = ++rebinds_requested_;
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return rebinds_done_.load() >= target; }))
        throw std::runtime_error("udp relay: rebind not processed by the relay thread");
    return outbound_port_.load();
}

void UdpRelay::do_rebind_() {
    int fd = open_outbound_();  // opened before the old one closes: a different port for sure
    ::close(out_fd_);
    out_fd_ = fd;
    sent_current_.store(0);
    received_current_.store(0);
    outbound_port_.store(local_port(fd));
    trace_(RelayDir::kToUpstream, 0, "rebind");
}

UdpRelayStats UdpRelay::stats(RelayDir d) const {
    const Counters& c = counters_[static_cast<int>(d)];
    return {c.received.load(),   c.forwarded.load(), c.dropped.load(),
            c.duplicated.load(), c.reordered.load(), c.send_errors.load()};
}

std::string UdpRelay::describe() const {
    std::string s;
    for (RelayDir d : {RelayDir::kToUpstream, RelayDir::kToDownstream}) {
        UdpRelayStats st = stats(d);
        s += d == RelayDir::kToUpstream ? "to-upstream:" : " to-downstream:";
        s += " received=" + std::to_string(st.received) +
             " forwarded=" + std::to_string(st.forwarded) +
             " dropped=" + std::to_string(st.dropped) +
             " duplicated=" + std::to_string(st.duplicated) +
             " reordered=" + std::to_string(st.reordered) +
             " send-errors=" + std::to_string(st.send_errors);
    }
    s += " rebinds=" + std::to_string(rebinds_done_.load()) +
         " outbound-port=" + std::to_string(outbound_port_.load()) +
         " sent-on-current=" + std::to_string(sent_current_.load()) +
         " received-on-current=" + std::to_string(received_current_.load());
    return s;
}

void UdpRelay::run_() {
    while (!stop_.load()) {
        pollfd fds[3] = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}, {out_fd_, POLLIN, 0}};
        int n = ::poll(fds, 3, poll_timeout_ms_());
        if (n < 0 && errno != EINTR) break;
        if (n > 0 && (fds[0].revents & POLLIN)) {
            std::uint64_t v;
            (void)!::read(wake_fd_, &v, sizeof v);
            if (stop_.load()) break;
            std::lock_guard lk(mu_);
            if (rebinds_done_.load() < rebinds_requested_) {
                do_rebind_();
                rebinds_done_.store(rebinds_requested_);
                cv_.notify_all();
            }
        }
        if (n > 0 && fds[1].revents) drain_(listen_fd_, RelayDir::kToUpstream);
        // After a rebind in this round fds[2] is the closed socket: its readiness means nothing.
        if (n > 0 && fds[2].revents && fds[2].fd == out_fd_)
            drain_(out_fd_, RelayDir::kToDownstream);
        release_held_(RelayDir::kToUpstream, true);
        release_held_(RelayDir::kToDownstream, true);
    }
}

int UdpRelay::poll_timeout_ms_() const {
    const std::uint64_t hold = static_cast<std::uint64_t>(opts_.reorder_hold.count()) * 1000000u;
    const std::uint64_t now = mono_ns();
    std::uint64_t wait = 100'000'000;  // nothing held: wake now and then anyway
    for (int d = 0; d < 2; ++d) {
        for (const Held& h : dirs_[d].held) {
            if (!h.used) continue;
            const std::uint64_t due = h.since_ns + hold;
            wait = std::min(wait, due > now ? due - now : 0);
        }
    }
    return static_cast<int>((wait + 999'999) / 1'000'000);
}

void UdpRelay::drain_(int fd, RelayDir d) {
    for (int i = 0; i < kDrainBatch; ++i) {
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        ssize_t n = ::recvfrom(fd, rx_buf_.get(), kMaxDatagram, MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &flen);
        if (n < 0) {
            if (errno == EINTR) continue;
            // EAGAIN: drained. ECONNREFUSED on the connected outbound socket (an ICMP error
            // from an upstream not listening yet): nothing to forward, try again next round.
            return;
        }
        if (d == RelayDir::kToUpstream) {
            // Follow the downstream peer wherever it now sends from.
            peer_ = from;
            have_peer_ = true;
        } else {
            received_current_.fetch_add(1);
        }
        handle_(d, rx_buf_.get(), static_cast<std::size_t>(n));
    }
}

void UdpRelay::handle_(RelayDir d, const unsigned char* data, std::size_t n) {
    Counters& c = counters_[static_cast<int>(d)];
    Direction& dir = dirs_[static_cast<int>(d)];
    c.received.fetch_add(1);
    if (d == RelayDir::kToDownstream && !have_peer_) {
        trace_(d, n, "no-peer");
        c.dropped.fetch_add(1);  // nobody to send it to (no PRNG draw: decisions stay seeded)
        return;
    }
    const double u_loss = uniform(dir.rng);
    const double u_dup = uniform(dir.rng);
    const double u_reorder = uniform(dir.rng);
    if (u_loss < dir.imp.loss) {
        trace_(d, n, "drop");
        c.dropped.fetch_add(1);
        return;
    }
    const int copies = u_dup < dir.imp.duplicate ? 2 : 1;
    if (u_reorder < dir.imp.reorder) {
        for (Held& h : dir.held) {
            if (h.used) continue;
            std::memcpy(h.data.data(), data, n);
            h.size = n;
            h.copies = copies;
            h.since_ns = mono_ns();
            h.used = true;
            trace_(d, n, "hold");
            c.reordered.fetch_add(1);
            return;
        }
        // Every slot busy: this one goes out in order.
    }
    trace_(d, n, copies == 2 ? "forward-twice" : "forward");
    // Counted before the send: whatever a receiver has seen is already in the counters.
    c.forwarded.fetch_add(1);
    c.duplicated.fetch_add(static_cast<std::uint64_t>(copies - 1));
    for (int i = 0; i < copies; ++i) send_(d, data, n);
    // What was held back now goes out after the datagram that overtook it.
    release_held_(d, false);
}

void UdpRelay::release_held_(RelayDir d, bool only_expired) {
    Counters& c = counters_[static_cast<int>(d)];
    Direction& dir = dirs_[static_cast<int>(d)];
    const std::uint64_t hold = static_cast<std::uint64_t>(opts_.reorder_hold.count()) * 1000000u;
    const std::uint64_t now = only_expired ? mono_ns() : 0;
    // Oldest first, so held datagrams keep their relative order.
    for (;;) {
        Held* oldest = nullptr;
        for (Held& h : dir.held) {
            if (h.used && (oldest == nullptr || h.since_ns < oldest->since_ns)) oldest = &h;
        }
        if (oldest == nullptr) return;
        if (only_expired && oldest->since_ns + hold > now) return;
        trace_(d, oldest->size, "release");
        c.forwarded.fetch_add(1);
        c.duplicated.fetch_add(static_cast<std::uint64_t>(oldest->copies - 1));
        for (int i = 0; i < oldest->copies; ++i) send_(d, oldest->data.data(), oldest->size);
        oldest->used = false;
    }
}

void UdpRelay::send_(RelayDir d, const unsigned char* data, std::size_t n) {
    ssize_t r;
    if (d == RelayDir::kToUpstream) {
        sent_current_.fetch_add(1);  // before the send, as the other counters
        r = ::send(out_fd_, data, n, 0);
        if (r < 0) sent_current_.fetch_sub(1);
    } else {
        r = ::sendto(listen_fd_, data, n, 0, reinterpret_cast<const sockaddr*>(&peer_),
                     sizeof peer_);
    }
    if (r < 0) {
        trace_(d, n, "send-error");
        counters_[static_cast<int>(d)].send_errors.fetch_add(1);
    }
}

}  // namespace runewarp::test
