// Unit tests for the proto module: hostname rules, endpoints, PROXY v2, ClientHello, stream prefix.
#include <criterion/criterion.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proto/clienthello.hh"
#include "proto/endpoint.hh"
#include "proto/hostname.hh"
#include "proto/proxy_v2.hh"
#include "proto/stream_prefix.hh"

using namespace runewarp::proto;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes from_hex(std::string_view hex) {
    Bytes out;
    int hi = -1;
    for (char c : hex) {
        int v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<std::uint8_t>(hi << 4 | v));
            hi = -1;
        }
    }
    return out;
}

Bytes from_text(std::string_view s) {
    return Bytes(s.begin(), s.end());
}

Bytes read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    cr_assert(in.good(), "cannot open %s", path.c_str());
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put16(Bytes& b, std::size_t v) {
    b.push_back(static_cast<std::uint8_t>(v >> 8));
    b.push_back(static_cast<std::uint8_t>(v));
}

void append(Bytes& b, const Bytes& more) {
    b.insert(b.end(), more.begin(), more.end());
}

// ---- ClientHello builder ---------------------------------------------------------------------

struct HelloSpec {
    std::vector<std::string> sni_names = {"app.example.test"};
    bool with_sni = true;
    std::vector<std::string> alpn;
    std::size_t padding = 0;  // bytes of a padding extension (21); 0 = none
    bool duplicate_alpn = false;
    std::size_t session_id_len = 32;
    std::uint8_t hs_type = 1;
};

Bytes ext(std::uint16_t type, const Bytes& body) {
    Bytes e;
    put16(e, type);
    put16(e, body.size());
    append(e, body);
    return e;
}

Bytes handshake(const HelloSpec& s) {
    Bytes body;
    put16(body, 0x0303);
    body.insert(body.end(), 32, 0x11);  // random
    body.push_back(static_cast<std::uint8_t>(s.session_id_len));
    body.insert(body.end(), s.session_id_len, 0x22);
    put16(body, 4);
    append(body, {0x13, 0x01, 0x13, 0x02});
    body.push_back(1);
    body.push_back(0);

    Bytes exts;
    if (s.with_sni) {
        Bytes list;
        for (const auto& n : s.sni_names) {
            list.push_back(0);
            put16(list, n.size());
            append(list, from_text(n));
        }
        Bytes sni;
        put16(sni, list.size());
        append(sni, list);
        append(exts, ext(0, sni));
    }
    if (!s.alpn.empty()) {
        Bytes list;
        for (const auto& p : s.alpn) {
            list.push_back(static_cast<std::uint8_t>(p.size()));
            append(list, from_text(p));
        }
        Bytes alpn;
        put16(alpn, list.size());
        append(alpn, list);
        append(exts, ext(16, alpn));
        if (s.duplicate_alpn) append(exts, ext(16, alpn));
    }
    append(exts, ext(43, {0x02, 0x03, 0x04}));  // supported_versions: TLS 1.3
    if (s.padding > 0) append(exts, ext(21, Bytes(s.padding, 0)));
    put16(body, exts.size());
    append(body, exts);

    Bytes hs = {s.hs_type, static_cast<std::uint8_t>(body.size() >> 16),
                static_cast<std::uint8_t>(body.size() >> 8),
                static_cast<std::uint8_t>(body.size())};
    append(hs, body);
    return hs;
}

// Splits a handshake message into TLS records of at most `record_size` body bytes.
Bytes records(const Bytes& hs, std::size_t record_size = 16384) {
    Bytes out;
    for (std::size_t i = 0; i < hs.size(); i += record_size) {
        std::size_t n = std::min(record_size, hs.size() - i);
        append(out, {22, 3, 1});
        put16(out, n);
        out.insert(out.end(), hs.begin() + static_cast<std::ptrdiff_t>(i),
                   hs.begin() + static_cast<std::ptrdiff_t>(i + n));
    }
    return out;
}

Bytes hello(const HelloSpec& s = {}, std::size_t record_size = 16384) {
    return records(handshake(s), record_size);
}

HelloStatus feed_all(ClientHelloParser& p, const Bytes& b) {
    return p.feed(b);
}

HelloStatus feed_bytewise(ClientHelloParser& p, const Bytes& b) {
    HelloStatus s = HelloStatus::kIncomplete;
    for (std::size_t i = 0; i < b.size() && s == HelloStatus::kIncomplete; ++i) {
        s = p.feed(std::span<const std::uint8_t>(&b[i], 1));
    }
    return s;
}

// A hello whose wire size is exactly `total` bytes, in records of `record_size`.
Bytes hello_of_size(std::size_t total, std::size_t record_size) {
    for (std::size_t pad = total; pad > 0; --pad) {
        HelloSpec s;
        s.padding = pad;
        Bytes b = hello(s, record_size);
        if (b.size() == total) return b;
    }
    cr_assert_fail("cannot build a hello of %zu bytes", total);
    return {};
}

