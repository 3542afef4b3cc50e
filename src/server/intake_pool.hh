// IntakePool: the parser state a Visitor needs only before routing (PROXY v2 decoder and
// ClientHello reassembly, about 16.5 KiB), lent for the intake and reused afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "proto/clienthello.hh"
#include "proto/proxy_v2.hh"

namespace runewarp::server {

struct IntakeState {
    proto::ProxyV2Decoder proxy;
    proto::ClientHelloParser hello;
    size_t peeked = 0;  // bytes of the socket queue already fed to the parser
};

// A relayed (or idle) connection does not carry the reassembly buffer: the session borrows one
// for intake and gives it back when routing starts or the session ends. Up to `max_idle` given
// back are kept for reuse, so a steady stream of Visitors allocates nothing.
class IntakePool {
public:
    explicit IntakePool(uint32_t max_idle) : max_idle_(max_idle) { idle_.reserve(max_idle); }

    // A state with both parsers at their start; null only when memory is exhausted.
    std::unique_ptr<IntakeState> borrow() noexcept;
    // Resets it for the next Visitor and keeps it, or frees it when max_idle are kept already.
    void give_back(std::unique_ptr<IntakeState> s) noexcept;

    uint32_t lent() const noexcept { return lent_; }
    size_t idle() const noexcept { return idle_.size(); }

private:
    uint32_t max_idle_;
    uint32_t lent_ = 0;
    std::vector<std::unique_ptr<IntakeState>> idle_;
};

}  // namespace runewarp::server
