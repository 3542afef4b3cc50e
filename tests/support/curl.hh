// HTTPS Visitors driven by the curl binary: download to a file or upload one, with the name
// pinned to an address (--resolve) and the test CA (--cacert); results carry SHA-256 and status.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.hh"

namespace runewarp::test {

// Where curl connects: https://<host>:<port> resolved to <address> (the proxy or the backend).
struct HttpsTarget {
    std::string host;
    std::uint16_t port = 0;
    std::string address = "127.0.0.1";  // "::1" works too
    std::string ca_file;
};

struct CurlResult {
    ExitStatus status;        // curl's exit (0 = transfer ok; 35 = TLS handshake failed, ...)
    bool timed_out = false;   // killed at the deadline
    int http_code = 0;        // 0 when no HTTP response
    std::uint64_t bytes = 0;  // downloaded (or uploaded) body size
    std::string sha256;       // of the downloaded body (download only)
    std::string stderr_text;  // curl's error message, if any
    bool ok() const { return status.success() && http_code >= 200 && http_code < 300; }
};

std::string https_url(const HttpsTarget& t, const std::string& path);
// The curl argv prefix for a target (without URL); useful to build custom invocations.
std::vector<std::string> curl_base_args(const HttpsTarget& t);

// GET path into out_file (created), then hash it.
CurlResult curl_download(const HttpsTarget& t, const std::string& path, const std::string& out_file,
                         Millis deadline = Millis{120000});
// PUT in_file to path; the result's sha256 is the hash of in_file (what the server must store).
CurlResult curl_upload(const HttpsTarget& t, const std::string& path, const std::string& in_file,
                       Millis deadline = Millis{120000});

// A download in the background: started at once, finished (waited for and hashed) later, so a
// test can keep other Visitors going while this one is stuck. curl gives up after max_time.
class CurlDownload {
public:
    CurlDownload(const HttpsTarget& t, const std::string& path, const std::string& out_file,
                 Millis max_time = Millis{60000});
    // Waits up to `deadline` for curl to exit; nullopt while it still runs.
    std::optional<CurlResult> finish(Millis deadline);

private:
    std::string out_file_;
    Process proc_;
};

}  // namespace runewarp::test
