// ACME module: TLS-ALPN-01 challenge certificates, ES256 JWS, the JSON parsers, the state
// directory, and the Manager issuing, reusing and renewing certificates against a real pebble.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "acme/challenge.hh"
#include "acme/flow.hh"
#include "acme/jws.hh"
#include "acme/manager.hh"
#include "acme/messages.hh"
#include "acme/state.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/pebble.hh"
#include "tests/support/process.hh"
#include "trust/gnutls_util.hh"
#include "trust/private_ca.hh"
#include "trust/x509_util.hh"

using namespace runewarp;
using namespace runewarp::acme;
using runewarp::test::Millis;

// Criterion keeps the operands' pointers past the full expression: copy them first.
#define EXPECT_STR_EQ(a, b)                           \
    do {                                              \
        std::string lhs_ = (a);                       \
        std::string rhs_ = (b);                       \
        cr_assert_str_eq(lhs_.c_str(), rhs_.c_str()); \
    } while (0)

#define EXPECT_CONTAINS(hay, needle)                                                      \
    do {                                                                                  \
        std::string h_ = (hay);                                                           \
        std::string n_ = (needle);                                                        \
        cr_assert(h_.find(n_) != std::string::npos, "missing \"%s\" in:\n%s", n_.c_str(), \
                  h_.c_str());                                                            \
    } while (0)

namespace {

constexpr const char* kHost = "acme.runewarp.test";

std::string der_of_pem(const std::string& pem) {
    auto crt = trust::import_crt_pem(pem, "test");
    cr_assert(crt.ok(), "%s", crt.ok() ? "" : crt.error().message.c_str());
    trust::OwnedDatum der;
    cr_assert_eq(gnutls_x509_crt_export2(crt->get(), GNUTLS_X509_FMT_DER, der.out()), 0);
    return der.str();
}

std::string std_b64url(std::string_view bytes) {
    // Independent of acme::b64url: GnuTLS base64, then the URL alphabet without padding.
    gnutls_datum_t in = trust::datum_of(bytes);
    gnutls_datum_t out{nullptr, 0};
    cr_assert_eq(gnutls_base64_encode2(&in, &out), 0);
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    std::string r;
    for (char c : s) {
        if (c == '+') {
            r.push_back('-');
        } else if (c == '/') {
            r.push_back('_');
        } else if (c != '=' && c != '\n' && c != '\r') {
            r.push_back(c);
        }
    }
    return r;
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    cr_assert_eq(::lstat(path.c_str(), &st), 0, "no %s", path.c_str());
    return st.st_mode & 07777;
}

// fd 2 into a file for the life of the object: the Manager logs on stderr.
class StderrCapture {
public:
    explicit StderrCapture(std::string path) : path_(std::move(path)) {
        int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        cr_assert(fd >= 0);
        saved_ = ::dup(2);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~StderrCapture() {
        ::dup2(saved_, 2);
        ::close(saved_);
    }
    std::string text() const { return test::read_file(path_); }
    bool wait_for(std::string_view needle, Millis deadline) const {
        return test::wait_until([&] { return text().find(needle) != std::string::npos; }, deadline,
                                Millis{20});
    }
    std::size_t count(std::string_view needle) const {
        std::string t = text();
        std::size_t n = 0;
        for (auto pos = t.find(needle); pos != std::string::npos; pos = t.find(needle, pos + 1)) {
            ++n;
        }
        return n;
    }

private:
    std::string path_;
    int saved_ = -1;
};

// What on_certificate delivered, for waiting on from the test thread.
struct Delivered {
    std::mutex mu;
    std::vector<std::shared_ptr<const Certificate>> certs;
    std::atomic<int> fatal{0};

    Manager::OnCertificate on_certificate() {
        return [this](std::shared_ptr<const Certificate> c) {
            std::lock_guard lock(mu);
            certs.push_back(std::move(c));
        };
    }
    Manager::OnFatal on_fatal() {
        return [this](const std::string&) { fatal.fetch_add(1); };
    }
    std::size_t count() {
        std::lock_guard lock(mu);
        return certs.size();
    }
    std::shared_ptr<const Certificate> at(std::size_t i) {
        std::lock_guard lock(mu);
        return certs.at(i);
    }
    bool wait_count(std::size_t n, Millis deadline) {
        return test::wait_until([&] { return count() >= n; }, deadline, Millis{20});
    }
};

ManagerOptions options_for(test::Pebble& pebble, const std::string& state_dir,
                           Role role = Role::kServer) {
    ManagerOptions o;
    o.role = role;
    o.hostname = kHost;
    o.email = "ops@runewarp.test";
    o.directory_url = pebble.directory_url();
    o.ca_file = pebble.https_ca_file();
    o.state_dir = state_dir;
    o.log.level = obs::Level::kDebug;
    return o;
}

std::unique_ptr<Manager> make_manager(ManagerOptions o, std::shared_ptr<ChallengeBoard> board,
                                      Delivered& d) {
    auto m = Manager::create(std::move(o), std::move(board), d.on_certificate(), d.on_fatal());
    cr_assert(m.ok(), "%s", m.ok() ? "" : m.error().message.c_str());
    return std::move(*m);
}

// The chain verifies against pebble's issuing root for kHost.
void assert_chain_verifies(const std::string& chain_pem, const std::string& root_file) {
    auto chain = trust::import_crt_list_pem(chain_pem, "issued", true);
    cr_assert(chain.ok(), "%s", chain.ok() ? "" : chain.error().message.c_str());
    gnutls_x509_trust_list_t raw = nullptr;
    cr_assert_eq(gnutls_x509_trust_list_init(&raw, 0), 0);
    trust::TrustList tl(raw);
    cr_assert_gt(gnutls_x509_trust_list_add_trust_file(raw, root_file.c_str(), nullptr,
                                                       GNUTLS_X509_FMT_PEM, 0, 0),
                 0);
    std::vector<gnutls_x509_crt_t> list;
    for (auto& c : *chain) list.push_back(c.get());
    unsigned status = 1;
    gnutls_typed_vdata_st data[2] = {
        {GNUTLS_DT_DNS_HOSTNAME, reinterpret_cast<unsigned char*>(const_cast<char*>(kHost)), 0},
        {GNUTLS_DT_KEY_PURPOSE_OID,
         reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_SERVER)), 0}};
    cr_assert_eq(
        gnutls_x509_trust_list_verify_crt2(raw, list.data(), static_cast<unsigned>(list.size()),
                                           data, 2, 0, &status, nullptr),
        0);
    cr_assert_eq(status, 0u, "chain does not verify against pebble's root (status %u)", status);
}

