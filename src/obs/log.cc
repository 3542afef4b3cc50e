// Log line formatting (text, journald, JSON), sinks and the repetitive-warning rate limiter.
#include "obs/log.hh"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace runewarp::obs {

namespace {

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

void append_uint(std::string& out, std::uint64_t v) {
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

// Zero-padded decimal of fixed width.
void append_padded(std::string& out, long v, int width) {
    char buf[16];
    for (int i = width - 1; i >= 0; --i) {
        buf[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
    out.append(buf, static_cast<std::size_t>(width));
}

bool is_control(unsigned char c) {
    return c < 0x20 || c == 0x7f;
}

// Text values stay a single token: spaces and control bytes become `_`.
void append_token(std::string& out, std::string_view s) {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        out.push_back((u == ' ' || is_control(u)) ? '_' : c);
    }
}

// Free text stays on one line: control bytes become spaces.
void append_one_line(std::string& out, std::string_view s) {
    for (char c : s) out.push_back(is_control(static_cast<unsigned char>(c)) ? ' ' : c);
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid (RFC 3629:
// no overlongs, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
    auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = at(i);
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    if (at(i + 1) < lo || at(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < n; ++k) {
        if (at(i + k) < 0x80 || at(i + k) > 0xbf) return 0;
    }
    return n;
}

// RFC 8259 string: quote, backslash and control bytes escaped; invalid UTF-8 becomes U+FFFD so
// every line stays parseable JSON.
void append_json_string(std::string& out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back('"');
    for (std::size_t i = 0; i < s.size();) {
        char c = s[i];
        auto u = static_cast<unsigned char>(c);
        if (u >= 0x80) {
            std::size_t n = utf8_sequence_length(s, i);
            if (n == 0) {
                out.append("\\ufffd");
                ++i;
            } else {
                out.append(s.substr(i, n));
                i += n;
            }
            continue;
        }
        switch (c) {
            case '"':
                out.append("\\\"");
                break;
            case '\\':
                out.append("\\\\");
                break;
            case '\n':
                out.append("\\n");
                break;
            case '\r':
                out.append("\\r");
                break;
            case '\t':
                out.append("\\t");
                break;
            case '\b':
                out.append("\\b");
                break;
            case '\f':
                out.append("\\f");
                break;
            default:
                if (u < 0x20) {
                    out.append("\\u00");
                    out.push_back(kHex[u >> 4]);
                    out.push_back(kHex[u & 0xf]);
                } else {
                    out.push_back(c);
                }
        }
        ++i;
    }
    out.push_back('"');
}

std::string_view json_level_name(Level level) {
    switch (level) {
        case Level::kError:
            return "error";
        case Level::kWarn:
            return "warn";
        case Level::kInfo:
            return "info";
        case Level::kDebug:
            return "debug";
        case Level::kOff:
            break;
    }
    return "off";
}

// syslog priorities understood by journald's stream protocol (sd-daemon.h values).
std::string_view journal_prefix(Level level) {
    switch (level) {
        case Level::kError:
            return "<3>";
        case Level::kWarn:
            return "<4>";
        case Level::kInfo:
            return "<6>";
        case Level::kDebug:
            return "<7>";
        case Level::kOff:
            break;
    }
    return "<7>";
}

std::string_view color_of(Level level) {
    switch (level) {
        case Level::kError:
            return "\x1b[31m";
        case Level::kWarn:
            return "\x1b[33m";
        case Level::kInfo:
            return "\x1b[32m";
        case Level::kDebug:
            return "\x1b[34m";
        case Level::kOff:
            break;
    }
    return "";
}

}  // namespace

Result<Level> parse_level(std::string_view name) {
    if (name == "off") return Level::kOff;
    if (name == "error") return Level::kError;
    if (name == "warn") return Level::kWarn;
    if (name == "info") return Level::kInfo;
    if (name == "debug" || name == "trace") return Level::kDebug;
    return Error::msg("invalid log level `" + std::string(name) +
                      "` (expected off, error, warn, info, debug or trace)");
}

Result<Format> parse_format(std::string_view name) {
    if (name == "text") return Format::kText;
    if (name == "json") return Format::kJson;
    return Error::msg("invalid log format `" + std::string(name) + "` (expected text or json)");
}

std::string_view level_name(Level level) {
    switch (level) {
        case Level::kError:
            return "ERROR";
        case Level::kWarn:
            return "WARN";
        case Level::kInfo:
            return "INFO";
        case Level::kDebug:
            return "DEBUG";
        case Level::kOff:
            break;
    }
    return "OFF";
}

std::string format_duration(std::chrono::milliseconds d) {
    std::string out;
    auto ms = d.count();
    if (ms % 1000 == 0) {
        append_int(out, ms / 1000);
        out.push_back('s');
    } else {
        append_int(out, ms);
        out.append("ms");
    }
    return out;
}

void Field::append_value(std::string& out) const {
    switch (kind_) {
        case Kind::kString:
            out.append(str_);
            break;
        case Kind::kSigned:
            append_int(out, i_);
            break;
        case Kind::kUnsigned:
            append_uint(out, u_);
            break;
        case Kind::kDuration:
            out.append(format_duration(std::chrono::milliseconds(i_)));
            break;
    }
}

void FdSink::write(std::string_view line) noexcept {
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(fd_, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

timespec realtime_now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

Style detect_style(int fd, const char* journal_stream) noexcept {
    if (journal_stream != nullptr && *journal_stream != '\0') {
        unsigned long long dev = 0, ino = 0;
        struct stat st {};
        if (std::sscanf(journal_stream, "%llu:%llu", &dev, &ino) == 2 && fstat(fd, &st) == 0 &&
            static_cast<unsigned long long>(st.st_dev) == dev &&
            static_cast<unsigned long long>(st.st_ino) == ino) {
            return Style::kJournal;
        }
    }
    return isatty(fd) == 1 ? Style::kColor : Style::kPlain;
}

void Logger::append_timestamp() {
    timespec ts = wall_clock_();
    struct tm tm {};
    time_t secs = ts.tv_sec;
    gmtime_r(&secs, &tm);
    append_padded(line_, tm.tm_year + 1900L, 4);
    line_.push_back('-');
    append_padded(line_, tm.tm_mon + 1L, 2);
    line_.push_back('-');
    append_padded(line_, tm.tm_mday, 2);
    line_.push_back('T');
    append_padded(line_, tm.tm_hour, 2);
    line_.push_back(':');
    append_padded(line_, tm.tm_min, 2);
    line_.push_back(':');
    append_padded(line_, tm.tm_sec, 2);
    line_.push_back('.');
    append_padded(line_, ts.tv_nsec / 1000, 6);
    line_.push_back('Z');
}

void Logger::log(Level level, std::string_view event, Fields fields, std::string_view summary) {
    if (!enabled(level)) return;
    std::lock_guard lock(mu_);
    line_.clear();
    if (style_ == Style::kJournal) line_.append(journal_prefix(level));
    if (format_.load(std::memory_order_relaxed) == Format::kJson) {
        format_json(level, event, fields, summary);
    } else {
        format_text(level, event, fields, summary);
    }
    line_.push_back('\n');
    sink_->write(line_);
}

void Logger::format_text(Level level, std::string_view event, Fields fields,
                         std::string_view summary) {
    std::string_view name = level_name(level);
    if (style_ == Style::kJournal) {
        // journald keeps the priority separately; the level word stays for readers of the text.
        line_.append(name);
    } else {
        append_timestamp();
        line_.push_back(' ');
        if (style_ == Style::kColor) line_.append(color_of(level));
        line_.append(5 - name.size(), ' ');
        line_.append(name);
        if (style_ == Style::kColor) line_.append("\x1b[0m");
    }
    line_.push_back(' ');
    append_one_line(line_, event);
    if (fields.size() > 0) {
        line_.push_back(':');
        for (const Field& f : fields) {
            line_.push_back(' ');
            append_token(line_, f.key());
            line_.push_back('=');
            std::size_t start = line_.size();
            f.append_value(line_);
            for (std::size_t i = start; i < line_.size(); ++i) {
                auto u = static_cast<unsigned char>(line_[i]);
                if (u == ' ' || is_control(u)) line_[i] = '_';
            }
        }
    }
    if (!summary.empty()) {
        line_.append(": ");
        append_one_line(line_, summary);
    }
}

void Logger::format_json(Level level, std::string_view event, Fields fields,
                         std::string_view summary) {
    line_.append("{\"ts\":\"");
    append_timestamp();
    line_.append("\",\"level\":\"");
    line_.append(json_level_name(level));
    line_.append("\",\"event\":");
    append_json_string(line_, event);
    std::string value;
    for (const Field& f : fields) {
        line_.push_back(',');
        append_json_string(line_, f.key());
        line_.push_back(':');
        value.clear();
        f.append_value(value);
        append_json_string(line_, value);
    }
    if (!summary.empty()) {
        line_.append(",\"message\":");
        append_json_string(line_, summary);
    }
    line_.push_back('}');
}

Logger& process_logger() {
    static FdSink sink(STDERR_FILENO);
    static Logger logger(sink,
                         LoggerOptions{
                             .level = Level::kInfo,
                             .format = Format::kText,
                             .style = detect_style(STDERR_FILENO, std::getenv("JOURNAL_STREAM")),
                             .wall_clock = realtime_now,
                         });
    return logger;
}

void configure_process_logger(Level level, Format format) {
    Logger& logger = process_logger();
    logger.set_level(level);
    logger.set_format(format);
}

RateLimiter::Decision RateLimiter::on_saturated(TimePoint now) noexcept {
    ++pending_count_;
    if (ever_logged_ && now - last_logged_ < interval_) return Decision{false, pending_count_};
    Decision d{true, pending_count_};
    ever_logged_ = true;
    last_logged_ = now;
    recovery_pending_ = true;
    pending_count_ = 0;
    return d;
}

bool RateLimiter::on_success() noexcept {
    if (!recovery_pending_) return false;
    recovery_pending_ = false;
    return true;
}

}  // namespace runewarp::obs
