// TLS material and a small TLS client for end-to-end tests (GnuTLS): a private CA issuing ECDSA
// P-256 leaf certificates, HTTPS requests over an already connected socket, and ClientHello
// capture.
#pragma once

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/net.hh"

namespace runewarp::test {

struct CertFiles {
    std::string cert;  // PEM certificate (leaf only)
    std::string key;   // PEM private key (PKCS#8, 0600)
};

// A certificate's validity window (Unix seconds).
struct Validity {
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// A throwaway CA (ECDSA P-256, valid from one hour ago for 30 days unless told otherwise). Leaf
// certificates carry the hostnames as DNS SANs (IP literals become IP SANs) and the first one as
// CN, serverAuth, and the CA's validity window unless given their own.
class TestCa {
public:
    explicit TestCa(const std::string& common_name = "runewarp test CA",
                    std::optional<Validity> validity = std::nullopt);
    TestCa(const TestCa&) = delete;
    TestCa& operator=(const TestCa&) = delete;
    ~TestCa();

    std::string cert_pem() const;
    void write_cert(const std::string& path) const;
    // Writes <dir>/<name>.crt and <dir>/<name>.key.
    CertFiles issue(const std::vector<std::string>& hostnames, const std::string& dir,
                    const std::string& name, std::optional<Validity> validity = std::nullopt) const;

private:
    gnutls_x509_crt_t crt_ = nullptr;
    gnutls_x509_privkey_t key_ = nullptr;
};

// A CA plus one leaf for `hostnames`, written into dir: ca.crt, <name>.crt, <name>.key.
struct TlsMaterial {
    std::string ca_file;
    CertFiles leaf;
};
// A runewarp Server `cert-dir` made by hand: server-ca.crt, and server.crt/server.key for
// `hostname` with the given validity (an expired or soon-expiring one, which `server cert init`
// never writes). The CA is valid from a year before to a year after now.
void write_server_cert_dir(const std::string& dir, const std::string& hostname, Validity leaf);

TlsMaterial make_tls_material(const std::string& dir, const std::vector<std::string>& hostnames,
                              const std::string& name = "server");

// A GnuTLS client session over a connected socket (which it owns). The peer certificate is
// verified against ca_file for hostname `sni` (verification is skipped when ca_file is empty).
class TlsClient {
public:
    TlsClient(Fd fd, const std::string& sni, const std::string& ca_file,
              std::vector<std::string> alpn = {});
    TlsClient(const TlsClient&) = delete;
    TlsClient& operator=(const TlsClient&) = delete;
    ~TlsClient();

    // Runs the handshake; false with error() set on failure or deadline.
    bool handshake(Millis deadline);
    bool send(std::string_view data);
    // Reads application data until the peer closes (or the deadline passes).
    std::string recv_until_close(Millis deadline);
    const std::string& error() const { return error_; }
    int fd() const { return fd_.get(); }

private:
    void set_timeout_(Millis t);

    Fd fd_;
    gnutls_session_t session_ = nullptr;
    gnutls_certificate_credentials_t cred_ = nullptr;
    std::string error_;
};

struct HttpResponse {
    bool ok = false;    // transport and TLS worked and a status line was parsed
    std::string error;  // when !ok
    int status = 0;
    std::string headers;  // status line and headers
    std::string body;
};
// Sends "GET path" (Connection: close) over TLS on a connected socket and reads the whole reply.
// `preamble` is written in clear before the handshake (e.g. a PROXY v2 header).
HttpResponse https_get_over(Fd fd, const std::string& sni, const std::string& ca_file,
                            const std::string& path, std::string_view preamble = {},
                            Millis deadline = Millis{10000});

// The bytes (TLS records) of the ClientHello GnuTLS sends for this SNI and ALPN list; no network.
std::string capture_client_hello(const std::string& sni, const std::vector<std::string>& alpn = {});

}  // namespace runewarp::test
