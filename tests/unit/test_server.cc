// server: the Tunnel authorization table, pool membership, admission limits and placement; the
// pending-open counter of Admission; the intake parser pool; Admission, AdmissionLog and a direct
// route's address set shared by several threads.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hh"
#include "obs/log.hh"
#include "server/admission.hh"
#include "server/cert_watch.hh"
#include "server/intake_pool.hh"
#include "server/reload_plan.hh"
#include "server/route_table.hh"
#include "server/tunnel_registry.hh"

using namespace runewarp;
using namespace runewarp::server;

namespace {

std::string ident(char c) {
    return std::string(64, c);
}

config::ServerConfig two_tunnels() {
    config::ServerConfig cfg;
    cfg.tunnels.push_back({"app", {"app.example.test"}, {ident('a'), ident('b')}});
    cfg.tunnels.push_back({"wiki", {"wiki.example.test"}, {ident('c')}});
    return cfg;
}

void* conn(uintptr_t n) {
    return reinterpret_cast<void*>(n);
}

}  // namespace

Test(server, auth_table_maps_identities_to_their_tunnel) {
    auto t = AuthTable::build(two_tunnels());
    cr_assert_eq(t->tunnel_count(), 2u);
    cr_assert_eq(t->tunnel_of(ident('a')), 0);
    cr_assert_eq(t->tunnel_of(ident('b')), 0);
    cr_assert_eq(t->tunnel_of(ident('c')), 1);
    cr_assert_eq(t->tunnel_of(ident('d')), -1);
    cr_assert_eq(t->tunnel_index("wiki"), 1);
    cr_assert_eq(t->tunnel_index("nope"), -1);
    cr_assert_eq(t->label(0), "app");
}

Test(server, join_logs_membership_and_leave_distinguishes_clean_and_dropped) {
    obs::StringSink sink;
    obs::Logger log(sink, {});
    TunnelRegistry reg(AuthTable::build(two_tunnels()), &log);
    cr_assert(reg.admits(ident('a')));
    cr_assert_not(reg.admits(ident('e')));

    auto a = reg.join(ident('a'), conn(1));
    cr_assert_eq(a.status, JoinStatus::kJoined);
    auto b = reg.join(ident('b'), conn(2));
    cr_assert_eq(b.status, JoinStatus::kJoined);
    cr_assert_eq(reg.members(0), 2u);
    cr_assert_eq(reg.total(), 2u);
    cr_assert(sink.text.find("INFO server tunnel connection accepted: client-identity=" +
                             ident('a') + " tunnel=app members=1") != std::string::npos,
              "%s", sink.text.c_str());
    cr_assert(sink.text.find("tunnel=app members=2") != std::string::npos);

    reg.leave(*a.member, "");
    cr_assert_not(a.member->alive);
    cr_assert_eq(reg.members(0), 1u);
    cr_assert(sink.text.find("INFO server tunnel connection closed: client-identity=" + ident('a') +
                             " tunnel=app members=1") != std::string::npos,
              "%s", sink.text.c_str());
    reg.leave(*b.member, "idle timeout");
    cr_assert(
        sink.text.find("WARN server tunnel connection dropped: client-identity=" + ident('b') +
                       " tunnel=app members=0: idle timeout") != std::string::npos,
        "%s", sink.text.c_str());
    cr_assert_eq(reg.total(), 0u);
    reg.leave(*b.member, "twice");  // a second leave changes nothing
    cr_assert_eq(reg.total(), 0u);
    cr_assert_null(reg.pick("app"));
}

