// Unit tests for obs: log line formats, level filtering, rate limiting, duration formatting.
#include <criterion/criterion.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <latch>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "obs/http_request.hh"
#include "obs/http_server.hh"
#include "obs/log.hh"
#include "obs/metrics.hh"

using namespace runewarp::obs;
using namespace std::chrono_literals;

namespace {

// 2026-05-01T10:00:00.123456Z
timespec fixed_clock() noexcept {
    return timespec{1777629600, 123456789};
}

LoggerOptions opts(Level level, Format format = Format::kText, Style style = Style::kPlain) {
    return LoggerOptions{level, format, style, fixed_clock};
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string::npos) {
            out.push_back(text.substr(start) + "<no newline>");
            break;
        }
        out.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
        out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
}

// Strict parser for a flat JSON object whose values are all strings (what the logger emits).
// Returns nullopt on any syntax error, raw control byte or duplicate key.
class FlatJson {
public:
    explicit FlatJson(std::string_view s) : s_(s) {}

    std::optional<std::vector<std::pair<std::string, std::string>>> parse() {
        std::vector<std::pair<std::string, std::string>> members;
        if (!eat('{')) return std::nullopt;
        if (eat('}')) return at_end() ? std::optional(members) : std::nullopt;
        for (;;) {
            auto key = str();
            if (!key || !eat(':')) return std::nullopt;
            auto value = str();
            if (!value) return std::nullopt;
            for (auto& [k, v] : members) {
                if (k == *key) return std::nullopt;
            }
            members.emplace_back(*key, *value);
            if (eat(',')) continue;
            if (eat('}')) break;
            return std::nullopt;
        }
        return at_end() ? std::optional(members) : std::nullopt;
    }

private:
    bool at_end() const { return i_ == s_.size(); }
    bool eat(char c) {
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    std::optional<std::string> str() {
        if (!eat('"')) return std::nullopt;
        std::string out;
        while (i_ < s_.size()) {
            char c = s_[i_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (i_ >= s_.size()) return std::nullopt;
            char e = s_[i_++];
            switch (e) {
                case '"':
                    out.push_back('"');
                    break;
                case '\\':
                    out.push_back('\\');
                    break;
                case '/':
                    out.push_back('/');
                    break;
                case 'n':
                    out.push_back('\n');
                    break;
                case 'r':
                    out.push_back('\r');
                    break;
                case 't':
                    out.push_back('\t');
                    break;
                case 'b':
                    out.push_back('\b');
                    break;
                case 'f':
                    out.push_back('\f');
                    break;
                case 'u': {
                    if (i_ + 4 > s_.size()) return std::nullopt;
                    unsigned cp = 0;
                    for (int k = 0; k < 4; ++k) {
                        char h = s_[i_++];
                        cp <<= 4;
                        if (h >= '0' && h <= '9') {
                            cp |= static_cast<unsigned>(h - '0');
                        } else if (h >= 'a' && h <= 'f') {
                            cp |= static_cast<unsigned>(h - 'a' + 10);
                        } else if (h >= 'A' && h <= 'F') {
                            cp |= static_cast<unsigned>(h - 'A' + 10);
                        } else {
                            return std::nullopt;
                        }
                    }
                    append_utf8(out, cp);
                    break;
                }
                default:
                    return std::nullopt;
            }
        }
        return std::nullopt;
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

RateLimiter::TimePoint g_fake_now{};
RateLimiter::TimePoint fake_now() noexcept {
    return g_fake_now;
}

// Collects lines like StringSink and counts write() calls that overlapped another one.
class OverlapSink final : public Sink {
public:
    void write(std::string_view line) noexcept override {
        if (inside_.fetch_add(1) != 0) overlaps.fetch_add(1);
        text.append(line);
        inside_.fetch_sub(1);
    }
    std::string text;
    std::atomic<int> overlaps{0};

private:
    std::atomic<int> inside_{0};
};

}  // namespace

Test(obs, text_line_has_timestamp_aligned_level_fields_and_summary) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo));
    log.info("server tunnel listener ready", {{"bind-address", "0.0.0.0:443"}});
    log.warn("server tunnel connection dropped", {{"client-identity", "ab12"}, {"count", 3}},
             "idle timeout");
    log.error("server tunnel listener failed", {}, "address in use");
    log.info("client ready");
    auto lines = lines_of(sink.text);
    cr_assert_eq(lines.size(), 4u);
    cr_assert_str_eq(lines[0].c_str(),
                     "2026-05-01T10:00:00.123456Z  INFO server tunnel listener ready: "
                     "bind-address=0.0.0.0:443");
    cr_assert_str_eq(lines[1].c_str(),
                     "2026-05-01T10:00:00.123456Z  WARN server tunnel connection dropped: "
                     "client-identity=ab12 count=3: idle timeout");
    cr_assert_str_eq(lines[2].c_str(),
                     "2026-05-01T10:00:00.123456Z ERROR server tunnel listener failed: "
                     "address in use");
    cr_assert_str_eq(lines[3].c_str(), "2026-05-01T10:00:00.123456Z  INFO client ready");
}