std::string data_path(const char* name) {
    return std::string(RUNEWARP_TEST_DATA) + "/clienthello/" + name;
}

// ---- PROXY v2 helpers ------------------------------------------------------------------------

const char* kSig = "0d0a0d0a000d0a515549540a";

Tuple v4_tuple() {
    return {Endpoint::v4({192, 0, 2, 10}, 12345), Endpoint::v4({198, 51, 100, 20}, 443)};
}

Tuple v6_tuple() {
    return {*parse_endpoint("[2001:db8::1]:54321"), *parse_endpoint("[2001:db8:1::ff]:8443")};
}

ProxyStatus decode_status(const Bytes& b) {
    ProxyV2Decoder d;
    return d.feed(b).status;
}

}  // namespace

// ---- hostname --------------------------------------------------------------------------------

Test(proto, hostname_valid_table) {
    std::string label63(63, 'a');
    std::string name253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
    cr_assert_eq(name253.size(), 253u);
    const std::pair<std::string, std::string> cases[] = {
        {"App.Example.Test", "app.example.test"},
        {"app.example.test.", "app.example.test"},
        {"app.example.test...", "app.example.test"},
        {"localhost", "localhost"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"a-b.c-d.e", "a-b.c-d.e"},
        {"01.2.3.4", "01.2.3.4"},  // leading zero: inet_pton rejects it, so it is a name
        {"1.2.3.4.5", "1.2.3.4.5"},
        {label63 + ".com", label63 + ".com"},
        {name253, name253},
        {name253 + ".", name253},
        {"MiXeD-123.EXAMPLE", "mixed-123.example"},
    };
    for (const auto& [raw, want] : cases) {
        auto r = normalize_hostname(raw);
        cr_assert(r.ok(), "%s rejected: %s", raw.c_str(), hostname_error_text(r.error));
        cr_assert_eq(r.canonical, want, "%s -> %s", raw.c_str(), r.canonical.c_str());
        auto again = normalize_hostname(r.canonical);
        cr_assert(again.ok() && again.canonical == r.canonical);
    }
}

Test(proto, hostname_invalid_table) {
    std::string label63(63, 'a');
    std::string name254 = label63 + "." + label63 + "." + label63 + "." + std::string(62, 'b');
    const std::pair<std::string, HostnameError> cases[] = {
        {"", HostnameError::kEmpty},
        {".", HostnameError::kEmpty},
        {"...", HostnameError::kEmpty},
        {"b\xc3\xbc"
         "cher.example",
         HostnameError::kNonAscii},
        {"*.example.com", HostnameError::kWildcard},
        {"app.*", HostnameError::kWildcard},
        {"1.2.3.4", HostnameError::kIpLiteral},
        {"1.2.3.4.", HostnameError::kIpLiteral},
        {"0.0.0.0", HostnameError::kIpLiteral},
        {"::1", HostnameError::kIpLiteral},
        {"::", HostnameError::kIpLiteral},
        {"2001:DB8::1", HostnameError::kIpLiteral},
        {"::ffff:192.0.2.1", HostnameError::kIpLiteral},
        {"1:2:3:4:5:6:7:8", HostnameError::kIpLiteral},
        {name254, HostnameError::kTooLong},
        {std::string(64, 'a') + ".com", HostnameError::kBadLabel},
        {"under_score.example", HostnameError::kBadLabel},
        {"-lead.example", HostnameError::kBadLabel},
        {"trail-.example", HostnameError::kBadLabel},
        {"a..b", HostnameError::kBadLabel},
        {".a", HostnameError::kBadLabel},
        {"sp ace.example", HostnameError::kBadLabel},
        {"[::1]", HostnameError::kBadLabel},
        {"host:443", HostnameError::kBadLabel},
        {std::string("nul\0.example", 12), HostnameError::kBadLabel},
    };
    for (const auto& [raw, want] : cases) {
        auto r = normalize_hostname(raw);
        cr_assert_eq(static_cast<int>(r.error), static_cast<int>(want), "%s: got %s", raw.c_str(),
                     hostname_error_text(r.error));
        cr_assert(r.canonical.empty());
    }
    cr_assert_str_eq(hostname_error_text(HostnameError::kIpLiteral),
                     "must not be an IP address literal");
}

