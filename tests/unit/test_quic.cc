// quic: mTLS handshakes, admission outcomes, streams with flow control, close, migration —
// both roles in one process on loopback, on both event-loop backends.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "quic/retry.hh"
#include "quic/steering.hh"
#include "quic/tls.hh"
#include "tests/support/quic_raw.hh"

using namespace runewarp;
using namespace runewarp::quic;

namespace {

constexpr const char* kServerName = "tunnel.example.test";
constexpr size_t kTransfer = 16u << 20;

// ---- certificates ---------------------------------------------------------------------------

struct Pem {
    std::string cert;
    std::string key;
    std::string der;  // the certificate, DER
};

std::string export_crt(gnutls_x509_crt_t crt, gnutls_x509_crt_fmt_t fmt) {
    gnutls_datum_t d{};
    cr_assert_eq(gnutls_x509_crt_export2(crt, fmt, &d), 0);
    std::string s(reinterpret_cast<char*>(d.data), d.size);
    gnutls_free(d.data);
    return s;
}

std::string export_key(gnutls_x509_privkey_t key) {
    gnutls_datum_t d{};
    cr_assert_eq(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, 0, &d), 0);
    std::string s(reinterpret_cast<char*>(d.data), d.size);
    gnutls_free(d.data);
    return s;
}

gnutls_x509_crt_t new_crt(gnutls_x509_privkey_t key, const char* cn, unsigned serial) {
    gnutls_x509_crt_t crt;
    cr_assert_eq(gnutls_x509_crt_init(&crt), 0);
    gnutls_x509_crt_set_version(crt, 3);
    unsigned char ser[4] = {0, 0, 0, static_cast<unsigned char>(serial)};
    gnutls_x509_crt_set_serial(crt, ser, sizeof ser);
    time_t now = time(nullptr);
    gnutls_x509_crt_set_activation_time(crt, now - 3600);
    gnutls_x509_crt_set_expiration_time(crt, now + 86400);
    cr_assert_eq(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                               static_cast<unsigned>(strlen(cn))),
                 0);
    cr_assert_eq(gnutls_x509_crt_set_key(crt, key), 0);
    return crt;
}

gnutls_x509_privkey_t new_key(gnutls_pk_algorithm_t alg, unsigned bits) {
    gnutls_x509_privkey_t key;
    cr_assert_eq(gnutls_x509_privkey_init(&key), 0);
    cr_assert_eq(gnutls_x509_privkey_generate(key, alg, bits, 0), 0);
    return key;
}

struct Material {
    Pem ca;           // private Server CA
    Pem server;       // leaf for tunnel.example.test, signed by ca
    Pem server2;      // another leaf for the same name and CA (a renewed certificate)
    Pem client;       // self-signed Ed25519 Client identity
    Pem client_p256;  // a second identity (P-256) the verifier can tell apart
};

Pem self_signed_client(gnutls_pk_algorithm_t alg, unsigned bits, const char* cn) {
    gnutls_x509_privkey_t key = new_key(alg, bits);
    gnutls_x509_crt_t crt = new_crt(key, cn, 7);
    gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0);
    cr_assert_eq(gnutls_x509_crt_sign2(
                     crt, crt, key,
                     alg == GNUTLS_PK_EDDSA_ED25519 ? GNUTLS_DIG_UNKNOWN : GNUTLS_DIG_SHA256, 0),
                 0);
    Pem p{export_crt(crt, GNUTLS_X509_FMT_PEM), export_key(key),
          export_crt(crt, GNUTLS_X509_FMT_DER)};
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return p;
}

const Material& material() {
    static Material m = [] {
        Material out;
        unsigned p256 = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1);
        gnutls_x509_privkey_t ca_key = new_key(GNUTLS_PK_ECDSA, p256);
        gnutls_x509_crt_t ca = new_crt(ca_key, "runewarp test CA", 1);
        gnutls_x509_crt_set_basic_constraints(ca, 1, -1);
        gnutls_x509_crt_set_key_usage(ca, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN);
        cr_assert_eq(gnutls_x509_crt_sign2(ca, ca, ca_key, GNUTLS_DIG_SHA256, 0), 0);
        out.ca = {export_crt(ca, GNUTLS_X509_FMT_PEM), export_key(ca_key), {}};

        gnutls_x509_privkey_t leaf_key = new_key(GNUTLS_PK_ECDSA, p256);
        gnutls_x509_crt_t leaf = new_crt(leaf_key, kServerName, 2);
        gnutls_x509_crt_set_basic_constraints(leaf, 0, -1);
        gnutls_x509_crt_set_key_usage(leaf, GNUTLS_KEY_DIGITAL_SIGNATURE);
        gnutls_x509_crt_set_key_purpose_oid(leaf, GNUTLS_KP_TLS_WWW_SERVER, 0);
        cr_assert_eq(gnutls_x509_crt_set_subject_alt_name(leaf, GNUTLS_SAN_DNSNAME, kServerName,
                                                          strlen(kServerName), GNUTLS_FSAN_SET),
                     0);
        cr_assert_eq(gnutls_x509_crt_sign2(leaf, ca, ca_key, GNUTLS_DIG_SHA256, 0), 0);
        out.server = {export_crt(leaf, GNUTLS_X509_FMT_PEM), export_key(leaf_key),
                      export_crt(leaf, GNUTLS_X509_FMT_DER)};
        gnutls_x509_crt_deinit(leaf);
        gnutls_x509_privkey_deinit(leaf_key);

        leaf_key = new_key(GNUTLS_PK_ECDSA, p256);
        leaf = new_crt(leaf_key, kServerName, 3);
        gnutls_x509_crt_set_basic_constraints(leaf, 0, -1);
        gnutls_x509_crt_set_key_usage(leaf, GNUTLS_KEY_DIGITAL_SIGNATURE);
        gnutls_x509_crt_set_key_purpose_oid(leaf, GNUTLS_KP_TLS_WWW_SERVER, 0);
        cr_assert_eq(gnutls_x509_crt_set_subject_alt_name(leaf, GNUTLS_SAN_DNSNAME, kServerName,
                                                          strlen(kServerName), GNUTLS_FSAN_SET),
                     0);
        cr_assert_eq(gnutls_x509_crt_sign2(leaf, ca, ca_key, GNUTLS_DIG_SHA256, 0), 0);
        out.server2 = {export_crt(leaf, GNUTLS_X509_FMT_PEM), export_key(leaf_key),
                       export_crt(leaf, GNUTLS_X509_FMT_DER)};
        gnutls_x509_crt_deinit(leaf);
        gnutls_x509_privkey_deinit(leaf_key);
        gnutls_x509_crt_deinit(ca);
        gnutls_x509_privkey_deinit(ca_key);

        out.client = self_signed_client(GNUTLS_PK_EDDSA_ED25519, 0, "runewarp client");
        out.client_p256 = self_signed_client(GNUTLS_PK_ECDSA, p256, "runewarp client p256");
        return out;
    }();
    return m;
}

// ---- fixture --------------------------------------------------------------------------------

std::unique_ptr<core::Worker> make_worker(core::BackendChoice b, bool env) {
    core::WorkerOptions o;
    o.loop.choice = b;
    o.loop.honour_env = env;
    o.max_slots = 1024;
    auto w = core::Worker::create(o);
    cr_assert(w.ok(), "worker: %s", w.ok() ? "" : w.error().message.c_str());
    return std::move(*w);
}

struct ServerSide final : AcceptHandler, ConnectionHandler {
    std::vector<Connection*> accepted;
    int closed = 0;
    int streams_available = 0;
    CloseInfo last_close;
    void on_connection(Connection& c) noexcept override {
        accepted.push_back(&c);
        c.set_handler(this);
    }
    void on_established(Connection&) noexcept override {}
    void on_stream_opened(Connection&, Stream& s) noexcept override { s.reset(); }
    void on_streams_available(Connection&) noexcept override { ++streams_available; }
    void on_closed(Connection& c, const CloseInfo& info) noexcept override {
        ++closed;
        last_close = info;
        std::erase(accepted, &c);
    }
};

struct ClientSide final : ConnectionHandler {
    bool established = false;
    bool closed = false;
    CloseInfo info;
    StreamHandler* stream_handler = nullptr;
    std::vector<Stream*> opened;
    void on_established(Connection&) noexcept override { established = true; }
    void on_stream_opened(Connection&, Stream& s) noexcept override {
        opened.push_back(&s);
        s.set_handler(stream_handler);
    }
    void on_streams_available(Connection&) noexcept override {}
    void on_closed(Connection&, const CloseInfo& i) noexcept override {
        closed = true;
        info = i;
    }
};

struct Env {
    std::unique_ptr<core::Worker> worker;
    std::unique_ptr<ServerTls> server_tls;
    std::unique_ptr<ClientTls> client_tls;
    std::unique_ptr<Listener> listener;
    ServerSide server;
    ClientSide client;
    Connection* client_conn = nullptr;
    sockaddr_in addr{};
    sockaddr_storage dial_addr{};
    socklen_t dial_len = 0;
    int verify_calls = 0;
    bool admit = true;
    std::string seen_der;

    explicit Env(core::BackendChoice b = core::BackendChoice::automatic, bool with_cert = true,
                 const Pem* identity = nullptr, const ListenerConfig& lcfg = {},
                 bool server_cert = true) {
        worker = make_worker(b, b == core::BackendChoice::automatic);
        const Material& m = material();
        ServerTlsConfig sc;
        if (server_cert) {
            sc.cert_pem = m.server.cert;
            sc.key_pem = m.server.key;
        }
        sc.verify = [this](std::span<const uint8_t> der) {
            ++verify_calls;
            seen_der.assign(reinterpret_cast<const char*>(der.data()), der.size());
            return admit;
        };
        auto st = ServerTls::create(std::move(sc));
        cr_assert(st.ok(), "server tls: %s", st.ok() ? "" : st.error().message.c_str());
        server_tls = std::move(*st);
        ClientTlsConfig cc;
        cc.server_name = kServerName;
        cc.trust = ServerTrust::ca_file;
        cc.ca_pem = m.ca.cert;
        const Pem& id = identity != nullptr ? *identity : m.client;
        if (with_cert) {
            cc.cert_pem = id.cert;
            cc.key_pem = id.key;
        }
        auto ct = ClientTls::create(std::move(cc));
        cr_assert(ct.ok(), "client tls: %s", ct.ok() ? "" : ct.error().message.c_str());
        client_tls = std::move(*ct);

        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        auto l = Listener::create(*worker, reinterpret_cast<sockaddr*>(&addr), sizeof addr,
                                  *server_tls, server, lcfg);
        cr_assert(l.ok(), "listener: %s", l.ok() ? "" : l.error().message.c_str());
        listener = std::move(*l);
        socklen_t len = sizeof addr;
        std::memcpy(&addr, listener->endpoint().local_addr(), len);
    }

    // Moves the listener to another bind address; the client then dials `to` (same port).
    void rebind_listener(const sockaddr* bind_addr, socklen_t bind_len, const sockaddr* to,
                         socklen_t to_len) {
        listener.reset();
        auto l = Listener::create(*worker, bind_addr, bind_len, *server_tls, server);
        cr_assert(l.ok(), "listener: %s", l.ok() ? "" : l.error().message.c_str());
        listener = std::move(*l);
        std::memcpy(&dial_addr, to, to_len);
        dial_len = to_len;
        const sockaddr* got = listener->endpoint().local_addr();
        uint16_t port = got->sa_family == AF_INET6
                            ? reinterpret_cast<const sockaddr_in6*>(got)->sin6_port
                            : reinterpret_cast<const sockaddr_in*>(got)->sin_port;
        if (to->sa_family == AF_INET6) {
            reinterpret_cast<sockaddr_in6*>(&dial_addr)->sin6_port = port;
        } else {
            reinterpret_cast<sockaddr_in*>(&dial_addr)->sin_port = port;
        }
    }

    void dial_client(const DialOptions& opts = {}) {
        if (dial_len == 0) {
            std::memcpy(&dial_addr, &addr, sizeof addr);
            dial_len = sizeof addr;
        }
        auto c = dial(*worker, reinterpret_cast<sockaddr*>(&dial_addr), dial_len, *client_tls,
                      client, opts);
        cr_assert(c.ok(), "dial: %s", c.ok() ? "" : c.error().message.c_str());
        client_conn = *c;
    }

