// The tunnel end to end over an impaired path: the real `runewarp server` and `runewarp client`
// with a UDP relay between them (tests/support/udp_relay.hh) that drops, reorders and duplicates
// datagrams from a seeded PRNG, and rebinds its outbound socket mid-transfer (NAT rebinding).
// QUIC loss recovery must keep bulk transfers byte-identical without a reconnect (spec 5.9), and
// connection migration must carry in-flight streams across an address change (spec 12.3).
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/tunnel_support.hh"
#include "tests/support/udp_relay.hh"

using namespace runewarp::test;

namespace {

// 2% loss, 2% reordering and 1% duplication, both directions.
constexpr UdpImpairment kImpaired{.loss = 0.02, .duplicate = 0.01, .reorder = 0.02};

const std::string kConnected = "client tunnel connection connected";

// A Tunnel whose only Client reaches the Server through a UdpRelay.
class RelayedTunnel {
public:
    RelayedTunnel(UdpImpairment imp, std::uint64_t seed)
        : t_({.start_clients = false}),
          relay_(UdpRelay::start({.upstream_port = t_.tunnel_port(),
                                  .to_upstream = imp,
                                  .to_downstream = imp,
                                  .seed = seed,
                                  .trace_path = trace_path()})) {
        t_.start_client(0, relay_->port());
        cr_assert(t_.wait_client("client ready: server-address=" + kServerName, 1, Millis{60000}),
                  "%s\n%s", t_.client_log().c_str(), relay_->describe().c_str());
        cr_assert(t_.wait_client(kConnected), "%s", t_.client_log().c_str());
    }
    Tunnel& t() { return t_; }
    UdpRelay& relay() { return *relay_; }

    // The Client connected exactly once, and the Server never saw its tunnel connection end.
    void assert_one_connection() {
        std::string clog = t_.client_log();
        std::string slog = t_.server().log();
        cr_assert_eq(count_of(clog, kConnected), 1u, "the Client reconnected:\n%s\nrelay: %s",
                     clog.c_str(), relay_->describe().c_str());
        cr_assert_eq(count_of(clog, "client tunnel connection closed"), 0u, "%s", clog.c_str());
        cr_assert_eq(count_of(clog, "client tunnel connection dropped"), 0u, "%s", clog.c_str());
        cr_assert_eq(count_of(slog, "server tunnel connection accepted"), 1u, "%s", slog.c_str());
        cr_assert_eq(count_of(slog, "server tunnel connection closed"), 0u, "%s", slog.c_str());
        cr_assert_eq(count_of(slog, "server tunnel connection dropped"), 0u, "%s", slog.c_str());
    }
    // The relay really impaired both directions.
    void assert_impaired() {
        for (RelayDir d : {RelayDir::kToUpstream, RelayDir::kToDownstream}) {
            UdpRelayStats st = relay_->stats(d);
            cr_assert_gt(st.dropped, 0u, "%s", relay_->describe().c_str());
            cr_assert_gt(st.reordered, 0u, "%s", relay_->describe().c_str());
            cr_assert_gt(st.duplicated, 0u, "%s", relay_->describe().c_str());
        }
    }

private:
    // RUNEWARP_RELAY_TRACE=<path>: the relay logs every datagram there (diagnosis only).
    static std::string trace_path() {
        const char* p = std::getenv("RUNEWARP_RELAY_TRACE");
        return p != nullptr ? p : "";
    }
    Tunnel t_;
    std::unique_ptr<UdpRelay> relay_;  // on the heap: see UdpRelay::start
};

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A 64 MiB download by curl in the background (into t.out("mig.bin")), started once 8 MiB of it
// arrived.
struct BackgroundDownload {
    static constexpr std::uint64_t kSize = 64u << 20;
    CachedFile file;
    std::string out;
    Process curl;