Test(proto, ip_literal_matches_inet_pton_rules) {
    const char* yes[] = {"1.2.3.4",
                         "255.255.255.255",
                         "::",
                         "::1",
                         "1::",
                         "fe80::1",
                         "1:2:3:4:5:6:7:8",
                         "1:2:3:4:5:6:7::",
                         "::1.2.3.4",
                         "1:2:3:4:5:6:1.2.3.4",
                         "ABCD:ef01::"};
    const char* no[] = {"",
                        "1.2.3",
                        "1.2.3.4.5",
                        "256.1.1.1",
                        "01.2.3.4",
                        "1..2.3",
                        ":",
                        ":::",
                        "1:::2",
                        "1::2::3",
                        "12345::",
                        "1:2:3:4:5:6:7:8::",
                        "1:2:3:4:5:6:7:8:9",
                        "fe80::1%eth0",
                        "[::1]",
                        "::ffff:01.2.3.4",
                        "1:2:3:4:5:6:7:1.2.3.4",
                        "1:",
                        ":1::",
                        " 1.2.3.4",
                        "example.com"};
    for (const char* s : yes) cr_assert(is_ip_literal(s), "%s should be an IP literal", s);
    for (const char* s : no) cr_assert_not(is_ip_literal(s), "%s should not be an IP literal", s);
    // inet_pton reads up to a NUL: a literal followed by a NUL and more bytes is not a literal.
    cr_assert_not(is_ip_literal(std::string_view("1.2.3.4\0junk", 12)));
    cr_assert_not(is_ip_literal(std::string_view("::1\0", 4)));
    // The longest literal inet_pton accepts (45 characters) still parses; far longer text never.
    cr_assert(is_ip_literal("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"));
    cr_assert_not(is_ip_literal(std::string(200, '1')));
    // An empty view (null data) is no literal, and copying it is not undefined behaviour
    // (the sanitizer build checks that).
    cr_assert_not(is_ip_literal(std::string_view{}));
    cr_assert_not(runewarp::proto::parse_ip(std::string_view{}).has_value());
}

// ---- endpoint --------------------------------------------------------------------------------

Test(proto, endpoint_text_round_trip) {
    const std::pair<const char*, const char*> cases[] = {
        {"192.0.2.10:12345", "192.0.2.10:12345"},
        {"[::1]:443", "[::1]:443"},
        {"[2001:DB8:0:0:0:0:0:1]:8443", "[2001:db8::1]:8443"},
        {"[2001:db8:0:1:0:0:0:1]:1", "[2001:db8:0:1::1]:1"},
        {"[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]:80"},
        {"0.0.0.0:0", "0.0.0.0:0"},
    };
    for (const auto& [in, want] : cases) {
        auto e = parse_endpoint(in);
        cr_assert(e.has_value(), "%s did not parse", in);
        cr_assert_eq(format_endpoint(*e), std::string(want));
    }
    const char* bad[] = {"1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "[1.2.3.4]:80", "::1:443",
                         "[::1]",   "[::1]:x",  "host:443",      "1.2.3.4:-1",   "[::1]443"};
    for (const char* s : bad) cr_assert_not(parse_endpoint(s).has_value(), "%s accepted", s);
}

Test(proto, unmap_v4_turns_mapped_into_plain_ipv4) {
    auto mapped = *parse_endpoint("[::ffff:203.0.113.9]:54321");
    auto plain = unmap_v4(mapped);
    cr_assert(plain.family == Family::kV4);
    cr_assert(plain == *parse_endpoint("203.0.113.9:54321"));
    auto v6 = *parse_endpoint("[2001:db8::1]:1");
    cr_assert(unmap_v4(v6) == v6);
    auto v4 = *parse_endpoint("1.2.3.4:5");
    cr_assert(unmap_v4(v4) == v4);
}

// ---- PROXY v2 --------------------------------------------------------------------------------

Test(proto, proxy_v2_encodes_spec_ipv4_example_byte_for_byte) {
    std::uint8_t out[64];
    std::size_t n = 0;
    cr_assert(encode_proxy_v2(v4_tuple(), out, n));
    Bytes want = from_hex("0d0a0d0a000d0a515549540a 21 11 000c c000020a c6336414 3039 01bb");
    cr_assert_eq(n, 28u);
    cr_assert_eq(std::memcmp(out, want.data(), 28), 0);
}

Test(proto, proxy_v2_ipv6_round_trip) {
    std::uint8_t out[64];
    std::size_t n = 0;
    cr_assert(encode_proxy_v2(v6_tuple(), out, n));
    cr_assert_eq(n, 52u);
    cr_assert_eq(out[13], 0x21);
    cr_assert_eq(out[14], 0x00);
    cr_assert_eq(out[15], 0x24);
    ProxyV2Decoder d;
    auto r = d.feed(std::span<const std::uint8_t>(out, n));
    cr_assert(r.status == ProxyStatus::kOk);
    cr_assert_eq(r.consumed, 52u);
    cr_assert(d.tuple() == v6_tuple());
}

