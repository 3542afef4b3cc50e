// Client role pieces that need no network: retry windows and jitter, Service selection, the
// configuration this build refuses, and the off-loop resolver.
#include <criterion/criterion.h>
#include <netinet/in.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "client/client.hh"
#include "client/resolver.hh"
#include "client/retry.hh"
#include "core/clock.hh"
#include "core/worker.hh"

using namespace runewarp;
using runewarp::client::RetryPolicy;

namespace {

constexpr int64_t kSec = core::kNsPerSec;

config::Service service(std::string label, std::vector<std::string> hosts) {
    config::Service s;
    s.label = std::move(label);
    s.public_hostnames = std::move(hosts);
    s.backend = config::HostPort{"127.0.0.1", 8443, true};
    return s;
}

}  // namespace

Test(client, retry_windows_follow_the_sequence_and_stay_at_60s) {
    const int64_t expected[] = {1, 2, 3, 5, 8, 12, 18, 27, 41, 60, 60, 60};
    for (uint64_t f = 1; f <= 12; ++f) {
        cr_assert_eq(client::retry_window_ns(f), expected[f - 1] * kSec, "failure %lu",
                     static_cast<unsigned long>(f));
    }
    cr_assert_eq(client::retry_window_ns(0), 1 * kSec);
    cr_assert_eq(client::retry_window_ns(1'000'000), 60 * kSec);
}

Test(client, jitter_is_uniform_below_the_window) {
    const int64_t w = 5 * kSec;
    cr_assert_eq(client::jittered_delay_ns(w, 0), 0);
    cr_assert_eq(client::jittered_delay_ns(w, static_cast<uint64_t>(w)), 0);
    cr_assert_eq(client::jittered_delay_ns(w, static_cast<uint64_t>(w) - 1), w - 1);
    cr_assert_eq(client::jittered_delay_ns(w, 12345), 12345);
    uint64_t max = std::numeric_limits<uint64_t>::max();
    int64_t d = client::jittered_delay_ns(w, max);
    cr_assert(d >= 0 && d < w);
    cr_assert_eq(client::jittered_delay_ns(0, 99), 0);
}

Test(client, policy_advances_per_failure_and_restarts_after_success) {
    RetryPolicy p;
    uint64_t top = std::numeric_limits<uint64_t>::max();
    // With the largest random value the delay sits just under each window.
    const int64_t windows[] = {1, 2, 3, 5, 8, 12, 18, 27, 41, 60, 60};
    for (int64_t w : windows) {
        int64_t d = p.next_delay_ns(top);
        cr_assert(d >= 0 && d < w * kSec, "delay %ld window %ld", static_cast<long>(d),
                  static_cast<long>(w));
        cr_assert_eq(d, static_cast<int64_t>(top % static_cast<uint64_t>(w * kSec)));
    }
    cr_assert_eq(p.failures(), 11u);
    p.reset();
    cr_assert_eq(p.failures(), 0u);
    int64_t d = p.next_delay_ns(top);
    cr_assert(d < 1 * kSec);
    d = p.next_delay_ns(top);
    cr_assert(d < 2 * kSec);
}

Test(client, logged_delay_rounds_up_to_whole_seconds_at_least_one) {
    cr_assert_eq(client::delay_log_seconds(0), 1);
    cr_assert_eq(client::delay_log_seconds(1), 1);
    cr_assert_eq(client::delay_log_seconds(kSec - 1), 1);
    cr_assert_eq(client::delay_log_seconds(kSec), 1);
    cr_assert_eq(client::delay_log_seconds(kSec + 1), 2);
    cr_assert_eq(client::delay_log_seconds(59 * kSec + 1), 60);
    cr_assert_eq(client::delay_log_seconds(-5), 1);
}

Test(client, sole_catch_all_wins_else_exact_sni) {
    std::vector<config::Service> one{service("all", {})};
    cr_assert_eq(client::select_service(one, "anything.example"), &one[0]);
    cr_assert_eq(client::select_service(one, ""), &one[0]);

    std::vector<config::Service> many{service("a", {"a.example", "www.a.example"}),
                                      service("b", {"b.example"})};
    cr_assert_eq(client::select_service(many, "www.a.example"), &many[0]);
    cr_assert_eq(client::select_service(many, "b.example"), &many[1]);
    cr_assert_null(client::select_service(many, "c.example"));
    cr_assert_null(client::select_service(many, "sub.b.example"));

    // A Catch-all among named Services is not "sole": only exact names match.
    std::vector<config::Service> mixed{service("all", {}), service("b", {"b.example"})};
    cr_assert_eq(client::select_service(mixed, "b.example"), &mixed[1]);
    cr_assert_null(client::select_service(mixed, "x.example"));
}

Test(client, literal_addresses_and_their_text) {
    client::ResolvedAddress a;
    cr_assert(client::literal_address("192.0.2.7", 443, a));
    cr_assert_eq(a.addr.ss_family, AF_INET);
    cr_assert_eq(client::format_sockaddr(reinterpret_cast<sockaddr*>(&a.addr), a.len),
                 "192.0.2.7:443");
    cr_assert(client::literal_address("2001:db8::1", 8443, a));
    cr_assert_eq(a.addr.ss_family, AF_INET6);
    cr_assert_eq(client::format_sockaddr(reinterpret_cast<sockaddr*>(&a.addr), a.len),
                 "[2001:db8::1]:8443");
    cr_assert_not(client::literal_address("localhost", 1, a));
}

namespace {

struct Collector final : client::ResolveListener {
    int calls = 0;
    std::string error;
    std::vector<client::ResolvedAddress> addrs;
    void on_resolved(uint64_t, const std::string& e,
                     std::vector<client::ResolvedAddress>& a) noexcept override {
        ++calls;
        error = e;
        addrs = a;
    }
};

}  // namespace

Test(client, resolver_answers_on_the_loop_and_cancel_drops_the_answer) {
    auto w = core::Worker::create();
    cr_assert(w.ok());
    auto r = client::Resolver::create(**w, 2);
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
    Collector ok, cancelled, bad;
    (*r)->resolve("localhost", 4433, SOCK_DGRAM, ok);
    uint64_t id = (*r)->resolve("localhost", 4434, SOCK_DGRAM, cancelled);
    (*r)->cancel(id);
    (*r)->resolve("name.invalid", 1, SOCK_STREAM, bad);
    auto done = (*w)->run_until([&] { return ok.calls == 1 && bad.calls == 1; },
                                core::now_ns() + 20 * kSec);
    cr_assert(done.ok() && *done);
    cr_assert(ok.error.empty(), "%s", ok.error.c_str());
    cr_assert_geq(ok.addrs.size(), 1u);
    std::string text =
        client::format_sockaddr(reinterpret_cast<sockaddr*>(&ok.addrs[0].addr), ok.addrs[0].len);
    cr_assert(text.ends_with(":4433"), "%s", text.c_str());
    cr_assert_not(bad.error.empty());
    cr_assert_eq(cancelled.calls, 0);
    (*r)->shutdown();
    auto q = (*w)->run_until([&] { return (*w)->attached_count() == 0; }, core::now_ns() + kSec);
    cr_assert(q.ok() && *q);
}
