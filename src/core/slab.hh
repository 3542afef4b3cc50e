// Slab<T>: fixed-capacity pool of generation-checked slots (sessions live here, not in scattered
// new).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "core/token.hh"

// LeakSanitizer scans the heap and globals, not anonymous mappings: objects referenced only from
// slab cells would be reported leaked, so ASan builds register the cells as a root region.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define RUNEWARP_SLAB_LSAN_ROOTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define RUNEWARP_SLAB_LSAN_ROOTS 1
#endif
#endif

namespace runewarp::core {

// One allocation at construction; alloc/free are O(1) through an intrusive free list and never
// touch the heap. Every slot carries a generation that is bumped on free, so a SlotId (or a Token
// built from it) that outlived its object no longer resolves.
//
// The cells are anonymous pages (zero, and resident only once touched), and slots are handed out
// in order until the high-water mark reaches the capacity, the free list holding only slots given
// back: a slab sized for the worst case costs resident memory only for the slots ever used.
template <typename T>
class Slab {
public:
    explicit Slab(uint32_t capacity)
        : capacity_(capacity < Token::kInternalSlot ? capacity : Token::kInternalSlot),
          bytes_((capacity_ > 0 ? capacity_ : 1) * sizeof(Cell)) {
        // Anonymous pages are zero and take no memory until touched (calloc would zero them
        // itself when the allocator fills fresh memory, as glibc's MALLOC_PERTURB_ does).
        void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        cells_ = static_cast<Cell*>(p);
#ifdef RUNEWARP_SLAB_LSAN_ROOTS
        __lsan_register_root_region(cells_, bytes_);
#endif
    }
    Slab(const Slab&) = delete;
    Slab& operator=(const Slab&) = delete;
    ~Slab() {
        for (uint32_t i = 0; i < high_; ++i)
            if (cells_[i].live) cells_[i].ptr()->~T();
#ifdef RUNEWARP_SLAB_LSAN_ROOTS
        __lsan_unregister_root_region(cells_, bytes_);
#endif
        ::munmap(cells_, bytes_);
    }

    // Constructs a T in a free slot; nullopt when the slab is full (the caller's admission limit).
    template <typename... Args>
    std::optional<SlotId> alloc(Args&&... args) {
        uint32_t i;
        if (free_head_ != kNone) {
            i = free_head_;
            free_head_ = cells_[i].next_free;
        } else if (high_ < capacity_) {
            i = high_++;
        } else {
            return std::nullopt;
        }
        Cell& c = cells_[i];
        ::new (static_cast<void*>(c.storage)) T(std::forward<Args>(args)...);
        c.live = true;
        ++size_;
        return SlotId{i, c.generation + 1};
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
        if (id.slot >= high_) return nullptr;
        Cell& c = cells_[id.slot];
        return c.live && c.generation + 1 == id.generation ? c.ptr() : nullptr;
    }
    T* get(Token t) noexcept { return get(SlotId{t.slot, t.generation}); }

    uint32_t capacity() const noexcept { return capacity_; }
    uint32_t size() const noexcept { return size_; }
    bool full() const noexcept { return free_head_ == kNone && high_ == capacity_; }

private:
    static constexpr uint32_t kNone = UINT32_MAX;
    // All zero is a free, never used cell (fresh pages); the generation a SlotId carries is
    // `generation + 1`, so generations start at 1 and a zeroed id never resolves.
    struct Cell {
        alignas(T) std::byte storage[sizeof(T)];
        uint32_t generation;
        uint32_t next_free;
        bool live;
        T* ptr() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };
    static_assert(alignof(Cell) <= 4096, "page alignment");

    uint32_t capacity_;
    size_t bytes_;
    Cell* cells_ = nullptr;        // capacity_ cells, never moved: addresses stay stable
    uint32_t high_ = 0;  // cells [0, high_) have been handed out at least once
    uint32_t free_head_ = kNone;
    uint32_t size_ = 0;
};

}  // namespace runewarp::core
