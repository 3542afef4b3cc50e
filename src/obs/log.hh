// Operator log lines on stderr: levels, text/journald/JSON formats, sinks, rate
// limits.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::obs {

// Ordered by verbosity; a line is written when its level <= the logger's level.
// `trace` is accepted as a name but currently equals kDebug.
enum class Level : std::uint8_t { kOff = 0, kError, kWarn, kInfo, kDebug };

enum class Format : std::uint8_t { kText, kJson };

// How a text line is decorated for its destination.
enum class Style : std::uint8_t {
    kPlain,    // timestamp + level, no colours
    kColor,    // as kPlain with ANSI colours on the level (stderr is a TTY)
    kJournal,  // no timestamp, `<N>` syslog priority prefix (stderr is a journald stream)
};

Result<Level> parse_level(std::string_view name);
Result<Format> parse_format(std::string_view name);
std::string_view level_name(Level level);  // "ERROR", "WARN", ... ("OFF" for kOff)

// `<n>s` when the duration is a whole number of seconds, else `<n>ms`.
std::string format_duration(std::chrono::milliseconds d);

// One `key=value` pair of a log line. Values are formatted lazily, only when the line is written.
// Text lines must stay one token per value: a space or control byte inside a value is replaced by
// `_` (values with spaces are a caller bug; this keeps the line parseable instead of quoting).
// JSON lines carry values verbatim, escaped.
class Field {
public:
    Field(std::string_view key, std::string_view value) noexcept
        : key_(key), kind_(Kind::kString), str_(value) {}
    Field(std::string_view key, const char* value) noexcept : Field(key, std::string_view(value)) {}
    Field(std::string_view key, const std::string& value) noexcept
        : Field(key, std::string_view(value)) {}
    Field(std::string_view key, std::int64_t value) noexcept
        : key_(key), kind_(Kind::kSigned), i_(value) {}
    Field(std::string_view key, int value) noexcept : Field(key, std::int64_t{value}) {}
    Field(std::string_view key, std::uint64_t value) noexcept
        : key_(key), kind_(Kind::kUnsigned), u_(value) {}
    Field(std::string_view key, unsigned value) noexcept : Field(key, std::uint64_t{value}) {}
    // Printed with format_duration().
    Field(std::string_view key, std::chrono::milliseconds value) noexcept
        : key_(key), kind_(Kind::kDuration), i_(value.count()) {}

    std::string_view key() const noexcept { return key_; }
    // Appends the value's text to `out`, unescaped.
    void append_value(std::string& out) const;

private:
    enum class Kind : std::uint8_t { kString, kSigned, kUnsigned, kDuration };
    std::string_view key_;
    Kind kind_;
    union {
        std::string_view str_;
        std::int64_t i_;
        std::uint64_t u_;
    };
};

using Fields = std::initializer_list<Field>;

// Where finished lines go. Each call receives one complete line including its trailing newline.
class Sink {
public:
    virtual ~Sink() = default;
    virtual void write(std::string_view line) noexcept = 0;
};

// Writes each line with one write(2) (retrying EINTR and short writes); errors are dropped because
// there is nowhere left to report them.
class FdSink final : public Sink {
public:
    explicit FdSink(int fd) noexcept : fd_(fd) {}
    void write(std::string_view line) noexcept override;

private:
    int fd_;
};

// Collects lines in memory (tests).
class StringSink final : public Sink {
public:
    void write(std::string_view line) noexcept override { text.append(line); }
    std::string text;
};

// Wall clock for timestamps; injectable so tests can assert exact lines.
using WallClock = timespec (*)() noexcept;
timespec realtime_now() noexcept;

struct LoggerOptions {
    Level level = Level::kInfo;
    Format format = Format::kText;
    Style style = Style::kPlain;
    WallClock wall_clock = realtime_now;
};

// Picks kJournal when JOURNAL_STREAM (`<dev>:<ino>`) names `fd`'s st_dev:st_ino, else kColor when
// `fd` is a TTY, else kPlain. `journal_stream` is the variable's value or nullptr.
Style detect_style(int fd, const char* journal_stream) noexcept;

// Formats and writes log lines. Thread-safe: several threads may log through one Logger; each
// line is formatted and handed to the sink under the logger's mutex, so lines never interleave
// (a sink shared by several loggers must be safe on its own, as FdSink is: one write(2) a line).
// The level and format may be read and changed from any thread; enabled() takes no lock.
//
// Usage: log.info("server public listener ready", {{"bind-address", addr}});
//        log.warn("server tunnel connection dropped", {{"client-identity", id}}, "idle timeout");
// Message grammar: `<event phrase>[: key=value ...][: summary]`. Events are fixed phrases (a
// closed catalogue operators can grep for); the summary is free text (control bytes become spaces
// so a line stays one line). In JSON: {"ts":..., "level":"info", "event":..., "<key>":"<value>"...,
// "message": summary}. Field keys must not be ts/level/event/message.
class Logger {
public:
    Logger(Sink& sink, LoggerOptions options) noexcept
        : sink_(&sink),
          level_(options.level),
          format_(options.format),
          style_(options.style),
          wall_clock_(options.wall_clock) {}

