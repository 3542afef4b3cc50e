// An HTTPS backend for end-to-end tests: Debian's nginx in the foreground, one process, with its
// config, logs, pid, temp paths and document root inside a private temp directory.
//
// Endpoints (every hostname, every listener):
//   GET  /files/<name>   files added with add_random_file() / add_file()
//   GET  /slow/<name>    the same files, sent at 32 KiB/s per connection
//   PUT  /upload/<name>  stores the body; upload_path(name) is where it lands (hash it)
//   GET  /small          "ok\n" (keep-alive request benchmarks)
//   GET  /name           the fixture name and the SNI the client sent: "<name> <sni>\n" (on a
//                        plaintext listener the Host name instead of the SNI)
//   GET  /proto          the HTTP version nginx served the request with: "HTTP/1.1\n", "HTTP/2.0\n"
//   GET  /peer           "<client ip>:<port> <server ip>:<port>\n" as nginx saw the TCP connection
//   GET  /proxy          (proxy_protocol listeners only) "<src>:<sport> <dst>:<dport>\n" from the
//                        PROXY header nginx received
//
// Listeners: TLS on port(); optionally TLS after a PROXY header (proxy_port()), plain HTTP
// (plain_port()), plain HTTP after a PROXY header (plain_proxy_port(), with both options) and
// plain HTTP/2 with prior knowledge, h2c (h2c_port()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"

namespace runewarp::test {

struct NginxOptions {
    std::string name = "backend";                            // returned by /name
    std::string address = "127.0.0.1";                       // or "::1"
    std::uint16_t port = 0;                                  // 0: free_port()
    std::vector<std::string> hostnames{"app.example.test"};  // SANs of the generated certificate
    bool proxy_protocol = false;   // add a second TLS listener that expects a PROXY header
    std::uint16_t proxy_port = 0;  // 0: free_port() (when proxy_protocol)
    // A plain-HTTP listener with the same endpoints; with proxy_protocol also a plain one that
    // expects a PROXY header.
    bool plaintext = false;
    std::uint16_t plain_port = 0;        // 0: free_port() (when plaintext)
    std::uint16_t plain_proxy_port = 0;  // 0: free_port() (when plaintext and proxy_protocol)
    // A plain HTTP/2 listener (h2c, prior knowledge only: nginx `listen PORT http2` without ssl).
    bool h2c = false;
    std::uint16_t h2c_port = 0;    // 0: free_port() (when h2c)
    std::string binary = "nginx";  // or $RUNEWARP_TEST_NGINX
    Millis start_deadline{10000};
};

class NginxFixture {
public:
    // Generates a CA and a leaf for the hostnames, writes the config, starts nginx and waits until
    // every listener accepts. Throws std::runtime_error (with the error log) on failure.
    explicit NginxFixture(NginxOptions opts = {});
    NginxFixture(const NginxFixture&) = delete;
    NginxFixture& operator=(const NginxFixture&) = delete;
    ~NginxFixture();

    const std::string& address() const { return opts_.address; }
    std::uint16_t port() const { return opts_.port; }
    std::uint16_t proxy_port() const { return opts_.proxy_port; }
    std::uint16_t plain_port() const { return opts_.plain_port; }
    std::uint16_t plain_proxy_port() const { return opts_.plain_proxy_port; }
    std::uint16_t h2c_port() const { return opts_.h2c_port; }
    const std::vector<std::string>& hostnames() const { return opts_.hostnames; }
    const std::string& ca_file() const { return tls_.ca_file; }
    const TlsMaterial& tls() const { return tls_; }
    const std::string& dir() const { return dir_.path(); }
    std::string error_log() const { return dir_ / "error.log"; }
    std::string access_log() const { return dir_ / "access.log"; }
    Process& process() { return proc_; }

    // Creates a pseudo-random file served at /files/<name>; returns its SHA-256.
    std::string add_random_file(const std::string& name, std::uint64_t size,
                                std::uint64_t seed = 1);
    // Serves an existing file at /files/<name> (symlink, no copy).
    void add_file(const std::string& name, const std::string& source);
    // Where PUT /upload/<name> stores the body.
    std::string upload_path(const std::string& name) const;

    // Stops nginx (SIGQUIT: graceful, then SIGKILL after the grace period).
    void stop();

private:
    NginxOptions opts_;
    TempDir dir_;
    TlsMaterial tls_;
    Process proc_;
};

// SHA-256 and path of a pseudo-random file of `size` bytes shared by every test of a run: it is
// created once under $TMPDIR/runewarp-test-cache/ (atomically) and reused afterwards.
struct CachedFile {
    std::string path;
    std::string sha256;
};
CachedFile cached_random_file(std::uint64_t size, std::uint64_t seed = 1);

}  // namespace runewarp::test
