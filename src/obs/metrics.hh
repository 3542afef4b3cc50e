// Metrics: counters, gauges and histograms that the event loop bumps without a lock or an
// allocation, operator-defined label slots, and the Prometheus text exposition (0.0.4) writer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace runewarp::obs {

// A count bumped by any loop thread and read by any: a relaxed atomic add (every worker bumps the
// same counters, so a plain load and store would lose increments made at the same moment). Bumped
// per connection or stream, never per packet.
class Counter {
public:
    void add(uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
    uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> v_{0};
};

// A level moved by any loop thread; same rules as Counter.
class Gauge {
public:
    void set(int64_t v) noexcept { v_.store(v, std::memory_order_relaxed); }
    void add(int64_t n) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
    int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<int64_t> v_{0};
};

// Durations in fixed buckets (upper bounds in seconds, ascending, at most kMaxBuckets).
class Histogram {
public:
    static constexpr size_t kMaxBuckets = 16;
    explicit Histogram(std::span<const double> bounds_seconds) noexcept;

    void observe_ns(int64_t ns) noexcept {
        if (ns < 0) ns = 0;
        size_t i = 0;
        while (i < n_ && ns > bounds_ns_[i]) ++i;
        buckets_[i].add();
        sum_ns_.add(static_cast<uint64_t>(ns));
        count_.add();
    }

    size_t bucket_count() const noexcept { return n_; }
    double bound(size_t i) const noexcept { return bounds_[i]; }
    // Observations in bucket i alone (not cumulative); i == bucket_count() is the +Inf rest.
    uint64_t bucket(size_t i) const noexcept { return buckets_[i].value(); }
    uint64_t count() const noexcept { return count_.value(); }
    double sum_seconds() const noexcept { return static_cast<double>(sum_ns_.value()) / 1e9; }

private:
    size_t n_ = 0;
    double bounds_[kMaxBuckets] = {};
    int64_t bounds_ns_[kMaxBuckets] = {};
    Counter buckets_[kMaxBuckets + 1];
    Counter sum_ns_;
    Counter count_;
};

// Bucket bounds for connection setup (intake, backend connect): 1 ms to 5 s.
std::span<const double> setup_buckets() noexcept;
// Bucket bounds for relay lifetimes: 10 ms to 1 h.
std::span<const double> relay_buckets() noexcept;

// Slots of one labelled family, one per operator label (route, Tunnel, Service, Server address)
// or fixed enum value. A slot is added when a configuration names its label and is never
// removed, so counts survive reloads; the hot path holds the slot index or reference it got at
// setup. Slots never move (deque), so references stay valid while more are added.
template <typename T>
class LabelSlots {
public:
    // The slot of `label`, added when new (config time only: it may allocate).
    size_t index(std::string_view label) {
        auto it = by_name_.find(label);
        if (it != by_name_.end()) return it->second;
        names_.emplace_back(label);
        slots_.emplace_back();
        by_name_.emplace(std::string_view(names_.back()), names_.size() - 1);
        return names_.size() - 1;
    }
    // The slot of a known label, or SIZE_MAX (no allocation).
    size_t find(std::string_view label) const noexcept {
        auto it = by_name_.find(label);
        return it == by_name_.end() ? SIZE_MAX : it->second;
    }
    T& at(size_t i) noexcept { return slots_[i]; }
    const T& at(size_t i) const noexcept { return slots_[i]; }
    const std::string& name(size_t i) const noexcept { return names_[i]; }
    size_t size() const noexcept { return names_.size(); }

private:
    std::deque<std::string> names_;
    std::deque<T> slots_;
    std::unordered_map<std::string_view, size_t> by_name_;
};

// An immutable label -> slot map of one LabelSlots, built where labels are added (config time)
// and then read by any loop thread, which never searches the slots' own growing index.
template <typename T>
class LabelLookup {
public:
    explicit LabelLookup(LabelSlots<T>& slots) {
        for (size_t i = 0; i < slots.size(); ++i) by_name_.emplace(slots.name(i), &slots.at(i));
    }
    // The slot of `label`, or nullptr when the configuration that built this never named it.
    T* find(std::string_view label) const noexcept {
        auto it = by_name_.find(label);
        return it == by_name_.end() ? nullptr : it->second;
    }

private:
    std::map<std::string, T*, std::less<>> by_name_;
};

// One `name="value"` pair of a sample.
struct Label {
    std::string_view name;
    std::string_view value;
};

// Writes the text exposition format 0.0.4: `# HELP` and `# TYPE` once per family, then its
// samples. Label values and help texts are escaped as the format requires.
class Exposition {
public:
    static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

    // type: "counter", "gauge", "histogram" (or "untyped").
    void family(std::string_view name, std::string_view help, std::string_view type);
    void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
    void sample(std::string_view name, std::initializer_list<Label> labels, int64_t value);
    void sample(std::string_view name, std::initializer_list<Label> labels, double value);
    // `name`_bucket{le=...} (cumulative), `name`_sum and `name`_count.
    void histogram(std::string_view name, std::initializer_list<Label> labels, const Histogram& h);

    const std::string& text() const noexcept { return out_; }
    std::string take() noexcept { return std::move(out_); }

private:
    void head(std::string_view name, std::initializer_list<Label> labels,
              const Label* extra = nullptr);
    std::string out_;
};

// Escaping helpers (exposed for tests).
void append_label_value(std::string& out, std::string_view v);
void append_help_text(std::string& out, std::string_view v);
// A sample value: integers as integers, NaN/±Inf by name, else the shortest round-trip text.
std::string format_sample_value(double v);

// What the process uses, read from /proc/self at scrape time: open descriptors and resident
// memory in bytes (-1 when unreadable).
int64_t process_open_fds() noexcept;
int64_t process_resident_memory_bytes() noexcept;

// Both, read at most once per second per thread and reused in between: listing /proc/self/fd
// costs about a microsecond per descriptor, so with tens of thousands of connections a fast
// scraper would otherwise spend the loop's time counting them.
struct ProcessGauges {
    int64_t open_fds = -1;
    int64_t resident_memory_bytes = -1;
};
ProcessGauges process_gauges() noexcept;

}  // namespace runewarp::obs