    template <typename Pred>
    bool run_until(Pred&& p, int64_t ms = 10000) {
        auto r = worker->run_until(p, core::now_ns() + ms * core::kNsPerMs);
        cr_assert(r.ok(), "worker: %s", r.ok() ? "" : r.error().message.c_str());
        return *r;
    }

    void handshake(const DialOptions& opts = {}) {
        dial_client(opts);
        cr_assert(run_until([&] { return client.established && !server.accepted.empty(); }),
                  "handshake did not finish");
    }

    ~Env() {
        // Drop everything and let the worker free it before the credentials go.
        if (client_conn != nullptr && !client.closed) client_conn->terminate();
        listener.reset();
        (void)worker->run_until([&] { return worker->attached_count() == 0; },
                                core::now_ns() + 5 * core::kNsPerSec);
        cr_expect_eq(worker->attached_count(), 0u, "sessions left behind");
    }
};

// Deterministic test bytes.
struct Gen {
    uint64_t state = 0x9e3779b97f4a7c15ull;
    void fill(uint8_t* p, size_t n) {
        for (size_t i = 0; i < n; i += 8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            std::memcpy(p + i, &state, std::min<size_t>(8, n - i));
        }
    }
};

struct Hash {
    gnutls_hash_hd_t h{};
    Hash() { gnutls_hash_init(&h, GNUTLS_DIG_SHA256); }
    ~Hash() {
        if (h != nullptr) gnutls_hash_deinit(h, nullptr);
    }
    void add(const uint8_t* p, size_t n) { gnutls_hash(h, p, n); }
    std::string done() {
        uint8_t out[32];
        gnutls_hash_deinit(h, out);
        h = nullptr;
        return std::string(reinterpret_cast<char*>(out), sizeof out);
    }
};

}  // namespace

// ---- handshake and admission ------------------------------------------------------------------

namespace {

void check_handshake(core::BackendChoice b) {
    Env env(b);
    env.handshake();
    cr_assert_eq(env.verify_calls, 1);
    cr_assert(env.seen_der == material().client.der, "verifier got the client's leaf DER");
    Connection* sc = env.server.accepted.front();
    std::span<const uint8_t> peer = sc->peer_certificate();
    cr_assert_eq(std::string(reinterpret_cast<const char*>(peer.data()), peer.size()),
                 material().client.der);
    cr_assert_eq(env.listener->handshakes(), 0u);
    cr_assert_eq(env.listener->connection_count(), 1u);
}

}  // namespace

Test(quic, mtls_handshake_admitted) {
    check_handshake(core::BackendChoice::automatic);
}

Test(quic, mtls_handshake_admitted_epoll) {
    check_handshake(core::BackendChoice::epoll);
}

Test(quic, p256_identity_admitted) {
    Env env(core::BackendChoice::automatic, true, &material().client_p256);
    env.handshake();
    cr_assert(env.seen_der == material().client_p256.der);
}

Test(quic, denied_identity_gets_access_denied) {
    Env env;
    env.admit = false;
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }), "client never saw the refusal");
    cr_assert_eq(env.verify_calls, 1);
    cr_assert(!env.client.established);
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::remote);
    cr_assert(!env.client.info.application);
    cr_assert_eq(env.client.info.code, kCryptoErrorAccessDenied, "code 0x%llx",
                 static_cast<unsigned long long>(env.client.info.code));
    cr_assert_eq(env.client.info.code, 0x0131u);
    cr_assert(env.server.accepted.empty());
    cr_assert(env.run_until([&] { return env.listener->handshakes() == 0; }));
}

Test(quic, client_without_certificate_refused) {
    Env env(core::BackendChoice::automatic, false);
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }), "client never saw the refusal");
    cr_assert(!env.client.established);
    cr_assert_eq(env.verify_calls, 0);
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::remote);
    cr_assert_eq(env.client.info.code, NGTCP2_CRYPTO_ERROR | kAlertCertificateRequired,
                 "code 0x%llx", static_cast<unsigned long long>(env.client.info.code));
    cr_assert(env.server.accepted.empty());
}

Test(quic, client_rejects_wrong_server_name) {
    Env env;
    ClientTlsConfig cc;
    cc.server_name = "other.example.test";
    cc.trust = ServerTrust::ca_file;
    cc.ca_pem = material().ca.cert;
    cc.cert_pem = material().client.cert;
    cc.key_pem = material().client.key;
    auto ct = ClientTls::create(std::move(cc));
    cr_assert(ct.ok());
    env.client_tls = std::move(*ct);
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }));
    cr_assert(!env.client.established);
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::local);
    cr_assert_eq(env.client.info.code & ~0xffull, NGTCP2_CRYPTO_ERROR);
    cr_assert(env.server.accepted.empty());
}

Test(quic, application_close_reaches_peer) {
    Env env;
    env.handshake();
    env.server.accepted.front()->close(kAppCloseCode, "graceful shutdown");
    cr_assert(env.run_until([&] { return env.client.closed; }));
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::remote);
    cr_assert(env.client.info.application);
    cr_assert_eq(env.client.info.code, 0u);
    cr_assert_str_eq(env.client.info.reason.c_str(), "graceful shutdown");
    cr_assert_eq(env.server.closed, 1);
    cr_assert_eq(env.server.last_close.kind, CloseInfo::Kind::local);
    // The server side retires after its closing period.
    cr_assert(env.run_until([&] { return env.listener->connection_count() == 0; }));
}

// ---- streams --------------------------------------------------------------------------------

namespace {

// Collects what a stream receives.
struct Collector final : StreamHandler {
    std::string data;
    bool fin = false;
    bool closed = false;
    uint64_t close_code = ~0ull;
    uint64_t reset_code = ~0ull;
    bool reset_on_data = false;
    bool hold = false;  // take nothing: bytes stay buffered in the stream
    size_t on_stream_data(Stream& s, std::span<const uint8_t> d, bool f) noexcept override {
        if (hold) return 0;
        data.append(reinterpret_cast<const char*>(d.data()), d.size());
        if (f) fin = true;
        if (reset_on_data) s.reset(kStreamErrorCode);
        return d.size();
    }
    void on_stream_writable(Stream&) noexcept override {}
    void on_stream_reset(Stream&, uint64_t code) noexcept override { reset_code = code; }
    void on_stream_closed(Stream&, uint64_t code) noexcept override {
        closed = true;
        close_code = code;
    }
};

void write_all(Stream& s, std::string_view text) {
    size_t n = s.write(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    cr_assert_eq(n, text.size());
}

}  // namespace

// ---- the Server certificate: none yet, then swapped at runtime ----------------------------------

namespace {

std::string der_of(std::span<const uint8_t> d) {
    return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

// A second client connection on the same worker, to see which certificate new handshakes get.
struct Dialed {
    ClientSide side;
    Connection* conn = nullptr;
};

void dial_another(Env& env, Dialed& d) {
    auto c = dial(*env.worker, reinterpret_cast<sockaddr*>(&env.addr), sizeof env.addr,
                  *env.client_tls, d.side, {});
    cr_assert(c.ok(), "dial: %s", c.ok() ? "" : c.error().message.c_str());
    d.conn = *c;
}

void check_no_certificate_then_set(core::BackendChoice b) {
    Env env(b, true, nullptr, {}, false);
    cr_assert(!env.server_tls->has_certificate());
    // Without a certificate the handshake fails with a TLS alert: the Client sees a crypto
    // error (and retries later), the Server keeps nothing.
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }), "client never saw the failure");
    cr_assert(!env.client.established);
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::remote);
    cr_assert(!env.client.info.application);
    cr_assert_eq(env.client.info.code & ~0xffull, NGTCP2_CRYPTO_ERROR, "code 0x%llx",
                 static_cast<unsigned long long>(env.client.info.code));
    cr_assert_eq(env.verify_calls, 0);
    cr_assert(env.server.accepted.empty());
    cr_assert(env.run_until([&] { return env.listener->handshakes() == 0; }));

    // A malformed pair is refused and changes nothing.
    cr_assert(!env.server_tls->set_certificate("not a certificate", material().server.key).ok());
    cr_assert(!env.server_tls->set_certificate(material().server.cert, material().server2.key).ok(),
              "a key that does not match is refused");
    cr_assert(!env.server_tls->has_certificate());

    cr_assert(env.server_tls->set_certificate(material().server.cert, material().server.key).ok());
    cr_assert(env.server_tls->has_certificate());
    Dialed d;
    dial_another(env, d);
    cr_assert(env.run_until([&] { return d.side.established && !env.server.accepted.empty(); }),
              "handshake after set_certificate did not finish");
    cr_assert(der_of(d.conn->peer_certificate()) == material().server.der);
    d.conn->terminate();
}

void check_swap_keeps_connections(core::BackendChoice b) {
    Env env(b);
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    env.handshake();
    cr_assert(der_of(env.client_conn->peer_certificate()) == material().server.der);
    std::weak_ptr<const ServerCredentials> old = env.server_tls->credentials();

    // Renewal: new handshakes get the new certificate ...
    cr_assert(
        env.server_tls->set_certificate(material().server2.cert, material().server2.key).ok());
    cr_assert(!old.expired(), "the established connection keeps its credentials");
    Dialed d;
    dial_another(env, d);
    cr_assert(env.run_until([&] { return d.side.established && env.server.accepted.size() == 2; }));
    cr_assert(der_of(d.conn->peer_certificate()) == material().server2.der);

    // ... and the connection made before it still carries data both ways.
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "after the swap");
    (*s)->shutdown_write();
    cr_assert(env.run_until([&] { return on_client.fin; }));
    cr_assert_str_eq(on_client.data.c_str(), "after the swap");
    Stream& cs = *env.client.opened.front();
    write_all(cs, "still here");
    cs.shutdown_write();
    cr_assert(env.run_until([&] { return on_server.fin; }));
    cr_assert_str_eq(on_server.data.c_str(), "still here");

    // The old credentials go with the last connection that used them.
    env.client_conn->close(kAppCloseCode, "done");
    cr_assert(env.run_until([&] { return env.client.closed && env.server.accepted.size() == 1; }));
    cr_assert(env.run_until([&] { return old.expired(); }), "old credentials still referenced");
    d.conn->terminate();
}

}  // namespace

Test(quic, server_without_certificate_fails_handshakes_until_one_is_set) {
    check_no_certificate_then_set(core::BackendChoice::automatic);
}

Test(quic, server_without_certificate_fails_handshakes_until_one_is_set_epoll) {
    check_no_certificate_then_set(core::BackendChoice::epoll);
}

Test(quic, certificate_swap_keeps_established_connections) {
    check_swap_keeps_connections(core::BackendChoice::automatic);
}

Test(quic, certificate_swap_keeps_established_connections_epoll) {
    check_swap_keeps_connections(core::BackendChoice::epoll);
}

Test(quic, fin_each_direction) {
    Env env;
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    env.handshake();
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "hello from the server");
    (*s)->shutdown_write();
    cr_assert(env.run_until([&] { return on_client.fin; }));
    cr_assert_str_eq(on_client.data.c_str(), "hello from the server");
    cr_assert_eq(env.client.opened.size(), 1u);
    cr_assert(!on_server.fin, "the other direction is still open");
    Stream& cs = *env.client.opened.front();
    write_all(cs, "and back");
    cs.shutdown_write();
    cr_assert(env.run_until([&] { return on_server.fin && on_server.closed && on_client.closed; }));
    cr_assert_str_eq(on_server.data.c_str(), "and back");
    cr_assert_eq(on_server.close_code, 0u);
    cr_assert_eq(on_client.close_code, 0u);
}

Test(quic, idle_stream_gives_its_send_ring_back) {
    Env env;
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    env.handshake();
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    Stream& ss = **s;
    cr_assert_not(ss.holds_send_ring(), "nothing written yet");
    write_all(ss, "first burst");
    cr_assert(ss.holds_send_ring());
    // Once every byte is acknowledged the 256 KiB ring goes back to the pool: an idle stream
    // costs no send buffer.
    cr_assert(
        env.run_until([&] { return on_client.data == "first burst" && ss.tx_buffered() == 0; }));
    cr_assert(env.run_until([&] { return !ss.holds_send_ring(); }));
    write_all(ss, " second");
    cr_assert(env.run_until([&] { return on_client.data == "first burst second"; }));
}

