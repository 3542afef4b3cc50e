// Slab<T>: fixed-capacity pool of generation-checked slots (sessions live here, not in scattered
// new).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "core/token.hh"

namespace runewarp::core {

// One allocation at construction; alloc/free are O(1) through an intrusive free list and never
// touch the heap. Every slot carries a generation that is bumped on free, so a SlotId (or a Token
// built from it) that outlived its object no longer resolves.
template <typename T>
class Slab {
public:
    explicit Slab(uint32_t capacity)
        : capacity_(capacity < Token::kInternalSlot ? capacity : Token::kInternalSlot),
          cells_(capacity_) {
        for (uint32_t i = 0; i < capacity_; ++i) cells_[i].next_free = i + 1;
        free_head_ = capacity_ > 0 ? 0 : kNone;
        if (capacity_ > 0) cells_[capacity_ - 1].next_free = kNone;
    }
    Slab(const Slab&) = delete;
    Slab& operator=(const Slab&) = delete;
    ~Slab() {
        for (uint32_t i = 0; i < capacity_; ++i)
            if (cells_[i].live) cells_[i].ptr()->~T();
    }

    // Constructs a T in a free slot; nullopt when the slab is full (the caller's admission limit).
    template <typename... Args>
    std::optional<SlotId> alloc(Args&&... args) {
        if (free_head_ == kNone) return std::nullopt;
        uint32_t i = free_head_;
        Cell& c = cells_[i];
        free_head_ = c.next_free;
        ::new (static_cast<void*>(c.storage)) T(std::forward<Args>(args)...);
        c.live = true;
        ++size_;
        return SlotId{i, c.generation};
    }

    // Destroys the object and bumps the generation; stale ids no longer resolve.
    bool free(SlotId id) noexcept {
        if (get(id) == nullptr) return false;
        Cell& c = cells_[id.slot];
        c.ptr()->~T();
        c.live = false;
        ++c.generation;
        c.next_free = free_head_;
        free_head_ = id.slot;
        --size_;
        return true;
    }

    // nullptr when the slot is free or the generation does not match.
    T* get(SlotId id) noexcept {
        if (id.slot >= capacity_) return nullptr;
        Cell& c = cells_[id.slot];
        return c.live && c.generation == id.generation ? c.ptr() : nullptr;
    }
    T* get(Token t) noexcept { return get(SlotId{t.slot, t.generation}); }

    uint32_t capacity() const noexcept { return capacity_; }
    uint32_t size() const noexcept { return size_; }
    bool full() const noexcept { return free_head_ == kNone; }

private:
    static constexpr uint32_t kNone = UINT32_MAX;
    struct Cell {
        alignas(T) std::byte storage[sizeof(T)];
        uint32_t generation = 1;
        uint32_t next_free = kNone;
        bool live = false;
        T* ptr() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

    uint32_t capacity_;
    std::vector<Cell> cells_;  // sized once, never resized: addresses stay stable
    uint32_t free_head_ = kNone;
    uint32_t size_ = 0;
};

}  // namespace runewarp::core