Test(proto, proxy_v2_decodes_byte_at_a_time_and_leaves_following_bytes) {
    for (const Tuple& t : {v4_tuple(), v6_tuple()}) {
        std::uint8_t out[64];
        std::size_t n = 0;
        cr_assert(encode_proxy_v2(t, out, n));
        Bytes stream(out, out + n);
        append(stream, from_text("\x16\x03\x01"));
        ProxyV2Decoder d;
        std::size_t consumed = 0;
        for (std::size_t i = 0; i < stream.size(); ++i) {
            auto r = d.feed(std::span<const std::uint8_t>(&stream[i], 1));
            consumed += r.consumed;
            if (i + 1 < n) {
                cr_assert(r.status == ProxyStatus::kNeedMore, "done early at %zu", i);
                cr_assert_gt(d.bytes_needed(), 0u);
            } else {
                cr_assert(r.status == ProxyStatus::kOk);
            }
        }
        cr_assert_eq(consumed, n, "header bytes consumed: %zu", consumed);
        cr_assert_eq(d.header_size(), n);
        cr_assert(d.tuple() == t);
    }
}

Test(proto, proxy_v2_skips_tlvs) {
    // 203.0.113.9:54321 -> 198.51.100.10:443 with a 7-byte AUTHORITY TLV (type 0x02).
    Bytes h = from_hex(kSig);
    append(h, from_hex("21 11 0013 cb007109 c633640a d431 01bb 02 0004 61626364"));
    append(h, from_text("tail"));
    ProxyV2Decoder d;
    auto r = d.feed(h);
    cr_assert(r.status == ProxyStatus::kOk);
    cr_assert_eq(r.consumed, 16u + 0x13u);
    cr_assert_eq(d.header_size(), 35u);
    cr_assert_eq(format_endpoint(d.tuple().source), std::string("203.0.113.9:54321"));
    cr_assert_eq(format_endpoint(d.tuple().destination), std::string("198.51.100.10:443"));
}

Test(proto, proxy_v2_rejects_local_udp_and_oversize) {
    Bytes local = from_hex(kSig);
    append(local, from_hex("20 00 0000"));
    cr_assert(decode_status(local) == ProxyStatus::kLocal);

    Bytes udp4 = from_hex(kSig);
    append(udp4, from_hex("21 12 000c"));
    cr_assert(decode_status(udp4) == ProxyStatus::kUdp);
    Bytes udp6 = from_hex(kSig);
    append(udp6, from_hex("21 22 0024"));
    cr_assert(decode_status(udp6) == ProxyStatus::kUdp);

    Bytes huge = from_hex(kSig);
    append(huge, from_hex("21 11 ffff"));
    cr_assert(decode_status(huge) == ProxyStatus::kTooLong);

    Bytes over = from_hex(kSig);  // 16 + 16369 = 16385
    append(over, from_hex("21 11 3ff1"));
    cr_assert(decode_status(over) == ProxyStatus::kTooLong);
}

Test(proto, proxy_v2_accepts_header_of_exactly_16384_bytes) {
    Bytes h = from_hex(kSig);
    append(h, from_hex("21 11 3ff0 c000020a c6336414 3039 01bb"));  // L = 16368
    h.resize(16384, 0);
    ProxyV2Decoder d;
    auto r = d.feed(h);
    cr_assert(r.status == ProxyStatus::kOk);
    cr_assert_eq(r.consumed, 16384u);
    cr_assert(d.tuple() == v4_tuple());
}

Test(proto, proxy_v2_rejects_bad_signature_version_family_and_short_length) {
    cr_assert(decode_status(from_text("GET / HTTP/1.1\r\n")) == ProxyStatus::kBadSignature);
    cr_assert(decode_status(from_text("PROXY TCP4 1.2.3.4")) == ProxyStatus::kBadSignature);
    // A wrong first byte is rejected at once, without waiting for 16 bytes.
    ProxyV2Decoder d;
    Bytes one = {0x16};
    cr_assert(d.feed(one).status == ProxyStatus::kBadSignature);

    Bytes v1 = from_hex(kSig);
    append(v1, from_hex("11 11 000c"));
    cr_assert(decode_status(v1) == ProxyStatus::kBadVersion);
    Bytes cmd = from_hex(kSig);
    append(cmd, from_hex("22 11 000c"));
    cr_assert(decode_status(cmd) == ProxyStatus::kBadCommand);
    for (const char* fam : {"00", "31", "32", "13", "41"}) {
        Bytes f = from_hex(kSig);
        append(f, from_hex(std::string("21 ") + fam + " 000c"));
        cr_assert(decode_status(f) == ProxyStatus::kBadFamily, "family %s", fam);
    }
    Bytes short4 = from_hex(kSig);
    append(short4, from_hex("21 11 000b"));
    cr_assert(decode_status(short4) == ProxyStatus::kTooShort);
    Bytes short6 = from_hex(kSig);
    append(short6, from_hex("21 21 0023"));
    cr_assert(decode_status(short6) == ProxyStatus::kTooShort);
}

Test(proto, proxy_v2_truncated_header_stays_incomplete) {
    std::uint8_t out[64];
    std::size_t n = 0;
    cr_assert(encode_proxy_v2(v4_tuple(), out, n));
    ProxyV2Decoder d;
    auto r = d.feed(std::span<const std::uint8_t>(out, n - 1));
    cr_assert(r.status == ProxyStatus::kNeedMore);
    cr_assert_eq(d.bytes_needed(), 1u);
}

