// Value parsers for config keys and CLI flags: pure string work, no syscalls.
#include "config/values.hh"

#include <algorithm>
#include <limits>

#include "proto/hostname.hh"

namespace runewarp::config {

namespace {

bool all_digits(std::string_view s) noexcept {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal port without sign; nullopt when malformed or above 65535.
std::optional<unsigned> parse_port(std::string_view s) noexcept {
    if (!all_digits(s) || s.size() > 5) return std::nullopt;
    unsigned v = 0;
    for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > 65535) return std::nullopt;
    return v;
}

bool has_space_or_control(std::string_view s) noexcept {
    return std::any_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

}  // namespace

std::string HostPort::text() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

Parsed<std::uint64_t> parse_duration_ms(std::string_view s) {
    static constexpr const char* kForm =
        "must be an unsigned integer followed by one unit of ms, s, m or h (e.g. 60s)";
    std::size_t digits = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
    if (digits == 0) return std::string(kForm);
    std::string_view unit = s.substr(digits);
    std::uint64_t scale = 0;
    if (unit == "ms") {
        scale = 1;
    } else if (unit == "s") {
        scale = 1000;
    } else if (unit == "m") {
        scale = 60'000;
    } else if (unit == "h") {
        scale = 3'600'000;
    } else {
        return std::string(kForm);
    }
    std::uint64_t v = 0;
    constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
    for (std::size_t i = 0; i < digits; ++i) {
        auto d = static_cast<std::uint64_t>(s[i] - '0');
        if (v > (kMax - d) / 10) return std::string("is too large");
        v = v * 10 + d;
    }
    if (v > kMax / scale) return std::string("is too large");
    return v * scale;
}

Parsed<std::uint32_t> parse_count(std::string_view s, std::uint32_t min, std::uint32_t max) {
    const std::string form =
        "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max);
    if (s.empty() || s.size() > 10) return form;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return form;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (v < min || v > max) return form;
    return static_cast<std::uint32_t>(v);
}

Parsed<std::uint32_t> parse_workers(std::string_view s) {
    if (s == "auto") return std::uint32_t{0};
    auto n = parse_count(s, 1, kMaxWorkers);
    if (std::holds_alternative<std::uint32_t>(n)) return n;
    return std::string("must be auto or a whole number from 1 to ") + std::to_string(kMaxWorkers);
}

Parsed<proto::Endpoint> parse_socket_address(std::string_view s) {
    auto ep = proto::parse_endpoint(s);
    if (!ep) {
        return std::string(
            "must be a literal socket address such as 0.0.0.0:443 or [::]:443 (no hostnames)");
    }
    return *ep;
}

Parsed<HostPort> parse_server_address(std::string_view s) {
    if (s.empty()) return std::string("must not be empty");
    if (s.front() == '[' || proto::is_ip_literal(s)) {
        return std::string("must be a hostname, not an IP address literal");
    }
    std::string_view host = s;
    unsigned port = 443;
    auto colon = s.rfind(':');
    if (colon != std::string_view::npos) {
        host = s.substr(0, colon);
        auto p = parse_port(s.substr(colon + 1));
        if (!p || *p == 0) return std::string("port must be a number from 1 to 65535");
        port = *p;
        if (host.find(':') != std::string_view::npos || proto::is_ip_literal(host)) {
            return std::string("must be a hostname, not an IP address literal");
        }
    }
    auto h = proto::normalize_hostname(host);
    if (!h.ok()) return std::string("hostname ") + proto::hostname_error_text(h.error);
    return HostPort{h.canonical, static_cast<std::uint16_t>(port), false};
}

Parsed<HostPort> parse_host_port(std::string_view s) {
    static constexpr const char* kForm =
        "must be host:port or a literal socket address such as [::1]:8443, port 1-65535";
    if (s.empty()) return std::string("must not be empty");
    if (s.front() == '[') {
        auto ep = proto::parse_endpoint(s);
        if (!ep || ep->port == 0) return std::string(kForm);
        return HostPort{proto::format_ip(*ep), ep->port, true};
    }
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::string(kForm);
    std::string_view host = s.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
        return std::string("an IPv6 address must be written in brackets, e.g. [::1]:8443");
    }
    auto p = parse_port(s.substr(colon + 1));
    if (host.empty() || !p || *p == 0) return std::string(kForm);
    if (has_space_or_control(host)) return std::string("host must not contain spaces");
    if (auto ip = proto::parse_ip(host)) {
        return HostPort{proto::format_ip(*ip), static_cast<std::uint16_t>(*p), true};
    }
    return HostPort{std::string(host), static_cast<std::uint16_t>(*p), false};
}

Parsed<Cidr> parse_cidr(std::string_view s) {
    static constexpr const char* kForm = "must be a network in addr/prefix form, e.g. 10.0.0.0/8";
    auto slash = s.find('/');
    if (slash == std::string_view::npos) return std::string(kForm);
    auto ip = proto::parse_ip(s.substr(0, slash));
    auto prefix = parse_port(s.substr(slash + 1));
    if (!ip || !prefix) return std::string(kForm);
    unsigned max = ip->family == proto::Family::kV4 ? 32 : 128;
    if (*prefix > max) {
        return std::string("prefix must be at most ") + std::to_string(max);
    }
    proto::Endpoint net = *ip;
    for (unsigned bit = *prefix; bit < max; ++bit) {
        net.addr[bit / 8] = static_cast<std::uint8_t>(net.addr[bit / 8] & ~(0x80u >> (bit % 8)));
    }
    if (!(net == *ip)) {
        return "host bits must be zero (did you mean " + proto::format_ip(net) + "/" +
               std::to_string(*prefix) + "?)";
    }
    return Cidr{net, *prefix, proto::format_ip(net) + "/" + std::to_string(*prefix)};
}

bool is_identity(std::string_view s) noexcept {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

}  // namespace runewarp::config