    BackgroundDownload(RelayedTunnel& rt, std::vector<std::string> extra_args)
        : file(cached_random_file(kSize, 11)), out(rt.t().out("mig.bin")) {
        Tunnel& t = rt.t();
        t.backend().add_file("mig.bin", file.path);
        std::vector<std::string> argv = curl_base_args(t.target());
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        argv.insert(argv.end(), {"--output", out, "--write-out", "%{http_code} %{size_download}",
                                 https_url(t.target(), "/files/mig.bin")});
        curl = Process::spawn({.argv = argv, .out = Output::pipe(), .err = Output::pipe()});
        cr_assert(wait_until([&] { return file_exists(out) && file_size(out) > (8u << 20); },
                             Millis{120000}),
                  "the download did not start\n%s\nrelay: %s", t.client_log().c_str(),
                  rt.relay().describe().c_str());
    }
};

// Runs a 64 MiB download in the background, rebinds the relay's outbound socket once 8 MiB
// arrived, and checks the download completes byte-identical over the migrated path.
void download_across_a_rebind(RelayedTunnel& rt) {
    Tunnel& t = rt.t();
    UdpRelay& relay = rt.relay();
    constexpr std::uint64_t kSize = BackgroundDownload::kSize;
    const auto start = std::chrono::steady_clock::now();
    // Rate-limited, so the rebind at 8 MiB surely lands mid-transfer (56 MiB at 16 MiB/s is
    // 3.5 s later); the limit is only a floor on the duration, nothing waits on time.
    BackgroundDownload dl(rt, {"--limit-rate", "16M"});
    const std::string& out = dl.out;
    Process& curl = dl.curl;

    const std::uint16_t old_port = relay.outbound_port();
    const std::uint16_t new_port = relay.rebind();
    const std::uint64_t at_rebind = file_size(out);
    cr_assert_neq(new_port, old_port);
    cr_assert_lt(at_rebind, kSize, "the download finished before the rebind");

    std::optional<ExitStatus> st = curl.wait_exit(Millis{300000});
    const double secs = seconds_since(start);
    cr_assert(st.has_value(), "curl still running after the rebind (%llu of %llu bytes)\n%s\n%s",
              static_cast<unsigned long long>(file_size(out)),
              static_cast<unsigned long long>(kSize), relay.describe().c_str(),
              t.client_log().c_str());
    const std::string result = curl.read_stdout(Millis{1000});
    cr_assert(st->success(), "curl: %s %s %s\nrelay: %s", st->describe().c_str(), result.c_str(),
              curl.read_stderr(Millis{1000}).c_str(), relay.describe().c_str());
    cr_assert_eq(result, "200 " + std::to_string(kSize));
    cr_assert_eq(sha256_file(out), dl.file.sha256);
    cr_log_info("64 MiB download across a rebind at %llu bytes: %.1f s; %s",
                static_cast<unsigned long long>(at_rebind), secs, relay.describe().c_str());

    // The Server talked to the new port (the path migrated), in both directions.
    cr_assert_gt(relay.sent_on_current_outbound(), 0u, "%s", relay.describe().c_str());
    cr_assert_gt(relay.received_on_current_outbound(), 0u, "%s", relay.describe().c_str());
    rt.assert_one_connection();
}

// True once no datagram crossed the relay in either direction for `quiet`.
bool wait_quiet(UdpRelay& relay, Millis quiet, Millis deadline) {
    auto total = [&] {
        return relay.stats(RelayDir::kToUpstream).received +
               relay.stats(RelayDir::kToDownstream).received;
    };
    std::uint64_t last = total();
    auto since = std::chrono::steady_clock::now();
    return wait_until(
        [&] {
            const std::uint64_t now = total();
            if (now != last) {
                last = now;
                since = std::chrono::steady_clock::now();
                return false;
            }
            return std::chrono::steady_clock::now() - since >= quiet;
        },
        deadline, Millis{20});
}

}  // namespace

Test(tunnel_impaired, bulk_256mib_each_way_survives_loss_reordering_and_duplication,
     .timeout = 900) {
    RelayedTunnel rt(kImpaired, 1);
    Tunnel& t = rt.t();
    UdpRelay& relay = rt.relay();

    const CachedFile big = cached_random_file(256u << 20, 5);
    t.backend().add_file("big.bin", big.path);

    auto start = std::chrono::steady_clock::now();
    CurlResult d = curl_download(t.target(), "/files/big.bin", t.out("big.bin"), Millis{400000});
    const double down_secs = seconds_since(start);
    cr_assert(d.ok(), "curl: %s http %d %s\nrelay: %s\n%s", d.status.describe().c_str(),
              d.http_code, d.stderr_text.c_str(), relay.describe().c_str(), t.client_log().c_str());
    cr_assert_eq(d.bytes, 256u << 20);
    cr_assert_eq(d.sha256, big.sha256);
    cr_log_info("256 MiB download through the impaired relay: %.1f s (%.1f MiB/s); %s", down_secs,
                256 / down_secs, relay.describe().c_str());

    start = std::chrono::steady_clock::now();
    CurlResult u = curl_upload(t.target(), "/upload/up.bin", big.path, Millis{400000});
    const double up_secs = seconds_since(start);
    cr_assert(u.ok(), "curl: %s http %d %s\nrelay: %s\n%s", u.status.describe().c_str(),
              u.http_code, u.stderr_text.c_str(), relay.describe().c_str(), t.client_log().c_str());
    cr_assert_eq(sha256_file(t.backend().upload_path("up.bin")), big.sha256);
    cr_log_info("256 MiB upload through the impaired relay: %.1f s (%.1f MiB/s); %s", up_secs,
                256 / up_secs, relay.describe().c_str());

    rt.assert_impaired();
    rt.assert_one_connection();
    t.stop_client_cleanly();
}

Test(tunnel_impaired, download_survives_a_client_address_change, .timeout = 400) {
    RelayedTunnel rt({}, 2);
    download_across_a_rebind(rt);
    rt.t().stop_client_cleanly();
}