// Reload (spec 10.1): identities that lost their Tunnel are handed back to be closed, the rest
// keep their connections, re-indexed by the new table (a moved identity changes pool).
Test(server, replacing_the_auth_table_revokes_removed_identities_and_moves_the_rest) {
    obs::StringSink sink;
    obs::Logger log(sink, {});
    TunnelRegistry reg(AuthTable::build(two_tunnels()), &log);
    auto a = reg.join(ident('a'), conn(1));
    auto b = reg.join(ident('b'), conn(2));
    auto c = reg.join(ident('c'), conn(3));
    cr_assert_eq(reg.total(), 3u);

    // b is removed; c moves from wiki to app; a new Tunnel "docs" comes first.
    config::ServerConfig next;
    next.tunnels.push_back({"docs", {"docs.example.test"}, {ident('d')}});
    next.tunnels.push_back({"app", {"app.example.test"}, {ident('a'), ident('c')}});
    auto revoked = reg.replace_table(AuthTable::build(next));
    cr_assert_eq(revoked.size(), 1u);
    cr_assert_eq(revoked[0].get(), b.member.get());
    cr_assert_eq(revoked[0]->connection, conn(2), "the caller closes the connection");
    cr_assert_not(b.member->alive);
    cr_assert_eq(reg.total(), 2u);
    cr_assert_eq(reg.members(reg.table()->tunnel_index("app")), 2u);
    cr_assert_eq(reg.members(reg.table()->tunnel_index("docs")), 0u);
    cr_assert_eq(a.member->tunnel, 1);
    cr_assert_eq(c.member->tunnel, 1);
    cr_assert_not(reg.admits(ident('b')));
    cr_assert(reg.admits(ident('d')));
    cr_assert(sink.text.find("WARN server tunnel connection revoked: client-identity=" +
                             ident('b') + " tunnel=app") != std::string::npos,
              "%s", sink.text.c_str());
    cr_assert(sink.text.find("server tunnel connection moved: client-identity=" + ident('c') +
                             " from-tunnel=wiki tunnel=app") != std::string::npos,
              "%s", sink.text.c_str());
    // The revoked member's close later changes nothing; the others leave their new pool.
    reg.leave(*b.member, "");
    cr_assert_eq(reg.total(), 2u);
    reg.leave(*c.member, "");
    cr_assert_eq(reg.members(1), 1u);
    cr_assert_eq(reg.pick("app").get(), a.member.get());
    // The identity's count was released: b may join again once it is pinned again.
    auto b2 = reg.replace_table(AuthTable::build(two_tunnels()));
    cr_assert_eq(b2.size(), 0u);
    cr_assert_eq(reg.join(ident('b'), conn(4)).status, JoinStatus::kJoined);
}

Test(server, stream_limits_are_restart_only) {
    config::ServerConfig running;
    config::ServerConfig next = running;
    next.max_active_streams = 20000;
    next.max_pending_stream_opens = 3000;
    auto notes = keep_restart_only(running, next, true);
    cr_assert_eq(notes.size(), 2u);
    cr_assert_eq(notes[0],
                 "server.max-active-streams: changed to 20000; needs a restart, the running value "
                 "4096 stays");
    cr_assert_eq(notes[1],
                 "server.max-pending-stream-opens: changed to 3000; needs a restart, the running "
                 "value 1024 stays");
    cr_assert_eq(next.max_active_streams, 4096u);
    cr_assert_eq(next.max_pending_stream_opens, 1024u);
}

Test(server, reload_keeps_restart_only_keys_and_says_so) {
    config::ServerConfig running;
    running.hostname = "edge.example.test";
    running.public_bind = proto::Endpoint{};
    config::ServerConfig next = running;
    cr_assert(keep_restart_only(running, next, true).empty(), "nothing changed: no notes");

    next.visitor_proxy_v2 = true;
    next.event_backend = config::EventBackend::kEpoll;
    next.graceful_shutdown_ms = 5000;      // live
    next.hostname = "other.example.test";  // live without ACME
    auto notes = keep_restart_only(running, next, true);
    cr_assert_eq(notes.size(), 2u);
    cr_assert_eq(notes[0].rfind("server.visitor-proxy-protocol: changed to v2; needs a restart", 0),
                 0u, "%s", notes[0].c_str());
    cr_assert_eq(notes[1].rfind("event-backend: changed to epoll", 0), 0u, "%s", notes[1].c_str());
    cr_assert_not(next.visitor_proxy_v2, "the running value stays");
    cr_assert_eq(next.event_backend, running.event_backend);
    cr_assert_eq(next.graceful_shutdown_ms, 5000u);
    cr_assert_eq(next.hostname, "other.example.test");

    // With ACME the manager's hostname and settings are fixed for the process.
    running.acme.emplace();
    running.acme->email = "ops@example.test";
    config::ServerConfig acme = running;
    acme.hostname = "other.example.test";
    acme.acme->email = "new@example.test";
    notes = keep_restart_only(running, acme, true);
    cr_assert_eq(notes.size(), 2u);
    cr_assert_eq(notes[0].rfind("[server.acme]: changed; needs a restart", 0), 0u, "%s",
                 notes[0].c_str());
    cr_assert_eq(acme.acme->email, "ops@example.test");
    cr_assert_eq(acme.hostname, "edge.example.test");

    // A Server without a tunnel listener binds the new tunnel-bind-address when a [tunnel]
    // arrives; with one, the address is restart-only.
    config::ServerConfig t = running;
    t.tunnel_bind.port = 9443;
    cr_assert(keep_restart_only(running, t, false).empty());
    cr_assert_eq(t.tunnel_bind.port, 9443);
    notes = keep_restart_only(running, t, true);
    cr_assert_eq(notes.size(), 1u);
    cr_assert_neq(notes[0].find("server.tunnel-bind-address"), std::string::npos);
}