// A tiny TLS-ALPN-01 responder: accepts on 127.0.0.1:port and answers every handshake that
// offers acme-tls/1 with the board's certificate for the SNI, as the roles do.
class AlpnResponder {
public:
    AlpnResponder(std::uint16_t port, std::shared_ptr<ChallengeBoard> board)
        : board_(std::move(board)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert(fd_ >= 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        cr_assert_eq(::listen(fd_, 16), 0);
        thread_ = std::thread([this] { loop(); });
    }
    ~AlpnResponder() {
        stop_.store(true);
        thread_.join();
        ::close(fd_);
    }
    int answered() const { return answered_.load(); }
    int missing() const { return missing_.load(); }

private:
    struct Conn {
        AlpnResponder* self;
        std::shared_ptr<const ChallengeCert> cert;
    };

    static int on_client_hello(gnutls_session_t s) {
        auto* c = static_cast<Conn*>(gnutls_session_get_ptr(s));
        char name[256];
        size_t len = sizeof name;
        unsigned type = 0;
        if (gnutls_server_name_get(s, name, &len, &type, 0) < 0)
            return GNUTLS_E_NO_CERTIFICATE_FOUND;
        c->cert = c->self->board_->find(std::string_view(name, len));
        if (!c->cert) {
            c->self->missing_.fetch_add(1);
            return GNUTLS_E_NO_CERTIFICATE_FOUND;
        }
        return gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->cert->credentials());
    }

    void serve(int fd) {
        gnutls_session_t s = nullptr;
        gnutls_init(&s, GNUTLS_SERVER);
        Conn conn{this, nullptr};
        gnutls_session_set_ptr(s, &conn);
        gnutls_set_default_priority(s);
        gnutls_datum_t alpn = trust::datum_of(kAcmeTlsAlpn);
        gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY);
        gnutls_handshake_set_post_client_hello_function(s, &AlpnResponder::on_client_hello);
        gnutls_transport_set_int(s, fd);
        gnutls_handshake_set_timeout(s, 5000);
        int rc;
        do {
            rc = gnutls_handshake(s);
        } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
        if (rc == 0) {
            gnutls_datum_t got{};
            if (gnutls_alpn_get_selected_protocol(s, &got) == 0 &&
                std::string_view(reinterpret_cast<const char*>(got.data), got.size) ==
                    kAcmeTlsAlpn) {
                answered_.fetch_add(1);
            }
            gnutls_bye(s, GNUTLS_SHUT_WR);
        }
        gnutls_deinit(s);
        ::close(fd);
    }

    void loop() {
        while (!stop_.load()) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c >= 0) serve(c);
        }
    }

    std::shared_ptr<ChallengeBoard> board_;
    int fd_ = -1;
    std::atomic<bool> stop_{false};
    std::atomic<int> answered_{0};
    std::atomic<int> missing_{0};
    std::thread thread_;
};

}  // namespace

// ---- challenge certificates (RFC 8737) ------------------------------------------------------

Test(challenge_cert, carries_critical_acme_identifier_and_only_the_hostname) {
    const std::string keyauth = "token-abc.thumbprint-xyz";
    auto cert = ChallengeCert::create(kHost, keyauth);
    cr_assert(cert.ok(), "%s", cert.ok() ? "" : cert.error().message.c_str());
    EXPECT_STR_EQ((*cert)->hostname(), kHost);
    cr_assert_not_null((*cert)->credentials());

    auto crt = trust::import_crt_pem((*cert)->cert_pem(), "challenge");
    cr_assert(crt.ok());
    gnutls_datum_t ext{};
    unsigned critical = 0;
    cr_assert_eq(
        gnutls_x509_crt_get_extension_by_oid2(crt->get(), "1.3.6.1.5.5.7.1.31", 0, &ext, &critical),
        0);
    std::string value(reinterpret_cast<const char*>(ext.data), ext.size);
    gnutls_free(ext.data);
    cr_assert_eq(critical, 1u);
    std::string expected = std::string("\x04\x20", 2) + sha256(keyauth);
    cr_assert_eq(value.size(), 34u);
    cr_assert(value == expected, "extension value is not 04 20 || SHA-256(key authorization)");

    char san[300];
    size_t san_len = sizeof san;
    unsigned san_critical = 0;
    cr_assert_eq(gnutls_x509_crt_get_subject_alt_name(crt->get(), 0, san, &san_len, &san_critical),
                 GNUTLS_SAN_DNSNAME);
    EXPECT_STR_EQ(std::string(san, san_len), kHost);
    san_len = sizeof san;
    cr_assert_eq(gnutls_x509_crt_get_subject_alt_name(crt->get(), 1, san, &san_len, &san_critical),
                 GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);

    std::time_t now = std::time(nullptr);
    cr_assert_lt(gnutls_x509_crt_get_activation_time(crt->get()), now);
    cr_assert_gt(gnutls_x509_crt_get_expiration_time(crt->get()), now);

    // A fresh key every time.
    auto other = ChallengeCert::create(kHost, keyauth);
    cr_assert(other.ok());
    cr_assert((*other)->cert_pem() != (*cert)->cert_pem());
}

Test(challenge_cert, a_hostname_longer_than_a_common_name_still_works) {
    const std::string host = std::string(63, 'a') + "." + std::string(63, 'b') + ".runewarp.test";
    auto cert = ChallengeCert::create(host, "k.t");
    cr_assert(cert.ok(), "%s", cert.ok() ? "" : cert.error().message.c_str());
    auto crt = trust::import_crt_pem((*cert)->cert_pem(), "challenge");
    cr_assert(crt.ok());
    cr_assert_neq(gnutls_x509_crt_check_hostname(crt->get(), host.c_str()), 0u);
}

Test(jws, csr_names_the_hostname_and_drops_a_common_name_over_64) {
    auto key = trust::generate_p256_key();
    cr_assert(key.ok());
    const std::string shorter = "tunnel.runewarp.test";
    const std::string longer = std::string(60, 'a') + "." + std::string(20, 'b') + ".test";
    for (const std::string& host : {shorter, longer}) {
        auto der = make_csr_der(key->get(), host);
        cr_assert(der.ok());
        gnutls_x509_crq_t crq = nullptr;
        gnutls_x509_crq_init(&crq);
        gnutls_datum_t d = trust::datum_of(*der);
        cr_assert_eq(gnutls_x509_crq_import(crq, &d, GNUTLS_X509_FMT_DER), 0);
        cr_assert_eq(gnutls_x509_crq_verify(crq, 0), 0, "CSR signature");
        char buf[300];
        size_t len = sizeof buf;
        unsigned critical = 0;
        unsigned type = 0;
        cr_assert_eq(gnutls_x509_crq_get_subject_alt_name(crq, 0, buf, &len, &type, &critical),
                     GNUTLS_SAN_DNSNAME);
        EXPECT_STR_EQ(std::string(buf, len), host);
        len = sizeof buf;
        int rc = gnutls_x509_crq_get_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len);
        if (host.size() <= 64) {
            cr_assert_eq(rc, 0);
            EXPECT_STR_EQ(std::string(buf, len), host);
        } else {
            cr_assert_eq(rc, GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE, "a CN over 64 characters");
        }
        gnutls_x509_crq_deinit(crq);
    }
}

Test(challenge_cert, rejects_an_empty_hostname) {
    cr_assert_not(ChallengeCert::create("", "k.t").ok());
}

