// Op tokens: {slot, generation, op} packed into the 64-bit user_data of every submitted op.
#pragma once

#include <cstdint>

namespace runewarp::core {

// Bit layout of the packed 64-bit value (io_uring user_data, epoll op key):
//
//   63            40 39                          8 7      0
//   +---------------+-----------------------------+--------+
//   | slot (24 bit) |     generation (32 bit)     | op (8) |
//   +---------------+-----------------------------+--------+
//
// The slot indexes the Worker's handler registry; the generation is bumped every time a slot is
// freed, so a completion that arrives after its session is gone (and the slot reused) carries a
// stale generation and is dropped. `op` is chosen by the owner (which of its operations this is).
struct Token {
    uint32_t slot = 0;
    uint32_t generation = 0;
    uint8_t op = 0;

    static constexpr uint32_t kSlotBits = 24;
    static constexpr uint32_t kMaxSlots = 1u << kSlotBits;
    // The top slot value is reserved for the Worker's own ops (signal reads).
    static constexpr uint32_t kInternalSlot = kMaxSlots - 1;
    // Owners use op values below 0x80; values with the top bit set belong to the backends
    // (cancel requests, linked poll prefixes) and never reach a handler.
    static constexpr uint8_t kMaxOwnerOp = 0x7f;

    constexpr uint64_t pack() const noexcept {
        return (static_cast<uint64_t>(slot & (kMaxSlots - 1)) << 40) |
               (static_cast<uint64_t>(generation) << 8) | op;
    }
    static constexpr Token unpack(uint64_t v) noexcept {
        return Token{static_cast<uint32_t>(v >> 40), static_cast<uint32_t>(v >> 8),
                     static_cast<uint8_t>(v)};
    }
    constexpr bool operator==(const Token&) const noexcept = default;
};

// What a slot id handed out by a slab looks like before an op byte is added.
struct SlotId {
    uint32_t slot = 0;
    uint32_t generation = 0;

    constexpr Token token(uint8_t op) const noexcept { return Token{slot, generation, op}; }
    constexpr bool operator==(const SlotId&) const noexcept = default;
};

}  // namespace runewarp::core