Test(obs, real_clock_timestamp_has_microsecond_utc_shape) {
    StringSink sink;
    Logger log(sink, LoggerOptions{Level::kDebug, Format::kText, Style::kPlain, realtime_now});
    log.debug("server route forwarded", {{"public-hostname", "app.example.com"}});
    std::regex shape(
        R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z DEBUG server route forwarded: )"
        R"(public-hostname=app\.example\.com\n$)");
    cr_assert(std::regex_match(sink.text, shape), "got: %s", sink.text.c_str());
}

Test(obs, values_with_spaces_or_newlines_stay_one_token) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo));
    log.info("event", {{"reason", "two words\nand more"}}, "multi\nline summary");
    cr_assert_str_eq(sink.text.c_str(),
                     "2026-05-01T10:00:00.123456Z  INFO event: reason=two_words_and_more: "
                     "multi line summary\n");
}

Test(obs, typed_field_values) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo));
    std::string owned = "owned";
    log.info("e", {{"s", owned},
                   {"neg", -5},
                   {"big", std::uint64_t{18446744073709551615u}},
                   {"delay", std::chrono::milliseconds(1500)},
                   {"whole", std::chrono::milliseconds(20000)}});
    cr_assert_str_eq(sink.text.c_str(),
                     "2026-05-01T10:00:00.123456Z  INFO e: s=owned neg=-5 "
                     "big=18446744073709551615 delay=1500ms whole=20s\n");
}

Test(obs, journald_mode_drops_timestamp_and_prefixes_priority) {
    StringSink sink;
    Logger log(sink, opts(Level::kDebug, Format::kText, Style::kJournal));
    log.error("a");
    log.warn("b", {{"k", "v"}});
    log.info("c");
    log.debug("d");
    log.trace("e");
    auto lines = lines_of(sink.text);
    cr_assert_eq(lines.size(), 5u);
    cr_assert_str_eq(lines[0].c_str(), "<3>ERROR a");
    cr_assert_str_eq(lines[1].c_str(), "<4>WARN b: k=v");
    cr_assert_str_eq(lines[2].c_str(), "<6>INFO c");
    cr_assert_str_eq(lines[3].c_str(), "<7>DEBUG d");
    cr_assert_str_eq(lines[4].c_str(), "<7>DEBUG e");
}

Test(obs, color_mode_wraps_only_the_level) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo, Format::kText, Style::kColor));
    log.warn("w");
    cr_assert_str_eq(sink.text.c_str(), "2026-05-01T10:00:00.123456Z \x1b[33m WARN\x1b[0m w\n");
}