Test(challenge_cert, answers_an_acme_tls_1_handshake) {
    auto cert = ChallengeCert::create(kHost, "tok.thumb");
    cr_assert(cert.ok());
    int sv[2];
    cr_assert_eq(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    gnutls_datum_t alpn = trust::datum_of(kAcmeTlsAlpn);

    std::atomic<int> server_rc{1};
    std::thread server([&] {
        gnutls_session_t s = nullptr;
        gnutls_init(&s, GNUTLS_SERVER);
        gnutls_set_default_priority(s);
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, (*cert)->credentials());
        gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY);
        gnutls_transport_set_int(s, sv[1]);
        gnutls_handshake_set_timeout(s, 5000);
        int rc;
        do {
            rc = gnutls_handshake(s);
        } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
        server_rc.store(rc);
        if (rc == 0) gnutls_bye(s, GNUTLS_SHUT_WR);
        gnutls_deinit(s);
    });

    gnutls_certificate_credentials_t ccred = nullptr;
    gnutls_certificate_allocate_credentials(&ccred);
    gnutls_session_t c = nullptr;
    gnutls_init(&c, GNUTLS_CLIENT);
    gnutls_set_default_priority(c);
    gnutls_credentials_set(c, GNUTLS_CRD_CERTIFICATE, ccred);
    gnutls_server_name_set(c, GNUTLS_NAME_DNS, kHost, std::strlen(kHost));
    gnutls_alpn_set_protocols(c, &alpn, 1, 0);
    gnutls_transport_set_int(c, sv[0]);
    gnutls_handshake_set_timeout(c, 5000);
    int rc;
    do {
        rc = gnutls_handshake(c);
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
    cr_assert_eq(rc, 0, "client handshake: %s", gnutls_strerror(rc));

    gnutls_datum_t selected{};
    cr_assert_eq(gnutls_alpn_get_selected_protocol(c, &selected), 0);
    EXPECT_STR_EQ(std::string(reinterpret_cast<const char*>(selected.data), selected.size),
                  std::string(kAcmeTlsAlpn));
    unsigned n = 0;
    const gnutls_datum_t* peers = gnutls_certificate_get_peers(c, &n);
    cr_assert_eq(n, 1u);
    std::string seen(reinterpret_cast<const char*>(peers[0].data), peers[0].size);
    cr_assert(seen == der_of_pem((*cert)->cert_pem()), "the client saw another certificate");

    gnutls_bye(c, GNUTLS_SHUT_WR);
    server.join();
    cr_assert_eq(server_rc.load(), 0);
    gnutls_deinit(c);
    gnutls_certificate_free_credentials(ccred);
    ::close(sv[0]);
    ::close(sv[1]);
}

Test(challenge_board, publish_find_withdraw) {
    ChallengeBoard board;
    cr_assert_null(board.find(kHost));
    auto cert = ChallengeCert::create(kHost, "a.b");
    cr_assert(cert.ok());
    board.publish(kHost, *cert);
    cr_assert_eq(board.find(kHost).get(), cert->get());
    cr_assert_null(board.find("other.runewarp.test"));
    auto held = board.find(kHost);
    board.withdraw(kHost);
    cr_assert_null(board.find(kHost));
    cr_assert_not_null(held->credentials());  // a reader keeps what it found
}

// ---- JWS -----------------------------------------------------------------------------------

Test(jws, b64url_round_trips_and_matches_the_rfc_alphabet) {
    EXPECT_STR_EQ(b64url(""), "");
    EXPECT_STR_EQ(b64url("f"), "Zg");
    EXPECT_STR_EQ(b64url("fo"), "Zm8");
    EXPECT_STR_EQ(b64url("foo"), "Zm9v");
    EXPECT_STR_EQ(b64url("\xfb\xff\xfe"), "-__-");
    std::string all;
    for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
    for (std::size_t n = 0; n <= all.size(); n += 7) {
        std::string part = all.substr(0, n);
        EXPECT_STR_EQ(b64url(part), std_b64url(part));
        auto back = b64url_decode(b64url(part));
        cr_assert(back.has_value());
        cr_assert(*back == part);
    }
    cr_assert_not(b64url_decode("Zm9v=").has_value());
    cr_assert_not(b64url_decode("Z").has_value());
    cr_assert_not(b64url_decode("Zh").has_value());  // non-canonical trailing bits
    cr_assert_not(b64url_decode("a+b/").has_value());
}

Test(jws, signature_verifies_with_the_account_public_key) {
    auto key = EcKey::generate();
    cr_assert(key.ok());
    auto body = jws_body(*key, "", "nonce-1", "https://ca.test/new-acct",
                         std::string(R"({"termsOfServiceAgreed":true})"));
    cr_assert(body.ok());
    auto j = nlohmann::json::parse(*body);
    std::string prot = j.at("protected").get<std::string>();
    std::string pay = j.at("payload").get<std::string>();
    auto sig = b64url_decode(j.at("signature").get<std::string>());
    cr_assert(sig.has_value());
    cr_assert_eq(sig->size(), 64u);

    auto header = nlohmann::json::parse(*b64url_decode(prot));
    EXPECT_STR_EQ(header.at("alg").get<std::string>(), "ES256");
    EXPECT_STR_EQ(header.at("nonce").get<std::string>(), "nonce-1");
    EXPECT_STR_EQ(header.at("url").get<std::string>(), "https://ca.test/new-acct");
    cr_assert(header.contains("jwk"));
    cr_assert_not(header.contains("kid"));
    EXPECT_STR_EQ(*b64url_decode(pay), R"({"termsOfServiceAgreed":true})");

    // r||s back to DER, verified by GnuTLS with the public half.
    gnutls_datum_t r = trust::datum_of(std::string_view(*sig).substr(0, 32));
    gnutls_datum_t s = trust::datum_of(std::string_view(*sig).substr(32));
    gnutls_datum_t der{};
    cr_assert_eq(gnutls_encode_rs_value(&der, &r, &s), 0);
    gnutls_pubkey_t pub = nullptr;
    gnutls_privkey_t priv = nullptr;
    gnutls_privkey_init(&priv);
    cr_assert_eq(gnutls_privkey_import_x509(priv, key->x509(), GNUTLS_PRIVKEY_IMPORT_COPY), 0);
    gnutls_pubkey_init(&pub);
    cr_assert_eq(gnutls_pubkey_import_privkey(pub, priv, 0, 0), 0);
    std::string signing_input = prot + "." + pay;
    gnutls_datum_t data = trust::datum_of(signing_input);
    cr_assert_eq(gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_ECDSA_SHA256, 0, &data, &der), 0);
    std::string tampered = prot + "." + b64url("{}");
    gnutls_datum_t bad = trust::datum_of(tampered);
    cr_assert_lt(gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_ECDSA_SHA256, 0, &bad, &der), 0);
    gnutls_free(der.data);
    gnutls_pubkey_deinit(pub);
    gnutls_privkey_deinit(priv);
}

