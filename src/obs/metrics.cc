// Metrics primitives and the text exposition writer.
#include "obs/metrics.hh"

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace runewarp::obs {

namespace {

constexpr std::array<double, 12> kSetupBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1.0,  2.5,   5.0};
constexpr std::array<double, 12> kRelayBuckets = {0.01, 0.1,  0.5,   1.0,   5.0,    10.0,
                                                  30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0};

void append_u64(std::string& out, uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

void append_i64(std::string& out, int64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

}  // namespace

Histogram::Histogram(std::span<const double> bounds_seconds) noexcept {
    n_ = bounds_seconds.size() < kMaxBuckets ? bounds_seconds.size() : kMaxBuckets;
    for (size_t i = 0; i < n_; ++i) {
        bounds_[i] = bounds_seconds[i];
        bounds_ns_[i] = static_cast<int64_t>(std::llround(bounds_seconds[i] * 1e9));
    }
}

std::span<const double> setup_buckets() noexcept {
    return kSetupBuckets;
}

std::span<const double> relay_buckets() noexcept {
    return kRelayBuckets;
}

void append_label_value(std::string& out, std::string_view v) {
    for (char c : v) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out.push_back(c);
        }
    }
}

void append_help_text(std::string& out, std::string_view v) {
    for (char c : v) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out.push_back(c);
        }
    }
}

std::string format_sample_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::trunc(v) && std::fabs(v) < 9e15) {
        std::string out;
        append_i64(out, static_cast<int64_t>(v));
        return out;
    }
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

void Exposition::family(std::string_view name, std::string_view help, std::string_view type) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    append_help_text(out_, help);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
}

void Exposition::head(std::string_view name, std::initializer_list<Label> labels,
                      const Label* extra) {
    out_ += name;
    if (labels.size() == 0 && extra == nullptr) {
        out_ += ' ';
        return;
    }
    out_ += '{';
    bool first = true;
    auto put = [&](const Label& l) {
        if (!first) out_ += ',';
        first = false;
        out_ += l.name;
        out_ += "=\"";
        append_label_value(out_, l.value);
        out_ += '"';
    };
    for (const Label& l : labels) put(l);
    if (extra != nullptr) put(*extra);
    out_ += "} ";
}

void Exposition::sample(std::string_view name, std::initializer_list<Label> labels,
                        uint64_t value) {
    head(name, labels);
    append_u64(out_, value);
    out_ += '\n';
}

void Exposition::sample(std::string_view name, std::initializer_list<Label> labels, int64_t value) {
    head(name, labels);
    append_i64(out_, value);
    out_ += '\n';
}

void Exposition::sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    head(name, labels);
    out_ += format_sample_value(value);
    out_ += '\n';
}

void Exposition::histogram(std::string_view name, std::initializer_list<Label> labels,
                           const Histogram& h) {
    std::string bucket(name);
    bucket += "_bucket";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h.bucket_count(); ++i) {
        cumulative += h.bucket(i);
        std::string le = i < h.bucket_count() ? format_sample_value(h.bound(i)) : "+Inf";
        Label extra{"le", le};
        head(bucket, labels, &extra);
        append_u64(out_, cumulative);
        out_ += '\n';
    }
    // The count is the sum of the buckets read above, so a scrape racing an observation on
    // another thread still reads a consistent histogram.
    head(std::string(name) + "_sum", labels);
    out_ += format_sample_value(h.sum_seconds());
    out_ += '\n';
    head(std::string(name) + "_count", labels);
    append_u64(out_, cumulative);
    out_ += '\n';
}

int64_t process_open_fds() noexcept {
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) return -1;
    int64_t n = 0;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    return n - 1;  // the directory stream's own descriptor
}

int64_t process_resident_memory_bytes() noexcept {
    std::FILE* f = std::fopen("/proc/self/statm", "re");
    if (f == nullptr) return -1;
    unsigned long size = 0, resident = 0;
    int got = std::fscanf(f, "%lu %lu", &size, &resident);
    std::fclose(f);
    if (got != 2) return -1;
    return static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE);
}

ProcessGauges process_gauges() noexcept {
    static constexpr int64_t kMaxAgeNs = 1'000'000'000;
    thread_local ProcessGauges cached;
    thread_local int64_t read_at = 0;
    thread_local bool valid = false;
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const int64_t now = int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
    if (!valid || now - read_at >= kMaxAgeNs) {
        cached.open_fds = process_open_fds();
        cached.resident_memory_bytes = process_resident_memory_bytes();
        read_at = now;
        valid = true;
    }
    return cached;
}

}  // namespace runewarp::obs