Test(obs, json_lines_parse_and_escape) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo, Format::kJson));
    std::string nasty = "quote\" back\\slash\nnl\ttab\x01 ctl \xc3\xa9 bad\xff end";
    log.warn("server route unavailable", {{"public-hostname", "app.example.com"}, {"k", nasty}},
             nasty);
    log.info("client ready");
    auto lines = lines_of(sink.text);
    cr_assert_eq(lines.size(), 2u);

    auto first = FlatJson(lines[0]).parse();
    cr_assert(first.has_value(), "not JSON: %s", lines[0].c_str());
    std::map<std::string, std::string> m(first->begin(), first->end());
    cr_assert_eq(first->size(), 6u);
    cr_assert_str_eq((*first)[0].first.c_str(), "ts");
    cr_assert_str_eq(m["ts"].c_str(), "2026-05-01T10:00:00.123456Z");
    cr_assert_str_eq(m["level"].c_str(), "warn");
    cr_assert_str_eq(m["event"].c_str(), "server route unavailable");
    cr_assert_str_eq(m["public-hostname"].c_str(), "app.example.com");
    std::string expected = "quote\" back\\slash\nnl\ttab\x01 ctl \xc3\xa9 bad\xef\xbf\xbd end";
    cr_assert_str_eq(m["k"].c_str(), expected.c_str());
    cr_assert_str_eq(m["message"].c_str(), expected.c_str());

    auto second = FlatJson(lines[1]).parse();
    cr_assert(second.has_value(), "not JSON: %s", lines[1].c_str());
    cr_assert_eq(second->size(), 3u, "no message member without a summary");
}

Test(obs, json_in_journal_mode_keeps_priority_prefix) {
    StringSink sink;
    Logger log(sink, opts(Level::kInfo, Format::kJson, Style::kJournal));
    log.error("x");
    cr_assert_str_eq(
        sink.text.c_str(),
        "<3>{\"ts\":\"2026-05-01T10:00:00.123456Z\",\"level\":\"error\",\"event\":\"x\"}\n");
}

Test(obs, level_filtering) {
    StringSink sink;
    Logger log(sink, opts(Level::kWarn));
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    cr_assert_eq(lines_of(sink.text).size(), 2u);
    cr_assert(!log.enabled(Level::kInfo));
    cr_assert(log.enabled(Level::kError));

    sink.text.clear();
    log.set_level(Level::kOff);
    log.error("e");
    cr_assert(sink.text.empty(), "off prints nothing");
    cr_assert(!log.enabled(Level::kOff));

    log.set_level(Level::kDebug);
    log.trace("t");
    log.debug("d");
    cr_assert_eq(lines_of(sink.text).size(), 2u);
}

Test(obs, level_and_format_names) {
    cr_assert(parse_level("trace").ok());
    cr_assert(*parse_level("trace") == Level::kDebug);
    cr_assert(*parse_level("off") == Level::kOff);
    cr_assert(*parse_level("warn") == Level::kWarn);
    cr_assert(!parse_level("WARN").ok());
    cr_assert(!parse_level("verbose").ok());
    cr_assert(*parse_format("json") == Format::kJson);
    cr_assert(*parse_format("text") == Format::kText);
    cr_assert(!parse_format("logfmt").ok());
}

Test(obs, duration_formatting) {
    cr_assert(format_duration(0ms) == "0s", "format_duration(0ms)");
    cr_assert(format_duration(10000ms) == "10s", "format_duration(10000ms)");
    cr_assert(format_duration(60s) == "60s", "format_duration(60s)");
    cr_assert(format_duration(100ms) == "100ms", "format_duration(100ms)");
    cr_assert(format_duration(1500ms) == "1500ms", "format_duration(1500ms)");
    cr_assert(format_duration(1001ms) == "1001ms", "format_duration(1001ms)");
}