Test(proto, proxy_v2_encoder_refuses_mixed_families_and_small_buffers) {
    Tuple mixed{Endpoint::v4({1, 2, 3, 4}, 1), *parse_endpoint("[::1]:2")};
    std::uint8_t out[64];
    std::size_t n = 99;
    cr_assert_not(encode_proxy_v2(mixed, out, n));
    cr_assert_eq(n, 0u);
    cr_assert_not(encode_proxy_v2(v4_tuple(), std::span<std::uint8_t>(out, 27), n));
    cr_assert_not(encode_proxy_v2(v6_tuple(), std::span<std::uint8_t>(out, 51), n));
    cr_assert(encode_proxy_v2(v6_tuple(), std::span<std::uint8_t>(out, 52), n));
}

// ---- ClientHello -----------------------------------------------------------------------------

Test(proto, clienthello_split_over_two_records) {
    Bytes hs = handshake({});
    Bytes b = records(hs, hs.size() / 2 + 1);
    cr_assert_eq(b.size(), hs.size() + 10);
    ClientHelloParser whole;
    cr_assert(feed_all(whole, b) == HelloStatus::kOk);
    cr_assert_eq(whole.sni(), std::string("app.example.test"));
    cr_assert_eq(whole.hello_end(), b.size());
    ClientHelloParser bytewise;
    cr_assert(feed_bytewise(bytewise, b) == HelloStatus::kOk);
    cr_assert_eq(bytewise.sni(), std::string("app.example.test"));
    cr_assert_eq(bytewise.hello_end(), b.size());
}

Test(proto, clienthello_incomplete_until_last_byte) {
    Bytes b = hello({}, 50);
    ClientHelloParser p;
    for (std::size_t i = 0; i + 1 < b.size(); ++i) {
        cr_assert(p.feed(std::span<const std::uint8_t>(&b[i], 1)) == HelloStatus::kIncomplete);
        cr_assert_gt(p.bytes_needed(), 0u);
        cr_assert_leq(p.bytes_seen() + p.bytes_needed(), kMaxClientHelloBytes);
    }
    cr_assert(p.feed(std::span<const std::uint8_t>(&b.back(), 1)) == HelloStatus::kOk);
    cr_assert_eq(p.bytes_needed(), 0u);
}

Test(proto, clienthello_bytes_needed_hint) {
    Bytes b = hello();
    ClientHelloParser p;
    cr_assert_eq(p.bytes_needed(), 5u);
    cr_assert(p.feed(std::span<const std::uint8_t>(b.data(), 3)) == HelloStatus::kIncomplete);
    cr_assert_eq(p.bytes_needed(), 2u);
    cr_assert(p.feed(std::span<const std::uint8_t>(b.data() + 3, 2)) == HelloStatus::kIncomplete);
    cr_assert_eq(p.bytes_needed(), b.size() - 5);
}

Test(proto, clienthello_keeps_trailing_bytes) {
    Bytes b = hello();
    std::size_t hello_size = b.size();
    append(b, from_text("\x17\x03\x03 early application bytes"));
    ClientHelloParser p;
    cr_assert(feed_all(p, b) == HelloStatus::kOk);
    cr_assert_eq(p.hello_end(), hello_size);
    cr_assert_eq(p.bytes_seen(), hello_size);
    // Later input is ignored, and the bytes themselves were never touched.
    Bytes copy = b;
    cr_assert(p.feed(b) == HelloStatus::kOk);
    cr_assert(copy == b);
}

Test(proto, clienthello_normalizes_sni) {
    HelloSpec s;
    s.sni_names = {"App.Example.Test."};
    ClientHelloParser p;
    cr_assert(feed_all(p, hello(s)) == HelloStatus::kOk);
    cr_assert_eq(p.sni(), std::string("app.example.test"));
}

Test(proto, clienthello_ip_sni_counts_as_missing) {
    for (const char* ip : {"192.0.2.1", "2001:db8::1", "::1"}) {
        HelloSpec s;
        s.sni_names = {ip};
        ClientHelloParser p;
        HelloStatus st = feed_all(p, hello(s));
        cr_assert(st == HelloStatus::kNoSni, "%s: %s", ip, reason_code(st));
        cr_assert_str_eq(reason_code(st), "missing-sni-client-hello");
    }
    HelloSpec none;
    none.with_sni = false;
    ClientHelloParser p;
    cr_assert(feed_all(p, hello(none)) == HelloStatus::kNoSni);
}

Test(proto, clienthello_invalid_sni) {
    for (const char* name : {"bad_name.example", "*.example.test", "-x.example", "a..b"}) {
        HelloSpec s;
        s.sni_names = {name};
        ClientHelloParser p;
        HelloStatus st = feed_all(p, hello(s));
        cr_assert(st == HelloStatus::kInvalidSni, "%s: %s", name, reason_code(st));
    }
}