Test(quic, drained_stream_gives_its_receive_buffer_back) {
    Env env;
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    on_client.hold = true;
    env.handshake();
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "held bytes");
    cr_assert(env.run_until([&] { return env.client.opened.size() == 1; }));
    Stream& cs = *env.client.opened.front();
    cr_assert(env.run_until([&] { return cs.rx_buffered() == 10; }));
    cr_assert(cs.holds_receive_buffer(), "bytes the consumer did not take are buffered");
    on_client.hold = false;
    cs.resume_read();
    cr_assert_str_eq(on_client.data.c_str(), "held bytes");
    cr_assert_not(cs.holds_receive_buffer(), "a drained stream holds no receive buffer");
}

Test(quic, reset_code_reaches_peer) {
    Env env;
    Collector on_client, on_server;
    on_client.reset_on_data = true;  // the client aborts the stream as soon as bytes arrive
    env.client.stream_handler = &on_client;
    env.handshake();
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "some bytes");
    cr_assert(env.run_until([&] { return on_server.closed && on_client.closed; }));
    cr_assert_eq(on_server.reset_code, kStreamErrorCode);
    cr_assert_eq(on_server.close_code, kStreamErrorCode);
    // The client's stream credit is replenished: the server may open another stream.
    auto again = env.server.accepted.front()->open_stream(on_server);
    cr_assert(again.ok());
}

namespace {

// Shared by many streams: counts, and answers a FIN with a FIN.
struct Counter final : StreamHandler {
    int closed = 0;
    size_t on_stream_data(Stream& s, std::span<const uint8_t> d, bool f) noexcept override {
        if (f) s.shutdown_write();
        return d.size();
    }
    void on_stream_writable(Stream&) noexcept override {}
    void on_stream_reset(Stream& s, uint64_t) noexcept override { s.reset(); }
    void on_stream_closed(Stream&, uint64_t) noexcept override { ++closed; }
};

}  // namespace

// The Client grants 1024 concurrent streams and returns one credit per server-opened stream that
// fully closes (ngtcp2 does not replenish remote stream credit by itself).
Test(quic, client_replenishes_stream_credit) {
    Counter on_server, on_client;
    Env env;
    env.client.stream_handler = &on_client;
    env.handshake();
    Connection& sc = *env.server.accepted.front();
    std::vector<Stream*> streams;
    for (;;) {
        auto s = sc.open_stream(on_server);
        if (!s.ok()) {
            cr_assert_eq(s.error().code, EAGAIN);
            break;
        }
        streams.push_back(*s);
        cr_assert_leq(streams.size(), 1024u);
    }
    cr_assert_eq(streams.size(), 1024u);
    int before = env.server.streams_available;
    streams.front()->shutdown_write();  // FIN, answered by the client's FIN
    cr_assert(env.run_until(
        [&] { return on_server.closed == 1 && env.server.streams_available > before; }));
    auto more = sc.open_stream(on_server);
    cr_assert(more.ok(), "a closed stream gave its credit back");
    auto none = sc.open_stream(on_server);
    cr_assert(!none.ok());
}

Test(quic, client_cannot_open_streams) {
    Env env;
    env.handshake();
    Collector c;
    auto s = env.client_conn->open_stream(c);
    cr_assert(!s.ok());
    cr_assert_eq(s.error().code, EAGAIN);
}

// ---- bulk transfer with flow control -----------------------------------------------------------

namespace {

// Server end: sends kTransfer generated bytes, then FIN; hashes what comes back.
struct Source final : StreamHandler {
    Stream* s = nullptr;
    Gen gen;
    Hash sent_hash, back_hash;
    uint8_t chunk[64 * 1024];
    size_t chunk_len = 0, chunk_off = 0;
    uint64_t produced = 0;  // bytes handed to the stream
    uint64_t back = 0;
    bool fin_back = false;
    bool closed = false;
    size_t max_tx = 0;

    void pump() {
        while (s != nullptr && produced < kTransfer) {
            if (chunk_off == chunk_len) {
                chunk_len = std::min<size_t>(sizeof chunk, kTransfer - produced);
                gen.fill(chunk, chunk_len);
                sent_hash.add(chunk, chunk_len);
                chunk_off = 0;
            }
            size_t n = s->write(std::span<const uint8_t>(chunk + chunk_off, chunk_len - chunk_off));
            chunk_off += n;
            produced += n;
            max_tx = std::max(max_tx, s->tx_buffered());
            if (n == 0) return;  // full: on_stream_writable resumes
        }
        if (s != nullptr && produced == kTransfer) s->shutdown_write();
    }
    size_t on_stream_data(Stream&, std::span<const uint8_t> d, bool f) noexcept override {
        back_hash.add(d.data(), d.size());
        back += d.size();
        if (f) fin_back = true;
        return d.size();
    }
    void on_stream_writable(Stream&) noexcept override { pump(); }
    void on_stream_reset(Stream&, uint64_t) noexcept override {}
    void on_stream_closed(Stream&, uint64_t) noexcept override {
        closed = true;
        s = nullptr;
    }
};

// Client end: echoes everything back, taking only what its send buffer accepts (so QUIC flow
// control, not a buffer, absorbs a slow direction); can pause consumption entirely.
struct Echo final : StreamHandler {
    Stream* s = nullptr;
    Hash got;
    uint64_t received = 0;
    bool paused = false;
    bool fin = false;
    bool closed = false;
    size_t max_rx = 0, max_tx = 0;

    size_t on_stream_data(Stream& st, std::span<const uint8_t> d, bool f) noexcept override {
        s = &st;
        max_rx = std::max(max_rx, st.rx_buffered());
        if (paused) return 0;
        size_t n = st.write(d);
        got.add(d.data(), n);
        received += n;
        max_tx = std::max(max_tx, st.tx_buffered());
        if (f && n == d.size()) {
            fin = true;
            st.shutdown_write();
        }
        return n;
    }
    void on_stream_writable(Stream& st) noexcept override { st.resume_read(); }
    void on_stream_reset(Stream&, uint64_t) noexcept override {}
    void on_stream_closed(Stream&, uint64_t) noexcept override {
        closed = true;
        s = nullptr;
    }
};

// A UDP relay on the worker that drops every n-th datagram in each direction: retransmissions
// must come from the stream send rings (data is kept until acknowledged).
struct LossyRelay final : DatagramSink {
    UdpEndpoint* front = nullptr;  // the client talks to this
    UdpEndpoint* back = nullptr;   // connected to the listener
    sockaddr_storage client{};
    socklen_t client_len = 0;
    uint64_t every = 0, seen = 0, dropped = 0;
    uint16_t only_port = 0;  // network order; 0: any
    // A link MTU: datagrams with a larger UDP payload are dropped (0: no limit).
    size_t max_payload = 0;
    uint64_t too_big = 0;
    size_t largest = 0;  // the largest datagram forwarded

    void on_datagram(UdpEndpoint& ep, const ngtcp2_path& path,
                     std::span<const uint8_t> data) noexcept override {
        if (every != 0 && ++seen % every == 0) {
            ++dropped;
            return;
        }
        if (max_payload != 0 && data.size() > max_payload) {
            ++too_big;
            return;
        }
        largest = std::max(largest, data.size());
        // A path that only lets the client's first socket through: a migration never validates.
        if (&ep == front && only_port != 0 &&
            reinterpret_cast<const sockaddr_in*>(path.remote.addr)->sin_port != only_port) {
            ++dropped;
            return;
        }
        UdpEndpoint* out = &ep == front ? back : front;
        ngtcp2_path p{};
        p.local.addr = const_cast<sockaddr*>(out->local_addr());
        p.local.addrlen = out->local_addrlen();
        if (&ep == front) {
            std::memcpy(&client, path.remote.addr, path.remote.addrlen);
            client_len = path.remote.addrlen;
            p.remote.addr = const_cast<sockaddr*>(back_peer());
            p.remote.addrlen = sizeof(sockaddr_in);
        } else {
            p.remote.addr = reinterpret_cast<sockaddr*>(&client);
            p.remote.addrlen = client_len;
        }
        std::memcpy(out->tx_buffer(), data.data(), data.size());
        (void)out->send(p, out->tx_buffer(), data.size(), data.size());
    }
    void on_read_batch_done(UdpEndpoint&) noexcept override {}
    void on_writable(UdpEndpoint&) noexcept override {}
    const sockaddr* back_peer() const noexcept {
        return reinterpret_cast<const sockaddr*>(&server);
    }
    sockaddr_in server{};
    ~LossyRelay() {
        if (front != nullptr) front->close();
        if (back != nullptr) back->close();
    }
};

void run_transfer(core::BackendChoice b, bool migrate, int socket_buffer = 0,
                  uint64_t drop_every = 0, size_t link_payload = 0) {
    ListenerConfig lc;
    DialOptions dopt;
    if (socket_buffer > 0) {
        lc.endpoint.socket_buffer = socket_buffer;
        dopt.endpoint.socket_buffer = socket_buffer;
    }
    Env env(b, true, nullptr, lc);
    LossyRelay relay;
    if (drop_every != 0 || link_payload != 0) {
        relay.every = drop_every;
        relay.max_payload = link_payload;
        relay.server = env.addr;
        sockaddr_in lo{};
        lo.sin_family = AF_INET;
        lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        auto f = UdpEndpoint::bind(*env.worker, reinterpret_cast<sockaddr*>(&lo), sizeof lo, relay);
        auto bk =
            UdpEndpoint::bind(*env.worker, reinterpret_cast<sockaddr*>(&lo), sizeof lo, relay);
        cr_assert(f.ok() && bk.ok());
        relay.front = *f;
        relay.back = *bk;
        std::memcpy(&env.dial_addr, relay.front->local_addr(), sizeof(sockaddr_in));
        env.dial_len = sizeof(sockaddr_in);
    }
    auto src = std::make_unique<Source>();
    auto echo = std::make_unique<Echo>();
    echo->paused = true;
    env.client.stream_handler = echo.get();
    env.handshake(dopt);
    const ConnectionConfig cfg;
    int64_t t0 = core::now_ns();
    auto s = env.server.accepted.front()->open_stream(*src);
    cr_assert(s.ok());
    src->s = *s;
    src->pump();

    // Slow consumer: nothing is taken, so the sender stalls once the stream window is full.
    cr_assert(env.run_until([&] {
        return !env.client.opened.empty() &&
               env.client.opened.front()->rx_buffered() >= cfg.stream_window;
    }));
    Stream& cs = *env.client.opened.front();
    cr_assert_eq(cs.rx_buffered(), cfg.stream_window, "receive side holds exactly one window");
    cr_assert_leq(src->produced, cfg.stream_window + kStreamSendBuffer,
                  "the sender produced only window + send buffer (%llu)",
                  static_cast<unsigned long long>(src->produced));
    cr_assert_leq((*s)->tx_buffered(), kStreamSendBuffer);
    // The stall is the peer's stream credit, not the connection's.
    cr_assert((*s)->flow_blocked(), "sender blocked on stream credit");
    cr_assert_eq((*s)->peer_credit(), 0u);
    cr_assert_gt(env.server.accepted.front()->peer_credit(), 0u);
    cr_assert_leq(env.server.accepted.front()->buffered_bytes(), kStreamSendBuffer);

    echo->paused = false;
    cs.resume_read();
    bool migrated = false;
    uint16_t old_port = 0;
    if (migrate) {
        old_port =
            ntohs(reinterpret_cast<const sockaddr_in*>(env.client_conn->endpoint()->local_addr())
                      ->sin_port);
        cr_assert(env.run_until([&] { return echo->received >= kTransfer / 4; }));
        auto r = rebind(*env.client_conn);
        cr_assert(r.ok(), "rebind: %s", r.ok() ? "" : r.error().message.c_str());
        migrated = true;
    }
    cr_assert(env.run_until([&] { return src->fin_back && echo->closed && src->closed; }, 30000),
              "transfer incomplete: sent %llu echoed %llu back %llu",
              static_cast<unsigned long long>(src->produced),
              static_cast<unsigned long long>(echo->received),
              static_cast<unsigned long long>(src->back));
    int64_t dt = core::now_ns() - t0;
    if (drop_every != 0) {
        cr_assert_gt(relay.dropped, 100u, "the relay dropped datagrams");
        std::fprintf(stderr, "lossy path: %llu of %llu datagrams dropped\n",
                     static_cast<unsigned long long>(relay.dropped),
                     static_cast<unsigned long long>(relay.seen));
    }
    // Batched UDP I/O was in use: GSO on send, GRO-coalesced reads on receive.
    const UdpEndpoint& lep = env.listener->endpoint();
    cr_assert_gt(lep.gso_sends(), 0u, "server sent with GSO");
    cr_assert_gt(env.client_conn->endpoint()->gso_sends(), 0u, "client sent with GSO");
    // On io_uring with provided-buffer rings both ends read through one multishot recvmsg.
    if (env.worker->loop().caps().buffer_rings) {
        cr_assert(lep.multishot(), "server endpoint fell back to single reads");
        cr_assert(env.client_conn->endpoint()->multishot(), "client endpoint: single reads");
    }
    if (drop_every == 0 && link_payload == 0) {
        // The relay forwards datagram by datagram: only a direct path sees coalesced reads.
        cr_assert_gt(lep.gro_reads() + env.client_conn->endpoint()->gro_reads(), 0u,
                     "GRO coalesced some reads");
    }
    // Path MTU discovery: on loopback (MTU 65536) the probes up to the largest one succeed and
    // the bulk of the transfer rides in large packets; on a path with a 1500-byte MTU the
    // larger probes are lost, the path stays at 1472 bytes, and no data was lost with them.
    const size_t spath =
        ngtcp2_conn_get_path_max_tx_udp_payload_size(env.server.accepted.front()->raw());
    const size_t cpath = ngtcp2_conn_get_path_max_tx_udp_payload_size(env.client_conn->raw());
    if (link_payload != 0) {
        cr_assert_eq(spath, link_payload, "server path payload %zu", spath);
        cr_assert_eq(cpath, link_payload, "client path payload %zu", cpath);
        cr_assert_gt(relay.too_big, 0u, "no probe beyond the link MTU was tried");
        // Packets filled the link: the largest the relay forwarded is exactly its MTU.
        cr_assert_eq(relay.largest, link_payload, "largest datagram forwarded %zu", relay.largest);
    } else if (drop_every == 0 && !migrate) {
        const size_t top = kPmtudProbes[std::size(kPmtudProbes) - 1];
        cr_assert_eq(spath, top, "server path payload %zu", spath);
        cr_assert_eq(cpath, top, "client path payload %zu", cpath);
    }
    cr_assert_eq(src->back, kTransfer);
    cr_assert_eq(echo->received, kTransfer);
    std::string a = src->sent_hash.done(), bh = echo->got.done(), c = src->back_hash.done();
    cr_assert(a == bh, "client received what the server sent");
    cr_assert(a == c, "server got the same bytes back");
    // Bounded memory throughout: one window on receive, the send buffer on send.
    cr_assert_leq(echo->max_rx, cfg.stream_window);
    cr_assert_leq(echo->max_tx, kStreamSendBuffer);
    cr_assert_leq(src->max_tx, kStreamSendBuffer);
    if (migrated) {
        // Path validated and the old socket released: listener + server conn + client conn +
        // one client socket.
        cr_assert(env.run_until([&] { return env.worker->attached_count() == 4; }),
                  "old client socket still open (%u sessions)", env.worker->attached_count());
        uint16_t new_port =
            ntohs(reinterpret_cast<const sockaddr_in*>(env.client_conn->endpoint()->local_addr())
                      ->sin_port);
        cr_assert_neq(new_port, old_port, "the client moved to a new port");
    }
    std::fprintf(stderr,
                 "quic transfer (%s%s%s, packets up to %zu bytes): 2 x %zu MiB in %.1f ms = %.0f "
                 "MB/s\n",
                 core::backend_name(env.worker->backend()), migrate ? ", migrating" : "",
                 drop_every != 0 ? ", lossy" : "", spath, kTransfer >> 20,
                 static_cast<double>(dt) / 1e6,
                 2.0 * static_cast<double>(kTransfer) / (static_cast<double>(dt) / 1e9) / 1e6);
}

}  // namespace

