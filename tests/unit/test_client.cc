// Client role pieces that need no network: retry windows and jitter, Service selection, the
// configuration this build refuses.
#include <criterion/criterion.h>
#include <netinet/in.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "client/client.hh"
#include "client/reload_plan.hh"
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

// ---- terminate mode: certificate snapshots and the server session settings ----

#include <gnutls/gnutls.h>

#include "client/terminate_tls.hh"
#include "core/file.hh"
#include "tests/support/temp_tree.hh"
#include "trust/server_cert.hh"

namespace {

// A leaf for `host` (the private CA code the trust module shares), as terminate material.
trust::PublicCertMaterial material_for(const std::string& dir, const std::string& host) {
    std::string d = dir + "/" + host;
    cr_assert(trust::init_server_cert(d, host).ok());
    trust::PublicCertMaterial m;
    m.hostname = host;
    m.cert_pem = *core::read_file(d + "/server.crt");
    m.key_pem = *core::read_file(d + "/server.key");
    m.cert_path = d + "/server.crt";
    return m;
}

// Two in-memory byte queues joining a GnuTLS client and server session.
struct Wire {
    std::string to_server, to_client;
};
struct End {
    std::string* in;
    std::string* out;
    gnutls_session_t s;
};

ssize_t end_push(gnutls_transport_ptr_t p, const void* buf, size_t len) {
    auto* e = static_cast<End*>(p);
    e->out->append(static_cast<const char*>(buf), len);
    return static_cast<ssize_t>(len);
}

ssize_t end_pull(gnutls_transport_ptr_t p, void* buf, size_t len) {
    auto* e = static_cast<End*>(p);
    if (e->in->empty()) {
        gnutls_transport_set_errno(e->s, EAGAIN);
        return -1;
    }
    size_t n = std::min(len, e->in->size());
    std::memcpy(buf, e->in->data(), n);
    e->in->erase(0, n);
    return static_cast<ssize_t>(n);
}

// Runs both handshakes to completion (or failure) in lockstep; returns the server's result.
int handshake_pair(gnutls_session_t client, gnutls_session_t server) {
    int rc = GNUTLS_E_AGAIN, rs = GNUTLS_E_AGAIN;
    for (int i = 0; i < 64 && (rc != 0 || rs != 0); ++i) {
        if (rc != 0) {
            rc = gnutls_handshake(client);
            if (rc < 0 && gnutls_error_is_fatal(rc)) return rc;
        }
        if (rs != 0) {
            rs = gnutls_handshake(server);
            if (rs < 0 && gnutls_error_is_fatal(rs)) return rs;
        }
    }
    return rs;
}

struct Pair {
    Wire wire;
    End ce{&wire.to_client, &wire.to_server, nullptr};
    End se{&wire.to_server, &wire.to_client, nullptr};
    gnutls_certificate_credentials_t ccred = nullptr;

    Pair(gnutls_session_t server, const std::vector<std::string>& client_alpn,
         const gnutls_datum_t* resume = nullptr) {
        cr_assert_eq(gnutls_certificate_allocate_credentials(&ccred), 0);
        cr_assert_eq(gnutls_init(&ce.s, GNUTLS_CLIENT | GNUTLS_NONBLOCK), 0);
        cr_assert_eq(gnutls_set_default_priority(ce.s), 0);
        cr_assert_eq(gnutls_credentials_set(ce.s, GNUTLS_CRD_CERTIFICATE, ccred), 0);
        std::vector<gnutls_datum_t> protos;
        for (const auto& a : client_alpn) {
            protos.push_back({reinterpret_cast<unsigned char*>(const_cast<char*>(a.data())),
                              static_cast<unsigned>(a.size())});
        }
        if (!protos.empty()) {
            cr_assert_eq(gnutls_alpn_set_protocols(ce.s, protos.data(),
                                                   static_cast<unsigned>(protos.size()), 0),
                         0);
        }
        if (resume != nullptr)
            cr_assert_eq(gnutls_session_set_data(ce.s, resume->data, resume->size), 0);
        se.s = server;
        for (End* e : {&ce, &se}) {
            gnutls_transport_set_ptr(e->s, e);
            gnutls_transport_set_push_function(e->s, end_push);
            gnutls_transport_set_pull_function(e->s, end_pull);
        }
    }
    ~Pair() {
        gnutls_deinit(ce.s);
        gnutls_deinit(se.s);
        gnutls_certificate_free_credentials(ccred);
    }
    std::string selected_alpn() const {
        gnutls_datum_t d{};
        if (gnutls_alpn_get_selected_protocol(se.s, &d) != 0) return "";
        return std::string(reinterpret_cast<const char*>(d.data), d.size);
    }
};

}  // namespace