    bool enabled(Level level) const noexcept {
        return level != Level::kOff && level <= level_.load(std::memory_order_relaxed);
    }
    Level level() const noexcept { return level_.load(std::memory_order_relaxed); }
    // Level, format, style and clock as they are now: for a logger of the same kind elsewhere.
    LoggerOptions options() const noexcept {
        return LoggerOptions{level(), format_.load(std::memory_order_relaxed), style_, wall_clock_};
    }
    void set_level(Level level) noexcept { level_.store(level, std::memory_order_relaxed); }
    void set_format(Format format) noexcept { format_.store(format, std::memory_order_relaxed); }

    void log(Level level, std::string_view event, Fields fields = {},
             std::string_view summary = {});

    void error(std::string_view event, Fields fields = {}, std::string_view summary = {}) {
        if (enabled(Level::kError)) log(Level::kError, event, fields, summary);
    }
    void warn(std::string_view event, Fields fields = {}, std::string_view summary = {}) {
        if (enabled(Level::kWarn)) log(Level::kWarn, event, fields, summary);
    }
    void info(std::string_view event, Fields fields = {}, std::string_view summary = {}) {
        if (enabled(Level::kInfo)) log(Level::kInfo, event, fields, summary);
    }
    void debug(std::string_view event, Fields fields = {}, std::string_view summary = {}) {
        if (enabled(Level::kDebug)) log(Level::kDebug, event, fields, summary);
    }
    // Same as debug (trace currently equals debug).
    void trace(std::string_view event, Fields fields = {}, std::string_view summary = {}) {
        debug(event, fields, summary);
    }

private:
    // Called with mu_ held; they append to line_.
    void format_text(Level level, std::string_view event, Fields fields, std::string_view summary);
    void format_json(Level level, std::string_view event, Fields fields, std::string_view summary);
    void append_timestamp();

    Sink* const sink_;
    std::atomic<Level> level_;
    std::atomic<Format> format_;
    const Style style_;
    const WallClock wall_clock_;
    std::mutex mu_;     // guards line_ and the sink write
    std::string line_;  // reused for every line: no allocation once it has grown
};

// The process logger on stderr (fd 2), style detected from the environment. Level and format
// start at info/text; the role runtime sets them from the config once it is loaded.
Logger& process_logger();
void configure_process_logger(Level level, Format format);

// At most one line per interval per scope, then one recovery line on the first success after a
// logged saturation, so a flood of refusals costs one line per interval. Keep one RateLimiter
// per scope. Not thread-safe: a scope shared by several threads uses SharedRateLimiter.
//
//   if (auto d = limiter.on_saturated(); d.log) log.warn("server admission saturated", {...});
//   if (limiter.on_success()) log.info("server admission recovered", {{"scope",
//   "visitor-global"}});
class RateLimiter {
public:
    using TimePoint = std::chrono::steady_clock::time_point;
    using Clock = TimePoint (*)() noexcept;
    static TimePoint steady_now() noexcept { return std::chrono::steady_clock::now(); }

    explicit RateLimiter(std::chrono::nanoseconds interval = std::chrono::seconds(10),
                         Clock clock = steady_now) noexcept
        : interval_(interval), clock_(clock) {}

    struct Decision {
        bool log;             // write the line now
        std::uint64_t count;  // events since the previous written line, this one included
    };

    Decision on_saturated() noexcept { return on_saturated(clock_()); }
    Decision on_saturated(TimePoint now) noexcept;
    // True exactly once after a saturation line was written: write the recovery line then.
    bool on_success() noexcept;

private:
    std::chrono::nanoseconds interval_;
    Clock clock_;
    TimePoint last_logged_{};
    bool ever_logged_ = false;
    bool recovery_pending_ = false;
    std::uint64_t pending_count_ = 0;
};

// A RateLimiter that several threads may call: the same decisions, taken under a mutex.
class SharedRateLimiter {
public:
    using TimePoint = RateLimiter::TimePoint;
    using Clock = RateLimiter::Clock;
    using Decision = RateLimiter::Decision;

    explicit SharedRateLimiter(std::chrono::nanoseconds interval = std::chrono::seconds(10),
                               Clock clock = RateLimiter::steady_now) noexcept
        : limiter_(interval, clock) {}

    Decision on_saturated() noexcept {
        std::lock_guard lock(mu_);
        return limiter_.on_saturated();
    }
    Decision on_saturated(TimePoint now) noexcept {
        std::lock_guard lock(mu_);
        return limiter_.on_saturated(now);
    }
    bool on_success() noexcept {
        std::lock_guard lock(mu_);
        return limiter_.on_success();
    }

private:
    std::mutex mu_;
    RateLimiter limiter_;
};

}  // namespace runewarp::obs
