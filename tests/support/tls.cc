// TLS material and a small TLS client for end-to-end tests (GnuTLS).
#include "tests/support/tls.hh"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "tests/support/files.hh"

namespace runewarp::test {
namespace {

using Clock = std::chrono::steady_clock;

void check(int rc, const char* what) {
    if (rc < 0) throw std::runtime_error(std::string(what) + ": " + gnutls_strerror(rc));
}

std::string export_crt(gnutls_x509_crt_t crt) {
    gnutls_datum_t out{};
    check(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), "gnutls_x509_crt_export2");
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    return s;
}

std::string export_key(gnutls_x509_privkey_t key) {
    gnutls_datum_t out{};
    check(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN,
                                            &out),
          "gnutls_x509_privkey_export2_pkcs8");
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    return s;
}

gnutls_x509_privkey_t new_p256_key() {
    gnutls_x509_privkey_t key = nullptr;
    check(gnutls_x509_privkey_init(&key), "gnutls_x509_privkey_init");
    int rc = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                          GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    if (rc < 0) {
        gnutls_x509_privkey_deinit(key);
        check(rc, "gnutls_x509_privkey_generate");
    }
    return key;
}

Validity default_validity() {
    const std::time_t now = std::time(nullptr);
    return {now - 3600, now + 30L * 24 * 3600};
}

// Common fields: v3, random positive serial, validity, subject CN, key, subject key id.
void fill_common(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const std::string& cn,
                 const Validity& v) {
    check(gnutls_x509_crt_set_version(crt, 3), "set_version");
    unsigned char serial[16];
    check(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial), "gnutls_rnd");
    serial[0] &= 0x7F;
    check(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "set_serial");
    check(gnutls_x509_crt_set_activation_time(crt, v.not_before), "set_activation_time");
    check(gnutls_x509_crt_set_expiration_time(crt, v.not_after), "set_expiration_time");
    check(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn.data(),
                                        static_cast<unsigned>(cn.size())),
          "set_dn CN");
    check(gnutls_x509_crt_set_key(crt, key), "set_key");
    unsigned char kid[64];
    size_t kid_len = sizeof kid;
    check(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, kid, &kid_len), "get_key_id");
    check(gnutls_x509_crt_set_subject_key_id(crt, kid, kid_len), "set_subject_key_id");
}

bool is_ip(const std::string& h, unsigned char* out, unsigned& len) {
    if (::inet_pton(AF_INET, h.c_str(), out) == 1) {
        len = 4;
        return true;
    }
    if (::inet_pton(AF_INET6, h.c_str(), out) == 1) {
        len = 16;
        return true;
    }
    return false;
}

// Captures what a client session pushes; the pull side always "would block".
struct Capture {
    gnutls_session_t session = nullptr;
    std::string bytes;
};

ssize_t capture_push(gnutls_transport_ptr_t p, const void* data, size_t n) {
    auto* c = static_cast<Capture*>(p);
    c->bytes.append(static_cast<const char*>(data), n);
    return static_cast<ssize_t>(n);
}

ssize_t capture_pull(gnutls_transport_ptr_t p, void*, size_t) {
    auto* c = static_cast<Capture*>(p);
    gnutls_transport_set_errno(c->session, EAGAIN);
    return -1;
}

void set_alpn(gnutls_session_t s, const std::vector<std::string>& alpn) {
    if (alpn.empty()) return;
    std::vector<gnutls_datum_t> protos;
    for (const auto& a : alpn)
        protos.push_back({reinterpret_cast<unsigned char*>(const_cast<char*>(a.data())),
                          static_cast<unsigned>(a.size())});
    check(gnutls_alpn_set_protocols(s, protos.data(), static_cast<unsigned>(protos.size()), 0),
          "gnutls_alpn_set_protocols");
}

}  // namespace

TestCa::TestCa(const std::string& common_name, std::optional<Validity> validity) {
    key_ = new_p256_key();
    check(gnutls_x509_crt_init(&crt_), "gnutls_x509_crt_init");
    fill_common(crt_, key_, common_name, validity.value_or(default_validity()));
    check(gnutls_x509_crt_set_basic_constraints(crt_, 1, -1), "set_basic_constraints");
    check(gnutls_x509_crt_set_key_usage(
              crt_, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN | GNUTLS_KEY_DIGITAL_SIGNATURE),
          "set_key_usage");
    check(gnutls_x509_crt_sign2(crt_, crt_, key_, GNUTLS_DIG_SHA256, 0), "self-sign CA");
}