Test(client, terminate_snapshots_are_immutable_and_swapped_whole) {
    std::string dir = test::make_temp_tree("runewarp-terminate");
    auto built = client::TerminateCerts::build(
        {material_for(dir, "a.example.test"), material_for(dir, "b.example.test")});
    cr_assert(built.ok(), "%s", built.error().message.c_str());
    client::TerminateCertsRef first = *built;
    cr_assert_eq(first->size(), 2u);
    const client::TerminateCredential* a = first->find("a.example.test");
    cr_assert(a != nullptr);
    cr_assert(first->find("c.example.test") == nullptr);

    // A renewed certificate for a: a new snapshot; the old one (held by streams in flight)
    // still has the old credential, and b is shared, not reloaded.
    auto renewed =
        client::TerminateCredential::load(material_for(dir + "/renewed", "a.example.test"));
    cr_assert(renewed.ok());
    client::TerminateCertsRef second = client::TerminateCerts::with(
        first, "a.example.test",
        std::shared_ptr<const client::TerminateCredential>(std::move(*renewed)));
    cr_assert(second->find("a.example.test") != a);
    cr_assert(first->find("a.example.test") == a);
    cr_assert(second->find("b.example.test") == first->find("b.example.test"));

    // Material removed: the hostname has no certificate in the next snapshot only.
    client::TerminateCertsRef third =
        client::TerminateCerts::with(second, "b.example.test", nullptr);
    cr_assert(third->find("b.example.test") == nullptr);
    cr_assert(second->find("b.example.test") != nullptr);
    cr_assert_eq(third->size(), 1u);

    // A key that does not belong to the certificate is refused with the file named.
    trust::PublicCertMaterial broken = material_for(dir + "/x", "d.example.test");
    broken.key_pem = material_for(dir + "/y", "d.example.test").key_pem;
    auto bad = client::TerminateCerts::build({broken});
    cr_assert(!bad.ok());
    cr_assert(bad.error().message.find(broken.cert_path) != std::string::npos, "%s",
              bad.error().message.c_str());
    test::remove_temp_tree(dir);
}

Test(client, terminate_sessions_negotiate_alpn_and_resume_with_the_process_ticket_key) {
    std::string dir = test::make_temp_tree("runewarp-terminate");
    auto tls = client::TerminateTls::create();
    cr_assert(tls.ok(), "%s", tls.error().message.c_str());
    auto cred = client::TerminateCredential::load(material_for(dir, "app.example.test"));
    cr_assert(cred.ok());

    // Default ALPN: http/1.1 only; a Visitor offering h2 first still gets http/1.1.
    auto s1 = (*tls)->new_session(**cred, {"http/1.1"});
    cr_assert(s1.ok());
    gnutls_datum_t ticket{};
    {
        Pair p(*s1, {"h2", "http/1.1"});
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect_eq(p.selected_alpn(), "http/1.1");
        cr_expect_eq(gnutls_protocol_get_version(p.se.s), GNUTLS_TLS1_3);
        // TLS 1.3 tickets arrive after the handshake: read them on the client.
        char buf[16];
        for (int i = 0; i < 4; ++i) (void)gnutls_record_recv(p.ce.s, buf, sizeof buf);
        cr_assert_eq(gnutls_session_get_data2(p.ce.s, &ticket), 0);
    }

    // h2 offered by the Service: preferred when the Visitor offers it.
    auto s2 = (*tls)->new_session(**cred, {"h2", "http/1.1"});
    cr_assert(s2.ok());
    {
        Pair p(*s2, {"http/1.1", "h2"});
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect_eq(p.selected_alpn(), "h2", "the Service's order wins");
    }

    // Another session of the same process resumes the first one's ticket.
    auto s3 = (*tls)->new_session(**cred, {"http/1.1"});
    cr_assert(s3.ok());
    {
        Pair p(*s3, {"http/1.1"}, &ticket);
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect(gnutls_session_is_resumed(p.se.s) != 0, "the ticket resumed the session");
    }
    // A second process (another master key) does not.
    auto other = client::TerminateTls::create();
    cr_assert(other.ok());
    auto s4 = (*other)->new_session(**cred, {"http/1.1"});
    cr_assert(s4.ok());
    {
        Pair p(*s4, {"http/1.1"}, &ticket);
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect(gnutls_session_is_resumed(p.se.s) == 0);
    }
    gnutls_free(ticket.data);
    test::remove_temp_tree(dir);
}

// ---- Client ACME: certificates from the managers, TLS-ALPN-01 answers ----