Test(proto, clienthello_cap_exactly_16384_ok) {
    for (std::size_t rec : {16384u, 4000u, 1000u}) {
        Bytes b = hello_of_size(kMaxClientHelloBytes, rec);
        ClientHelloParser p;
        cr_assert(feed_all(p, b) == HelloStatus::kOk, "record size %zu: %s", rec,
                  reason_code(p.status()));
        cr_assert_eq(p.hello_end(), kMaxClientHelloBytes);
        ClientHelloParser q;
        cr_assert(feed_bytewise(q, b) == HelloStatus::kOk);
    }
}

Test(proto, clienthello_cap_16385_too_large) {
    for (std::size_t rec : {16000u, 4000u, 1000u}) {
        Bytes b = hello_of_size(kMaxClientHelloBytes + 1, rec);
        ClientHelloParser p;
        HelloStatus st = feed_all(p, b);
        cr_assert(st == HelloStatus::kTooLarge, "record size %zu: %s", rec, reason_code(st));
        cr_assert_str_eq(reason_code(st), "oversized-client-hello");
        cr_assert_leq(p.bytes_seen(), kMaxClientHelloBytes);
        ClientHelloParser q;
        cr_assert(feed_bytewise(q, b) == HelloStatus::kTooLarge);
    }
}

Test(proto, clienthello_too_large_detected_before_the_bytes_arrive) {
    // A handshake header announcing 16 MiB: rejected after 9 bytes, not after 16 KiB.
    Bytes b = from_hex("16 0301 0004 01 ffffff");
    ClientHelloParser p;
    cr_assert(feed_all(p, b) == HelloStatus::kTooLarge);
    // Endless tiny records that never finish the hello hit the cap too.
    Bytes drip;
    append(drip, from_hex("16 0301 0004 01 000fff"));
    while (drip.size() < 20000) append(drip, from_hex("16 0301 0001 00"));
    ClientHelloParser q;
    cr_assert(feed_bytewise(q, drip) == HelloStatus::kTooLarge);
    cr_assert_leq(q.bytes_seen(), kMaxClientHelloBytes);
}

Test(proto, clienthello_duplicate_extension_is_invalid) {
    HelloSpec s;
    s.alpn = {"h2"};
    s.duplicate_alpn = true;
    ClientHelloParser p;
    HelloStatus st = feed_all(p, hello(s));
    cr_assert(st == HelloStatus::kInvalidTls, "%s", reason_code(st));
    cr_assert_str_eq(reason_code(st), "invalid-tls-client-hello");
}

Test(proto, clienthello_two_host_names_are_invalid) {
    HelloSpec s;
    s.sni_names = {"app.example.test", "other.example.test"};
    ClientHelloParser p;
    cr_assert(feed_all(p, hello(s)) == HelloStatus::kInvalidTls);
}

Test(proto, clienthello_non_tls_inputs) {
    const Bytes inputs[] = {
        from_text("GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n"),
        // SSLv2-compatible ClientHello: 2-byte length with the high bit set, msg type 1.
        from_hex("802e 01 0301 0015 0000 0010 010080 030080 070000 060040 020080 040080 "
                 "0123456789abcdef0123456789abcdef"),
        from_hex("15 0303 0002 02 28"),     // alert record
        from_hex("16 0200 0004 01000000"),  // handshake type, but SSL 2 record version
        from_hex(kSig),                     // a PROXY header where a ClientHello was expected
    };
    for (const auto& in : inputs) {
        ClientHelloParser p;
        HelloStatus st = feed_all(p, in);
        cr_assert(st == HelloStatus::kNotTls, "%s", reason_code(st));
        cr_assert_str_eq(reason_code(st), "non-tls-client-hello");
        ClientHelloParser q;
        cr_assert(feed_bytewise(q, in) == HelloStatus::kNotTls);
    }
}

Test(proto, clienthello_malformed_records_are_invalid_tls) {
    Bytes hs = handshake({});
    // Second record of another content type (alert) before the hello is complete.
    Bytes two = records(hs, hs.size() / 2 + 1);
    two[5 + hs.size() / 2 + 1] = 21;
    ClientHelloParser a;
    cr_assert(feed_all(a, two) == HelloStatus::kInvalidTls);
    // Zero-length and over-long records.
    ClientHelloParser b;
    cr_assert(feed_all(b, from_hex("16 0301 0000")) == HelloStatus::kInvalidTls);
    ClientHelloParser c;
    cr_assert(feed_all(c, from_hex("16 0301 4001")) == HelloStatus::kInvalidTls);
    // A handshake message that is not a ClientHello.
    HelloSpec server_hello;
    server_hello.hs_type = 2;
    ClientHelloParser d;
    cr_assert(feed_all(d, hello(server_hello)) == HelloStatus::kInvalidTls);
    // Session id longer than 32 bytes.
    HelloSpec long_sid;
    long_sid.session_id_len = 33;
    ClientHelloParser e;
    cr_assert(feed_all(e, hello(long_sid)) == HelloStatus::kInvalidTls);
    // Extension block length that overruns the message.
    Bytes bad = handshake({});
    std::size_t ext_len_at = 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;
    bad[ext_len_at + 1] = static_cast<std::uint8_t>(bad[ext_len_at + 1] + 1);
    ClientHelloParser f;
    cr_assert(feed_all(f, records(bad)) == HelloStatus::kInvalidTls);
}