Test(obs, rate_limiter_one_line_per_interval_then_recovery) {
    g_fake_now = RateLimiter::TimePoint{} + 1000s;
    RateLimiter rl(10s, fake_now);

    cr_assert(!rl.on_success(), "no recovery line before any saturation");
    auto d = rl.on_saturated();
    cr_assert(d.log);
    cr_assert_eq(d.count, 1u);
    for (int i = 0; i < 5; ++i) {
        g_fake_now += 1s;
        cr_assert(!rl.on_saturated().log, "suppressed within 10 s");
    }
    g_fake_now += 4s;  // 9 s after the first line
    cr_assert(!rl.on_saturated().log);
    g_fake_now += 1s;  // exactly 10 s
    d = rl.on_saturated();
    cr_assert(d.log);
    cr_assert_eq(d.count, 7u, "six suppressed events plus this one");

    cr_assert(rl.on_success(), "first success after a logged saturation");
    cr_assert(!rl.on_success(), "only one recovery line");

    // A new saturation inside the window is suppressed and arms no recovery line.
    g_fake_now += 2s;
    cr_assert(!rl.on_saturated().log);
    cr_assert(!rl.on_success());

    g_fake_now += 10s;
    cr_assert(rl.on_saturated().log);
    cr_assert(rl.on_success());
}

Test(obs, rate_limiter_explicit_time) {
    RateLimiter rl(10s);
    auto t0 = RateLimiter::TimePoint{} + 5s;
    cr_assert(rl.on_saturated(t0).log);
    cr_assert(!rl.on_saturated(t0 + 9999ms).log);
    cr_assert(rl.on_saturated(t0 + 10s).log);
}

Test(obs, shared_rate_limiter_counts_every_event_from_several_threads) {
    constexpr int kThreads = 4;
    constexpr int kEvents = 20000;
    g_fake_now = RateLimiter::TimePoint{} + 1000s;  // frozen while the threads run
    SharedRateLimiter rl(10s, fake_now);
    std::atomic<int> logged{0};
    std::latch start(kThreads);  // all threads running before the first event
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            start.arrive_and_wait();
            for (int i = 0; i < kEvents; ++i) {
                if (rl.on_saturated().log) logged.fetch_add(1);
            }
        });
    }
    for (auto& th : threads) th.join();
    cr_assert_eq(logged.load(), 1, "one line inside the interval, got %d", logged.load());

    g_fake_now += 10s;
    auto d = rl.on_saturated();
    cr_assert(d.log);
    cr_assert_eq(d.count, std::uint64_t{kThreads} * kEvents, "every suppressed event counted: %llu",
                 static_cast<unsigned long long>(d.count));

    std::atomic<int> recovered{0};
    std::latch start_again(kThreads);
    threads.clear();
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            start_again.arrive_and_wait();
            for (int i = 0; i < kEvents; ++i) {
                if (rl.on_success()) recovered.fetch_add(1);
            }
        });
    }
    for (auto& th : threads) th.join();
    cr_assert_eq(recovered.load(), 1, "exactly one recovery line, got %d", recovered.load());

    // With no interval every event is written, and the counts add up to the events.
    SharedRateLimiter every(0s, fake_now);
    std::atomic<std::uint64_t> written{0}, counted{0};
    std::latch start_every(kThreads);
    threads.clear();
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            start_every.arrive_and_wait();
            for (int i = 0; i < kEvents; ++i) {
                auto e = every.on_saturated();
                if (e.log) written.fetch_add(1);
                counted.fetch_add(e.count);
            }
        });
    }
    for (auto& th : threads) th.join();
    cr_assert_eq(written.load(), std::uint64_t{kThreads} * kEvents);
    cr_assert_eq(counted.load(), std::uint64_t{kThreads} * kEvents, "counts add up to %llu",
                 static_cast<unsigned long long>(counted.load()));
}