Test(jws, kid_replaces_jwk_and_post_as_get_has_an_empty_payload) {
    auto key = EcKey::generate();
    cr_assert(key.ok());
    auto body =
        jws_body(*key, "https://ca.test/acct/1", "n2", "https://ca.test/order/1", std::nullopt);
    cr_assert(body.ok());
    auto j = nlohmann::json::parse(*body);
    EXPECT_STR_EQ(j.at("payload").get<std::string>(), "");
    auto header = nlohmann::json::parse(*b64url_decode(j.at("protected").get<std::string>()));
    EXPECT_STR_EQ(header.at("kid").get<std::string>(), "https://ca.test/acct/1");
    cr_assert_not(header.contains("jwk"));
}

Test(jws, thumbprint_matches_an_independent_computation) {
    auto key = EcKey::generate();
    cr_assert(key.ok());
    gnutls_ecc_curve_t curve;
    gnutls_datum_t x{}, y{}, k{};
    cr_assert_eq(gnutls_x509_privkey_export_ecc_raw(key->x509(), &curve, &x, &y, &k), 0);
    auto fixed = [](const gnutls_datum_t& d) {
        std::string v(reinterpret_cast<const char*>(d.data), d.size);
        if (v.size() > 32) return v.substr(v.size() - 32);  // a leading sign byte
        return std::string(32 - v.size(), '\0') + v;
    };
    // nlohmann orders members alphabetically (crv, kty, x, y) and dumps without spaces.
    nlohmann::json jwk = {
        {"kty", "EC"}, {"crv", "P-256"}, {"x", std_b64url(fixed(x))}, {"y", std_b64url(fixed(y))}};
    std::string canon = jwk.dump();
    gnutls_free(x.data);
    gnutls_free(y.data);
    gnutls_free(k.data);
    EXPECT_STR_EQ(key->jwk(), canon);
    unsigned char md[32];
    cr_assert_eq(gnutls_hash_fast(GNUTLS_DIG_SHA256, canon.data(), canon.size(), md), 0);
    std::string expected = std_b64url(std::string(reinterpret_cast<char*>(md), 32));
    EXPECT_STR_EQ(key->thumbprint(), expected);
    EXPECT_STR_EQ(key->key_authorization("tok"), "tok." + expected);
}

Test(jws, account_key_pem_round_trips) {
    auto key = EcKey::generate();
    cr_assert(key.ok());
    auto pem = key->pem();
    cr_assert(pem.ok());
    auto again = EcKey::from_pem(*pem, "account.key");
    cr_assert(again.ok());
    EXPECT_STR_EQ(again->jwk(), key->jwk());
    cr_assert_not(EcKey::from_pem("not a key", "account.key").ok());
}

// ---- messages ------------------------------------------------------------------------------

Test(messages, parse_valid_documents) {
    auto d = parse_directory(R"({"newNonce":"https://ca/nonce","newAccount":"https://ca/acct",
        "newOrder":"https://ca/order","revokeCert":"https://ca/revoke","meta":{"termsOfService":"x"}})");
    cr_assert(d.ok());
    EXPECT_STR_EQ(d->new_order, "https://ca/order");

    auto o = parse_order(R"({"status":"valid","expires":"2026-01-01T00:00:00Z",
        "identifiers":[{"type":"dns","value":"a.test"}],"authorizations":["https://ca/authz/1"],
        "finalize":"https://ca/fin/1","certificate":"https://ca/cert/1"})");
    cr_assert(o.ok());
    EXPECT_STR_EQ(o->status, "valid");
    cr_assert_eq(o->authorizations.size(), 1u);
    EXPECT_STR_EQ(o->certificate, "https://ca/cert/1");
    cr_assert_not(o->error.has_value());

    auto inv = parse_order(R"({"status":"invalid","authorizations":[],"finalize":"f",
        "error":{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no"}})");
    cr_assert(inv.ok());
    cr_assert(inv->error.has_value());
    EXPECT_STR_EQ(describe(*inv->error), "urn:ietf:params:acme:error:unauthorized: no");

    auto a =
        parse_authorization(R"({"status":"pending","identifier":{"type":"dns","value":"a.test"},
        "challenges":[{"type":"http-01","url":"https://ca/ch/1","token":"t1","status":"pending"},
        {"type":"tls-alpn-01","url":"https://ca/ch/2","token":"t2","status":"invalid",
         "error":{"type":"urn:ietf:params:acme:error:tls","detail":"bad"}}]})");
    cr_assert(a.ok());
    cr_assert_eq(a->challenges.size(), 2u);
    EXPECT_STR_EQ(a->challenges[1].token, "t2");
    cr_assert(a->challenges[1].error.has_value());

    auto p = parse_problem(
        R"({"type":"urn:ietf:params:acme:error:badNonce","detail":"stale","status":400})");
    cr_assert(p.ok());
    EXPECT_STR_EQ(p->type, std::string(kBadNonce));
    cr_assert_eq(p->status, 400);
}

Test(messages, wrong_types_and_missing_members_are_errors) {
    const char* bad_dirs[] = {"",
                              "null",
                              "[]",
                              "{",
                              R"({"newNonce":"a","newAccount":"b"})",
                              R"({"newNonce":1,"newAccount":"b","newOrder":"c"})",
                              R"({"newNonce":"a","newAccount":"b","newOrder":""})",
                              "\xff\xfe"};
    for (const char* t : bad_dirs) cr_assert_not(parse_directory(t).ok(), "accepted %s", t);

    const char* bad_orders[] = {
        R"({"status":"valid","finalize":"f"})",
        R"({"status":"valid","authorizations":"x","finalize":"f"})",
        R"({"status":"valid","authorizations":[1],"finalize":"f"})",
        R"({"status":5,"authorizations":[],"finalize":"f"})",
        R"({"status":"valid","authorizations":[],"finalize":"f","certificate":7})",
        R"({"status":"invalid","authorizations":[],"finalize":"f","error":"boom"})"};
    for (const char* t : bad_orders) cr_assert_not(parse_order(t).ok(), "accepted %s", t);

    const char* bad_authz[] = {
        R"({"status":"pending","challenges":[]})",
        R"({"status":"pending","identifier":"a","challenges":[]})",
        R"({"status":"pending","identifier":{"type":"dns","value":"a"},"challenges":{}})",
        R"({"status":"pending","identifier":{"type":"dns","value":"a"},"challenges":[1]})",
        R"({"status":"pending","identifier":{"type":"dns","value":"a"},"challenges":[{"type":"x"}]})",
        R"({"status":"pending","identifier":{"type":"dns","value":"a"},"challenges":[],"wildcard":"yes"})"};
    for (const char* t : bad_authz) cr_assert_not(parse_authorization(t).ok(), "accepted %s", t);

    cr_assert_not(parse_problem(R"({"type":1})").ok());
    cr_assert_not(parse_problem(R"({})").ok());
    cr_assert_not(parse_problem(R"({"type":"x","status":"400"})").ok());

    std::string deep(100000, '[');
    cr_assert_not(parse_order(deep).ok());
    std::string nested = R"({"status":"valid","authorizations":[],"finalize":"f","x":)" +
                         std::string(40, '[') + std::string(40, ']') + "}";
    cr_assert_not(parse_order(nested).ok());
    cr_assert_not(parse_order(std::string(kMaxDocument + 1, ' ')).ok());
}