Test(proto, clienthello_alpn_acme_detection) {
    HelloSpec acme;
    acme.alpn = {"h2", "acme-tls/1"};
    ClientHelloParser p;
    cr_assert(feed_all(p, hello(acme)) == HelloStatus::kOk);
    cr_assert(p.offers_acme_tls1());

    HelloSpec plain;
    plain.alpn = {"h2", "http/1.1", "acme-tls/2"};
    ClientHelloParser q;
    cr_assert(feed_all(q, hello(plain)) == HelloStatus::kOk);
    cr_assert_not(q.offers_acme_tls1());

    HelloSpec empty_name;
    empty_name.alpn = {"h2", ""};
    ClientHelloParser r;
    cr_assert(feed_all(r, hello(empty_name)) == HelloStatus::kInvalidTls);
}

Test(proto, clienthello_reason_codes) {
    cr_assert_str_eq(reason_code(HelloStatus::kIncomplete), "incomplete-client-hello");
    cr_assert_str_eq(reason_code(HelloStatus::kNotTls), "non-tls-client-hello");
    cr_assert_str_eq(reason_code(HelloStatus::kInvalidTls), "invalid-tls-client-hello");
    cr_assert_str_eq(reason_code(HelloStatus::kNoSni), "missing-sni-client-hello");
    cr_assert_str_eq(reason_code(HelloStatus::kInvalidSni), "invalid-sni-client-hello");
    cr_assert_str_eq(reason_code(HelloStatus::kTooLarge), "oversized-client-hello");
}

Test(proto, clienthello_reset_reuses_the_parser) {
    ClientHelloParser p;
    cr_assert(feed_all(p, from_text("GET / HTTP/1.1\r\n")) == HelloStatus::kNotTls);
    p.reset();
    cr_assert(p.status() == HelloStatus::kIncomplete);
    cr_assert_eq(p.bytes_seen(), 0u);
    HelloSpec s;
    s.sni_names = {"first.example.test"};
    s.alpn = {"acme-tls/1"};
    cr_assert(feed_bytewise(p, hello(s, 64)) == HelloStatus::kOk);
    cr_assert_eq(p.sni(), std::string("first.example.test"));
    cr_assert(p.offers_acme_tls1());
    p.reset();
    cr_assert(p.sni().empty());
    cr_assert_not(p.offers_acme_tls1());
    Bytes b = hello();
    cr_assert(feed_all(p, b) == HelloStatus::kOk);
    cr_assert_eq(p.sni(), std::string("app.example.test"));
    cr_assert_not(p.offers_acme_tls1());
    cr_assert_eq(p.hello_end(), b.size());
}

Test(proto, clienthello_real_captures) {
    const char* files[] = {"curl.bin", "gnutls-cli.bin", "openssl.bin", "large-multirecord.bin"};
    for (const char* f : files) {
        Bytes b = read_file(data_path(f));
        ClientHelloParser whole;
        HelloStatus st = feed_all(whole, b);
        cr_assert(st == HelloStatus::kOk, "%s: %s", f, reason_code(st));
        cr_assert_eq(whole.sni(), std::string("app.example.test"), "%s", f);
        cr_assert_eq(whole.hello_end(), b.size(), "%s", f);
        ClientHelloParser bytewise;
        cr_assert(feed_bytewise(bytewise, b) == HelloStatus::kOk, "%s bytewise", f);
        cr_assert_eq(bytewise.sni(), whole.sni());
        cr_assert_eq(bytewise.hello_end(), whole.hello_end());
        cr_assert_eq(bytewise.offers_acme_tls1(), whole.offers_acme_tls1());
        // Any split into two reads gives the same answer.
        for (std::size_t cut = 1; cut < b.size(); cut += 7) {
            ClientHelloParser two;
            two.feed(std::span<const std::uint8_t>(b.data(), cut));
            cr_assert(two.feed(std::span<const std::uint8_t>(b.data() + cut, b.size() - cut)) ==
                      HelloStatus::kOk);
            cr_assert_eq(two.hello_end(), b.size());
        }
    }
}

Test(proto, clienthello_large_capture_spans_several_records) {
    Bytes b = read_file(data_path("large-multirecord.bin"));
    std::size_t n_records = 0;
    for (std::size_t off = 0; off + 5 <= b.size(); ++n_records) {
        cr_assert_eq(b[off], 22);
        off += 5 + (static_cast<std::size_t>(b[off + 3]) << 8 | b[off + 4]);
    }
    cr_assert_gt(n_records, 2u);
    cr_assert_gt(b.size(), 8000u);
}

