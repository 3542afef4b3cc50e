// UpstreamResolver: direct-route upstream names resolved on the loop, again when the TTL runs out.
#include "server/upstream_resolver.hh"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "core/clock.hh"

namespace runewarp::server {

std::string format_addresses(const std::vector<net::ResolvedAddress>& addrs) {
    std::string out;
    for (const net::ResolvedAddress& a : addrs) {
        if (!out.empty()) out += ',';
        out += net::format_address(a);
    }
    return out;
}

namespace {

bool same_set(const std::vector<net::ResolvedAddress>& a,
              const std::vector<net::ResolvedAddress>& b) noexcept {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (a[i].len != b[i].len || std::memcmp(&a[i].addr, &b[i].addr, a[i].len) != 0)
            return false;
    }
    return true;
}

}  // namespace

UpstreamResolver::UpstreamResolver(core::Worker& w, net::Resolver& resolver, obs::Logger& log,
                                   std::shared_ptr<const RouteTable> table,
                                   std::shared_ptr<const RouteTable> previous) noexcept
    : core::Session(w),
      resolver_(resolver),
      log_(log),
      table_(std::move(table)),
      previous_(std::move(previous)) {}

UpstreamResolver::~UpstreamResolver() = default;

bool UpstreamResolver::start() noexcept {
    if (!open()) return false;
    for (const auto& r : table_->routes()) {
        if (r->upstream.host_is_literal) continue;
        entries_.push_back(Entry{r.get(), 0, 0, false});
    }
    initial_left_ = entries_.size();
    for (Entry& e : entries_) lookup(e);
    return true;
}

void UpstreamResolver::lookup(Entry& e) noexcept {
    e.lookup =
        resolver_.resolve(e.route->upstream.host, e.route->upstream.port, SOCK_STREAM, *this);
}

void UpstreamResolver::on_resolved(uint64_t id, net::Resolution& r) noexcept {
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.lookup == id; });
    if (it == entries_.end() || aborting()) return;
    Entry& e = *it;
    e.lookup = 0;
    int64_t now = core::now_ns();
    bool first = !e.answered;
    e.answered = true;
    if (first) --initial_left_;
    const DirectRoute& route = *e.route;
    if (!r.error.empty()) {
        e.due_ns = now + kRetryNs;
        AddressSet kept = first ? previous_addresses(route) : nullptr;
        if (kept != nullptr) {
            route.set_addresses(std::move(kept));
            log_.warn("server route upstream resolution failed",
                      {{"route", route.label}, {"upstream-address", route.upstream_text}},
                      r.error + "; the previous addresses stay in use");
        } else if (first && initial_error_.empty()) {
            initial_error_ = "route \"" + route.label + "\": upstream-address " +
                             route.upstream_text + ": cannot resolve " + route.upstream.host +
                             ": " + r.error;
        } else if (!first && failure_limit_.on_saturated().log) {
            log_.warn("server route upstream resolution failed",
                      {{"route", route.label}, {"upstream-address", route.upstream_text}},
                      r.error + "; the previous addresses stay in use");
        }
    } else {
        net::interleave_families(r.addrs);
        int64_t ttl = std::clamp(r.ttl_ns, kMinTtlNs, kMaxTtlNs);
        e.due_ns = now + ttl;
        if (failure_limit_.on_success())
            log_.info("server route upstream resolution recovered", {{"route", route.label}});
        AddressSet current = route.addresses();
        if (current == nullptr || !same_set(*current, r.addrs)) {
            std::string text = format_addresses(r.addrs);
            if (current != nullptr) {
                log_.info("server route upstream addresses changed",
                          {{"route", route.label},
                           {"upstream-address", route.upstream_text},
                           {"addresses", text}});
            } else {
                log_.debug("server route upstream resolved",
                           {{"route", route.label},
                            {"upstream-address", route.upstream_text},
                            {"addresses", text}});
            }
            route.set_addresses(
                std::make_shared<const std::vector<net::ResolvedAddress>>(std::move(r.addrs)));
        }
    }
    arm();
    if (first && initial_left_ == 0) {
        // Whatever the hook does (a reload swapping tables), the first round is over; the
        // previous table is no longer needed.
        previous_.reset();
        if (auto f = std::move(initial_done_fn_)) f();
    }
}

AddressSet UpstreamResolver::previous_addresses(const DirectRoute& route) const noexcept {
    if (previous_ == nullptr) return nullptr;
    for (const auto& r : previous_->routes()) {
        if (r->upstream.host != route.upstream.host || r->upstream.port != route.upstream.port)
            continue;
        if (AddressSet set = r->addresses(); set != nullptr) return set;
    }
    return nullptr;
}

void UpstreamResolver::arm() noexcept {
    int64_t next = INT64_MAX;
    for (const Entry& e : entries_) {
        if (e.lookup == 0 && e.answered) next = std::min(next, e.due_ns);
    }
    if (next == INT64_MAX || aborting()) return;
    if (timer_armed_ && worker().rearm_timer(timer_, next)) return;
    timer_ = arm_timer(kOpRefresh, next);
    timer_armed_ = true;
}

void UpstreamResolver::on_event(const core::Completion& c) noexcept {
    if (!(c.flags & core::kCompletionTimer) || c.token.op != kOpRefresh || aborting()) return;
    timer_armed_ = false;
    int64_t now = core::now_ns();
    for (Entry& e : entries_) {
        if (e.lookup == 0 && e.answered && e.due_ns <= now) lookup(e);
    }
    arm();
}

void UpstreamResolver::stop() noexcept {
    for (Entry& e : entries_) {
        if (e.lookup != 0) resolver_.cancel(e.lookup);
        e.lookup = 0;
    }
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    abort(0);
}

}  // namespace runewarp::server
