// The Server's tunnel port under attack, with the real binaries: a flood of genuine QUIC Initials
// from many loopback source addresses that never finish their handshakes (as from forged
// addresses), and UDP garbage. `runewarp server` with a [tunnel], `runewarp client`, nginx as the
// backend and curl as the Visitor (tunnel_support.hh); the attack comes from threads in this
// process, each packet from a socket bound to its own 127.0.x.y address.
//
// The handshake limit (256 in flight, each up to 10 s) absorbs about 26 new handshakes a second.
// With address validation (tunnel-retry = auto) a flood far above that leaves the Client's
// connection and its Visitors untouched; with tunnel-retry = never the same flood keeps the
// Client out for as long as it lasts.
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "quic/tls.hh"
#include "tests/integration/tunnel_support.hh"
#include "tests/support/quic_raw.hh"

using namespace runewarp;
using namespace runewarp::test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kFloodRate = 400;  // Initials per second: 15 times what the slots absorb
constexpr int kFloodSources = 200;

sockaddr_in loopback_port(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

// `n` UDP sockets on the addresses 127.0.<first_net>.1, .2, ... (250 per /24).
std::vector<int> source_sockets(int n, int first_net) {
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
        std::string addr =
            "127.0." + std::to_string(first_net + i / 250) + "." + std::to_string(1 + i % 250);
        int fd = bind_udp(addr.c_str());
        cr_assert_geq(fd, 0, "bind %s", addr.c_str());
        fds.push_back(fd);
    }
    return fds;
}

sockaddr_in local_of(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return a;
}