TestCa::~TestCa() {
    if (crt_) gnutls_x509_crt_deinit(crt_);
    if (key_) gnutls_x509_privkey_deinit(key_);
}

std::string TestCa::cert_pem() const {
    return export_crt(crt_);
}

void TestCa::write_cert(const std::string& path) const {
    write_file(path, cert_pem());
}

CertFiles TestCa::issue(const std::vector<std::string>& hostnames, const std::string& dir,
                        const std::string& name, std::optional<Validity> validity) const {
    if (hostnames.empty()) throw std::runtime_error("TestCa::issue: no hostnames");
    gnutls_x509_privkey_t key = new_p256_key();
    gnutls_x509_crt_t crt = nullptr;
    CertFiles files{dir + "/" + name + ".crt", dir + "/" + name + ".key"};
    try {
        check(gnutls_x509_crt_init(&crt), "gnutls_x509_crt_init");
        if (!validity) {
            validity = Validity{gnutls_x509_crt_get_activation_time(crt_),
                                gnutls_x509_crt_get_expiration_time(crt_)};
        }
        fill_common(crt, key, hostnames.front(), *validity);
        check(gnutls_x509_crt_set_basic_constraints(crt, 0, -1), "set_basic_constraints");
        check(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE), "set_key_usage");
        check(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0),
              "set_key_purpose_oid");
        for (const auto& h : hostnames) {
            unsigned char ip[16];
            unsigned ip_len = 0;
            if (is_ip(h, ip, ip_len))
                check(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, ip_len,
                                                           GNUTLS_FSAN_APPEND),
                      "set SAN IP");
            else
                check(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, h.data(),
                                                           static_cast<unsigned>(h.size()),
                                                           GNUTLS_FSAN_APPEND),
                      "set SAN DNS");
        }
        unsigned char kid[64];
        size_t kid_len = sizeof kid;
        check(gnutls_x509_crt_get_subject_key_id(crt_, kid, &kid_len, nullptr), "CA key id");
        check(gnutls_x509_crt_set_authority_key_id(crt, kid, kid_len), "set_authority_key_id");
        check(gnutls_x509_crt_sign2(crt, crt_, key_, GNUTLS_DIG_SHA256, 0), "sign leaf");
        write_file(files.cert, export_crt(crt));
        write_file(files.key, export_key(key), 0600);
    } catch (...) {
        if (crt) gnutls_x509_crt_deinit(crt);
        gnutls_x509_privkey_deinit(key);
        throw;
    }
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return files;
}

void write_server_cert_dir(const std::string& dir, const std::string& hostname, Validity leaf) {
    const std::time_t now = std::time(nullptr);
    const std::time_t year = 365L * 24 * 3600;
    TestCa ca("Runewarp Server CA", Validity{now - year, now + year});
    make_dirs(dir);
    ca.write_cert(dir + "/server-ca.crt");
    ca.issue({hostname}, dir, "server", leaf);
}

TlsMaterial make_tls_material(const std::string& dir, const std::vector<std::string>& hostnames,
                              const std::string& name) {
    TestCa ca;
    TlsMaterial m;
    m.ca_file = dir + "/ca.crt";
    ca.write_cert(m.ca_file);
    m.leaf = ca.issue(hostnames, dir, name);
    return m;
}

TlsClient::TlsClient(Fd fd, const std::string& sni, const std::string& ca_file,
                     std::vector<std::string> alpn)
    : fd_(std::move(fd)) {
    check(gnutls_certificate_allocate_credentials(&cred_), "allocate credentials");
    if (!ca_file.empty())
        check(gnutls_certificate_set_x509_trust_file(cred_, ca_file.c_str(), GNUTLS_X509_FMT_PEM),
              "set trust file");
    check(gnutls_init(&session_, GNUTLS_CLIENT), "gnutls_init");
    check(gnutls_set_default_priority(session_), "set priority");
    check(gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, cred_), "set credentials");
    if (!sni.empty())
        check(gnutls_server_name_set(session_, GNUTLS_NAME_DNS, sni.data(), sni.size()),
              "server_name_set");
    if (!ca_file.empty()) gnutls_session_set_verify_cert(session_, sni.c_str(), 0);
    set_alpn(session_, alpn);
    gnutls_transport_set_int(session_, fd_.get());
}

TlsClient::~TlsClient() {
    if (session_) gnutls_deinit(session_);
    if (cred_) gnutls_certificate_free_credentials(cred_);
}