Test(quic, bulk_transfer_bounded_and_identical) {
    run_transfer(core::BackendChoice::automatic, false);
}

Test(quic, bulk_transfer_epoll) {
    run_transfer(core::BackendChoice::epoll, false);
}

Test(quic, migration_mid_transfer) {
    run_transfer(core::BackendChoice::automatic, true);
}

// Every 50th datagram lost on a link with a 1500-byte MTU.
Test(quic, bulk_transfer_through_lossy_path) {
    run_transfer(core::BackendChoice::automatic, false, 0, 50, 1472);
}

// A link that carries UDP payloads of at most 1472 bytes (Ethernet MTU 1500 over IPv4).
Test(quic, path_mtu_stays_at_the_link_size_when_larger_probes_are_lost) {
    run_transfer(core::BackendChoice::automatic, false, 0, 0, 1472);
}

// ---- listener behaviour -----------------------------------------------------------------------

Test(quic, handshake_limit_refuses_newest) {
    ListenerConfig lc;
    lc.max_handshakes = 1;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    ClientSide second;
    env.dial_client();
    // The second Initial arrives while the first handshake is still in progress.
    auto c2 = dial(*env.worker, reinterpret_cast<sockaddr*>(&env.addr), sizeof env.addr,
                   *env.client_tls, second);
    cr_assert(c2.ok());
    cr_assert(env.run_until([&] { return env.client.established && second.closed; }));
    cr_assert_eq(second.info.kind, CloseInfo::Kind::remote);
    cr_assert(!second.info.application);
    cr_assert_eq(second.info.code, NGTCP2_CONNECTION_REFUSED);
    cr_assert_eq(env.listener->refused(), 1u);
    cr_assert_eq(env.server.accepted.size(), 1u);
}

// Every migration retires a connection ID and issues a new one: the listener forgets retired IDs,
// so a long-lived connection that keeps moving holds a bounded routing list.
Test(quic, migrating_connection_keeps_a_bounded_cid_list) {
    Env env;
    env.handshake();
    Connection* sc = env.server.accepted.front();
    const size_t initial = env.listener->cid_count(*sc);
    cr_assert_gt(initial, 0u);
    constexpr int kMigrations = 16;
    // Moves follow each other as fast as spare connection IDs allow. One that comes while the
    // server still validates the previous address can find the server without a spare client
    // connection ID to answer the new path from: its validation fails, the client stays on its
    // socket (failed_migration_returns_to_the_old_socket) and tries again.
    int moved = 0, attempts = 0;
    while (moved < kMigrations) {
        cr_assert_lt(attempts++, 2 * kMigrations, "%d of %d moves validated (%llu failed)", moved,
                     kMigrations,
                     static_cast<unsigned long long>(env.client_conn->failed_migrations()));
        const uint64_t failed = env.client_conn->failed_migrations();
        // A spare connection ID for the new path arrives a round trip after the last move.
        cr_assert(env.run_until([&] {
            auto r = rebind(*env.client_conn);
            cr_assert(r.ok() || r.error().code == EAGAIN, "rebind %d: %s (%s)", attempts,
                      r.ok() ? "" : r.error().message.c_str(),
                      env.client.closed ? describe_close(env.client.info, "server").c_str()
                                        : "client open");
            return r.ok();
        }),
                  "no spare connection ID for move %d", attempts);
        // Settled (validated, or failed and back on the old socket): the listener, both
        // connections and one socket.
        cr_assert(env.run_until([&] { return env.worker->attached_count() == 4; }),
                  "move %d did not settle", attempts);
        if (env.client_conn->failed_migrations() == failed) ++moved;
    }
    // Retired IDs are removed a few PTO after retirement; then the list is back to its size.
    cr_assert(env.run_until([&] { return env.listener->cid_count(*sc) <= initial + 2; }, 5000),
              "%zu connection IDs kept after %d migrations (%zu at the start)",
              env.listener->cid_count(*sc), kMigrations, initial);
    cr_assert_eq(env.listener->routed_cids(), env.listener->cid_count(*sc));
    cr_assert(!env.client.closed);
}

// A new path that never answers: path validation fails, the connection goes on over the old
// socket, the new one is released, and a later migration over a working path succeeds.
Test(quic, failed_migration_returns_to_the_old_socket) {
    Env env;
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    LossyRelay relay;
    relay.server = env.addr;
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto f = UdpEndpoint::bind(*env.worker, reinterpret_cast<sockaddr*>(&lo), sizeof lo, relay);
    auto bk = UdpEndpoint::bind(*env.worker, reinterpret_cast<sockaddr*>(&lo), sizeof lo, relay);
    cr_assert(f.ok() && bk.ok());
    relay.front = *f;
    relay.back = *bk;
    std::memcpy(&env.dial_addr, relay.front->local_addr(), sizeof(sockaddr_in));
    env.dial_len = sizeof(sockaddr_in);
    env.handshake();
    // Listener, two connections, the relay's two sockets and the client's one.
    const size_t settled = env.worker->attached_count();
    cr_assert_eq(settled, 6u);
    UdpEndpoint* first = env.client_conn->endpoint();
    relay.only_port = reinterpret_cast<const sockaddr_in*>(first->local_addr())->sin_port;
    cr_assert(env.run_until([&] {
        auto r = rebind(*env.client_conn);
        cr_assert(r.ok() || r.error().code == EAGAIN, "rebind: %s",
                  r.ok() ? "" : r.error().message.c_str());
        return r.ok();
    }));
    cr_assert_eq(env.worker->attached_count(), settled + 1, "the new socket is open");
    cr_assert(env.run_until([&] { return env.client_conn->failed_migrations() == 1; }, 20000),
              "path validation over the dead path did not fail");
    cr_assert(env.run_until([&] { return env.worker->attached_count() == settled; }),
              "the new socket was not released");
    cr_assert_eq(env.client_conn->endpoint(), first, "back on the first socket");
    cr_assert(!env.client.closed);
    // The old path still carries data both ways.
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "after the failed move");
    (*s)->shutdown_write();
    cr_assert(env.run_until([&] { return on_client.fin; }), "nothing reached the client");
    cr_assert_str_eq(on_client.data.c_str(), "after the failed move");
    Stream& cs = *env.client.opened.front();
    write_all(cs, "still here");
    cs.shutdown_write();
    cr_assert(env.run_until([&] { return on_server.fin; }), "nothing reached the server");
    cr_assert_str_eq(on_server.data.c_str(), "still here");
    // With the path open again, a migration goes through and releases the first socket.
    relay.only_port = 0;
    cr_assert(env.run_until([&] {
        auto r = rebind(*env.client_conn);
        cr_assert(r.ok() || r.error().code == EAGAIN, "rebind: %s",
                  r.ok() ? "" : r.error().message.c_str());
        return r.ok();
    }));
    cr_assert(env.run_until([&] {
        return env.worker->attached_count() == settled && env.client_conn->endpoint() != first;
    }),
              "the second migration did not finish");
    cr_assert_eq(env.client_conn->failed_migrations(), 1u);
    cr_assert(!env.client.closed);
}

Test(quic, unknown_connection_gets_stateless_reset) {
    Env env;
    env.handshake();
    // The server forgets the connection without a word (as after a restart).
    env.server.accepted.front()->terminate();
    cr_assert(env.run_until([&] { return env.listener->connection_count() == 0; }));
    // Make the client talk at once (keep-alive would take 20 s): migrating sends PATH_CHALLENGE
    // in short-header packets, which the listener cannot route and answers with a reset.
    auto r = rebind(*env.client_conn);
    cr_assert(r.ok(), "rebind: %s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(env.run_until([&] { return env.client.closed; }));
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::stateless_reset);
    cr_assert_geq(env.listener->stateless_resets(), 1u);
}