// Server CPU time (user + system) so far, from /proc.
double cpu_seconds(pid_t pid) {
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    std::size_t close = stat.rfind(')');
    cr_assert_neq(close, std::string::npos);
    std::vector<std::string> fields;
    std::size_t pos = close + 2;
    while (pos < stat.size()) {
        std::size_t end = stat.find(' ', pos);
        if (end == std::string::npos) end = stat.size();
        fields.push_back(stat.substr(pos, end - pos));
        pos = end + 1;
    }
    cr_assert_gt(fields.size(), 13u);
    double ticks = static_cast<double>(std::stoull(fields[11]) + std::stoull(fields[12]));
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Sends from many loopback source addresses at a fixed rate on its own thread; a subclass makes
// each datagram. The pacing belongs to the attack: the tests wait on conditions.
class PacedSender {
public:
    PacedSender(std::uint16_t port, int sources, int first_net, int rate)
        : server_(loopback_port(port)), fds_(source_sockets(sources, first_net)), rate_(rate) {}
    virtual ~PacedSender() {
        stop();
        for (int fd : fds_) ::close(fd);
    }
    PacedSender(const PacedSender&) = delete;
    PacedSender& operator=(const PacedSender&) = delete;

    // Subclasses call this in their destructor too: the thread calls into them.
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    std::uint64_t sent() const { return sent_; }

protected:
    void start() {
        thread_ = std::thread([this] { run(); });
    }
    // The k-th datagram, from source socket i; false ends the thread.
    virtual bool send_one(std::size_t k, std::size_t i) = 0;
    void send(std::size_t i, std::span<const std::uint8_t> d) {
        if (::sendto(fds_[i], d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&server_),
                     sizeof server_) == static_cast<ssize_t>(d.size()))
            ++sent_;
    }

    sockaddr_in server_;
    std::vector<int> fds_;

private:
    void run() {
        const auto period = std::chrono::nanoseconds(1'000'000'000 / rate_);
        auto next = Clock::now();
        for (std::size_t k = 0; !stop_; ++k) {
            if (!send_one(k, k % fds_.size())) return;
            next += period;
            std::this_thread::sleep_until(next);
        }
    }

    int rate_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> sent_{0};
    std::thread thread_;
};

// Genuine client Initials (a real ClientHello, a fresh connection ID each), each from the next
// of many source addresses; nothing ever answers what the Server sends back. Each source keeps
// its last client, which reads the replies: a Retry, a stateless CONNECTION_CLOSE with
// CONNECTION_REFUSED (every slot taken), or the Server's first flight (a handshake began).
class InitialFlood final : public PacedSender {
public:
    InitialFlood(std::uint16_t port, const std::string& ca_pem)
        : PacedSender(port, kFloodSources, 1, kFloodRate) {
        auto tls =
            quic::ClientTls::create({kServerName, quic::ServerTrust::ca_file, ca_pem, "", ""});
        cr_assert(tls.ok(), "client tls: %s", tls.ok() ? "" : tls.error().message.c_str());
        tls_ = std::move(*tls);
        clients_.resize(fds_.size());
        counted_.resize(fds_.size());
        start();
    }
    ~InitialFlood() override { stop(); }

    std::uint64_t retries() const { return retries_; }
    std::uint64_t refusals() const { return refusals_; }
    std::uint64_t handshakes() const { return handshakes_; }
    bool failed() const { return failed_; }
    std::string describe() const {
        return "sent " + std::to_string(sent()) + ", retries " + std::to_string(retries_) +
               ", refusals " + std::to_string(refusals_) + ", handshakes " +
               std::to_string(handshakes_);
    }

private:
    void drain(std::size_t i) {
        std::uint8_t buf[2048];
        for (;;) {
            ssize_t n = ::recv(fds_[i], buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0) return;
            std::span<const std::uint8_t> d(buf, static_cast<std::size_t>(n));
            int type = long_header_type(d);
            if (type == NGTCP2_PKT_RETRY) {
                ++retries_;
            } else if (type == NGTCP2_PKT_INITIAL && clients_[i] != nullptr &&
                       clients_[i]->addressed_to(d)) {
                // (Initials for an earlier client of this socket are the Server retransmitting
                // a handshake already counted.)
                RawQuicClient& c = *clients_[i];
                if (c.read(d) == NGTCP2_ERR_DRAINING &&
                    c.peer_close_code() == NGTCP2_CONNECTION_REFUSED) {
                    ++refusals_;
                } else if (!counted_[i]) {
                    counted_[i] = true;
                    ++handshakes_;
                }
            }
        }
    }

    bool send_one(std::size_t, std::size_t i) override {
        drain(i);
        sockaddr_in local = local_of(fds_[i]);
        clients_[i] =
            RawQuicClient::create(*tls_, reinterpret_cast<sockaddr*>(&local), sizeof local,
                                  reinterpret_cast<sockaddr*>(&server_), sizeof server_);
        counted_[i] = false;
        std::vector<std::uint8_t> pkt;
        if (clients_[i] != nullptr) pkt = clients_[i]->next_datagram();
        if (pkt.size() < 1200) {
            failed_ = true;
            return false;
        }
        send(i, pkt);
        return true;
    }

    std::unique_ptr<quic::ClientTls> tls_;
    std::vector<std::unique_ptr<RawQuicClient>> clients_;  // the flood thread's only
    std::vector<bool> counted_;
    std::atomic<bool> failed_{false};
    std::atomic<std::uint64_t> retries_{0}, refusals_{0}, handshakes_{0};
};

// UDP garbage at the tunnel port from many sources: random bytes, short-header packets for
// connection IDs nobody issued, genuine Initials cut short, long headers of an unknown version,
// stray Handshake packets and oversized datagrams.
class GarbageSpray final : public PacedSender {
public:
    static constexpr int kRate = 4000;  // datagrams per second

    GarbageSpray(std::uint16_t port, const std::string& ca_pem) : PacedSender(port, 32, 3, kRate) {
        auto tls =
            quic::ClientTls::create({kServerName, quic::ServerTrust::ca_file, ca_pem, "", ""});
        cr_assert(tls.ok());
        for (int i = 0; i < 16; ++i) {
            sockaddr_in local = local_of(fds_[0]);
            auto c = RawQuicClient::create(**tls, reinterpret_cast<sockaddr*>(&local), sizeof local,
                                           reinterpret_cast<sockaddr*>(&server_), sizeof server_);
            cr_assert(c != nullptr);
            initials_.push_back(c->next_datagram());
            cr_assert_geq(initials_.back().size(), 1200u);
        }
        for (auto& b : buf_) b = static_cast<std::uint8_t>(rng_());
        start();
    }
    ~GarbageSpray() override { stop(); }

    std::uint64_t answers() const { return answers_; }

private:
    bool send_one(std::size_t k, std::size_t i) override {
        // Fresh random bytes where packets are built; the tail of the big ones stays as is.
        for (std::size_t j = 0; j < 1408; j += 8) {
            std::uint64_t r = rng_();
            std::memcpy(buf_.data() + j, &r, 8);
        }
        std::size_t len = 0;
        switch (k % 6) {
            case 0:  // random bytes, any first byte
                len = 1 + rng_() % 1400;
                break;
            case 1:  // short header for a 16-byte connection ID nobody issued
                buf_[0] = static_cast<std::uint8_t>(0x40 | (buf_[0] & 0x3f));
                len = 17 + rng_() % 1200;
                break;
            case 2: {  // a genuine Initial, truncated
                const auto& ini = initials_[rng_() % initials_.size()];
                len = 1 + rng_() % (ini.size() - 1);
                std::copy(ini.begin(), ini.begin() + static_cast<std::ptrdiff_t>(len),
                          buf_.begin());
                break;
            }
            case 3:  // long header of an unknown version, full size
                buf_[0] = static_cast<std::uint8_t>(0xc0 | (buf_[0] & 0x3f));
                buf_[1] = 0x5a, buf_[2] = 0x5a, buf_[3] = 0x5a, buf_[4] = 0x5a;
                buf_[5] = 8;
                buf_[14] = 8;
                len = 1200;
                break;
            case 4:  // QUIC v1 Handshake packet for an unknown connection
                buf_[0] = static_cast<std::uint8_t>(0xe0 | (buf_[0] & 0x0f));
                buf_[1] = 0, buf_[2] = 0, buf_[3] = 0, buf_[4] = 1;
                buf_[5] = 16;
                buf_[22] = 8;
                len = 100 + rng_() % 1100;
                break;
            default:  // oversized (every 30th: 9000 bytes or a whole 65000), else tiny
                len = k % 30 == 5 ? 65000 : (k % 30 == 11 ? 9000 : 1 + rng_() % 64);
                break;
        }
        send(i, {buf_.data(), len});
        std::uint8_t reply[2048];
        while (::recv(fds_[i], reply, sizeof reply, MSG_DONTWAIT) > 0) ++answers_;
        return true;
    }

    std::vector<std::vector<std::uint8_t>> initials_;
    std::mt19937_64 rng_{42};
    std::vector<std::uint8_t> buf_ = std::vector<std::uint8_t>(65000);
    std::atomic<std::uint64_t> answers_{0};
};

std::string server_ca(Tunnel& t) {
    return read_file(t.out("cert/server-ca.crt"));
}

// Nothing else moved: the Server runs, logged no error, and accepted exactly `accepted`
// tunnel connections.
void assert_server_undisturbed(Tunnel& t, std::size_t accepted) {
    cr_assert(t.server().process().running(), "server exited: %s", t.server().log().c_str());
    std::string log = t.server().log();
    cr_assert_eq(log.find("ERROR"), std::string::npos, "%s", log.c_str());
    cr_assert_eq(count_of(log, "server tunnel connection accepted"), accepted, "%s", log.c_str());
}

// SIGTERM: the Server exits 0 (handshakes of the attack still in flight) without a sanitizer
// report.
void stop_server_cleanly(Tunnel& t) {
    ExitStatus st = t.server().stop();
    std::string log = t.server().log();
    cr_assert(st.success(), "server exit: %s\n%s", st.describe().c_str(), log.c_str());
    cr_assert_eq(log.find("Sanitizer"), std::string::npos, "%s", log.c_str());
    cr_assert_eq(log.find("runtime error"), std::string::npos, "%s", log.c_str());
}

void download_checked(Tunnel& t, const std::string& name, const std::string& sha,
                      const std::string& tag) {
    CurlResult d = curl_download(t.target(), "/files/" + name, t.out(tag + ".bin"), Millis{30000});
    cr_assert(d.ok(), "%s: curl %s http %d %s\nclient:\n%s", tag.c_str(),
              d.status.describe().c_str(), d.http_code, d.stderr_text.c_str(),
              t.client_log().c_str());
    cr_assert_eq(d.sha256, sha, "%s: body differs", tag.c_str());
}

// What the Server answers one genuine token-less Initial with (its long-header packet type).
int answer_to_one_initial(std::uint16_t port, const std::string& ca_pem) {
    auto tls = quic::ClientTls::create({kServerName, quic::ServerTrust::ca_file, ca_pem, "", ""});
    cr_assert(tls.ok());
    int fd = bind_udp("127.0.5.1");
    cr_assert_geq(fd, 0);
    sockaddr_in local = local_of(fd), server = loopback_port(port);
    auto c = RawQuicClient::create(**tls, reinterpret_cast<sockaddr*>(&local), sizeof local,
                                   reinterpret_cast<sockaddr*>(&server), sizeof server);
    cr_assert(c != nullptr);
    std::vector<std::uint8_t> pkt = c->next_datagram();
    cr_assert_eq(::sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&server),
                          sizeof server),
                 static_cast<ssize_t>(pkt.size()));
    std::uint8_t reply[2048];
    ssize_t n = -1;
    bool got = wait_until([&] { return (n = ::recv(fd, reply, sizeof reply, MSG_DONTWAIT)) > 0; },
                          Millis{5000});
    ::close(fd);
    cr_assert(got, "no answer to an Initial");
    return long_header_type({reply, static_cast<std::size_t>(n)});
}

}  // namespace

