// ClientHello parser: reassembles handshake records into a fixed buffer, then parses the
// message once (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1).
#include "proto/clienthello.hh"

#include <algorithm>
#include <bitset>
#include <string_view>

#include "proto/hostname.hh"

namespace runewarp::proto {

namespace {

constexpr std::uint8_t kContentHandshake = 22;
constexpr std::uint8_t kHandshakeClientHello = 1;
constexpr std::size_t kRecordHeader = 5;
constexpr std::size_t kMaxRecordBody = 16384;  // TLSPlaintext.length limit (2^14)
constexpr std::uint16_t kExtServerName = 0;
constexpr std::uint16_t kExtAlpn = 16;
constexpr std::string_view kAcmeTls1 = "acme-tls/1";

// Bounds-checked big-endian cursor; any overrun latches `bad`.
struct Reader {
    const std::uint8_t* p;
    std::size_t left;
    bool bad = false;

    bool take(std::size_t n) noexcept {
        if (bad || n > left) {
            bad = true;
            return false;
        }
        return true;
    }
    std::size_t u8() noexcept {
        if (!take(1)) return 0;
        --left;
        return *p++;
    }
    std::size_t u16() noexcept {
        if (!take(2)) return 0;
        std::size_t v = static_cast<std::size_t>(p[0]) << 8 | p[1];
        p += 2;
        left -= 2;
        return v;
    }
    // Splits off the next n bytes as their own reader.
    Reader sub(std::size_t n) noexcept {
        if (!take(n)) return Reader{p, 0, true};
        Reader r{p, n};
        p += n;
        left -= n;
        return r;
    }
    bool done() const noexcept { return !bad && left == 0; }
};

enum class SniResult { kAbsent, kOk, kIp, kInvalidName, kMalformed };

// server_name extension body: exactly one host_name entry.
SniResult parse_sni(Reader ext, std::string& out) {
    Reader list = ext.sub(ext.u16());
    if (!ext.done() || list.left == 0) return SniResult::kMalformed;
    bool have = false;
    std::string_view name;
    while (list.left > 0) {
        std::size_t type = list.u8();
        // Only host_name (0) is defined; other types carry no known length prefix.
        if (type != 0 || have) return SniResult::kMalformed;
        Reader n = list.sub(list.u16());
        if (list.bad || n.left == 0) return SniResult::kMalformed;
        name = std::string_view(reinterpret_cast<const char*>(n.p), n.left);
        have = true;
    }
    auto norm = normalize_hostname(name);
    if (norm.error == HostnameError::kIpLiteral) return SniResult::kIp;
    if (!norm.ok()) return SniResult::kInvalidName;
    out = std::move(norm.canonical);
    return SniResult::kOk;
}

// ALPN extension body: a non-empty list of non-empty names. Returns false when malformed.
bool parse_alpn(Reader ext, bool& acme) noexcept {
    Reader list = ext.sub(ext.u16());
    if (!ext.done() || list.left == 0) return false;
    while (list.left > 0) {
        Reader name = list.sub(list.u8());
        if (list.bad || name.left == 0) return false;
        std::string_view v(reinterpret_cast<const char*>(name.p), name.left);
        if (v == kAcmeTls1) acme = true;
    }
    return true;
}

}  // namespace

const char* reason_code(HelloStatus s) noexcept {
    switch (s) {
        case HelloStatus::kIncomplete:
            return "incomplete-client-hello";
        case HelloStatus::kOk:
            return "ok";
        case HelloStatus::kNotTls:
            return "non-tls-client-hello";
        case HelloStatus::kInvalidTls:
            return "invalid-tls-client-hello";
        case HelloStatus::kNoSni:
            return "missing-sni-client-hello";
        case HelloStatus::kInvalidSni:
            return "invalid-sni-client-hello";
        case HelloStatus::kTooLarge:
            return "oversized-client-hello";
    }
    return "invalid-tls-client-hello";
}

std::size_t ClientHelloParser::bytes_needed() const noexcept {
    if (status_ != HelloStatus::kIncomplete) return 0;
    return in_body_ ? rec_remaining_ : kRecordHeader - rec_hdr_have_;
}

void ClientHelloParser::reset() noexcept {
    status_ = HelloStatus::kIncomplete;
    in_body_ = false;
    seen_ = 0;
    records_ = 0;
    rec_hdr_have_ = 0;
    rec_remaining_ = 0;
    hs_have_ = 0;
    hs_total_ = 0;
    hello_end_ = 0;
    acme_tls1_ = false;
    sni_.clear();
}

// Rejects as soon as the smallest possible completion would pass the cap: the ClientHello is only
// complete at the end of a record, and every further record costs a 5-byte header.
HelloStatus ClientHelloParser::check_cap() const noexcept {
    // Handshake bytes still missing; while the length is unknown, at least the 4-byte header.
    std::size_t hs_left = hs_total_ != 0 ? hs_total_ - std::min(hs_total_, hs_have_)
                                         : 4 - std::min<std::size_t>(4, hs_have_);
    std::size_t end_min;
    if (in_body_) {
        end_min = seen_ + rec_remaining_;
        if (hs_left > rec_remaining_) end_min += kRecordHeader + (hs_left - rec_remaining_);
    } else {
        end_min = seen_ + (kRecordHeader - rec_hdr_have_) + hs_left;
    }
    return end_min > kMaxClientHelloBytes ? HelloStatus::kTooLarge : HelloStatus::kIncomplete;
}

HelloStatus ClientHelloParser::after_record_header() {
    std::size_t len = static_cast<std::size_t>(rec_hdr_[3]) << 8 | rec_hdr_[4];
    if (len == 0 || len > kMaxRecordBody) return HelloStatus::kInvalidTls;
    ++records_;
    in_body_ = true;
    rec_remaining_ = len;
    rec_hdr_have_ = 0;
    return check_cap();
}

HelloStatus ClientHelloParser::feed(std::span<const std::uint8_t> more) {
    std::size_t i = 0;
    while (status_ == HelloStatus::kIncomplete && i < more.size()) {
        if (!in_body_) {
            std::uint8_t b = more[i++];
            ++seen_;
            rec_hdr_[rec_hdr_have_++] = b;
            // The first record decides "is this TLS at all"; later ones are just malformed TLS.
            HelloStatus wrong = records_ == 0 ? HelloStatus::kNotTls : HelloStatus::kInvalidTls;
            if (rec_hdr_have_ == 1 && b != kContentHandshake)
                status_ = wrong;
            else if (rec_hdr_have_ == 2 && b != 0x03)
                status_ = wrong;
            else if (rec_hdr_have_ == kRecordHeader)
                status_ = after_record_header();
            continue;
        }
        std::size_t take = std::min(more.size() - i, rec_remaining_);
        // The cap check keeps seen_ <= 16384, so handshake bytes always fit in hs_.
        std::copy_n(more.begin() + static_cast<std::ptrdiff_t>(i), take,
                    hs_.begin() + static_cast<std::ptrdiff_t>(hs_have_));
        std::size_t before = hs_have_;
        hs_have_ += take;
        i += take;
        seen_ += take;
        rec_remaining_ -= take;
        if (before == 0 && hs_[0] != kHandshakeClientHello) {
            status_ = HelloStatus::kInvalidTls;
            break;
        }
        if (hs_total_ == 0 && hs_have_ >= 4) {
            hs_total_ = 4 + (static_cast<std::size_t>(hs_[1]) << 16 |
                             static_cast<std::size_t>(hs_[2]) << 8 | hs_[3]);
        }
        if (rec_remaining_ == 0) {
            in_body_ = false;
            if (hs_total_ != 0 && hs_have_ >= hs_total_) {
                hello_end_ = seen_;
                status_ = parse_hello();
                break;
            }
        }
        if (status_ == HelloStatus::kIncomplete) status_ = check_cap();
    }
    return status_;
}

HelloStatus ClientHelloParser::parse_hello() {
    Reader msg{hs_.data() + 4, hs_total_ - 4};
    msg.u16();    // legacy_version: not checked, TLS 1.3 pins it anyway
    msg.sub(32);  // random
    std::size_t sid = msg.u8();
    if (sid > 32) return HelloStatus::kInvalidTls;
    msg.sub(sid);
    std::size_t suites = msg.u16();
    if (suites < 2 || suites % 2 != 0) return HelloStatus::kInvalidTls;
    msg.sub(suites);
    std::size_t comp = msg.u8();
    if (comp < 1) return HelloStatus::kInvalidTls;
    msg.sub(comp);
    if (msg.bad) return HelloStatus::kInvalidTls;
    if (msg.left == 0) return HelloStatus::kNoSni;  // no extensions at all

    Reader exts = msg.sub(msg.u16());
    if (!msg.done()) return HelloStatus::kInvalidTls;
    std::bitset<65536> seen_types;
    SniResult sni = SniResult::kAbsent;
    std::string name;
    bool acme = false;
    while (exts.left > 0) {
        std::size_t type = exts.u16();
        Reader body = exts.sub(exts.u16());
        if (exts.bad) return HelloStatus::kInvalidTls;
        if (seen_types.test(type)) return HelloStatus::kInvalidTls;
        seen_types.set(type);
        if (type == kExtServerName) {
            sni = parse_sni(body, name);
            if (sni == SniResult::kMalformed) return HelloStatus::kInvalidTls;
        } else if (type == kExtAlpn) {
            if (!parse_alpn(body, acme)) return HelloStatus::kInvalidTls;
        }
    }
    switch (sni) {
        case SniResult::kAbsent:
        case SniResult::kIp:
            return HelloStatus::kNoSni;
        case SniResult::kInvalidName:
            return HelloStatus::kInvalidSni;
        case SniResult::kMalformed:
            return HelloStatus::kInvalidTls;
        case SniResult::kOk:
            break;
    }
    sni_ = std::move(name);
    acme_tls1_ = acme;
    return HelloStatus::kOk;
}

}  // namespace runewarp::proto