// ---- state directory ----------------------------------------------------------------------

Test(state, account_key_is_created_once_with_mode_0600) {
    test::TempDir dir("rw-acme-state");
    auto k1 = load_or_create_account_key(dir.path());
    cr_assert(k1.ok(), "%s", k1.ok() ? "" : k1.error().message.c_str());
    cr_assert_eq(mode_of(dir / "account.key"), 0600u);
    auto k2 = load_or_create_account_key(dir.path());
    cr_assert(k2.ok());
    EXPECT_STR_EQ(k1->jwk(), k2->jwk());
    ::chmod((dir / "account.key").c_str(), 0644);
    cr_assert_not(load_or_create_account_key(dir.path()).ok(), "a readable account key is used");
}

Test(state, cache_reports_missing_unreadable_and_atomic_writes_are_0600) {
    test::TempDir dir("rw-acme-state");
    cr_assert(load_cached(dir.path(), kHost, std::time(nullptr)).status == CacheStatus::kMissing);
    Certificate c;
    c.cert_pem = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n";
    c.key_pem = "junk";
    cr_assert(store_certificate(dir.path(), kHost, c).ok());
    cr_assert_eq(mode_of(dir / kHost), 0700u);
    cr_assert_eq(mode_of(certificate_path(dir.path(), kHost)), 0600u);
    cr_assert_eq(mode_of(private_key_path(dir.path(), kHost)), 0600u);
    auto e = load_cached(dir.path(), kHost, std::time(nullptr));
    cr_assert(e.status == CacheStatus::kUnreadable);
    cr_assert_not(e.error.empty());
    // No temp files left behind.
    auto listing = test::Process::spawn(
        {.argv = {"ls", "-A", dir / kHost}, .out = test::Output::file(dir / "ls.txt")});
    cr_assert(listing.wait_exit(Millis{5000}).has_value());
    EXPECT_STR_EQ(test::read_file(dir / "ls.txt"), "certificate.pem\nprivate.key\n");
}

Test(manager, create_fails_on_an_unusable_state_dir) {
    auto board = std::make_shared<ChallengeBoard>();
    ManagerOptions o;
    o.hostname = kHost;
    o.state_dir = "/nonexistent/runewarp-acme";
    cr_assert_not(Manager::create(o, board, nullptr, nullptr).ok());
    test::TempDir dir("rw-acme-state");
    test::write_file(dir / "file", "x");
    o.state_dir = dir / "file";
    cr_assert_not(Manager::create(o, board, nullptr, nullptr).ok());
}

Test(manager, startup_line_for_an_unreadable_cache_is_renewal_starting) {
    test::TempDir dir("rw-acme-state");
    StderrCapture err(dir / "stderr.log");
    test::make_dirs(dir / kHost);
    test::write_file(dir / (std::string(kHost) + "/certificate.pem"), "garbage", 0600);
    test::write_file(dir / (std::string(kHost) + "/private.key"), "garbage", 0600);
    ManagerOptions o;
    o.role = Role::kClient;
    o.hostname = kHost;
    o.state_dir = dir.path();
    auto m = Manager::create(o, std::make_shared<ChallengeBoard>(), nullptr, nullptr);
    cr_assert(m.ok());
    cr_assert_null((*m)->cached());
    EXPECT_CONTAINS(err.text(), "INFO client acme renewal starting: public-hostname=" +
                                    std::string(kHost) + " reason=unreadable");
}

// ---- against pebble ------------------------------------------------------------------------

Test(pebble, issues_a_certificate_then_a_second_manager_reuses_the_cache) {
    test::TempDir dir("rw-acme");
    test::make_dirs(dir / "state");
    ::chmod((dir / "state").c_str(), 0700);
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;  // default nonce rejection: badNonce happens
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();

    auto board = std::make_shared<ChallengeBoard>();
    Delivered d;
    auto t0 = std::chrono::steady_clock::now();
    {
        auto m = make_manager(options_for(pebble, dir / "state"), board, d);
        cr_assert_null(m->cached());
        m->start();
        cr_assert(d.wait_count(1, Millis{60000}), "no certificate; log:\n%s\npebble:\n%s",
                  err.text().c_str(), pebble.log().c_str());
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - t0);
        cr_log_info("first issuance took %lld ms", static_cast<long long>(ms.count()));
        cr_assert(err.wait_for("INFO server acme certificate issued: server-hostname=" +
                                   std::string(kHost) + " remaining-validity=",
                               Millis{5000}));
        cr_assert_not_null(m->cached());
    }
    cr_assert_eq(d.fatal.load(), 0);
    auto cert = d.at(0);
    assert_chain_verifies(cert->cert_pem, pebble.issuer_root_file());
    cr_assert_lt(cert->not_before, cert->not_after);

    // The cache holds what on_certificate got, with owner-only modes.
    EXPECT_STR_EQ(test::read_file(certificate_path(dir / "state", kHost)), cert->cert_pem);
    EXPECT_STR_EQ(test::read_file(private_key_path(dir / "state", kHost)), cert->key_pem);
    cr_assert_eq(mode_of(dir / "state/account.key"), 0600u);
    cr_assert_eq(mode_of(dir / ("state/" + std::string(kHost))), 0700u);
    cr_assert_eq(mode_of(certificate_path(dir / "state", kHost)), 0600u);
    cr_assert_eq(mode_of(private_key_path(dir / "state", kHost)), 0600u);
    std::string log = err.text();
    EXPECT_CONTAINS(log, "INFO server acme first issuance starting: server-hostname=" +
                             std::string(kHost) + " reason=no-ready-cached-certificate");
    EXPECT_CONTAINS(log, "DEBUG server acme challenge handled: server-hostname=");
    cr_assert(log.find("PRIVATE KEY") == std::string::npos, "a key was logged");

    // A second manager on the same directory: cache ready, no order, sleeps until renewal.
    auto orders = stats().orders_placed.load();
    auto attempts = stats().issue_attempts.load();
    cr_assert_eq(orders, 1u);
    Delivered d2;
    auto m2 = make_manager(options_for(pebble, dir / "state"), board, d2);
    cr_assert_not_null(m2->cached());
    EXPECT_STR_EQ(m2->cached()->cert_pem, cert->cert_pem);
    cr_assert(err.wait_for("INFO server acme cached certificate ready: server-hostname=" +
                               std::string(kHost) + " remaining-validity=",
                           Millis{1000}));
    EXPECT_CONTAINS(err.text(), " renewal=not-due");
    m2->start();
    cr_assert(test::wait_until([] { return stats().renewal_waits.load() > 0; }, Millis{5000}));
    m2->stop();
    cr_assert_eq(stats().issue_attempts.load(), attempts, "the second manager ordered");
    cr_assert_eq(stats().orders_placed.load(), orders);
    cr_assert_eq(d2.count(), 0u);
    cr_assert_eq(err.count("first issuance starting"), 1u);
}