TestSuite(tunnel_flood, .timeout = 180);

// Default tunnel-retry (auto): past 128 unfinished handshakes the flood only gets Retries, and the
// Client connects on its first attempt while the flood goes on.
Test(tunnel_flood, retry_keeps_the_client_in_during_an_initial_flood) {
    Tunnel t({.start_clients = false});
    const std::string sha = t.backend().add_random_file("flood.bin", 4u << 20, 7);
    InitialFlood flood(t.tunnel_port(), server_ca(t));
    // The Server is validating addresses: half its slots hold flood handshakes.
    cr_assert(wait_until([&] { return flood.retries() >= 100 || flood.failed(); }, Millis{20000}),
              "no Retry: %s", flood.describe().c_str());
    cr_assert_not(flood.failed(), "could not make an Initial");
    cr_assert_leq(flood.handshakes(), 128u, "%s", flood.describe().c_str());
    cr_assert_eq(flood.refusals(), 0u, "%s", flood.describe().c_str());
    t.start_client(0);
    cr_assert(t.wait_client("client ready", 1, Millis{8000}), "flood %s\nclient:\n%s",
              flood.describe().c_str(), t.client_log().c_str());
    cr_assert_eq(t.client_log().find("client tunnel connection failed"), std::string::npos, "%s",
                 t.client_log().c_str());
    download_checked(t, "flood.bin", sha, "during-flood");
    std::uint64_t sent = flood.sent(), retries = flood.retries();
    cr_assert(wait_until([&] { return flood.retries() > retries + 50; }, Millis{5000}),
              "the flood stopped being answered: %s", flood.describe().c_str());
    flood.stop();
    cr_assert_gt(flood.sent(), sent);
    std::fprintf(stderr, "initial flood (tunnel-retry = auto): %s\n", flood.describe().c_str());
    // Half the slots at most went to the flood; none was ever refused.
    cr_assert_leq(flood.handshakes(), 128u, "%s", flood.describe().c_str());
    cr_assert_eq(flood.refusals(), 0u, "%s", flood.describe().c_str());
    assert_server_undisturbed(t, 1);
    download_checked(t, "flood.bin", sha, "after-flood");
    t.stop_client_cleanly();
    stop_server_cleanly(t);
}