Test(obs, logger_lines_stay_whole_from_several_threads) {
    constexpr int kThreads = 4;
    constexpr int kLines = 20000;
    OverlapSink sink;
    Logger log(sink, opts(Level::kInfo));
    // Level and format change while the lines are written; info stays enabled throughout.
    std::atomic<bool> done{false};
    std::atomic<int> bad_options{0};
    std::latch start(kThreads + 1);
    std::thread flipper([&] {
        start.arrive_and_wait();
        for (unsigned i = 0; !done.load(); ++i) {
            log.set_level(i % 2 == 0 ? Level::kDebug : Level::kInfo);
            log.set_format(i % 3 == 0 ? Format::kJson : Format::kText);
            LoggerOptions o = log.options();
            if ((o.level != Level::kInfo && o.level != Level::kDebug) ||
                o.wall_clock != fixed_clock)
                bad_options.fetch_add(1);
        }
    });
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&log, &start, t] {
            start.arrive_and_wait();
            for (int i = 0; i < kLines; ++i) {
                log.info("test line", {{"thread", t}, {"seq", i}}, "a summary of some length");
            }
        });
    }
    for (auto& th : threads) th.join();
    done.store(true);
    flipper.join();

    cr_assert_eq(sink.overlaps.load(), 0, "%d sink writes overlapped", sink.overlaps.load());
    cr_assert_eq(bad_options.load(), 0);
    auto lines = lines_of(sink.text);
    cr_assert_eq(lines.size(), std::size_t{kThreads} * kLines, "%zu lines", lines.size());
    std::vector<int> next(kThreads, 0);
    for (const std::string& line : lines) {
        int t = -1, i = -1;
        std::string expected;
        char buf[256];
        if (line.starts_with("{")) {
            std::sscanf(line.c_str(),
                        "{\"ts\":\"%*[^\"]\",\"level\":\"info\",\"event\":\"test line\","
                        "\"thread\":\"%d\",\"seq\":\"%d\"",
                        &t, &i);
            std::snprintf(buf, sizeof buf,
                          "{\"ts\":\"2026-05-01T10:00:00.123456Z\",\"level\":\"info\","
                          "\"event\":\"test line\",\"thread\":\"%d\",\"seq\":\"%d\","
                          "\"message\":\"a summary of some length\"}",
                          t, i);
        } else {
            std::sscanf(line.c_str(), "%*s INFO test line: thread=%d seq=%d", &t, &i);
            std::snprintf(buf, sizeof buf,
                          "2026-05-01T10:00:00.123456Z  INFO test line: thread=%d seq=%d: "
                          "a summary of some length",
                          t, i);
        }
        expected = buf;
        cr_assert_str_eq(line.c_str(), expected.c_str());
        cr_assert(t >= 0 && t < kThreads, "%s", line.c_str());
        cr_assert_eq(i, next[t], "thread %d: line %d after %d", t, i, next[t] - 1);
        ++next[t];
    }
    for (int t = 0; t < kThreads; ++t) cr_assert_eq(next[t], kLines);
}

Test(obs, fd_sink_writes_whole_lines) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    FdSink sink(fds[1]);
    Logger log(sink, opts(Level::kInfo));
    log.info("client ready", {{"server-address", "tunnel.example.com:443"}});
    close(fds[1]);
    std::string got;
    char buf[256];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    close(fds[0]);
    cr_assert_str_eq(got.c_str(),
                     "2026-05-01T10:00:00.123456Z  INFO client ready: "
                     "server-address=tunnel.example.com:443\n");
}

Test(obs, detect_style_matches_journal_stream) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    struct stat st {};
    cr_assert_eq(fstat(fds[1], &st), 0);
    std::string js = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    cr_assert_eq(detect_style(fds[1], js.c_str()), Style::kJournal);
    std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
    cr_assert_eq(detect_style(fds[1], other.c_str()), Style::kPlain, "pipe is not a TTY");
    cr_assert_eq(detect_style(fds[1], nullptr), Style::kPlain);
    cr_assert_eq(detect_style(fds[1], "garbage"), Style::kPlain);
    close(fds[0]);
    close(fds[1]);
}

// ---- metrics: exposition writer ------------------------------------------------------------