Test(quic, unknown_version_gets_version_negotiation) {
    Env env;
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    uint8_t pkt[1200]{};
    pkt[0] = 0xc0;
    const uint8_t version[4] = {0x1a, 0x2a, 0x3a, 0x4a};
    std::memcpy(pkt + 1, version, 4);
    pkt[5] = 8;
    for (int i = 0; i < 8; ++i) pkt[6 + i] = static_cast<uint8_t>(0xd0 + i);
    pkt[14] = 8;
    for (int i = 0; i < 8; ++i) pkt[15 + i] = static_cast<uint8_t>(0x50 + i);
    cr_assert_eq(
        ::sendto(fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&env.addr), sizeof env.addr),
        static_cast<ssize_t>(sizeof pkt));
    uint8_t reply[1500];
    ssize_t n = -1;
    cr_assert(env.run_until([&] {
        n = ::recv(fd, reply, sizeof reply, 0);
        return n > 0;
    }));
    ::close(fd);
    cr_assert_geq(n, 7 + 16 + 4);
    cr_assert(reply[0] & 0x80, "long header");
    cr_assert_eq(reply[1] | reply[2] | reply[3] | reply[4], 0, "version 0: negotiation");
    // Our SCID comes back as its DCID; QUIC v1 is offered.
    cr_assert_eq(reply[5], 8);
    cr_assert_eq(reply[6], 0x50);
    bool v1 = false;
    for (ssize_t i = 5 + 1 + 8 + 1 + 8; i + 4 <= n; i += 4) {
        if (reply[i] == 0 && reply[i + 1] == 0 && reply[i + 2] == 0 && reply[i + 3] == 1) v1 = true;
    }
    cr_assert(v1, "QUIC v1 offered");
}

Test(quic, socket_buffers_reported) {
    Env env;
    const SocketBuffers& b = env.listener->endpoint().buffers();
    cr_assert_eq(b.requested, EndpointOptions{}.socket_buffer);
    cr_assert_gt(b.rcvbuf, 0);
    cr_assert_gt(b.sndbuf, 0);
    cr_assert_eq(b.capped, b.rcvbuf < b.requested || b.sndbuf < b.requested);
    cr_assert(env.listener->endpoint().gso(), "UDP_SEGMENT supported");
    cr_assert(env.listener->endpoint().gro(), "UDP_GRO supported");
}

// ---- timers ------------------------------------------------------------------------------------

Test(quic, idle_timeout_closes_both_sides) {
    ListenerConfig lc;
    lc.conn.idle_timeout_ns = 300 * core::kNsPerMs;
    lc.conn.keep_alive_ns = 60 * core::kNsPerSec;  // no PINGs to keep it alive
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    DialOptions dopt;
    dopt.conn = lc.conn;
    env.dial_client(dopt);
    cr_assert(
        env.run_until([&] { return env.client.established && !env.server.accepted.empty(); }));
    cr_assert(env.run_until([&] { return env.client.closed && env.server.closed == 1; }, 5000));
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::idle_timeout);
    cr_assert_eq(env.server.last_close.kind, CloseInfo::Kind::idle_timeout);
}

Test(quic, keep_alive_holds_an_idle_connection) {
    ListenerConfig lc;
    lc.conn.idle_timeout_ns = 400 * core::kNsPerMs;
    lc.conn.keep_alive_ns = 100 * core::kNsPerMs;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    DialOptions dopt;
    dopt.conn = lc.conn;
    env.dial_client(dopt);
    cr_assert(
        env.run_until([&] { return env.client.established && !env.server.accepted.empty(); }));
    // Three idle timeouts' worth of silence from the application: PINGs keep it open.
    cr_assert(!env.run_until([&] { return env.client.closed || env.server.closed > 0; }, 1200));
}

Test(quic, handshake_timeout_without_a_server) {
    Env env;
    // A socket that never answers stands in for an unreachable Server.
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in silent{};
    silent.sin_family = AF_INET;
    silent.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(fd, reinterpret_cast<sockaddr*>(&silent), sizeof silent), 0);
    socklen_t len = sizeof silent;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&silent), &len);
    DialOptions dopt;
    dopt.conn.handshake_timeout_ns = 300 * core::kNsPerMs;
    auto c = dial(*env.worker, reinterpret_cast<sockaddr*>(&silent), sizeof silent, *env.client_tls,
                  env.client, dopt);
    cr_assert(c.ok());
    env.client_conn = *c;
    cr_assert(env.run_until([&] { return env.client.closed; }, 5000));
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::handshake_timeout);
    ::close(fd);
}

// ---- addresses and trust
// -------------------------------------------------------------------------

namespace {

void handshake_and_echo(Env& env) {
    Collector on_client, on_server;
    env.client.stream_handler = &on_client;
    env.handshake();
    auto s = env.server.accepted.front()->open_stream(on_server);
    cr_assert(s.ok());
    write_all(**s, "ping");
    (*s)->shutdown_write();
    cr_assert(env.run_until([&] { return on_client.fin; }));
    Stream& cs = *env.client.opened.front();
    write_all(cs, "pong");
    cs.shutdown_write();
    cr_assert(env.run_until([&] { return on_server.fin && on_server.closed && on_client.closed; }));
    cr_assert_str_eq(on_client.data.c_str(), "ping");
    cr_assert_str_eq(on_server.data.c_str(), "pong");
}

}  // namespace

Test(quic, wildcard_bound_listener_answers_from_the_dialed_address) {
    Env env;
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    env.rebind_listener(reinterpret_cast<sockaddr*>(&any), sizeof any,
                        reinterpret_cast<sockaddr*>(&lo), sizeof lo);
    handshake_and_echo(env);
}

Test(quic, ipv6_loopback) {
    Env env;
    sockaddr_in6 lo6{};
    lo6.sin6_family = AF_INET6;
    lo6.sin6_addr = in6addr_loopback;
    int probe = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool have_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&lo6), sizeof lo6) == 0;
    if (probe >= 0) ::close(probe);
    if (!have_v6) cr_skip_test("no IPv6 loopback");
    env.rebind_listener(reinterpret_cast<sockaddr*>(&lo6), sizeof lo6,
                        reinterpret_cast<sockaddr*>(&lo6), sizeof lo6);
    handshake_and_echo(env);
}

Test(quic, system_trust_does_not_cover_a_private_ca) {
    Env env;
    ClientTlsConfig cc;
    cc.server_name = kServerName;
    cc.trust = ServerTrust::system;
    cc.cert_pem = material().client.cert;
    cc.key_pem = material().client.key;
    auto ct = ClientTls::create(std::move(cc));
    // `make deps` installs ca-certificates: an empty store is a broken set-up, not a skip.
    cr_assert(ct.ok(), "system trust store (install ca-certificates): %s",
              ct.ok() ? "" : ct.error().message.c_str());
    env.client_tls = std::move(*ct);
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }));
    cr_assert(!env.client.established);
    cr_assert_eq(env.client.info.kind, CloseInfo::Kind::local);
    cr_assert_eq(env.client.info.code & ~0xffull, NGTCP2_CRYPTO_ERROR);
}

Test(quic, exclusive_ca_rejects_other_issuers) {
    Env env;
    ClientTlsConfig cc;
    cc.server_name = kServerName;
    cc.trust = ServerTrust::ca_file;
    cc.ca_pem = material().client.cert;  // some other self-signed certificate as the only anchor
    cc.cert_pem = material().client.cert;
    cc.key_pem = material().client.key;
    auto ct = ClientTls::create(std::move(cc));
    cr_assert(ct.ok(), "%s", ct.ok() ? "" : ct.error().message.c_str());
    env.client_tls = std::move(*ct);
    env.dial_client();
    cr_assert(env.run_until([&] { return env.client.closed; }));
    cr_assert(!env.client.established);
    cr_assert_eq(env.client.info.code & ~0xffull, NGTCP2_CRYPTO_ERROR);
}

Test(quic, close_descriptions_name_the_tls_alert) {
    quic::CloseInfo i;
    i.kind = quic::CloseInfo::Kind::local;
    i.code = 0x174;
    cr_assert_eq(
        quic::describe_close(i, "the client"),
        std::string("closed locally (transport error 0x174, TLS alert certificate_required)"));
    i.kind = quic::CloseInfo::Kind::remote;
    i.code = quic::kCryptoErrorAccessDenied;
    cr_assert_eq(quic::describe_close(i, "server"),
                 std::string("closed by server (transport error 0x131, TLS alert access_denied)"));
    i.application = true;
    i.code = 0;
    i.reason = "graceful shutdown";
    cr_assert_eq(quic::describe_close(i, "server"),
                 std::string("closed by server (application error 0x0): graceful shutdown"));
    i.kind = quic::CloseInfo::Kind::idle_timeout;
    cr_assert_eq(quic::describe_close(i, "server"), std::string("idle timeout"));
}

// ---- address validation (Retry) ----------------------------------------------------------------

namespace {

ngtcp2_addr addr_of(sockaddr_in& a) {
    return ngtcp2_addr{reinterpret_cast<sockaddr*>(&a), sizeof a};
}

ngtcp2_cid cid_of(uint8_t fill, size_t len) {
    uint8_t b[NGTCP2_MAX_CIDLEN];
    std::memset(b, fill, len);
    ngtcp2_cid c;
    ngtcp2_cid_init(&c, b, len);
    return c;
}

// A UDP socket on a loopback address of its own, closed with the test.
struct RawSocket {
    int fd;
    sockaddr_in local{};
    explicit RawSocket(const char* addr) : fd(test::bind_udp(addr)) {
        cr_assert_geq(fd, 0, "bind %s", addr);
        socklen_t len = sizeof local;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
    }
    ~RawSocket() { ::close(fd); }
    RawSocket(const RawSocket&) = delete;
    RawSocket& operator=(const RawSocket&) = delete;
};

// A hand-driven client on `sock` towards the listener (with `token` in its first Initial).
std::unique_ptr<test::RawQuicClient> raw_client(Env& env, RawSocket& sock,
                                                std::span<const uint8_t> token = {}) {
    auto c = test::RawQuicClient::create(*env.client_tls, reinterpret_cast<sockaddr*>(&sock.local),
                                         sizeof sock.local, reinterpret_cast<sockaddr*>(&env.addr),
                                         sizeof env.addr, token);
    cr_assert(c != nullptr, "raw client");
    return c;
}

// Sends `pkt` from `from` to the listener and returns the first datagram `from` gets back.
std::vector<uint8_t> exchange(Env& env, RawSocket& from, std::span<const uint8_t> pkt) {
    cr_assert_gt(pkt.size(), 0u);
    cr_assert_eq(::sendto(from.fd, pkt.data(), pkt.size(), 0,
                          reinterpret_cast<sockaddr*>(&env.addr), sizeof env.addr),
                 static_cast<ssize_t>(pkt.size()));
    std::vector<uint8_t> reply(65536);
    ssize_t n = -1;
    cr_assert(env.run_until([&] {
        n = ::recv(from.fd, reply.data(), reply.size(), 0);
        return n > 0;
    }),
              "no reply from the listener");
    reply.resize(static_cast<size_t>(n));
    return reply;
}

void check_retry_always(core::BackendChoice b) {
    ListenerConfig lc;
    lc.retry = RetryPolicy::always;
    Env env(b, true, nullptr, lc);
    // quic::dial follows the Retry without being told: same handshake, one more round trip.
    handshake_and_echo(env);
    cr_assert_eq(env.listener->retries(), 1u);
    cr_assert_eq(env.listener->tokens_rejected(), 0u);
    cr_assert_eq(env.listener->connection_count(), 1u);
    cr_assert_eq(env.verify_calls, 1);
}

}  // namespace

Test(quic, retry_always_client_connects_through_a_retry) {
    check_retry_always(core::BackendChoice::automatic);
}

Test(quic, retry_always_client_connects_through_a_retry_epoll) {
    check_retry_always(core::BackendChoice::epoll);
}

Test(quic, retry_auto_sends_none_below_half_the_handshake_limit) {
    Env env;
    handshake_and_echo(env);
    cr_assert_eq(env.listener->retries(), 0u);
    cr_assert_eq(env.listener->connection_count(), 1u);
}

