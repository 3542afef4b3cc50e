// pebble, the ACME test server (RFC 8555), with pebble-challtestsrv as its DNS, on free loopback
// ports for ACME end-to-end tests. Every hostname resolves to 127.0.0.1 (no AAAA), so pebble's
// TLS-ALPN-01 validation connects to 127.0.0.1:tls_port, the listener under test.
#pragma once

#include <cstdint>
#include <string>

#include "tests/support/process.hh"

namespace runewarp::test {

struct PebbleOptions {
    std::uint16_t tls_port = 0;     // port pebble's validator dials for TLS-ALPN-01
    int validity_s = 0;             // certificateValidityPeriod; 0 = pebble's default (5 years)
    bool always_valid = false;      // PEBBLE_VA_ALWAYS_VALID=1: no challenge is checked
    int nonce_reject_percent = -1;  // PEBBLE_WFE_NONCEREJECT; -1 = pebble's default (15%)
};

class Pebble {
public:
    // Writes pebble's config and its HTTPS certificate into `dir` (created) and starts
    // challtestsrv; pebble itself starts with start().
    Pebble(std::string dir, PebbleOptions opts);
    ~Pebble();
    Pebble(const Pebble&) = delete;
    Pebble& operator=(const Pebble&) = delete;

    // Starts pebble (again, on the same ports, after stop()) and waits until its directory
    // answers; throws std::runtime_error with pebble's output on failure.
    void start();
    // Stops pebble only: the ACME server is down, its DNS stays up.
    void stop();
    bool running() { return pebble_.valid() && pebble_.running(); }

    std::string directory_url() const;  // https://127.0.0.1:PORT/dir
    std::string https_ca_file() const { return dir_ + "/pebble-https-ca.crt"; }
    // pebble's issuing root (fetched from its management API once per start, since pebble makes a
    // new one every time it starts), for whoever must trust issued certificates.
    std::string issuer_root_file();
    std::string log() const;

private:
    std::string dir_;
    PebbleOptions opts_;
    std::uint16_t acme_port_ = 0;
    std::uint16_t mgmt_port_ = 0;
    std::uint16_t dns_port_ = 0;
    std::uint16_t dns_mgmt_port_ = 0;
    int starts_ = 0;
    bool root_fetched_ = false;
    Process challtest_;
    Process pebble_;
};

}  // namespace runewarp::test