// ---- stream prefix ---------------------------------------------------------------------------

Test(proto, stream_prefix_decodes_header_then_hello_byte_by_byte) {
    for (const Tuple& t : {v4_tuple(), v6_tuple()}) {
        std::uint8_t hdr[64];
        std::size_t n = encode_stream_prefix(t, hdr);
        cr_assert_eq(n, proxy_v2_size(t.source.family));
        Bytes stream(hdr, hdr + n);
        Bytes h = hello({}, 100);
        append(stream, h);
        append(stream, from_text("after"));
        StreamPrefixDecoder d;
        PrefixStatus st = PrefixStatus::kNeedMore;
        std::size_t i = 0;
        for (; i < stream.size() && st == PrefixStatus::kNeedMore; ++i) {
            cr_assert_gt(d.bytes_needed(), 0u);
            st = d.feed(std::span<const std::uint8_t>(&stream[i], 1));
        }
        cr_assert(st == PrefixStatus::kDone, "%s", d.reason());
        cr_assert_eq(i, n + h.size());
        cr_assert_eq(d.visitor_offset(), n);
        cr_assert_eq(d.hello_end(), n + h.size());
        cr_assert(d.tuple() == t);
        cr_assert_eq(d.sni(), std::string("app.example.test"));
        cr_assert_not(d.offers_acme_tls1());
    }
}

Test(proto, stream_prefix_whole_buffer_with_acme) {
    std::uint8_t hdr[64];
    std::size_t n = encode_stream_prefix(v4_tuple(), hdr);
    cr_assert_eq(n, 28u);
    HelloSpec s;
    s.alpn = {"acme-tls/1"};
    Bytes stream(hdr, hdr + n);
    append(stream, hello(s));
    StreamPrefixDecoder d;
    cr_assert(d.feed(stream) == PrefixStatus::kDone);
    cr_assert(d.offers_acme_tls1());
    cr_assert_eq(d.visitor_offset(), 28u);
}

Test(proto, stream_prefix_errors_carry_reasons) {
    Bytes local = from_hex(kSig);
    append(local, from_hex("20 11 000c c000020a c6336414 3039 01bb"));
    StreamPrefixDecoder a;
    cr_assert(a.feed(local) == PrefixStatus::kError);
    cr_assert_str_eq(a.reason(), "invalid PROXY v2 header: LOCAL command not accepted");

    std::uint8_t hdr[64];
    std::size_t n = encode_stream_prefix(v4_tuple(), hdr);
    Bytes http(hdr, hdr + n);
    append(http, from_text("GET / HTTP/1.1\r\n"));
    StreamPrefixDecoder b;
    cr_assert(b.feed(http) == PrefixStatus::kError);
    cr_assert_str_eq(b.reason(), "non-tls-client-hello");

    StreamPrefixDecoder c;
    cr_assert(c.feed(std::span<const std::uint8_t>(hdr, 10)) == PrefixStatus::kNeedMore);
    cr_assert_str_eq(c.eof_reason(), "invalid PROXY v2 header: incomplete");
    StreamPrefixDecoder e;
    Bytes partial(hdr, hdr + n);
    append(partial, from_hex("16 0301"));
    cr_assert(e.feed(partial) == PrefixStatus::kNeedMore);
    cr_assert_str_eq(e.eof_reason(), "incomplete-client-hello");

    Tuple mixed{Endpoint::v4({1, 2, 3, 4}, 1), *parse_endpoint("[::1]:2")};
    cr_assert_eq(encode_stream_prefix(mixed, hdr), 0u);
}

Test(proto, sockaddr_conversions_round_trip) {
    using namespace runewarp::proto;
    for (const char* text : {"192.0.2.10:12345", "[2001:db8::1]:443", "[::ffff:127.0.0.1]:80"}) {
        auto e = parse_endpoint(text);
        cr_assert(e.has_value(), "%s", text);
        sockaddr_storage ss{};
        socklen_t len = to_sockaddr(*e, ss);
        cr_assert_eq(len, e->family == Family::kV4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
        auto back = from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
        cr_assert(back.has_value());
        cr_assert(*back == *e, "%s round trip", text);
        const std::string formatted = format_endpoint(*back);
        cr_assert_str_eq(formatted.c_str(), text);
    }
    sockaddr_storage unix_addr{};
    unix_addr.ss_family = AF_UNIX;
    cr_assert_not(from_sockaddr(unix_addr).has_value());
    sockaddr_storage v4{};
    v4.ss_family = AF_INET;
    cr_assert_not(from_sockaddr(reinterpret_cast<const sockaddr*>(&v4), 4).has_value(),
                  "a truncated length is refused");
}