// The same flood with tunnel-retry = never: every slot holds a flood handshake, the Client's
// attempts are refused for as long as the flood lasts, and it gets in only once the flood ends
// and the stale handshakes time out.
Test(tunnel_flood, without_retry_the_same_flood_locks_the_client_out) {
    Tunnel t({.start_clients = false, .server_extra = "tunnel-retry = never\n"});
    const std::string sha = t.backend().add_random_file("flood.bin", 4u << 20, 7);
    auto started = Clock::now();
    InitialFlood flood(t.tunnel_port(), server_ca(t));
    cr_assert(wait_until([&] { return flood.refusals() >= 100 || flood.failed(); }, Millis{20000}),
              "slots never full: %s", flood.describe().c_str());
    cr_assert_not(flood.failed(), "could not make an Initial");
    cr_assert_eq(flood.retries(), 0u);

    t.start_client(0);
    // Until the first flood handshakes time out (10 s after they began) no slot is free.
    auto locked_until = started + std::chrono::milliseconds(8500);
    cr_assert(t.wait_client("client tunnel connection failed", 1, Millis{5000}), "%s",
              t.client_log().c_str());
    Millis left = std::chrono::duration_cast<Millis>(locked_until - Clock::now());
    cr_assert_gt(left.count(), 0, "the test machine is too slow for this window");
    cr_assert_not(t.wait_client("client ready", 1, left), "the Client got in during the flood: %s",
                  flood.describe().c_str());
    std::string log = t.client_log();
    cr_assert_eq(log.find("client tunnel connection connected"), std::string::npos, "%s",
                 log.c_str());
    flood.stop();
    std::fprintf(stderr, "initial flood (tunnel-retry = never): %s\n", flood.describe().c_str());
    // The refusals are visible to the operator: one rate-limited saturation line, not one per
    // refused Initial.
    std::string slog = t.server().log();
    std::size_t saturated =
        count_of(slog, "server admission saturated: scope=quic-handshake-global active-work=256 "
                       "limit=256");
    cr_assert(saturated >= 1 && saturated <= 2, "%zu saturation lines for %llu refusals:\n%s",
              saturated, static_cast<unsigned long long>(flood.refusals()), slog.c_str());

    // The Client is fine: with the flood over, a later attempt gets a slot.
    cr_assert(t.wait_client("client ready", 1, Millis{60000}), "%s", t.client_log().c_str());
    cr_assert(t.wait_server("server admission recovered: scope=quic-handshake-global"), "%s",
              t.server().log().c_str());
    download_checked(t, "flood.bin", sha, "after-flood");
    assert_server_undisturbed(t, 1);
    t.stop_client_cleanly();
    stop_server_cleanly(t);
}