Test(obs_metrics, exposition_families_samples_and_escaping) {
    Exposition x;
    x.family("runewarp_x_total", "Help with \\ and\nnewline.", "counter");
    x.sample("runewarp_x_total", {{"route", "a\"b\\c\nd"}}, uint64_t{42});
    x.sample("runewarp_x_total", {}, uint64_t{7});
    x.family("runewarp_g", "A gauge.", "gauge");
    x.sample("runewarp_g", {{"a", "1"}, {"b", "2"}}, int64_t{-3});
    x.sample("runewarp_g", {}, 0.25);
    cr_assert_str_eq(x.text().c_str(),
                     "# HELP runewarp_x_total Help with \\\\ and\\nnewline.\n"
                     "# TYPE runewarp_x_total counter\n"
                     "runewarp_x_total{route=\"a\\\"b\\\\c\\nd\"} 42\n"
                     "runewarp_x_total 7\n"
                     "# HELP runewarp_g A gauge.\n"
                     "# TYPE runewarp_g gauge\n"
                     "runewarp_g{a=\"1\",b=\"2\"} -3\n"
                     "runewarp_g 0.25\n");
}

Test(obs_metrics, sample_values) {
    // The formatted string is bound to a name: Criterion's string assertions keep the pointer
    // past the end of the full expression that made it.
    const auto expect = [](double v, const char* want) {
        const std::string got = format_sample_value(v);
        cr_assert_str_eq(got.c_str(), want);
    };
    expect(3.0, "3");
    expect(0.001, "0.001");
    expect(1.0 / 0.0, "+Inf");
    expect(-1.0 / 0.0, "-Inf");
    expect(0.0 / 0.0, "NaN");
}