Test(server, unmapped_and_sealed_joins_are_refused_with_their_reasons) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    auto u = reg.join(ident('e'), conn(1));
    cr_assert_eq(u.status, JoinStatus::kUnmapped);
    cr_assert_null(u.member.get());
    cr_assert_str_eq(join_close_reason(u.status), "unmapped client identity");
    reg.seal();
    auto s = reg.join(ident('a'), conn(2));
    cr_assert_eq(s.status, JoinStatus::kShuttingDown);
    cr_assert_str_eq(join_close_reason(s.status), "server shutting down");
    cr_assert_eq(reg.total(), 0u);
}

Test(server, placement_prefers_the_least_active_member) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    auto a = reg.join(ident('a'), conn(1)).member;
    auto b = reg.join(ident('a'), conn(2)).member;
    auto c = reg.join(ident('b'), conn(3)).member;
    reg.stream_started(*a);
    reg.stream_started(*a);
    reg.stream_started(*c);
    // b holds the only minimum (0), whatever the counter says.
    for (int i = 0; i < 5; ++i) cr_assert_eq(reg.pick("app").get(), b.get());
    reg.stream_started(*b);
    reg.stream_started(*b);
    // Now c (1) is the minimum.
    for (int i = 0; i < 4; ++i) cr_assert_eq(reg.pick("app").get(), c.get());
}

Test(server, placement_breaks_ties_round_robin_from_the_pool_counter) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    auto a = reg.join(ident('a'), conn(1)).member;
    auto b = reg.join(ident('a'), conn(2)).member;
    auto c = reg.join(ident('b'), conn(3)).member;
    // All at 0: the scan starts at k mod 3 with k = 0, 1, 2, 3, ...
    std::vector<TunnelMember*> got;
    for (int i = 0; i < 6; ++i) got.push_back(reg.pick("app").get());
    std::vector<TunnelMember*> want = {a.get(), b.get(), c.get(), a.get(), b.get(), c.get()};
    cr_assert(got == want);
    // k = 6 now; with b busy, k mod 3 = 0 -> a, k = 7 -> start at b (busy) -> c, k = 8 -> c? no:
    // start at c -> c, k = 9 -> a.
    reg.stream_started(*b);
    cr_assert_eq(reg.pick("app").get(), a.get());
    cr_assert_eq(reg.pick("app").get(), c.get());
    cr_assert_eq(reg.pick("app").get(), c.get());
    cr_assert_eq(reg.pick("app").get(), a.get());
    // Other pools are independent.
    cr_assert_null(reg.pick("wiki"));
    cr_assert_null(reg.pick("nope"));
}

namespace {
// Members whose connection pointer is odd count as unresponsive in these tests.
bool odd_is_silent(const TunnelMember& m, int64_t) noexcept {
    return (reinterpret_cast<uintptr_t>(m.connection) & 1u) == 0;
}
}  // namespace