Test(client, acme_certificates_become_terminate_credentials) {
    std::string dir = test::make_temp_tree("runewarp-terminate");
    trust::PublicCertMaterial m = material_for(dir, "acme.example.test");
    const std::time_t not_after = 1'900'000'000;
    auto c = client::TerminateCredential::from_acme(m.cert_pem, m.key_pem, not_after,
                                                    dir + "/acme-state");
    cr_assert(c.ok(), "%s", c.error().message.c_str());
    cr_expect((*c)->acme());
    cr_expect_eq((*c)->not_after(), not_after);
    cr_expect_eq((*c)->cert_path(), dir + "/acme-state");
    // Manual material is not marked as ACME.
    auto manual = client::TerminateCredential::load(m);
    cr_assert(manual.ok());
    cr_expect_not((*manual)->acme());

    // It serves like manual material: a Visitor completes a handshake with it.
    auto tls = client::TerminateTls::create();
    cr_assert(tls.ok());
    auto s = (*tls)->new_session(**c, {"http/1.1"});
    cr_assert(s.ok());
    {
        Pair p(*s, {"http/1.1"});
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect_eq(p.selected_alpn(), "http/1.1");
        // ... and gets a session ticket (unlike a challenge answer, below).
        char buf[16];
        for (int i = 0; i < 4; ++i) (void)gnutls_record_recv(p.ce.s, buf, sizeof buf);
        cr_expect_neq(gnutls_session_get_flags(p.ce.s) & GNUTLS_SFLAGS_SESSION_TICKET, 0u);
    }

    // A key that does not match is refused, naming where the certificate came from.
    trust::PublicCertMaterial other = material_for(dir + "/other", "acme.example.test");
    auto bad = client::TerminateCredential::from_acme(m.cert_pem, other.key_pem, not_after,
                                                      dir + "/acme-state");
    cr_assert_not(bad.ok());
    cr_expect(bad.error().message.find(dir + "/acme-state") != std::string::npos, "%s",
              bad.error().message.c_str());
    auto garbage = client::TerminateCredential::from_acme("not a pem", "", not_after, "x");
    cr_assert_not(garbage.ok());
    test::remove_temp_tree(dir);
}

Test(client, challenge_sessions_negotiate_acme_tls1_only) {
    std::string dir = test::make_temp_tree("runewarp-terminate");
    auto tls = client::TerminateTls::create();
    cr_assert(tls.ok());
    // Any certificate stands in for the challenge certificate here.
    auto cred = client::TerminateCredential::load(material_for(dir, "acme.example.test"));
    cr_assert(cred.ok());

    // The validator offers acme-tls/1 alone (RFC 8737): it is negotiated.
    auto s1 = (*tls)->new_challenge_session((*cred)->get());
    cr_assert(s1.ok(), "%s", s1.error().message.c_str());
    {
        Pair p(*s1, {"acme-tls/1"});
        cr_assert_eq(handshake_pair(p.ce.s, p.se.s), 0);
        cr_expect_eq(p.selected_alpn(), "acme-tls/1");
        // No session ticket: a challenge answer is never resumed.
        char buf[16];
        for (int i = 0; i < 4; ++i) (void)gnutls_record_recv(p.ce.s, buf, sizeof buf);
        cr_expect_eq(gnutls_session_get_flags(p.ce.s) & GNUTLS_SFLAGS_SESSION_TICKET, 0u);
    }

    // A Visitor offering ALPN without acme-tls/1 gets no challenge certificate: the handshake
    // fails (no_application_protocol). (A ClientHello without acme-tls/1 never reaches a
    // challenge session: the stream's ClientHello parser decides that first.)
    for (const std::vector<std::string>& offer :
         {std::vector<std::string>{"http/1.1"}, std::vector<std::string>{"h2", "http/1.1"}}) {
        auto s = (*tls)->new_challenge_session((*cred)->get());
        cr_assert(s.ok());
        Pair p(*s, offer);
        int rc = handshake_pair(p.ce.s, p.se.s);
        cr_expect_eq(rc, GNUTLS_E_NO_APPLICATION_PROTOCOL, "%zu protocols offered: %s",
                     offer.size(), gnutls_strerror(rc));
    }
    test::remove_temp_tree(dir);
}

// Reload planning: the Server address diff and the settings that keep their running value.

namespace {

config::HostPort hostport(std::string host, uint16_t port) {
    config::HostPort hp;
    hp.host = std::move(host);
    hp.port = port;
    return hp;
}

config::Acme acme_settings() {
    config::Acme a;
    a.email = "ops@example.test";
    a.state_dir = "/var/lib/runewarp/acme";
    return a;
}

std::vector<std::string> texts(const std::vector<config::HostPort>& v) {
    std::vector<std::string> out;
    for (const auto& hp : v) out.push_back(hp.text());
    return out;
}

}  // namespace

Test(client, address_diff_starts_added_and_stops_removed_keeps_the_rest) {
    const std::vector<std::string> running = {"a.example.test:443", "b.example.test:443"};
    auto d = client::diff_server_addresses(
        running, {hostport("b.example.test", 443), hostport("c.example.test", 443),
                  hostport("a.example.test", 8443)});
    cr_assert_eq(texts(d.added),
                 (std::vector<std::string>{"c.example.test:443", "a.example.test:8443"}));
    cr_assert_eq(d.removed, std::vector<std::string>{"a.example.test:443"});
}