Test(obs_metrics, histogram_buckets_are_cumulative) {
    static constexpr double kBounds[] = {0.01, 0.1, 1.0};
    Histogram h(kBounds);
    h.observe_ns(5'000'000);      // 5 ms -> le 0.01
    h.observe_ns(10'000'000);     // exactly 10 ms -> le 0.01 (bounds are inclusive)
    h.observe_ns(50'000'000);     // 50 ms -> le 0.1
    h.observe_ns(3'000'000'000);  // 3 s -> +Inf
    h.observe_ns(-1);             // clock skew counts as zero
    Exposition x;
    x.histogram("d_seconds", {{"k", "v"}}, h);
    cr_assert_str_eq(x.text().c_str(),
                     "d_seconds_bucket{k=\"v\",le=\"0.01\"} 3\n"
                     "d_seconds_bucket{k=\"v\",le=\"0.1\"} 4\n"
                     "d_seconds_bucket{k=\"v\",le=\"1\"} 4\n"
                     "d_seconds_bucket{k=\"v\",le=\"+Inf\"} 5\n"
                     "d_seconds_sum{k=\"v\"} 3.065\n"
                     "d_seconds_count{k=\"v\"} 5\n");
}

Test(obs_metrics, label_slots_survive_growth) {
    LabelSlots<Counter> slots;
    size_t a = slots.index("apps");
    Counter& ca = slots.at(a);
    ca.add(5);
    for (int i = 0; i < 1000; ++i) slots.index("label-" + std::to_string(i));
    cr_assert_eq(slots.index("apps"), a);
    cr_assert_eq(&slots.at(a), &ca);  // references held by sessions stay valid
    cr_assert_eq(slots.at(slots.find("apps")).value(), 5u);
    cr_assert_eq(slots.find("never-configured"), SIZE_MAX);
    cr_assert_str_eq(slots.name(a).c_str(), "apps");
}

// Every worker bumps the same counters: increments made at the same moment on two threads must
// all count (a relaxed load and store would lose some).
Test(obs_metrics, counters_bumped_by_several_threads_lose_nothing) {
    Counter c;
    Gauge g;
    Histogram h(setup_buckets());
    constexpr int kPerThread = 1'000'000;
    std::latch go(2);
    auto bump = [&] {
        go.arrive_and_wait();
        for (int i = 0; i < kPerThread; ++i) {
            c.add();
            g.add(1);
            g.add(-1);
            g.add(1);
            if (i % 16 == 0) h.observe_ns(1000);
        }
    };
    std::thread a(bump), b(bump);
    a.join();
    b.join();
    cr_assert_eq(c.value(), 2u * kPerThread);
    cr_assert_eq(g.value(), int64_t{2} * kPerThread);
    cr_assert_eq(h.count(), 2u * (kPerThread / 16));
}

Test(obs_metrics, process_figures) {
    cr_assert_gt(process_open_fds(), 2);
    cr_assert_gt(process_resident_memory_bytes(), 1 << 20);
}

// ---- metrics: HTTP request head parser ---------------------------------------------------

Test(obs_http, parses_a_scrape) {
    HttpRequest r;
    std::string head =
        "GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: */*\r\n\r\nbody";
    cr_assert_eq(parse_http_request(head, r), HttpParse::kOk);
    cr_assert(r.method == "GET");
    cr_assert(r.target == "/metrics?x=1");
    cr_assert(r.path == "/metrics");
    cr_assert(r.version == "HTTP/1.1");
    cr_assert_eq(r.head_length, head.size() - 4);
    cr_assert_eq(parse_http_request("HEAD / HTTP/1.0\n\n", r), HttpParse::kOk);
    cr_assert(r.method == "HEAD");
}

Test(obs_http, keep_alive_follows_version_connection_and_body) {
    struct Case {
        const char* head;
        bool keep_alive;
    };
    for (const Case& c : std::initializer_list<Case>{
             {"GET / HTTP/1.1\r\n\r\n", true},
             {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
             {"GET / HTTP/1.1\r\nconnection:  Upgrade , CLOSE\r\n\r\n", false},
             {"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true},
             {"GET / HTTP/1.0\r\n\r\n", false},
             {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
             {"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", true},
             {"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", false},
             {"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
         }) {
        HttpRequest r;
        cr_assert_eq(parse_http_request(c.head, r), HttpParse::kOk, "%s", c.head);
        cr_assert_eq(r.keep_alive, c.keep_alive, "%s", c.head);
    }
    // Pipelined: the head ends where the next request starts.
    const std::string two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    HttpRequest r;
    cr_assert_eq(parse_http_request(two, r), HttpParse::kOk);
    cr_assert(r.path == "/a");
    cr_assert_eq(parse_http_request(std::string_view(two).substr(r.head_length), r),
                 HttpParse::kOk);
    cr_assert(r.path == "/b");
}

Test(obs_http, response_says_close_only_when_closing) {
    HttpResponse ok{200, {}, "x\n"};
    const std::string closing = http_response_text(ok, false);
    const std::string kept = http_response_text(ok, false, true);
    cr_assert_neq(closing.find("\r\nConnection: close\r\n"), std::string::npos);
    cr_assert_eq(kept.find("Connection:"), std::string::npos);
    cr_assert(kept.ends_with("Content-Length: 2\r\nCache-Control: no-store\r\n"
                             "X-Content-Type-Options: nosniff\r\n\r\nx\n"),
              "%s", kept.c_str());
}

Test(obs_http, incomplete_bad_and_too_large) {
    HttpRequest r;
    cr_assert_eq(parse_http_request("", r), HttpParse::kIncomplete);
    cr_assert_eq(parse_http_request("GET /metr", r), HttpParse::kIncomplete);
    cr_assert_eq(parse_http_request("GET /metrics HTTP/1.1\r\nHost: a\r\n", r),
                 HttpParse::kIncomplete);
    for (const char* bad :
         {"GET\r\n\r\n", "GET /metrics\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n",
          "GET /a b HTTP/1.1\r\n\r\n", "GET /metrics HTTP/2.0\r\n\r\n",
          "G(T /metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n",
          "GET /metrics HTTP/1.1\r\nX : y\r\n\r\n", "GET /metrics HTTP/1.1\r\n folded\r\n\r\n",
          "\x16\x03\x01"}) {
        cr_assert_eq(parse_http_request(bad, r), HttpParse::kBad, "%s", bad);
    }
    std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxRequestHead, 'a');
    cr_assert_eq(parse_http_request(big, r), HttpParse::kTooLarge);
    std::string ok = "GET /metrics HTTP/1.1\r\nX: " + std::string(100, 'a') + "\r\n\r\n";
    cr_assert_eq(parse_http_request(ok, r, 64), HttpParse::kTooLarge);
    cr_assert_eq(parse_http_request(ok, r), HttpParse::kOk);
}