void TlsClient::set_timeout_(Millis t) {
    auto ms = std::max<long>(1, static_cast<long>(t.count()));
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool TlsClient::handshake(Millis deadline) {
    set_timeout_(deadline);
    gnutls_handshake_set_timeout(session_, static_cast<unsigned>(deadline.count()));
    int rc;
    do {
        rc = gnutls_handshake(session_);
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0 && rc != GNUTLS_E_AGAIN);
    if (rc < 0) {
        error_ = std::string("handshake: ") + gnutls_strerror(rc);
        return false;
    }
    return true;
}

bool TlsClient::send(std::string_view data) {
    while (!data.empty()) {
        ssize_t n = gnutls_record_send(session_, data.data(), data.size());
        if (n == GNUTLS_E_INTERRUPTED) continue;
        if (n < 0) {
            error_ = std::string("send: ") + gnutls_strerror(static_cast<int>(n));
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

std::string TlsClient::recv_until_close(Millis deadline) {
    std::string out;
    const auto end = Clock::now() + deadline;
    char buf[16384];
    for (;;) {
        auto left = std::chrono::duration_cast<Millis>(end - Clock::now());
        if (left.count() <= 0) {
            error_ = "recv: deadline";
            break;
        }
        set_timeout_(left);
        ssize_t n = gnutls_record_recv(session_, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        // AGAIN: the socket timeout fired, or a post-handshake message (TLS 1.3 session
        // ticket) was consumed; the deadline check above decides.
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN) continue;
        // 0 is close_notify; a bare TCP EOF after a full HTTP response is fine for tests.
        if (n < 0 && n != GNUTLS_E_PREMATURE_TERMINATION)
            error_ = std::string("recv: ") + gnutls_strerror(static_cast<int>(n));
        break;
    }
    return out;
}

HttpResponse https_get_over(Fd fd, const std::string& sni, const std::string& ca_file,
                            const std::string& path, std::string_view preamble, Millis deadline) {
    HttpResponse r;
    if (!preamble.empty() && !send_all(fd.get(), preamble)) {
        r.error = "cannot send preamble";
        return r;
    }
    TlsClient c(std::move(fd), sni, ca_file);
    if (!c.handshake(deadline)) {
        r.error = c.error();
        return r;
    }
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + sni +
                      "\r\nConnection: close\r\nUser-Agent: runewarp-test\r\n\r\n";
    if (!c.send(req)) {
        r.error = c.error();
        return r;
    }
    std::string raw = c.recv_until_close(deadline);
    auto split = raw.find("\r\n\r\n");
    if (split == std::string::npos || raw.compare(0, 5, "HTTP/") != 0) {
        r.error = c.error().empty() ? "no HTTP response" : c.error();
        return r;
    }
    r.headers = raw.substr(0, split);
    r.body = raw.substr(split + 4);
    auto sp = r.headers.find(' ');
    r.status = sp == std::string::npos ? 0 : std::atoi(r.headers.c_str() + sp + 1);
    r.ok = r.status > 0;
    return r;
}

std::string capture_client_hello(const std::string& sni, const std::vector<std::string>& alpn) {
    Capture cap;
    gnutls_certificate_credentials_t cred = nullptr;
    check(gnutls_certificate_allocate_credentials(&cred), "allocate credentials");
    check(gnutls_init(&cap.session, GNUTLS_CLIENT | GNUTLS_NONBLOCK), "gnutls_init");
    gnutls_set_default_priority(cap.session);
    gnutls_credentials_set(cap.session, GNUTLS_CRD_CERTIFICATE, cred);
    if (!sni.empty()) gnutls_server_name_set(cap.session, GNUTLS_NAME_DNS, sni.data(), sni.size());
    set_alpn(cap.session, alpn);
    gnutls_transport_set_ptr(cap.session, &cap);
    gnutls_transport_set_push_function(cap.session, capture_push);
    gnutls_transport_set_pull_function(cap.session, capture_pull);
    int rc = gnutls_handshake(cap.session);  // sends the ClientHello, then would block
    gnutls_deinit(cap.session);
    gnutls_certificate_free_credentials(cred);
    if (rc != GNUTLS_E_AGAIN || cap.bytes.empty())
        throw std::runtime_error(std::string("capture_client_hello: ") + gnutls_strerror(rc));
    return cap.bytes;
}

}  // namespace runewarp::test