Test(server, placement_skips_unresponsive_members_until_they_answer) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    reg.set_liveness(odd_is_silent);
    auto a = reg.join(ident('a'), conn(2)).member;
    auto b = reg.join(ident('a'), conn(3)).member;  // silent
    auto c = reg.join(ident('b'), conn(4)).member;
    // b is idle (the least active) but silent: placement alternates between a and c.
    reg.stream_started(*a);
    reg.stream_started(*c);
    std::vector<TunnelMember*> got;
    for (int i = 0; i < 4; ++i) got.push_back(reg.pick("app").get());
    std::vector<TunnelMember*> want = {a.get(), c.get(), c.get(), a.get()};
    cr_assert(got == want);
    cr_assert(b->unresponsive);
    cr_assert_not(a->unresponsive);
    // b answers again: it is the least active one.
    b->connection = conn(6);
    cr_assert_eq(reg.pick("app").get(), b.get());
    cr_assert_not(b->unresponsive);
    // Only silent members left: no placement at all.
    a->connection = conn(7);
    b->connection = conn(9);
    c->connection = conn(11);
    cr_assert_null(reg.pick("app"));
}

// With workers, a worker checks only the members it owns; another worker's member keeps the
// verdict its own worker gave, which that worker is told to watch when it turns unresponsive.
Test(server, placement_checks_only_the_deciding_workers_members) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    reg.set_liveness(odd_is_silent);
    std::vector<TunnelMember*> watched;
    reg.set_on_unresponsive([&](TunnelMember& m) { watched.push_back(&m); });
    auto a = reg.join(ident('a'), conn(2), 0).member;
    auto b = reg.join(ident('a'), conn(3), 1).member;  // silent, owned by worker 1
    reg.stream_started(*a);
    // Worker 0 cannot read b's connection: b (idle) still counts as responsive there.
    cr_assert_eq(reg.pick("app", 0).get(), b.get());
    cr_assert_not(b->unresponsive);
    cr_assert(watched.empty());
    // Worker 1 checks it (placing, or when a Visitor handed to it arrives) and watches it.
    cr_assert_not(reg.responsive(*b));
    cr_assert(b->unresponsive);
    cr_assert_eq(watched.size(), 1u);
    cr_assert_eq(watched[0], b.get());
    // Now every worker passes it over; the verdict is noted once.
    cr_assert_eq(reg.pick("app", 0).get(), a.get());
    cr_assert_eq(reg.pick("app", 1).get(), a.get());
    cr_assert_eq(watched.size(), 1u);
    // It answers again: worker 1's next check clears the flag for everyone.
    b->connection = conn(6);
    cr_assert(reg.responsive(*b));
    cr_assert_eq(reg.pick("app", 0).get(), b.get());
}

Test(server, placement_always_finds_a_member_while_its_worker_changes_the_counts) {
    // The owning worker opens and ends streams while another worker places Visitors: every
    // placement must land on the one live member, whatever the count is at that moment.
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    auto a = reg.join(ident('a'), conn(1), 0).member;
    std::atomic<bool> stop{false};
    std::thread owner([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            reg.stream_started(*a);
            reg.stream_ended(*a);
        }
    });
    int misses = 0;
    for (int i = 0; i < 200'000; ++i) {
        if (reg.pick("app", 1).get() != a.get()) ++misses;
    }
    stop = true;
    owner.join();
    cr_assert_eq(misses, 0, "%d of 200000 placements found no member", misses);
}

Test(server, counts_decrement_when_relays_end_and_members_leave_in_order) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr);
    auto a = reg.join(ident('a'), conn(1)).member;
    auto b = reg.join(ident('b'), conn(2)).member;
    reg.stream_started(*a);
    cr_assert_eq(reg.pick("app").get(), b.get());
    reg.stream_started(*b);
    reg.stream_started(*b);
    cr_assert_eq(reg.pick("app").get(), a.get());
    reg.stream_ended(*b);
    reg.stream_ended(*b);
    cr_assert_eq(b->active_streams, 0u);
    cr_assert_eq(reg.pick("app").get(), b.get());
    reg.stream_ended(*b);  // never below zero
    cr_assert_eq(b->active_streams, 0u);
    // The busy member leaving leaves the other as the only choice.
    reg.leave(*b, "");
    for (int i = 0; i < 3; ++i) cr_assert_eq(reg.pick("app").get(), a.get());
    // A Visitor holding the dead member can still end its relay safely.
    reg.stream_ended(*b);
}