// Half the slots held by handshakes that never finish (spoofed sources): the next client is
// asked to prove its address, and gets in on a slot the unvalidated ones cannot take.
Test(quic, retry_auto_validates_addresses_once_half_the_slots_are_taken) {
    ListenerConfig lc;
    lc.max_handshakes = 4;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    RawSocket s1("127.0.0.2"), s2("127.0.0.3"), s3("127.0.0.4");
    auto a = raw_client(env, s1);
    auto b = raw_client(env, s2);
    // Below half: a plain Initial starts a handshake (the reply is the server's Initial).
    cr_assert_eq(test::long_header_type(exchange(env, s1, a->next_datagram())), NGTCP2_PKT_INITIAL);
    cr_assert_eq(test::long_header_type(exchange(env, s2, b->next_datagram())), NGTCP2_PKT_INITIAL);
    cr_assert_eq(env.listener->handshakes(), 2u);
    // At half: no more state for unvalidated addresses.
    auto c = raw_client(env, s3);
    std::vector<uint8_t> initial = c->next_datagram();
    std::vector<uint8_t> retry = exchange(env, s3, initial);
    cr_assert_eq(test::long_header_type(retry), NGTCP2_PKT_RETRY);
    cr_assert_leq(retry.size(), initial.size(), "a Retry is never larger than its Initial");
    cr_assert_eq(env.listener->handshakes(), 2u);
    cr_assert_eq(env.listener->retries(), 1u);
    // A real client answers the Retry and connects.
    handshake_and_echo(env);
    cr_assert_eq(env.listener->retries(), 2u);
    cr_assert_eq(env.listener->tokens_rejected(), 0u);
}

Test(quic, retry_never_commits_a_slot_for_every_initial) {
    ListenerConfig lc;
    lc.retry = RetryPolicy::never;
    lc.max_handshakes = 2;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    RawSocket s1("127.0.0.2"), s2("127.0.0.3"), s3("127.0.0.4");
    auto a = raw_client(env, s1);
    auto b = raw_client(env, s2);
    auto c = raw_client(env, s3);
    cr_assert_eq(test::long_header_type(exchange(env, s1, a->next_datagram())), NGTCP2_PKT_INITIAL);
    cr_assert_eq(test::long_header_type(exchange(env, s2, b->next_datagram())), NGTCP2_PKT_INITIAL);
    // Full: the third is refused (a stateless CONNECTION_CLOSE), never asked for a token.
    std::vector<uint8_t> reply = exchange(env, s3, c->next_datagram());
    cr_assert_eq(c->read(reply), NGTCP2_ERR_DRAINING);
    cr_assert_eq(c->peer_close_code(), NGTCP2_CONNECTION_REFUSED);
    cr_assert_eq(env.listener->retries(), 0u);
    cr_assert_eq(env.listener->refused(), 1u);
}

// A token the listener did not make: the Initial commits nothing and the client learns at once
// (INVALID_TOKEN) instead of waiting for its handshake timeout. A token of some other kind is
// ignored, so that Initial is asked for a Retry like a token-less one.
Test(quic, retry_forged_token_is_rejected) {
    ListenerConfig lc;
    lc.retry = RetryPolicy::always;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    RawSocket s("127.0.0.2");
    std::vector<uint8_t> forged(RetryTokens::kMaxLen, 0x5a);
    forged[0] = NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY;
    auto c = raw_client(env, s, forged);
    std::vector<uint8_t> reply = exchange(env, s, c->next_datagram());
    cr_assert_eq(test::long_header_type(reply), NGTCP2_PKT_INITIAL);
    cr_assert_eq(c->read(reply), NGTCP2_ERR_DRAINING);
    cr_assert_eq(c->peer_close_code(), NGTCP2_INVALID_TOKEN);
    cr_assert_eq(env.listener->tokens_rejected(), 1u);
    cr_assert_eq(env.listener->handshakes(), 0u);
    cr_assert_eq(env.listener->connection_count(), 0u);

    std::vector<uint8_t> other(40, 0x11);  // e.g. a NEW_TOKEN token from another server
    auto d = raw_client(env, s, other);
    cr_assert_eq(test::long_header_type(exchange(env, s, d->next_datagram())), NGTCP2_PKT_RETRY);
    cr_assert_eq(env.listener->tokens_rejected(), 1u);
    cr_assert_eq(env.listener->connection_count(), 0u);
}

// A genuine token works only from the address it was sent to, and only while it is young.
Test(quic, retry_token_from_another_address_or_too_old_is_rejected) {
    ListenerConfig lc;
    lc.retry = RetryPolicy::always;
    lc.retry_token_lifetime_ns = 300 * core::kNsPerMs;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    RawSocket home("127.0.0.2"), elsewhere("127.0.0.3");

    auto c = raw_client(env, home);
    std::vector<uint8_t> retry = exchange(env, home, c->next_datagram());
    cr_assert_eq(test::long_header_type(retry), NGTCP2_PKT_RETRY);
    cr_assert_eq(c->read(retry), 0);
    std::vector<uint8_t> with_token = c->next_datagram();  // the Initial again, with the token
    std::vector<uint8_t> reply = exchange(env, elsewhere, with_token);
    cr_assert_eq(c->read(reply), NGTCP2_ERR_DRAINING);
    cr_assert_eq(c->peer_close_code(), NGTCP2_INVALID_TOKEN);
    cr_assert_eq(env.listener->tokens_rejected(), 1u);
    cr_assert_eq(env.listener->connection_count(), 0u);
    // From its own address the same datagram is accepted: the handshake starts.
    reply = exchange(env, home, with_token);
    cr_assert_eq(test::long_header_type(reply), NGTCP2_PKT_INITIAL);
    cr_assert_eq(env.listener->handshakes(), 1u);
    cr_assert_eq(env.listener->tokens_rejected(), 1u);

    auto late = raw_client(env, elsewhere);
    retry = exchange(env, elsewhere, late->next_datagram());
    cr_assert_eq(late->read(retry), 0);
    with_token = late->next_datagram();
    // Let the token age past its lifetime (the listener keeps serving meanwhile).
    int64_t until = core::now_ns() + 2 * lc.retry_token_lifetime_ns;
    (void)env.run_until([&] { return core::now_ns() >= until; }, 5000);
    reply = exchange(env, elsewhere, with_token);
    cr_assert_eq(late->read(reply), NGTCP2_ERR_DRAINING);
    cr_assert_eq(late->peer_close_code(), NGTCP2_INVALID_TOKEN);
    cr_assert_eq(env.listener->tokens_rejected(), 2u);
    cr_assert_eq(env.listener->handshakes(), 1u);
}

// The token key itself: bound to address, DCID and version; expires; after a key rotation the
// previous key still opens its young tokens, after a second one it does not.
Test(quic, retry_tokens_seal_address_cid_version_and_age) {
    constexpr int64_t kSec = core::kNsPerSec;
    RetryTokens t(10 * kSec, 100 * kSec, 0);
    sockaddr_in a{}, b{};
    a.sin_family = b.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000002);
    b.sin_addr.s_addr = htonl(0x7f000003);
    a.sin_port = b.sin_port = htons(4433);
    const ngtcp2_cid retry_scid = cid_of(0xaa, 16), odcid = cid_of(0x0d, 18);
    uint8_t tok[RetryTokens::kMaxLen];
    size_t n = t.make(tok, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, odcid, 1 * kSec);
    cr_assert_eq(n, RetryTokens::kMaxLen);
    std::span<const uint8_t> token(tok, n);
    ngtcp2_cid got{};
    cr_assert(t.verify(got, token, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 2 * kSec));
    cr_assert(ngtcp2_cid_eq(&got, &odcid), "the original DCID comes back");
    cr_assert_not(t.verify(got, token, NGTCP2_PROTO_VER_V1, addr_of(b), retry_scid, 2 * kSec));
    cr_assert_not(
        t.verify(got, token, NGTCP2_PROTO_VER_V1, addr_of(a), cid_of(0xab, 16), 2 * kSec));
    cr_assert_not(t.verify(got, token, 0x6b3343cf, addr_of(a), retry_scid, 2 * kSec));
    cr_assert_not(t.verify(got, token, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 11 * kSec));
    uint8_t bad[RetryTokens::kMaxLen];
    std::memcpy(bad, tok, n);
    bad[20] ^= 1;
    cr_assert_not(t.verify(got, {bad, n}, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 2 * kSec));
    cr_assert_not(
        t.verify(got, token.first(n - 1), NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 2 * kSec));

    // Rotation: a token made 3 s before the key changes is still good 2 s after.
    RetryTokens r(30 * kSec, 4 * kSec, 0);  // tokens outlive keys here: only keys decide
    uint8_t old_tok[RetryTokens::kMaxLen];
    n = r.make(old_tok, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, odcid, 1 * kSec);
    cr_assert(r.verify(got, {old_tok, n}, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 5 * kSec));
    cr_assert_eq(r.rotations(), 1u);
    uint8_t new_tok[RetryTokens::kMaxLen];
    n = r.make(new_tok, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, odcid, 6 * kSec);
    // Next rotation (at 9 s): the key of 5 s is the previous one now; the first key is gone,
    // although its token would still be within its lifetime.
    cr_assert(r.verify(got, {new_tok, n}, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 9 * kSec));
    cr_assert_eq(r.rotations(), 2u);
    cr_assert_not(
        r.verify(got, {old_tok, n}, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 9 * kSec));
    // Idle for two periods: no previous key survives.
    cr_assert_not(
        r.verify(got, {new_tok, n}, NGTCP2_PROTO_VER_V1, addr_of(a), retry_scid, 17 * kSec));
    cr_assert_eq(r.rotations(), 3u);
}

// ---- CID steering over a SO_REUSEPORT group ---------------------------------------------------

namespace {

bool owned(const uint8_t* cid, size_t len, CidSteering s) {
    return len > 0 && cid[0] % s.count == s.index;
}

// The member of `group` that receives the next datagram (its bytes in `got`), or -1 when none
// arrives within 2 s.
int next_arrival(const std::vector<core::UniqueFd>& group, std::vector<uint8_t>& got) {
    std::vector<pollfd> p;
    for (const core::UniqueFd& fd : group) p.push_back(pollfd{fd.get(), POLLIN, 0});
    const int64_t deadline = core::now_ns() + 2 * core::kNsPerSec;
    for (;;) {
        const int64_t left = deadline - core::now_ns();
        if (left <= 0) return -1;
        int r = ::poll(p.data(), p.size(), static_cast<int>(left / core::kNsPerMs) + 1);
        if (r < 0 && errno != EINTR) return -1;
        for (size_t i = 0; i < p.size(); ++i) {
            if ((p[i].revents & POLLIN) == 0) continue;
            got.resize(2048);
            ssize_t n = ::recv(p[i].fd, got.data(), got.size(), MSG_DONTWAIT);
            if (n < 0) continue;
            got.resize(static_cast<size_t>(n));
            return static_cast<int>(i);
        }
    }
}

// Sends crafted QUIC headers from several source ports (a migrating client changes its port)
// to a `count`-member group on `addr` and checks each lands on the member its CID byte names.
void check_steered_group(const sockaddr* addr, socklen_t len, uint32_t count) {
    auto group = bind_udp_group(addr, len, count);
    cr_assert(group.ok(), "bind_udp_group(%u): %s", count,
              group.ok() ? "" : group.error().message.c_str());
    cr_assert_eq(group->size(), count);
    sockaddr_storage to{};
    socklen_t to_len = sizeof to;
    cr_assert_eq(::getsockname((*group)[0].get(), reinterpret_cast<sockaddr*>(&to), &to_len), 0);
    // Every member is bound to the same address and port.
    for (const core::UniqueFd& fd : *group) {
        sockaddr_storage a{};
        socklen_t alen = sizeof a;
        cr_assert_eq(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &alen), 0);
        cr_assert_eq(alen, to_len);
        cr_assert_eq(std::memcmp(&a, &to, alen), 0, "a member on another address");
    }
    constexpr int kSources = 3;
    core::UniqueFd src[kSources];
    for (core::UniqueFd& s : src) {
        s.reset(::socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        cr_assert(s.valid());
    }
    uint32_t seq = 0;
    std::vector<uint8_t> got;
    auto expect = [&](const core::UniqueFd& from, std::span<uint8_t> pkt, size_t member,
                      const char* what, int v) {
        // A sequence number in the tail tells this datagram from any earlier misdelivered one.
        ++seq;
        std::memcpy(pkt.data() + pkt.size() - 4, &seq, 4);
        cr_assert_eq(::sendto(from.get(), pkt.data(), pkt.size(), 0,
                              reinterpret_cast<sockaddr*>(&to), to_len),
                     static_cast<ssize_t>(pkt.size()));
        int m = next_arrival(*group, got);
        cr_assert_geq(m, 0, "%s %d (count %u): never arrived", what, v, count);
        cr_assert_eq(got.size(), pkt.size());
        cr_assert_eq(std::memcmp(got.data() + got.size() - 4, &seq, 4), 0,
                     "%s %d: another datagram arrived", what, v);
        cr_assert_eq(static_cast<size_t>(m), member, "%s %d (count %u): member %d, not %zu", what,
                     v, count, m, member);
    };
    for (int v = 0; v < 256; ++v) {
        for (const core::UniqueFd& from : src) {
            uint8_t shrt[40]{};
            shrt[0] = 0x40;  // short header: the DCID follows the first byte
            shrt[1] = static_cast<uint8_t>(v);
            expect(from, shrt, static_cast<size_t>(v) % count, "short header", v);
            uint8_t lng[64]{};
            lng[0] = 0xc0;  // long header: flags, version, DCID length, DCID
            lng[4] = 1;
            lng[5] = 16;
            lng[6] = static_cast<uint8_t>(v);
            lng[1] = 0xff;  // the short header's byte 1 would name another member
            expect(from, lng, static_cast<size_t>(v) % count, "long header", v);
        }
    }
    // Too short for the load: classic BPF returns 0, member 0 gets it.
    uint8_t tiny_long[5] = {0xc0, 0, 0, 0, 1};  // no DCID byte: the sequence number fills 1-4
    expect(src[0], std::span<uint8_t>(tiny_long, 5), 0, "5-byte long header", 0);
}

}  // namespace