Test(pebble, bad_nonce_is_retried_with_the_fresh_nonce) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;
    po.nonce_reject_percent = 50;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    cr_assert_gt(stats().bad_nonce_retries.load(), 0u);
    cr_log_info("badNonce retries: %llu",
                static_cast<unsigned long long>(stats().bad_nonce_retries.load()));
}

Test(pebble, renews_two_thirds_into_the_validity_window) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;
    po.nonce_reject_percent = 0;
    po.validity_s = 30;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path(), Role::kClient),
                          std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    auto first = d.at(0);
    cr_assert_leq(first->not_after - first->not_before, 31);
    std::time_t due = first->not_before + (first->not_after - first->not_before) * 2 / 3;
    cr_assert(d.wait_count(2, Millis{60000}), "no renewal; log:\n%s", err.text().c_str());
    std::time_t renewed_at = std::time(nullptr);
    auto second = d.at(1);
    cr_log_info("renewal due at +%lds, delivered at +%lds",
                static_cast<long>(due - first->not_before),
                static_cast<long>(renewed_at - first->not_before));
    cr_assert_geq(renewed_at, due);
    cr_assert(second->cert_pem != first->cert_pem);
    cr_assert(second->key_pem != first->key_pem);
    cr_assert_gt(second->not_after, first->not_after);
    EXPECT_CONTAINS(err.text(),
                    "INFO client acme certificate renewed: public-hostname=" + std::string(kHost));
    EXPECT_STR_EQ(test::read_file(certificate_path(dir.path(), kHost)), second->cert_pem);
    assert_chain_verifies(second->cert_pem, pebble.issuer_root_file());
}

Test(pebble, backs_off_while_the_ca_is_down_then_issues) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);  // not started: the ACME server is down
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), std::make_shared<ChallengeBoard>(), d);
    auto t0 = std::chrono::steady_clock::now();
    m->start();
    // Failures at ~0 s and ~1 s (waits of 1 s, then 2 s).
    cr_assert(err.wait_for("next-retry-delay=2s", Millis{5000}), "log:\n%s", err.text().c_str());
    auto failed_after = std::chrono::steady_clock::now() - t0;
    cr_assert_geq(failed_after, std::chrono::milliseconds(900), "retried before its 1 s back-off");
    std::string log = err.text();
    EXPECT_CONTAINS(log, "WARN server acme failed: server-hostname=" + std::string(kHost) +
                             " reason=acme-server-unreachable");
    EXPECT_CONTAINS(log, "next-retry-delay=1s");
    cr_assert_eq(d.count(), 0u);
    cr_assert_eq(d.fatal.load(), 0);

    pebble.start();
    // The next attempt comes at most 2 s after the second failure (4 s if starting pebble took
    // so long that a third one happened); the failure count below proves the schedule, the
    // deadline only bounds a slow machine.
    cr_assert(d.wait_count(1, Millis{30000}), "log:\n%s", err.text().c_str());
    auto total = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    cr_log_info("issued %lld ms after start with the CA down at first",
                static_cast<long long>(total.count()));
    // Two failures before pebble came up (a third only if starting it took over 2 s).
    auto failures = err.count("WARN server acme failed:");
    cr_assert(failures == 2u || failures == 3u, "log:\n%s", err.text().c_str());
    EXPECT_CONTAINS(err.text(), "INFO server acme certificate issued");
}

Test(pebble, stop_returns_promptly_during_back_off) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::Pebble pebble(dir / "pebble", {});
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(err.wait_for("next-retry-delay=4s", Millis{10000}), "log:\n%s", err.text().c_str());
    auto t0 = std::chrono::steady_clock::now();
    m->stop();
    auto took = std::chrono::steady_clock::now() - t0;
    cr_assert_lt(took, std::chrono::milliseconds(500));
    m->stop();  // idempotent
}

Test(pebble, tls_alpn_01_challenge_is_answered_from_the_board) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    auto board = std::make_shared<ChallengeBoard>();
    test::PebbleOptions po;
    po.tls_port = test::free_port();
    po.always_valid = false;  // pebble really validates TLS-ALPN-01 on tls_port
    AlpnResponder responder(po.tls_port, board);
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), board, d);
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s\npebble:\n%s", err.text().c_str(),
              pebble.log().c_str());
    cr_assert_geq(responder.answered(), 1);
    cr_assert_eq(responder.missing(), 0);
    cr_assert_null(board->find(kHost), "the challenge was not withdrawn");
    EXPECT_CONTAINS(err.text(), "DEBUG server acme challenge handled");
    assert_chain_verifies(d.at(0)->cert_pem, pebble.issuer_root_file());
}

Test(pebble, a_failed_challenge_is_withdrawn_and_retried) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    auto board = std::make_shared<ChallengeBoard>();
    test::PebbleOptions po;
    po.tls_port = test::free_port();  // nobody listens: validation fails
    po.nonce_reject_percent = 0;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), board, d);
    m->start();
    cr_assert(err.wait_for("server acme failed", Millis{60000}), "log:\n%s", err.text().c_str());
    std::string log = err.text();
    EXPECT_CONTAINS(log,
                    "WARN server acme challenge failed: server-hostname=" + std::string(kHost));
    EXPECT_CONTAINS(log, "reason=challenge-failed");
    m->stop();
    cr_assert_null(board->find(kHost));
    cr_assert_eq(d.count(), 0u);
    cr_assert_eq(d.fatal.load(), 0);
}

Test(manager, stop_aborts_a_request_in_flight) {
    // A TCP listener that never speaks TLS: the first request hangs in its handshake until the
    // 30 s transfer timeout, unless stop() aborts it.
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(lfd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    cr_assert_eq(::listen(lfd, 4), 0);
    socklen_t len = sizeof sa;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);

    ManagerOptions o;
    o.hostname = kHost;
    o.email = "ops@runewarp.test";
    o.directory_url = "https://127.0.0.1:" + std::to_string(ntohs(sa.sin_port)) + "/dir";
    o.state_dir = dir.path();
    Delivered d;
    auto m = make_manager(o, std::make_shared<ChallengeBoard>(), d);
    m->start();
    pollfd p{lfd, POLLIN, 0};
    cr_assert_eq(::poll(&p, 1, 5000), 1, "the manager never connected");
    int conn = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    cr_assert(conn >= 0);
    // The ClientHello arrives: the request is in flight.
    pollfd cp{conn, POLLIN, 0};
    cr_assert_eq(::poll(&cp, 1, 5000), 1);
    auto t0 = std::chrono::steady_clock::now();
    m->stop();
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    cr_log_info("stop() with a request in flight took %lld ms",
                static_cast<long long>(took.count()));
    cr_assert_lt(took.count(), 1500);
    cr_assert(err.text().find("WARN") == std::string::npos, "stop logged a failure:\n%s",
              err.text().c_str());
    ::close(conn);
    ::close(lfd);
}

