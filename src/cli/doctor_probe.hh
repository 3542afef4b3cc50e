// What `runewarp doctor` asks the system: whether a listener address could be bound (and who
// holds it), whether a TCP peer accepts a connection, what a name resolves to, and how a QUIC
// handshake to a Server ends. Each probe answers with one verdict and the exact reason.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hh"
#include "proto/endpoint.hh"
#include "quic/tls.hh"

namespace runewarp::cli::doctor {

enum class Verdict { kOk, kWarn, kFail };

struct Finding {
    Verdict verdict = Verdict::kOk;
    std::string detail;
};

enum class Transport { kTcp, kUdp };

// Tries to bind `addr` (never listens, closes at once). When the address is in use, the holder is
// looked up; a runewarp process (by /proc, or by the `role` daemon's control socket answering
// when /proc hides the holder) counts as ok: the daemon already serves there.
Finding check_bindable(const proto::Endpoint& addr, Transport t, std::string_view role);

// Every address `target` resolves to (SOCK_STREAM or SOCK_DGRAM), or the resolver's error.
struct Resolved {
    std::vector<sockaddr_storage> addrs;
    std::vector<socklen_t> lens;
    std::string error;  // "DNS: <reason>" when empty addrs
};
Resolved resolve(const config::HostPort& target, int socktype);

// "1.2.3.4:443" / "[::1]:443"
std::string address_text(const sockaddr_storage& ss);

// TCP connect to every resolved address of `target`, each within `timeout`: ok when all accept,
// warn when only some do, fail when none does (or the name does not resolve).
Finding check_tcp_reachable(const config::HostPort& target, std::chrono::milliseconds timeout);

// A QUIC handshake to `remote` with the Client's TLS settings on a private event loop, ended by
// `timeout`. Ok once the Server confirmed the handshake (certificate trusted, identity admitted);
// the connection is then closed with application code 0. Failures name the cause: "no route",
// "port unreachable", "timeout", "certificate not trusted", "identity not pinned", or the close.
Finding quic_handshake(const sockaddr_storage& remote, socklen_t remote_len,
                       const quic::ClientTls& tls, std::chrono::milliseconds timeout);

}  // namespace runewarp::cli::doctor