Test(server, per_identity_limit_closes_the_newest_and_keeps_existing) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr,
                       {.global = 100, .per_pool = 100, .per_identity = 3});
    std::vector<std::shared_ptr<TunnelMember>> kept;
    for (uintptr_t i = 0; i < 3; ++i) {
        auto j = reg.join(ident('a'), conn(i + 1));
        cr_assert_eq(j.status, JoinStatus::kJoined);
        kept.push_back(j.member);
    }
    auto over = reg.join(ident('a'), conn(9));
    cr_assert_eq(over.status, JoinStatus::kIdentitySaturated);
    cr_assert_str_eq(join_close_reason(over.status), "server tunnel admission saturated");
    cr_assert_str_eq(scope_name(*join_scope(over.status)), "tunnel-connection-per-client-identity");
    cr_assert_eq(reg.members(0), 3u);
    for (auto& m : kept) cr_assert(m->alive);
    // Another identity of the same pool is not limited by a's count.
    cr_assert_eq(reg.join(ident('b'), conn(10)).status, JoinStatus::kJoined);
    // A slot freed by a leaving member is available again.
    reg.leave(*kept[0], "");
    cr_assert_eq(reg.join(ident('a'), conn(11)).status, JoinStatus::kJoined);
}

Test(server, per_pool_and_global_limits) {
    TunnelRegistry reg(AuthTable::build(two_tunnels()), nullptr,
                       {.global = 5, .per_pool = 3, .per_identity = 64});
    for (uintptr_t i = 0; i < 3; ++i)
        cr_assert_eq(reg.join(ident(i % 2 ? 'a' : 'b'), conn(i + 1)).status, JoinStatus::kJoined);
    auto pool = reg.join(ident('a'), conn(7));
    cr_assert_eq(pool.status, JoinStatus::kPoolSaturated);
    cr_assert_str_eq(scope_name(*join_scope(pool.status)), "tunnel-connection-per-tunnel");
    // The other pool still has room until the global limit.
    cr_assert_eq(reg.join(ident('c'), conn(8)).status, JoinStatus::kJoined);
    cr_assert_eq(reg.join(ident('c'), conn(9)).status, JoinStatus::kJoined);
    auto global = reg.join(ident('c'), conn(10));
    cr_assert_eq(global.status, JoinStatus::kGlobalSaturated);
    cr_assert_str_eq(scope_name(*join_scope(global.status)), "tunnel-connection-global");
    cr_assert_eq(reg.total(), 5u);
    cr_assert_eq(reg.all().size(), 5u);
}

Test(server, default_limits_are_the_fixed_policy) {
    TunnelLimits l;
    cr_assert_eq(l.global, 4096u);
    cr_assert_eq(l.per_pool, 256u);
    cr_assert_eq(l.per_identity, 64u);
    AdmissionLimits a;
    cr_assert_eq(a.pending_opens, 1024u);
    cr_assert_eq(a.active_relays, 4096u);
}

Test(server, pending_open_slots_are_bounded_and_released_once) {
    Admission adm({.pre_routing_global = 1,
                   .pre_routing_per_source = 1,
                   .active_relays = 1,
                   .pending_opens = 2});
    cr_assert(adm.try_pending_open());
    cr_assert(adm.try_pending_open());
    cr_assert_not(adm.try_pending_open());
    cr_assert_eq(adm.pending_opens(), 2u);
    adm.release_pending_open();
    cr_assert(adm.try_pending_open());
    adm.release_pending_open();
    adm.release_pending_open();
    adm.release_pending_open();  // never below zero
    cr_assert_eq(adm.pending_opens(), 0u);
}