Test(state, managers_racing_on_a_fresh_directory_get_one_account_key) {
    test::TempDir dir("rw-acme-state");
    constexpr int kThreads = 8;
    std::vector<std::string> jwks(kThreads);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
        threads.emplace_back([&, i] {
            while (!go.load()) {
            }
            auto k = load_or_create_account_key(dir.path());
            if (k.ok()) jwks[i] = k->jwk();
        });
    }
    go.store(true);
    for (auto& t : threads) t.join();
    for (int i = 0; i < kThreads; ++i) {
        cr_assert_not(jwks[i].empty(), "thread %d got no key", i);
        EXPECT_STR_EQ(jwks[i], jwks[0]);
    }
    auto k = load_or_create_account_key(dir.path());
    cr_assert(k.ok());
    EXPECT_STR_EQ(k->jwk(), jwks[0]);
}

Test(pebble, two_hostnames_share_one_account) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    auto board = std::make_shared<ChallengeBoard>();
    Delivered d1, d2;
    auto o1 = options_for(pebble, dir.path(), Role::kClient);
    auto o2 = o1;
    o2.hostname = "second.runewarp.test";
    auto m1 = make_manager(o1, board, d1);
    auto m2 = make_manager(o2, board, d2);
    m1->start();
    cr_assert(d1.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    m2->start();
    cr_assert(d2.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    EXPECT_CONTAINS(err.text(),
                    "INFO client acme certificate issued: public-hostname=second.runewarp.test");
    EXPECT_STR_EQ(test::read_file(certificate_path(dir.path(), "second.runewarp.test")),
                  d2.at(0)->cert_pem);
    cr_assert_eq(stats().orders_placed.load(), 2u);
    // The second manager's newAccount found the first one's account (same key in account.key).
    std::string plog = pebble.log();
    EXPECT_CONTAINS(plog, "There are now 1 accounts");
    cr_assert(plog.find("There are now 2 accounts") == std::string::npos, "two accounts:\n%s",
              plog.c_str());
}

Test(pebble, an_unwritable_cache_is_fatal) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::make_dirs(dir / "state");
    test::write_file(dir / ("state/" + std::string(kHost)), "not a directory");  // blocks the cache
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m =
        make_manager(options_for(pebble, dir / "state"), std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(test::wait_until([&] { return d.fatal.load() > 0; }, Millis{60000}), "log:\n%s",
              err.text().c_str());
    EXPECT_CONTAINS(err.text(), "ERROR server acme stopped: server-hostname=" + std::string(kHost));
    m->stop();
    cr_assert_eq(d.fatal.load(), 1);
    cr_assert_eq(d.count(), 0u, "on_certificate before the cache was written");
    cr_assert_eq(stats().issue_attempts.load(), 1u, "the manager went on after a fatal error");
    cr_assert(err.text().find("WARN server acme failed") == std::string::npos);
}

Test(manager, poll_and_back_off_schedules) {
    const long expected_poll[] = {1, 2, 4, 8, 16, 16, 16};
    for (int i = 0; i < 7; ++i) {
        cr_assert_eq(poll_delay(i, -1).count(), expected_poll[i] * 1000, "poll %d", i);
    }
    cr_assert_eq(poll_delay(0, 3).count(), 3000);      // Retry-After replaces the schedule
    cr_assert_eq(poll_delay(2, 1000).count(), 60000);  // within reason
    cr_assert_eq(backoff_seconds(1, -1), 1);
    cr_assert_eq(backoff_seconds(2, -1), 2);
    cr_assert_eq(backoff_seconds(5, -1), 16);
    cr_assert_eq(backoff_seconds(17, -1), 65536);
    cr_assert_eq(backoff_seconds(40, -1), 65536);  // 2^n, n capped at 16
    cr_assert_eq(backoff_seconds(1, 120), 120);    // a larger Retry-After is honoured
    cr_assert_eq(backoff_seconds(10, 120), 512);   // a smaller one is not
    cr_assert_eq(backoff_seconds(1, 10'000'000), 65536);
}

namespace {

// A cached certificate for kHost from a private CA, issued as if at `issued_at` (90 days).
void write_cached_leaf(const std::string& state_dir, std::time_t issued_at) {
    auto ca = trust::make_private_ca("acme test CA", issued_at);
    cr_assert(ca.ok());
    auto leaf = trust::issue_private_leaf(*ca, kHost, issued_at, "ca.key", "ca.crt");
    cr_assert(leaf.ok(), "%s", leaf.ok() ? "" : leaf.error().message.c_str());
    Certificate c;
    c.cert_pem = leaf->pem.crt;
    c.key_pem = leaf->pem.key;
    cr_assert(store_certificate(state_dir, kHost, c).ok());
}

}  // namespace

Test(pebble, an_expired_cache_is_renewed_at_once) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    write_cached_leaf(dir.path(), std::time(nullptr) - 100 * 86'400);  // expired 10 days ago
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path()), std::make_shared<ChallengeBoard>(), d);
    EXPECT_CONTAINS(err.text(), "INFO server acme renewal starting: server-hostname=" +
                                    std::string(kHost) + " reason=expired");
    cr_assert_null(m->cached());
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    EXPECT_CONTAINS(err.text(), "INFO server acme certificate renewed: server-hostname=");
    cr_assert(err.text().find("certificate issued") == std::string::npos);
    cr_assert_not_null(m->cached());
    assert_chain_verifies(d.at(0)->cert_pem, pebble.issuer_root_file());
}

Test(pebble, a_cache_past_two_thirds_is_served_and_renewed) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    write_cached_leaf(dir.path(), std::time(nullptr) - 70 * 86'400);  // 20 of 90 days left
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto m = make_manager(options_for(pebble, dir.path(), Role::kClient),
                          std::make_shared<ChallengeBoard>(), d);
    EXPECT_CONTAINS(err.text(), "INFO client acme cached certificate ready: public-hostname=" +
                                    std::string(kHost) + " remaining-validity=");
    EXPECT_CONTAINS(err.text(), " renewal=due");
    auto old = m->cached();
    cr_assert_not_null(old);  // served while the renewal runs
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    EXPECT_CONTAINS(err.text(), "INFO client acme certificate renewed: public-hostname=");
    cr_assert(d.at(0)->cert_pem != old->cert_pem);
    cr_assert_gt(d.at(0)->not_after, old->not_after);
    EXPECT_STR_EQ(test::read_file(certificate_path(dir.path(), kHost)), d.at(0)->cert_pem);
}

namespace {

// A manager against a plain HTTPS server (nginx) serving `directory` as its "ACME directory".
struct FakeCa {
    test::NginxFixture nginx{test::NginxOptions{.hostnames = {"127.0.0.1"}}};
    ManagerOptions options(const std::string& state_dir, const std::string& path) {
        ManagerOptions o;
        o.hostname = kHost;
        o.email = "ops@runewarp.test";
        o.directory_url = "https://127.0.0.1:" + std::to_string(nginx.port()) + path;
        o.ca_file = nginx.ca_file();
        o.state_dir = state_dir;
        return o;
    }
};

}  // namespace