Test(quic, steering_program_picks_the_member_named_by_the_cid_byte) {
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    check_steered_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, 2);
    check_steered_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, 3);
    // A group of one needs no program (and no SO_REUSEPORT): it is a plain socket.
    auto one = bind_udp_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, 1);
    cr_assert(one.ok() && one->size() == 1);
    int rp = -1;
    socklen_t rl = sizeof rp;
    cr_assert_eq(::getsockopt((*one)[0].get(), SOL_SOCKET, SO_REUSEPORT, &rp, &rl), 0);
    cr_assert_eq(rp, 0);
    cr_assert_not(bind_udp_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, 0).ok());
    cr_assert_not(bind_udp_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, 257).ok());

    sockaddr_in6 lo6{};
    lo6.sin6_family = AF_INET6;
    lo6.sin6_addr = in6addr_loopback;
    int probe = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool have_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&lo6), sizeof lo6) == 0;
    if (probe >= 0) ::close(probe);
    if (have_v6) {
        check_steered_group(reinterpret_cast<sockaddr*>(&lo6), sizeof lo6, 2);
    } else {
        cr_log_warn("no IPv6 loopback: the ::1 group was not checked");
    }
}

// A socket-activated socket: joined by more members when it has SO_REUSEPORT, alone otherwise.
Test(quic, activated_socket_joins_a_group_only_with_reuseport) {
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto plain = bind_udp_socket(reinterpret_cast<sockaddr*>(&lo), sizeof lo, false);
    cr_assert(plain.ok());
    const int plain_fd = plain->get();
    auto alone = join_udp_group(std::move(*plain), 4);
    cr_assert(alone.ok(), "%s", alone.ok() ? "" : alone.error().message.c_str());
    cr_assert_eq(alone->size(), 1u);
    cr_assert_eq((*alone)[0].get(), plain_fd);

    auto activated = bind_udp_socket(reinterpret_cast<sockaddr*>(&lo), sizeof lo, true);
    cr_assert(activated.ok());
    const int first_fd = activated->get();
    auto group = join_udp_group(std::move(*activated), 3);
    cr_assert(group.ok(), "%s", group.ok() ? "" : group.error().message.c_str());
    cr_assert_eq(group->size(), 3u);
    cr_assert_eq((*group)[0].get(), first_fd, "the activated socket is member 0");
    sockaddr_in to{};
    socklen_t to_len = sizeof to;
    ::getsockname(first_fd, reinterpret_cast<sockaddr*>(&to), &to_len);
    core::UniqueFd src(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    std::vector<uint8_t> got;
    for (int v = 0; v < 12; ++v) {
        uint8_t pkt[32]{};
        pkt[0] = 0x40;
        pkt[1] = static_cast<uint8_t>(v);
        cr_assert_eq(
            ::sendto(src.get(), pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), to_len),
            static_cast<ssize_t>(sizeof pkt));
        cr_assert_eq(next_arrival(*group, got), v % 3, "CID byte %d", v);
    }
}

Test(quic, steered_cids_follow_the_rule_and_spread_evenly) {
    cr_assert(check_steering({1, 0}).ok());
    cr_assert(check_steering({256, 255}).ok());
    cr_assert_not(check_steering({0, 0}).ok());
    cr_assert_not(check_steering({257, 0}).ok());
    cr_assert_not(check_steering({2, 2}).ok());
    for (uint32_t count : {1u, 2u, 3u, 7u, 256u}) {
        for (uint32_t index : {0u, count / 2, count - 1}) {
            const CidSteering s{count, index};
            const uint32_t values = 256 / count;  // first bytes the member may use
            constexpr int kPerValue = 400;
            std::vector<int> seen(256, 0);
            for (uint32_t i = 0; i < values * kPerValue; ++i) {
                ngtcp2_cid cid;
                make_steered_cid(cid, Connection::kCidLen, s);
                cr_assert_eq(cid.datalen, Connection::kCidLen);
                cr_assert(owned(cid.data, cid.datalen, s), "first byte %u for {%u, %u}",
                          cid.data[0], count, index);
                ++seen[cid.data[0]];
            }
            // Uniform over exactly the valid values: each within 30% of its share (6 standard
            // deviations at 400 draws per value).
            for (uint32_t b = 0; b < 256; ++b) {
                if (b % count != index) continue;
                cr_assert(b >= values * count ||
                              (seen[b] > kPerValue * 7 / 10 && seen[b] < kPerValue * 13 / 10),
                          "{%u, %u}: byte %u drawn %d times (%d expected)", count, index, b,
                          seen[b], kPerValue);
            }
        }
    }
    // Listeners refuse a steering they cannot follow.
    Env env;
    ListenerConfig bad;
    bad.steering = {2, 2};
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto l = Listener::create(*env.worker, reinterpret_cast<sockaddr*>(&lo), sizeof lo,
                              *env.server_tls, env.server, bad);
    cr_assert_not(l.ok());
}

namespace {

// Every connection ID of `sc` the listener routes, and every one the client holds for the
// server, belongs to the listener's member (the client's own first DCID aside, unless it is a
// Retry source ID: then it is ours too).
void check_owned_cids(Env& env, Connection& sc, bool after_retry) {
    const CidSteering s = env.listener->steering();
    const ngtcp2_cid* first = ngtcp2_conn_get_client_initial_dcid(sc.raw());
    size_t checked = 0;
    for (const CidKey& k : env.listener->cids(sc)) {
        const bool clients =
            k.len == first->datalen && std::memcmp(k.data.data(), first->data, k.len) == 0;
        if (clients && !after_retry) continue;
        cr_assert(owned(k.data.data(), k.len, s), "routed CID with first byte %u (%s)", k.data[0],
                  clients ? "the client's first DCID" : "ours");
        ++checked;
    }
    cr_assert_gt(checked, 0u);
    if (after_retry) cr_assert(owned(first->data, first->datalen, s), "Retry source ID");
    std::vector<ngtcp2_cid> scids(ngtcp2_conn_get_scid(sc.raw(), nullptr));
    ngtcp2_conn_get_scid(sc.raw(), scids.data());
    for (const ngtcp2_cid& c : scids)
        cr_assert(owned(c.data, c.datalen, s), "server SCID with first byte %u", c.data[0]);
    std::vector<ngtcp2_cid_token> dcids(
        ngtcp2_conn_get_active_dcid(env.client_conn->raw(), nullptr));
    ngtcp2_conn_get_active_dcid(env.client_conn->raw(), dcids.data());
    for (const ngtcp2_cid_token& t : dcids)
        cr_assert(owned(t.cid.data, t.cid.datalen, s), "client DCID with first byte %u",
                  t.cid.data[0]);
}

// Connection IDs the server provided to the client and that are not retired.
size_t server_scids(Env& env) {
    return ngtcp2_conn_get_scid(env.server.accepted.front()->raw(), nullptr);
}

}  // namespace

Test(quic, steered_listener_issues_connection_ids_its_member_owns) {
    ListenerConfig lc;
    lc.steering = {2, 1};
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    env.handshake();
    Connection& sc = *env.server.accepted.front();
    // The client takes active_connection_id_limit (4) of our IDs: the first SCID and three
    // issued through get_new_connection_id (NEW_CONNECTION_ID) once the handshake is done.
    cr_assert(env.run_until([&] { return server_scids(env) >= 4; }, 5000),
              "the server issued %zu connection IDs", server_scids(env));
    check_owned_cids(env, sc, false);
    std::vector<ngtcp2_cid> issued(server_scids(env));
    ngtcp2_conn_get_scid(sc.raw(), issued.data());
    auto fresh_id = [&] {
        std::vector<ngtcp2_cid> now(server_scids(env));
        ngtcp2_conn_get_scid(sc.raw(), now.data());
        for (const ngtcp2_cid& c : now) {
            bool known = false;
            for (const ngtcp2_cid& o : issued) known = known || ngtcp2_cid_eq(&c, &o);
            if (!known) return true;
        }
        return false;
    };
    // A migration retires an ID and makes the server issue another: steered as well.
    cr_assert(env.run_until([&] {
        auto r = rebind(*env.client_conn);
        cr_assert(r.ok() || r.error().code == EAGAIN, "rebind: %s",
                  r.ok() ? "" : r.error().message.c_str());
        return r.ok();
    }));
    cr_assert(env.run_until([&] { return env.worker->attached_count() == 4; }),
              "the migration did not settle");
    cr_assert(env.run_until(fresh_id, 5000), "no connection ID issued after the migration");
    check_owned_cids(env, sc, false);
    cr_assert(!env.client.closed);
    cr_assert_eq(env.client_conn->failed_migrations(), 0u);
}

Test(quic, steered_retry_source_id_is_owned_by_the_member) {
    ListenerConfig lc;
    lc.steering = {3, 2};
    lc.retry = RetryPolicy::always;
    Env env(core::BackendChoice::automatic, true, nullptr, lc);
    // The Retry's source ID (the client's next DCID) is ours: its first byte names member 2.
    RawSocket sock("127.0.0.1");
    for (int i = 0; i < 16; ++i) {
        auto raw = raw_client(env, sock);
        std::vector<uint8_t> reply = exchange(env, sock, raw->next_datagram());
        cr_assert_eq(test::long_header_type(reply), NGTCP2_PKT_RETRY);
        const size_t dcidlen = reply[5];
        cr_assert_lt(6 + dcidlen + 1, reply.size());
        const size_t scidlen = reply[6 + dcidlen];
        cr_assert_eq(scidlen, Connection::kCidLen);
        cr_assert(owned(&reply[7 + dcidlen], scidlen, lc.steering), "Retry SCID byte %u",
                  reply[7 + dcidlen]);
    }
    cr_assert_eq(env.listener->retries(), 16u);
    // A real client follows the Retry to the connection, whose IDs are all ours.
    env.handshake();
    cr_assert_eq(env.listener->retries(), 17u);
    cr_assert(env.run_until([&] { return server_scids(env) >= 4; }, 5000));
    check_owned_cids(env, *env.server.accepted.front(), true);
}