Test(server, intake_state_is_lent_reset_and_kept_up_to_the_idle_bound) {
    IntakePool pool(1);
    std::unique_ptr<IntakeState> a = pool.borrow();
    std::unique_ptr<IntakeState> b = pool.borrow();
    cr_assert(a != nullptr && b != nullptr);
    cr_assert_eq(pool.lent(), 2u);
    // A half-parsed ClientHello and a peek offset: the next borrower must not see them.
    const uint8_t record_header[] = {0x16, 0x03, 0x01, 0x00, 0x40};
    cr_assert_eq(a->hello.feed(record_header), proto::HelloStatus::kIncomplete);
    a->peeked = 5;
    IntakeState* reused = a.get();
    pool.give_back(std::move(a));
    pool.give_back(std::move(b));  // over the idle bound: freed, not kept
    cr_assert_eq(pool.lent(), 0u);
    cr_assert_eq(pool.idle(), 1u);

    std::unique_ptr<IntakeState> c = pool.borrow();
    cr_assert_eq(c.get(), reused);
    cr_assert_eq(c->peeked, 0u);
    cr_assert_eq(c->hello.bytes_seen(), 0u);
    cr_assert_eq(c->hello.status(), proto::HelloStatus::kIncomplete);
    cr_assert_eq(pool.idle(), 0u);
    pool.give_back(nullptr);  // nothing to take back
    cr_assert_eq(pool.lent(), 1u);
}

Test(server, certificate_expiry_watch_warns_errs_and_stays_quiet_when_valid) {
    obs::StringSink sink;
    obs::Logger log(sink, {});
    CertExpiryWatch watch(log);
    cr_assert(watch.empty());
    const std::time_t now = 1'777'629'600;  // 2026-05-01T10:00:00Z
    const std::time_t day = 86'400;
    watch.add("/etc/runewarp/server.crt", now + 60 * day);
    cr_assert_eq(watch.check(now), trust::ExpiryLevel::kValid);
    cr_assert(sink.text.empty(), "%s", sink.text.c_str());

    watch.add("/srv/b.crt", now + 12 * day + 7200);
    cr_assert_eq(watch.check(now), trust::ExpiryLevel::kExpiring);
    cr_assert(sink.text.find(
                  "WARN server certificate expiring: path=/srv/b.crt "
                  "expires-at=2026-05-13T12:00:00Z days-left=12: renew it with "
                  "`runewarp server cert renew`, then reload the server (`runewarp reload`)") !=
                  std::string::npos,
              "%s", sink.text.c_str());
    cr_assert_eq(sink.text.find("/etc/runewarp/server.crt"), std::string::npos, "%s",
                 sink.text.c_str());

    sink.text.clear();
    // The next day's check, after the notAfter of the second certificate.
    cr_assert_eq(watch.check(now + 13 * day), trust::ExpiryLevel::kExpired);
    cr_assert(sink.text.find("ERROR server certificate expired: path=/srv/b.crt "
                             "expires-at=2026-05-13T12:00:00Z: Clients refuse it; renew it") !=
                  std::string::npos,
              "%s", sink.text.c_str());
}

Test(server, certificate_expiry_watch_follows_an_acme_certificate_it_replaces) {
    obs::StringSink sink;
    obs::Logger log(sink, {});
    CertExpiryWatch watch(log);
    const std::time_t now = 1'777'629'600;  // 2026-05-01T10:00:00Z
    const std::time_t day = 86'400;
    // Issued with 10 days left (a renewal that keeps failing): the hint points at the manager.
    watch.replace("/var/lib/runewarp/server/acme/t.example.test/certificate.pem", now + 10 * day,
                  CertExpiryWatch::Source::kAcme);
    cr_assert_eq(watch.check(now), trust::ExpiryLevel::kExpiring);
    cr_assert(sink.text.find("WARN server certificate expiring: "
                             "path=/var/lib/runewarp/server/acme/t.example.test/certificate.pem "
                             "expires-at=2026-05-11T10:00:00Z days-left=10: the ACME manager "
                             "renews it") != std::string::npos,
              "%s", sink.text.c_str());
    cr_assert_eq(sink.text.find("runewarp server cert renew"), std::string::npos, "%s",
                 sink.text.c_str());

    // Renewed: the watch holds only the new notAfter and is quiet again.
    sink.text.clear();
    watch.replace("/var/lib/runewarp/server/acme/t.example.test/certificate.pem", now + 80 * day,
                  CertExpiryWatch::Source::kAcme);
    cr_assert_eq(watch.check(now + day), trust::ExpiryLevel::kValid);
    cr_assert(sink.text.empty(), "%s", sink.text.c_str());
}