Test(tunnel_impaired, download_survives_an_address_change_on_an_impaired_path, .timeout = 400) {
    RelayedTunnel rt(UdpImpairment{.loss = 0.02, .reorder = 0.02}, 3);
    download_across_a_rebind(rt);
    UdpRelayStats up = rt.relay().stats(RelayDir::kToUpstream);
    UdpRelayStats down = rt.relay().stats(RelayDir::kToDownstream);
    cr_assert_gt(up.dropped + down.dropped, 0u, "%s", rt.relay().describe().c_str());
    cr_assert_gt(up.reordered + down.reordered, 0u, "%s", rt.relay().describe().c_str());
    rt.t().stop_client_cleanly();
}

Test(tunnel_impaired, keep_alive_of_200_requests_on_one_connection, .timeout = 300) {
    RelayedTunnel rt(kImpaired, 4);
    Tunnel& t = rt.t();
    constexpr int kRequests = 200;
    std::vector<std::string> argv = curl_base_args(t.target());
    // After each transfer: the status and whether it needed a new TCP connection.
    argv.insert(argv.end(), {"--write-out", "%{http_code} %{num_connects}\\n"});
    for (int i = 0; i < kRequests; ++i) argv.push_back(https_url(t.target(), "/name"));
    RunResult r = run(argv, Millis{180000});
    cr_assert(r.status.success(), "curl: %s %s\nrelay: %s", r.status.describe().c_str(),
              r.err.c_str(), rt.relay().describe().c_str());
    const std::string body = "backend " + kApp + "\n";
    std::string want = body + "200 1\n";
    for (int i = 1; i < kRequests; ++i) want += body + "200 0\n";
    cr_assert_eq(r.out, want, "%s", r.out.c_str());
    UdpRelayStats up = rt.relay().stats(RelayDir::kToUpstream);
    UdpRelayStats down = rt.relay().stats(RelayDir::kToDownstream);
    cr_assert_gt(up.dropped + down.dropped, 0u, "%s", rt.relay().describe().c_str());
    cr_log_info("200 requests on one connection; %s", rt.relay().describe().c_str());
    rt.assert_one_connection();
    t.stop_client_cleanly();
}

// NAT rebinding while the Client is silent: the Visitor stops reading (SIGSTOP), so the Server
// stops consuming the stream and the Client, flow-control blocked, sends nothing. Once the path
// is quiet the relay rebinds and the Visitor reads again. The Server's MAX_STREAM_DATA (and its
// loss probes) now go to the old, dead port; only a datagram from the Client shows the Server
// the new address. The transfer must resume well before the 20 s keep-alive PING would do that.
Test(tunnel_impaired, download_resumes_promptly_after_a_rebind_while_the_client_is_silent,
     .timeout = 300) {
    RelayedTunnel rt({}, 5);
    Tunnel& t = rt.t();
    UdpRelay& relay = rt.relay();
    BackgroundDownload dl(rt, {});
    const std::string& out = dl.out;
    Process& curl = dl.curl;
    cr_assert(curl.signal(SIGSTOP));
    // Quiet: the stream stopped (a Client that probes its path now and then still leaves gaps).
    cr_assert(wait_quiet(relay, Millis{300}, Millis{30000}), "the path never went quiet: %s",
              relay.describe().c_str());
    const std::uint64_t at_rebind = file_size(out);
    cr_assert_lt(at_rebind, BackgroundDownload::kSize, "the download finished before the rebind");
    relay.rebind();
    cr_assert(curl.signal(SIGCONT));

    const auto resumed = std::chrono::steady_clock::now();
    // The keep-alive PING would come 20 s after the last datagram the Client received; half that
    // is a generous bound for "the Client revealed its new address on its own".
    const bool moved =
        wait_until([&] { return relay.received_on_current_outbound() > 0; }, Millis{10000});
    const double first_reply = seconds_since(resumed);
    std::optional<ExitStatus> st = curl.wait_exit(Millis{120000});
    const double total = seconds_since(resumed);
    cr_log_info(
        "silent rebind at %llu bytes: first datagram from the Server on the new port "
        "after %.1f s, download done %.1f s after the Visitor resumed; %s",
        static_cast<unsigned long long>(at_rebind), first_reply, total, relay.describe().c_str());
    cr_assert(st.has_value() && st->success(), "curl: %s\n%s",
              st ? st->describe().c_str() : "still running", relay.describe().c_str());
    cr_assert_eq(sha256_file(out), dl.file.sha256);
    rt.assert_one_connection();
    cr_assert(moved,
              "no datagram reached the new port within 10 s of the rebind: the Client stayed "
              "silent and the Server kept sending to the old port (%.1f s); %s",
              first_reply, relay.describe().c_str());
    t.stop_client_cleanly();
}
