// TimerHeap implementation: indexed min-heap with generation-checked handles.
#include "core/timer_heap.hh"

#include <utility>

namespace runewarp::core {

TimerHeap::TimerHeap(uint32_t reserve) {
    entries_.reserve(reserve);
    heap_.reserve(reserve);
    free_.reserve(reserve);
}

bool TimerHeap::less(uint32_t a, uint32_t b) const noexcept {
    const Entry& x = entries_[heap_[a]];
    const Entry& y = entries_[heap_[b]];
    if (x.deadline != y.deadline) return x.deadline < y.deadline;
    return static_cast<int32_t>(x.seq - y.seq) < 0;
}

void TimerHeap::swap_at(uint32_t i, uint32_t j) noexcept {
    std::swap(heap_[i], heap_[j]);
    entries_[heap_[i]].heap_pos = i;
    entries_[heap_[j]].heap_pos = j;
}

void TimerHeap::sift_up(uint32_t i) noexcept {
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!less(i, parent)) break;
        swap_at(i, parent);
        i = parent;
    }
}

void TimerHeap::sift_down(uint32_t i) noexcept {
    const auto n = static_cast<uint32_t>(heap_.size());
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && less(l, m)) m = l;
        if (r < n && less(r, m)) m = r;
        if (m == i) return;
        swap_at(i, m);
        i = m;
    }
}

TimerHandle TimerHeap::arm(int64_t deadline_ns, Token token) {
    uint32_t idx;
    if (!free_.empty()) {
        idx = free_.back();
        free_.pop_back();
    } else {
        idx = static_cast<uint32_t>(entries_.size());
        entries_.emplace_back();
    }
    Entry& e = entries_[idx];
    e.deadline = deadline_ns;
    e.token = token;
    e.seq = seq_++;
    e.heap_pos = static_cast<uint32_t>(heap_.size());
    heap_.push_back(idx);
    sift_up(e.heap_pos);
    return TimerHandle{idx, e.generation};
}

bool TimerHeap::armed(TimerHandle h) const noexcept {
    return h.index < entries_.size() && entries_[h.index].generation == h.generation &&
           entries_[h.index].heap_pos != UINT32_MAX;
}

bool TimerHeap::rearm(TimerHandle h, int64_t deadline_ns) noexcept {
    if (!armed(h)) return false;
    Entry& e = entries_[h.index];
    e.deadline = deadline_ns;
    e.seq = seq_++;
    sift_up(e.heap_pos);
    sift_down(e.heap_pos);
    return true;
}

void TimerHeap::remove_at(uint32_t pos) noexcept {
    uint32_t idx = heap_[pos];
    auto last = static_cast<uint32_t>(heap_.size() - 1);
    if (pos != last) swap_at(pos, last);
    heap_.pop_back();
    if (pos < heap_.size()) {
        sift_up(pos);
        sift_down(pos);
    }
    Entry& e = entries_[idx];
    e.heap_pos = UINT32_MAX;
    ++e.generation;  // every outstanding handle to this entry goes stale
    free_.push_back(idx);
}

bool TimerHeap::cancel(TimerHandle h) noexcept {
    if (!armed(h)) return false;
    remove_at(entries_[h.index].heap_pos);
    return true;
}

int64_t TimerHeap::next_deadline() const noexcept {
    return heap_.empty() ? -1 : entries_[heap_[0]].deadline;
}

bool TimerHeap::pop_expired(int64_t now_ns, Token& out) noexcept {
    if (heap_.empty() || entries_[heap_[0]].deadline > now_ns) return false;
    out = entries_[heap_[0]].token;
    remove_at(0);
    return true;
}

}  // namespace runewarp::core