namespace {

// One member of a steered group with its own Worker on its own thread. Everything it learns is
// published through atomics; the test thread reads nothing else of it.
struct GroupMember final : AcceptHandler, ConnectionHandler, StreamHandler {
    CidSteering steering;
    std::unique_ptr<ServerTls> tls;
    core::UniqueFd fd;
    std::thread thread;
    std::atomic<bool> ready{false};
    std::atomic<bool> stop{false};
    std::atomic<bool> failed{false};
    std::atomic<int> accepted{0};
    std::atomic<int> handshake_failures{0};
    std::atomic<int> closed{0};
    std::atomic<size_t> connections{0};
    std::atomic<uint64_t> resets{0};
    std::atomic<uint64_t> datagrams{0};
    std::atomic<int> foreign_cids{0};
    std::atomic<int> ping_round{0};  // the test asks for one ping per connection
    std::atomic<int> pongs{0};       // echoes that came back complete
    std::string error;               // read after the thread ended
    // Worker-thread state.
    std::vector<Connection*> live;
    int pinged_round = 0;

    void on_connection(Connection& c) noexcept override {
        c.set_handler(this);
        live.push_back(&c);
        ++accepted;
    }
    void on_handshake_failed(const Connection&) noexcept override { ++handshake_failures; }
    void on_established(Connection&) noexcept override {}
    void on_stream_opened(Connection&, Stream& s) noexcept override { s.reset(); }
    void on_streams_available(Connection&) noexcept override {}
    void on_closed(Connection& c, const CloseInfo&) noexcept override {
        std::erase(live, &c);
        ++closed;
    }
    size_t on_stream_data(Stream& s, std::span<const uint8_t> d, bool fin) noexcept override {
        auto* got = static_cast<std::string*>(s.user_data());
        got->append(reinterpret_cast<const char*>(d.data()), d.size());
        if (fin && *got == "ping") ++pongs;
        return d.size();
    }
    void on_stream_writable(Stream&) noexcept override {}
    void on_stream_reset(Stream&, uint64_t) noexcept override {}
    void on_stream_closed(Stream& s, uint64_t) noexcept override {
        delete static_cast<std::string*>(s.user_data());
    }

    void fail(std::string what) {
        error = std::move(what);
        failed = true;
    }

    void run() {
        core::WorkerOptions o;
        o.max_slots = 1024;
        auto w = core::Worker::create(o);  // created on the thread that runs it
        if (!w) {
            fail("worker: " + w.error().message);
            ready = true;
            return;
        }
        ListenerConfig lc;
        lc.steering = steering;
        auto l = Listener::adopt(**w, std::move(fd), *tls, *this, lc);
        if (!l) {
            fail("listener: " + l.error().message);
            ready = true;
            return;
        }
        ready = true;
        while (!stop) {
            auto r = (*w)->run_once(5 * core::kNsPerMs);
            if (!r) {
                fail("worker: " + r.error().message);
                break;
            }
            const Listener& lr = **l;
            connections = lr.connection_count();
            resets = lr.stateless_resets();
            datagrams = (*l)->endpoint().datagrams_in();
            for (Connection* c : live) {
                const ngtcp2_cid* first = ngtcp2_conn_get_client_initial_dcid(c->raw());
                for (const CidKey& k : lr.cids(*c)) {
                    const bool clients = k.len == first->datalen &&
                                         std::memcmp(k.data.data(), first->data, k.len) == 0;
                    if (!clients && !owned(k.data.data(), k.len, steering)) ++foreign_cids;
                }
            }
            if (ping_round > pinged_round) {
                pinged_round = ping_round;
                for (Connection* c : live) {
                    auto s = c->open_stream(*this);
                    if (!s) {
                        fail("open_stream: " + s.error().message);
                        continue;
                    }
                    (*s)->set_user_data(new std::string);
                    (*s)->write(
                        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("ping"), 4));
                    (*s)->shutdown_write();
                }
            }
        }
        live.clear();
        l->reset();
        (void)(*w)->run_until([&] { return (*w)->attached_count() == 0; },
                              core::now_ns() + 5 * core::kNsPerSec);
        if ((*w)->attached_count() != 0) fail("sessions left behind");
    }
};

// A dialled connection: echoes the server's stream back.
struct GroupClient final : ConnectionHandler, StreamHandler {
    Connection* conn = nullptr;
    bool established = false;
    bool closed = false;
    CloseInfo info;
    uint16_t first_port = 0;
    void on_established(Connection&) noexcept override { established = true; }
    void on_stream_opened(Connection&, Stream& s) noexcept override { s.set_handler(this); }
    void on_streams_available(Connection&) noexcept override {}
    void on_closed(Connection&, const CloseInfo& i) noexcept override {
        closed = true;
        info = i;
    }
    size_t on_stream_data(Stream& s, std::span<const uint8_t> d, bool fin) noexcept override {
        size_t n = s.write(d);
        if (fin) s.shutdown_write();
        return n;
    }
    void on_stream_writable(Stream&) noexcept override {}
    void on_stream_reset(Stream&, uint64_t) noexcept override {}
    void on_stream_closed(Stream&, uint64_t) noexcept override {}
};

uint16_t port_of(const sockaddr* a) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(a)->sin_port);
}

// Stops and joins the member threads however the test ends.
struct MemberThreads {
    std::vector<std::unique_ptr<GroupMember>>& members;
    ~MemberThreads() {
        for (auto& m : members) m->stop = true;
        for (auto& m : members) {
            if (m->thread.joinable()) m->thread.join();
        }
    }
};

}  // namespace

Test(quic, two_workers_group_delivers_each_connection_to_its_worker) {
    constexpr uint32_t kMembers = 2;
    constexpr size_t kClients = 20;
    const Material& m = material();
    sockaddr_in lo{};
    lo.sin_family = AF_INET;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto group = bind_udp_group(reinterpret_cast<sockaddr*>(&lo), sizeof lo, kMembers);
    cr_assert(group.ok(), "group: %s", group.ok() ? "" : group.error().message.c_str());
    sockaddr_in to{};
    socklen_t to_len = sizeof to;
    ::getsockname((*group)[0].get(), reinterpret_cast<sockaddr*>(&to), &to_len);

    std::vector<std::unique_ptr<GroupMember>> members;
    MemberThreads joiner{members};
    for (uint32_t i = 0; i < kMembers; ++i) {
        auto gm = std::make_unique<GroupMember>();
        gm->steering = {kMembers, i};
        ServerTlsConfig sc;
        sc.cert_pem = m.server.cert;
        sc.key_pem = m.server.key;
        sc.verify = [](std::span<const uint8_t>) { return true; };
        auto st = ServerTls::create(std::move(sc));
        cr_assert(st.ok());
        gm->tls = std::move(*st);
        gm->fd = std::move((*group)[i]);
        members.push_back(std::move(gm));
    }
    for (auto& gm : members) gm->thread = std::thread([p = gm.get()] { p->run(); });
    for (auto& gm : members) {
        while (!gm->ready) std::this_thread::yield();
        cr_assert_not(gm->failed, "member %u: %s", gm->steering.index, gm->error.c_str());
    }

    auto cw = make_worker(core::BackendChoice::automatic, true);
    ClientTlsConfig cc;
    cc.server_name = kServerName;
    cc.trust = ServerTrust::ca_file;
    cc.ca_pem = m.ca.cert;
    cc.cert_pem = m.client.cert;
    cc.key_pem = m.client.key;
    auto ct = ClientTls::create(std::move(cc));
    cr_assert(ct.ok());
    // The members run on their own: the client worker wakes every 5 ms to look at them.
    auto pump_until = [&](auto&& done, int64_t ms) {
        const int64_t deadline = core::now_ns() + ms * core::kNsPerMs;
        while (!done()) {
            if (core::now_ns() >= deadline) return false;
            auto r = cw->run_once(5 * core::kNsPerMs);
            cr_assert(r.ok(), "client worker: %s", r.ok() ? "" : r.error().message.c_str());
        }
        return true;
    };
    std::vector<std::unique_ptr<GroupClient>> clients;
    for (size_t i = 0; i < kClients; ++i) {
        auto gc = std::make_unique<GroupClient>();
        auto c = dial(*cw, reinterpret_cast<sockaddr*>(&to), to_len, **ct, *gc);
        cr_assert(c.ok(), "dial: %s", c.ok() ? "" : c.error().message.c_str());
        gc->conn = *c;
        clients.push_back(std::move(gc));
    }
    auto all = [&](auto&& pred) {
        for (auto& gc : clients) {
            if (!pred(*gc)) return false;
        }
        return true;
    };
    auto accepted = [&] {
        int n = 0;
        for (auto& gm : members) n += gm->accepted;
        return static_cast<size_t>(n);
    };
    cr_assert(pump_until([&] { return all([](GroupClient& c) { return c.established; }); }, 15000),
              "not every connection established");
    cr_assert(pump_until([&] { return accepted() == kClients; }, 5000), "%zu of %zu accepted",
              accepted(), kClients);
    // Each member holds exactly the connections whose handshakes it completed: no connection's
    // packets reached the other worker (it would have created a second connection, or answered
    // with a stateless reset).
    auto settled = [&] {
        for (auto& gm : members) {
            if (gm->connections != static_cast<size_t>(gm->accepted.load())) return false;
        }
        return true;
    };
    cr_assert(pump_until(settled, 5000), "a member holds connections it did not accept");
    for (auto& gm : members) {
        cr_assert_gt(gm->accepted, 0, "member %u took no connection: Initials not spread",
                     gm->steering.index);
        cr_assert_eq(gm->handshake_failures, 0);
        cr_assert_eq(gm->resets, 0u, "member %u sent stateless resets", gm->steering.index);
    }
    int before[kMembers];
    for (uint32_t i = 0; i < kMembers; ++i) before[i] = members[i]->accepted;

    // Every client migrates to a new port: the kernel knows nothing of the new 4-tuple, only
    // the CID byte brings its packets back to the worker that owns the connection.
    for (auto& gc : clients) gc->first_port = port_of(gc->conn->endpoint()->local_addr());
    std::vector<bool> moved(kClients, false);
    cr_assert(pump_until(
                  [&] {
                      bool done = true;
                      for (size_t i = 0; i < kClients; ++i) {
                          if (moved[i]) continue;
                          auto r = rebind(*clients[i]->conn);
                          cr_assert(r.ok() || r.error().code == EAGAIN, "rebind %zu: %s", i,
                                    r.ok() ? "" : r.error().message.c_str());
                          moved[i] = r.ok();
                          done = done && moved[i];
                      }
                      return done;
                  },
                  10000),
              "a client got no spare connection ID");
    // Path validation done: each client is on its new socket and released the old one.
    cr_assert(pump_until(
                  [&] {
                      return cw->attached_count() == 2 * kClients && all([](GroupClient& c) {
                                 return c.closed || c.conn->failed_migrations() > 0 ||
                                        port_of(c.conn->endpoint()->local_addr()) != c.first_port;
                             });
                  },
                  10000),
              "migrations did not settle (%u client sessions)", cw->attached_count());
    for (size_t i = 0; i < kClients; ++i) {
        GroupClient& c = *clients[i];
        cr_assert_not(c.closed, "client %zu closed: %s", i,
                      describe_close(c.info, "server").c_str());
        cr_assert_eq(c.conn->failed_migrations(), 0u, "client %zu: path validation failed", i);
    }
    // Data both ways over the new paths: each member pings each of its connections.
    for (auto& gm : members) gm->ping_round = 1;
    auto pongs = [&] {
        for (auto& gm : members) {
            if (gm->pongs != gm->accepted) return false;
        }
        return true;
    };
    cr_assert(pump_until(pongs, 10000), "pings did not all come back");
    for (uint32_t i = 0; i < kMembers; ++i) {
        GroupMember& gm = *members[i];
        cr_assert_eq(gm.accepted, before[i], "member %u accepted a connection again", i);
        cr_assert_eq(gm.connections, static_cast<size_t>(before[i]));
        cr_assert_eq(gm.closed, 0, "member %u lost a connection", i);
        cr_assert_eq(gm.resets, 0u, "member %u sent stateless resets", i);
        cr_assert_eq(gm.foreign_cids, 0, "member %u routed another member's CIDs", i);
        cr_assert_not(gm.failed, "member %u: %s", i, gm.error.c_str());
    }
    for (auto& gc : clients) cr_assert_not(gc->closed);

    for (auto& gc : clients) gc->conn->terminate();
    cr_assert(pump_until([&] { return cw->attached_count() == 0; }, 5000));
    for (auto& gm : members) gm->stop = true;
    for (auto& gm : members) gm->thread.join();
    for (auto& gm : members) cr_assert_not(gm->failed, "%s", gm->error.c_str());
}
