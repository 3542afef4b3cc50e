// Client role pieces that need no network: retry windows and jitter, Service selection, the
// configuration this build refuses.
#include <criterion/criterion.h>
#include <netinet/in.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "client/client.hh"
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