Test(manager, a_malformed_directory_is_a_failed_order_not_a_crash) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    FakeCa ca;
    test::write_file(dir / "dir.json", R"({"newNonce": 5, "newAccount": [], "newOrder": null})");
    ca.nginx.add_file("dir.json", dir / "dir.json");
    Delivered d;
    auto m = make_manager(ca.options(dir.path(), "/files/dir.json"),
                          std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(err.wait_for("next-retry-delay=2s", Millis{10000}), "log:\n%s", err.text().c_str());
    m->stop();
    EXPECT_CONTAINS(err.text(), "WARN server acme failed: server-hostname=" + std::string(kHost) +
                                    " reason=bad-acme-response");
    cr_assert_eq(d.fatal.load(), 0);
}

Test(manager, an_http_error_is_an_acme_server_error) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    FakeCa ca;
    Delivered d;
    auto m = make_manager(ca.options(dir.path(), "/files/no-such-directory"),
                          std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(err.wait_for("WARN server acme failed", Millis{10000}), "log:\n%s",
              err.text().c_str());
    m->stop();
    EXPECT_CONTAINS(err.text(),
                    "reason=acme-server-error error=HTTP_404_from_GET_/files/no-such-directory");
}

Test(manager, the_acme_server_certificate_is_verified) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    FakeCa ca;
    test::write_file(
        dir / "dir.json",
        R"({"newNonce":"https://a/n","newAccount":"https://a/a","newOrder":"https://a/o"})");
    ca.nginx.add_file("dir.json", dir / "dir.json");
    Delivered d;
    auto o = ca.options(dir.path(), "/files/dir.json");
    o.ca_file.clear();  // system trust does not know the test CA
    auto m = make_manager(o, std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(err.wait_for("WARN server acme failed", Millis{10000}), "log:\n%s",
              err.text().c_str());
    m->stop();
    EXPECT_CONTAINS(err.text(), "reason=acme-server-unreachable");
    // nginx never served the directory: curl gave up in the handshake.
    cr_assert(test::read_file(ca.nginx.access_log()).find("dir.json") == std::string::npos,
              "a request went through without a verified certificate");
}

Test(pebble, a_hostname_longer_than_64_characters_is_issued) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::PebbleOptions po;
    po.always_valid = true;
    test::Pebble pebble(dir / "pebble", po);
    pebble.start();
    Delivered d;
    auto o = options_for(pebble, dir.path());
    o.hostname = std::string(60, 'a') + "." + std::string(20, 'b') + ".runewarp.test";
    auto m = make_manager(o, std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(d.wait_count(1, Millis{60000}), "log:\n%s", err.text().c_str());
    auto chain = trust::import_crt_pem(d.at(0)->cert_pem, "issued");
    cr_assert(chain.ok());
    cr_assert_neq(gnutls_x509_crt_check_hostname(chain->get(), o.hostname.c_str()), 0u);
}

Test(manager, an_unreadable_account_key_is_fatal_before_any_request) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    test::write_file(dir / "account.key", "-----BEGIN PRIVATE KEY-----\ngarbage\n", 0600);
    ManagerOptions o;
    o.role = Role::kClient;
    o.hostname = kHost;
    o.directory_url = "https://127.0.0.1:1/dir";  // never asked
    o.state_dir = dir.path();
    Delivered d;
    auto m = make_manager(o, std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(test::wait_until([&] { return d.fatal.load() > 0; }, Millis{5000}));
    m->stop();
    EXPECT_CONTAINS(err.text(), "ERROR client acme stopped: public-hostname=" + std::string(kHost));
    cr_assert_eq(stats().issue_attempts.load(), 0u);
    // The broken key is left for the operator, not replaced (that would lose the account).
    EXPECT_STR_EQ(test::read_file(dir / "account.key"), "-----BEGIN PRIVATE KEY-----\ngarbage\n");
}

namespace {

// An HTTPS server that answers every request with one canned HTTP/1.1 response.
class CannedHttps {
public:
    CannedHttps(const std::string& dir, std::string response) : response_(std::move(response)) {
        test::make_dirs(dir);
        material_ = test::make_tls_material(dir, {"127.0.0.1"}, "canned");
        gnutls_certificate_allocate_credentials(&cred_);
        cr_assert_eq(
            gnutls_certificate_set_x509_key_file(cred_, material_.leaf.cert.c_str(),
                                                 material_.leaf.key.c_str(), GNUTLS_X509_FMT_PEM),
            0);
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        cr_assert_eq(::listen(fd_, 8), 0);
        socklen_t len = sizeof sa;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
        port_ = ntohs(sa.sin_port);
        thread_ = std::thread([this] { loop(); });
    }
    ~CannedHttps() {
        stop_.store(true);
        thread_.join();
        ::close(fd_);
        gnutls_certificate_free_credentials(cred_);
    }
    std::string url(const std::string& path) const {
        return "https://127.0.0.1:" + std::to_string(port_) + path;
    }
    const std::string& ca_file() const { return material_.ca_file; }
    int served() const { return served_.load(); }

private:
    void loop() {
        while (!stop_.load()) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) continue;
            gnutls_session_t s = nullptr;
            gnutls_init(&s, GNUTLS_SERVER);
            gnutls_set_default_priority(s);
            gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred_);
            gnutls_transport_set_int(s, c);
            gnutls_handshake_set_timeout(s, 5000);
            int rc;
            do {
                rc = gnutls_handshake(s);
            } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
            if (rc == 0) {
                std::string req;
                char buf[4096];
                while (req.find("\r\n\r\n") == std::string::npos) {
                    ssize_t n = gnutls_record_recv(s, buf, sizeof buf);
                    if (n <= 0) break;
                    req.append(buf, static_cast<size_t>(n));
                }
                gnutls_record_send(s, response_.data(), response_.size());
                served_.fetch_add(1);
                gnutls_bye(s, GNUTLS_SHUT_WR);
            }
            gnutls_deinit(s);
            ::close(c);
        }
    }

    std::string response_;
    test::TlsMaterial material_;
    gnutls_certificate_credentials_t cred_ = nullptr;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> served_{0};
    std::thread thread_;
};

}  // namespace

Test(manager, a_larger_retry_after_is_honoured) {
    test::TempDir dir("rw-acme");
    StderrCapture err(dir / "stderr.log");
    CannedHttps ca(dir / "ca",
                   "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                   "Content-Type: application/problem+json\r\nContent-Length: 0\r\n"
                   "Connection: close\r\n\r\n");
    ManagerOptions o;
    o.hostname = kHost;
    o.directory_url = ca.url("/dir");
    o.ca_file = ca.ca_file();
    o.state_dir = dir.path();
    Delivered d;
    auto m = make_manager(o, std::make_shared<ChallengeBoard>(), d);
    m->start();
    cr_assert(err.wait_for("WARN server acme failed", Millis{10000}), "log:\n%s",
              err.text().c_str());
    m->stop();
    EXPECT_CONTAINS(err.text(),
                    "reason=acme-server-error error=HTTP_503_from_GET_/dir "
                    "next-retry-delay=7s");
    cr_assert_eq(ca.served(), 1);
}