Test(server, acme_drop_reasons_have_texts_and_stay_out_of_the_intake_warnings) {
    cr_assert_str_eq(reason_text(CloseReason::kAcmeNoChallenge), "acme-challenge-not-pending");
    cr_assert_str_eq(reason_text(CloseReason::kAcmeHandshakeFailed), "acme-tls-handshake-failed");
    cr_assert_str_eq(reason_text(CloseReason::kAcmeHandshakeTimeout), "acme-tls-handshake-timeout");
    obs::StringSink sink;
    obs::Logger log(sink, {});
    AdmissionLog adm(log);
    adm.rejected(CloseReason::kAcmeNoChallenge, "t.example.test");
    adm.rejected(CloseReason::kAcmeHandshakeFailed, "t.example.test");
    adm.rejected(CloseReason::kAcmeHandshakeTimeout, "t.example.test");
    cr_assert(sink.text.empty(), "%s", sink.text.c_str());
    // Manual mode still warns about a challenge it cannot answer.
    adm.rejected(CloseReason::kAcmeConfigMissing, "t.example.test");
    cr_assert(sink.text.find("WARN server route rejected: reason=acme-tls-config-missing") !=
                  std::string::npos,
              "%s", sink.text.c_str());
}

Test(server, admission_slots_hold_their_limits_from_several_threads) {
    constexpr int kThreads = 4;
    constexpr int kRounds = 20000;
    constexpr uint32_t kLimit = 3;
    constexpr uint32_t kPerSource = 2;
    Admission adm({.pre_routing_global = kLimit,
                   .pre_routing_per_source = kPerSource,
                   .active_relays = kLimit,
                   .pending_opens = kLimit});
    const SourceKey sources[2] = {SourceKey::of(proto::Endpoint::v4({192, 0, 2, 1}, 1000)),
                                  SourceKey::of(proto::Endpoint::v4({192, 0, 2, 2}, 1000))};
    // Slots held right now, counted outside Admission: never more than the limit.
    std::atomic<uint32_t> global{0}, relay{0}, pending{0};
    std::atomic<uint32_t> per_source[2] = {0, 0};
    std::atomic<int> over{0};
    std::atomic<uint64_t> taken{0};
    auto hold = [&](std::atomic<uint32_t>& holders, uint32_t limit, uint32_t used) {
        if (holders.fetch_add(1) + 1 > limit || used > limit) over.fetch_add(1);
        taken.fetch_add(1, std::memory_order_relaxed);
    };
    std::latch start(kThreads);  // all threads running before the first slot is taken
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < kRounds; ++i) {
                const SourceKey& src = sources[(i + t) % 2];
                std::atomic<uint32_t>& src_holders = per_source[(i + t) % 2];
                bool g = adm.try_pre_routing_global();
                if (g) hold(global, kLimit, adm.pre_routing());
                bool s = adm.try_pre_routing_source(src);
                if (s) hold(src_holders, kPerSource, 0);
                bool r = adm.try_active_relay();
                if (r) hold(relay, kLimit, adm.active_relays());
                bool p = adm.try_pending_open();
                if (p) hold(pending, kLimit, adm.pending_opens());
                if (adm.tracked_sources() > 2) over.fetch_add(1);
                if (p) {
                    pending.fetch_sub(1);
                    adm.release_pending_open();
                }
                if (r) {
                    relay.fetch_sub(1);
                    adm.release_active_relay();
                }
                if (s) {
                    src_holders.fetch_sub(1);
                    adm.release_pre_routing_source(src);
                }
                if (g) {
                    global.fetch_sub(1);
                    adm.release_pre_routing_global();
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    cr_assert_eq(over.load(), 0, "%d times over a limit", over.load());
    cr_assert_gt(taken.load(), 0u);
    cr_assert_eq(adm.pre_routing(), 0u);
    cr_assert_eq(adm.active_relays(), 0u);
    cr_assert_eq(adm.pending_opens(), 0u);
    cr_assert_eq(adm.tracked_sources(), 0u);
    // Still bounded after the storm.
    for (uint32_t i = 0; i < kLimit; ++i) cr_assert(adm.try_active_relay());
    cr_assert_not(adm.try_active_relay());
    for (uint32_t i = 0; i < kPerSource; ++i) cr_assert(adm.try_pre_routing_source(sources[0]));
    cr_assert_not(adm.try_pre_routing_source(sources[0]));
    cr_assert_eq(adm.tracked_sources(), 1u);
}

Test(server, admission_log_counts_every_saturation_from_several_threads) {
    constexpr int kThreads = 4;
    constexpr int kRounds = 20000;
    obs::StringSink sink;
    obs::Logger log(sink, {});
    AdmissionLog adm(log);
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            start.arrive_and_wait();
            for (int i = 0; i < kRounds; ++i) {
                adm.saturated(AdmissionScope::kActiveRelay, 5, 5);
                adm.admitted(AdmissionScope::kActiveRelay);
                adm.admitted(AdmissionScope::kPendingOpen);  // never saturated: no line
                adm.rejected(CloseReason::kNoActiveTunnel, "app.example.test");
            }
        });
    }
    for (auto& th : threads) th.join();
    adm.admitted(AdmissionScope::kActiveRelay);  // recovers a saturation logged last, if any

    cr_assert_eq(adm.saturations(AdmissionScope::kActiveRelay).value(),
                 uint64_t{kThreads} * kRounds);
    cr_assert_eq(adm.saturations(AdmissionScope::kPendingOpen).value(), 0u);
    int saturated = 0, recovered = 0, unavailable = 0;
    size_t pos = 0;
    while (pos < sink.text.size()) {
        size_t nl = sink.text.find('\n', pos);
        cr_assert_neq(nl, std::string::npos, "last line cut: %s", sink.text.c_str() + pos);
        std::string line = sink.text.substr(pos, nl - pos);
        pos = nl + 1;
        // After the timestamp.
        std::string rest = line.substr(std::min(line.find(' '), line.size()));
        if (rest ==
            "  WARN server admission saturated: scope=active-routed-stream "
            "active-work=5 limit=5") {
            ++saturated;
        } else if (rest == "  INFO server admission recovered: scope=active-routed-stream") {
            ++recovered;
        } else if (rest.starts_with("  WARN server route unavailable: "
                                    "public-hostname=app.example.test "
                                    "reason=no-active-tunnel-connection count=")) {
            ++unavailable;
        } else {
            cr_assert_fail("unexpected line: %s", line.c_str());
        }
    }
    cr_assert_geq(saturated, 1);
    cr_assert_geq(recovered, 1);
    cr_assert_leq(recovered, saturated);
    cr_assert_geq(unavailable, 1);
}