// tunnel-retry = always: the real Client follows the Retry on its own, with nothing in flight.
Test(tunnel_flood, client_follows_a_retry_with_retry_always) {
    Tunnel t({.server_extra = "tunnel-retry = always\n"});
    t.wait_pool_ready();
    // Nothing else is in flight, and still a new connection is asked to validate its address.
    cr_assert_eq(answer_to_one_initial(t.tunnel_port(), server_ca(t)), NGTCP2_PKT_RETRY);
    const std::string sha = t.backend().add_random_file("always.bin", 1u << 20, 3);
    download_checked(t, "always.bin", sha, "always");
    cr_assert_eq(t.client_log().find("client tunnel connection failed"), std::string::npos, "%s",
                 t.client_log().c_str());
    assert_server_undisturbed(t, 1);
    t.stop_client_cleanly();
    stop_server_cleanly(t);
}

// Garbage at the tunnel port: the established tunnel connection keeps serving Visitors during
// and after, the Server logs nothing per packet and spends little CPU on it.
Test(tunnel_flood, udp_garbage_leaves_the_tunnel_serving) {
    Tunnel t({});
    t.wait_pool_ready();
    const std::string sha = t.backend().add_random_file("garbage.bin", 4u << 20, 9);
    download_checked(t, "garbage.bin", sha, "before");
    const pid_t server = t.server().pid();
    const std::size_t log_before = t.server().log().size();
    const double cpu_before = cpu_seconds(server);
    auto started = Clock::now();
    GarbageSpray spray(t.tunnel_port(), server_ca(t));
    // Garbage alone first, to see what it costs and what it logs.
    cr_assert(wait_until([&] { return spray.sent() >= 2 * GarbageSpray::kRate; }, Millis{10000}));
    const double cpu = cpu_seconds(server) - cpu_before;
    const double wall = std::chrono::duration<double>(Clock::now() - started).count();
    const std::uint64_t garbage = spray.sent();
    const std::size_t logged = t.server().log().size() - log_before;
    std::fprintf(stderr,
                 "udp garbage: %llu datagrams in %.2f s, server CPU %.3f s (%.1f us each), "
                 "%llu answers, %zu log bytes\n",
                 static_cast<unsigned long long>(garbage), wall, cpu,
                 1e6 * cpu / static_cast<double>(garbage),
                 static_cast<unsigned long long>(spray.answers()), logged);
    cr_assert_lt(logged, 512u, "the Server logged garbage:\n%s",
                 t.server().log().substr(log_before).c_str());
    cr_assert_lt(cpu, 0.5 * wall, "the Server spent %.2f s CPU in %.2f s of garbage", cpu, wall);
    // Visitors keep going through the tunnel while the garbage goes on.
    for (int i = 0; i < 3; ++i)
        download_checked(t, "garbage.bin", sha, "during-" + std::to_string(i));
    cr_assert_gt(spray.sent(), garbage);
    spray.stop();
    download_checked(t, "garbage.bin", sha, "after");
    assert_server_undisturbed(t, 1);
    std::string clog = t.client_log();
    cr_assert_eq(count_of(clog, "client tunnel connection connected"), 1u, "%s", clog.c_str());
    cr_assert_eq(clog.find("client tunnel connection dropped"), std::string::npos, "%s",
                 clog.c_str());
    t.stop_client_cleanly();
    stop_server_cleanly(t);
}
