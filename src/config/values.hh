// Value parsers shared by the loader and the CLI overlays: durations, addresses, CIDRs, identities.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.hh"

namespace runewarp::config {

// Either a parsed value or the problem text describing why the input is invalid.
template <typename T>
using Parsed = std::variant<T, std::string>;

Parsed<std::uint64_t> parse_duration_ms(std::string_view s);
// A count limit: a plain decimal integer within [min, max].
Parsed<std::uint32_t> parse_count(std::string_view s, std::uint32_t min, std::uint32_t max);
// `workers`: `auto` is 0 (one per usable core, resolved at startup), else 1..kMaxWorkers.
inline constexpr std::uint32_t kMaxWorkers = 64;
Parsed<std::uint32_t> parse_workers(std::string_view s);
Parsed<proto::Endpoint> parse_socket_address(std::string_view s);  // port 0 allowed
Parsed<HostPort> parse_server_address(std::string_view s);         // hostname[:port], default 443
Parsed<HostPort> parse_host_port(std::string_view s);  // literal or host:port, port 1-65535
Parsed<Cidr> parse_cidr(std::string_view s);
bool is_identity(std::string_view s) noexcept;

}  // namespace runewarp::config