Test(server, direct_route_address_set_is_replaced_while_other_threads_read_it) {
    // Every address of a set of n addresses has port n, so a reader can tell a torn set.
    auto make_set = [](uint16_t n) {
        std::vector<net::ResolvedAddress> v(n);
        for (auto& a : v) net::literal_address("127.0.0.1", n, a);
        return std::make_shared<const std::vector<net::ResolvedAddress>>(std::move(v));
    };
    DirectRoute route;
    cr_assert(route.addresses() == nullptr);
    std::atomic<bool> done{false};
    std::atomic<int> bad{0};
    std::latch start(4);  // three readers and this thread, the writer
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
        readers.emplace_back([&] {
            start.arrive_and_wait();
            while (!done.load()) {
                AddressSet set = route.addresses();
                if (set == nullptr) continue;
                for (const auto& a : *set) {
                    sockaddr_in sin{};
                    std::memcpy(&sin, &a.addr, sizeof sin);
                    if (ntohs(sin.sin_port) != set->size()) bad.fetch_add(1);
                }
            }
        });
    }
    start.arrive_and_wait();
    for (int i = 0; i < 50000; ++i) route.set_addresses(make_set(static_cast<uint16_t>(i % 8 + 1)));
    done.store(true);
    for (auto& th : readers) th.join();
    cr_assert_eq(bad.load(), 0);
    cr_assert_eq(route.addresses()->size(), 49999u % 8 + 1);

    // A copy holds the same set, and replacing one set leaves the other.
    DirectRoute copy = route;
    cr_assert(copy.addresses() == route.addresses());
    copy.set_addresses(make_set(1));
    cr_assert_eq(route.addresses()->size(), 49999u % 8 + 1);
    cr_assert_eq(copy.addresses()->size(), 1u);
}