Test(client, address_diff_of_the_same_list_in_another_order_is_empty) {
    const std::vector<std::string> running = {"a.example.test:443", "[2001:db8::1]:443"};
    config::HostPort v6 = hostport("2001:db8::1", 443);
    v6.host_is_literal = true;
    auto d = client::diff_server_addresses(running, {v6, hostport("a.example.test", 443)});
    cr_assert(d.added.empty());
    cr_assert(d.removed.empty());
}

Test(client, address_diff_replaces_everything_and_adds_a_repeat_once) {
    auto d = client::diff_server_addresses(
        {"a.example.test:443"}, {hostport("b.example.test", 443), hostport("b.example.test", 443)});
    cr_assert_eq(texts(d.added), std::vector<std::string>{"b.example.test:443"});
    cr_assert_eq(d.removed, std::vector<std::string>{"a.example.test:443"});
}

Test(client, restart_only_settings_keep_their_running_value_with_one_note_each) {
    config::ClientConfig running;
    running.event_backend = config::EventBackend::kIoUring;
    running.log_format = config::LogFormat::kText;
    running.log_level = config::LogLevel::kInfo;
    running.services = {service("app", {"app.example.test"})};
    config::ClientConfig next = running;
    next.event_backend = config::EventBackend::kEpoll;
    next.log_format = config::LogFormat::kJson;
    next.log_level = config::LogLevel::kDebug;
    next.services.push_back(service("new", {"new.example.test"}));
    auto r = client::keep_restart_only(running, next, {});
    cr_assert_eq(r.notes, (std::vector<std::string>{"event-backend: changed; applies on restart",
                                                    "log-format: changed; applies on restart"}));
    cr_assert_eq(next.event_backend, config::EventBackend::kIoUring);
    cr_assert_eq(next.log_format, config::LogFormat::kText);
    // Live settings keep their new value.
    cr_assert_eq(next.log_level, config::LogLevel::kDebug);
    cr_assert_eq(next.services.size(), 2u);
    cr_assert_not(r.keep_certificate_source);
    cr_assert_eq(client::join_notes(r.notes),
                 "event-backend: changed; applies on restart\n"
                 "log-format: changed; applies on restart");
}

Test(client, max_streams_is_restart_only) {
    config::ClientConfig running;
    running.services = {service("app", {"app.example.test"})};
    config::ClientConfig next = running;
    next.max_streams = 20000;
    auto r = client::keep_restart_only(running, next, {});
    cr_assert_eq(r.notes,
                 (std::vector<std::string>{"client.max-streams: changed; applies on restart"}));
    cr_assert_eq(next.max_streams, 1024u, "the running value stays");
}

Test(client, unchanged_restart_only_settings_give_no_notes) {
    config::ClientConfig running;
    running.services = {service("app", {"app.example.test"})};
    config::ClientConfig next = running;
    next.services.clear();
    auto r = client::keep_restart_only(running, next, {});
    cr_assert(r.notes.empty());
    cr_assert_eq(client::join_notes(r.notes), "");
}

Test(client, acme_is_restart_only_and_keeps_the_certificate_source) {
    config::ClientConfig running;
    running.public_cert_dir = "/etc/runewarp/public-certs";
    config::ClientConfig next = running;
    next.public_cert_dir.clear();
    next.acme = acme_settings();
    auto r = client::keep_restart_only(running, next, {});
    cr_assert_eq(r.notes, std::vector<std::string>{"[client.acme]: changed; applies on restart"});
    cr_assert_not(next.acme.has_value());
    cr_assert_eq(next.public_cert_dir, "/etc/runewarp/public-certs");
    cr_assert(r.keep_certificate_source);
}

Test(client, running_acme_has_no_manager_for_a_new_terminating_hostname) {
    config::ClientConfig running;
    running.acme = acme_settings();
    config::Service app = service("app", {"app.example.test"});
    app.tls_mode = config::TlsMode::kTerminate;
    running.services = {app};
    config::ClientConfig next = running;
    next.acme->email = "other@example.test";
    config::Service added = service("new", {"new.example.test"});
    added.tls_mode = config::TlsMode::kTerminate;
    next.services.push_back(added);
    auto r = client::keep_restart_only(running, next, {"app.example.test"});
    cr_assert_eq(r.notes,
                 (std::vector<std::string>{
                     "[client.acme]: changed; applies on restart",
                     "[client.acme]: no certificate manager for new hostname new.example.test "
                     "(its Visitors are refused); applies on restart"}));
    cr_assert_eq(next.acme->email, "ops@example.test");
    cr_assert(r.keep_certificate_source);
}
