// UdpEndpoint: one UDP socket on a Worker; GRO receive into fixed buffers, GSO batch send.
#pragma once

#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "runewarp/result.hh"

namespace runewarp::quic {

class UdpEndpoint;

// Receives what an endpoint reads. Called on the worker thread; must not destroy the endpoint
// synchronously (use UdpEndpoint::close(), which defers the free).
class DatagramSink {
public:
    // One UDP datagram (GRO batches are already split). `path` is valid for this call only.
    virtual void on_datagram(UdpEndpoint& ep, const ngtcp2_path& path,
                             std::span<const uint8_t> data) noexcept = 0;
    // A batch of reads ended: a good moment to write (ACKs, stream data) once for many packets.
    virtual void on_read_batch_done(UdpEndpoint& ep) noexcept = 0;
    // A send hit EAGAIN earlier; the socket is writable again.
    virtual void on_writable(UdpEndpoint& ep) noexcept = 0;

protected:
    ~DatagramSink() = default;
};

struct EndpointOptions {
    int socket_buffer = 8 << 20;  // SO_RCVBUF / SO_SNDBUF request (FORCE variants tried first)
    bool gro = true;              // UDP_GRO where the kernel supports it
    bool gso = true;              // UDP_SEGMENT where the kernel supports it
};

// What the kernel granted for the socket buffers; `capped` when less than asked (worth one WARN).
struct SocketBuffers {
    int requested = 0;
    int rcvbuf = 0;  // as getsockopt reports it (the kernel doubles the request for overhead)
    int sndbuf = 0;
    bool forced = false;  // the *BUFFORCE variants worked (privileged)
    bool capped = false;
};

enum class SendStatus { sent, blocked, dropped };

// A fresh non-blocking, close-on-exec UDP socket of addr's family bound to `addr`, with
// SO_REUSEPORT first when asked. IPV6_V6ONLY is the kernel default (net.ipv6.bindv6only) unless
// `v6only` is 0 or 1 (a socket joining an activated one must match it to share its group).
// UdpEndpoint::bind and the steered groups (steering.hh) both bind through here, so a group
// member is the same socket a single listener would have; adopt() sets the rest.
Result<core::UniqueFd> bind_udp_socket(const sockaddr* addr, socklen_t len, bool reuseport,
                                       int v6only = -1);

class UdpEndpoint final : public core::Session {
public:
    // Largest UDP payload a QUIC packet from us may have: the largest Path MTU probe (a path
    // starts at 1200 bytes and grows only by probes its far end acknowledged).
    static constexpr size_t kMaxPacket = 64768;
    // One GSO send holds at most this many packets and bytes (the kernel's limits are 64
    // segments and a 64 KiB datagram).
    static constexpr size_t kMaxSegments = 44;
    static constexpr size_t kBatchBytes = 44 * 1472;
    static constexpr size_t kTxCapacity = kBatchBytes > kMaxPacket ? kBatchBytes : kMaxPacket;

    // Binds a fresh non-blocking UDP socket (any family; port 0 = ephemeral) and starts reading.
    // The endpoint frees itself after close(); the pointer stays valid until then.
    static Result<UdpEndpoint*> bind(core::Worker& w, const sockaddr* addr, socklen_t len,
                                     DatagramSink& sink, const EndpointOptions& opts = {});
    // Takes over an already bound UDP socket (socket activation); made non-blocking here.
    static Result<UdpEndpoint*> adopt(core::Worker& w, core::UniqueFd fd, DatagramSink& sink,
                                      const EndpointOptions& opts = {});

    // Client sockets: fixes the remote (UDP connect never blocks), so the kernel picks the
    // concrete local address that packets are matched against.
    Result<void> connect_peer(const sockaddr* addr, socklen_t len) noexcept;

    // Stops reading, cancels ops and frees the endpoint once nothing is in flight.
    void close() noexcept { abort(0); }
    void set_sink(DatagramSink& sink) noexcept { sink_ = &sink; }

    const sockaddr* local_addr() const noexcept {
        return reinterpret_cast<const sockaddr*>(&local_);
    }
    socklen_t local_addrlen() const noexcept { return local_len_; }
    int fd() const noexcept { return fd_.get(); }
    const SocketBuffers& buffers() const noexcept { return buffers_; }
    bool gso() const noexcept { return gso_; }
    bool gro() const noexcept { return gro_; }
    // Reading through a multishot recvmsg with a provided-buffer ring (io_uring), rather than
    // one recvmsg op per completion plus a non-blocking drain (epoll, or no buffer rings).
    bool multishot() const noexcept { return buf_group_ >= 0; }
    bool blocked() const noexcept { return blocked_; }
    // Non-zero (an errno) when reading stopped because the socket itself is broken.
    int read_failed() const noexcept { return read_error_; }

    // A transmit scratch buffer of kTxCapacity bytes: writers fill it with equal-sized packets
    // (the last may be shorter) and send() them before yielding the worker.
    uint8_t* tx_buffer() noexcept { return tx_; }
    // Sends `len` bytes at `data` as packets of `segment` bytes to path.remote, from path.local
    // when the socket is bound to a wildcard address. One sendmsg (GSO) when possible; the send
    // is synchronous (UDP never waits for the peer), so `data` may be reused on return.
    SendStatus send(const ngtcp2_path& path, const uint8_t* data, size_t len,
                    size_t segment) noexcept;

    // When the datagram being delivered was read (core::now_ns(), one clock read per read).
    int64_t rx_time() const noexcept { return rx_time_; }

    // Counters.
    uint64_t datagrams_in() const noexcept { return dgrams_in_; }
    uint64_t datagrams_out() const noexcept { return dgrams_out_; }
    uint64_t send_errors() const noexcept { return send_errors_; }
    // Reads that returned several datagrams coalesced by GRO, and sends that used GSO.
    uint64_t gro_reads() const noexcept { return gro_reads_; }
    uint64_t gso_sends() const noexcept { return gso_sends_; }
    // Sends refused with EAGAIN (socket buffer full); their packets were left to loss recovery.
    uint64_t blocked_sends() const noexcept { return blocked_sends_; }

private:
    static constexpr uint8_t kOpRecv = 1;
    static constexpr uint8_t kOpWritable = 2;
    static constexpr uint8_t kOpRecvMulti = 3;
    static constexpr size_t kRxCapacity = 65535;
    static constexpr int kDirectReads = 64;  // extra non-blocking reads per completion
    // Provided buffers for the multishot receive: each holds the kernel's recvmsg header, the
    // peer address, the control block and one GRO batch of up to kRxCapacity bytes.
    static constexpr uint32_t kRxBuffers = 16;
    static constexpr uint32_t kRxBufferSize = 66 * 1024;

    UdpEndpoint(core::Worker& w, DatagramSink& sink) noexcept : Session(w), sink_(&sink) {}
    ~UdpEndpoint() override = default;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

    void arm_recv() noexcept;
    void prepare_rx() noexcept;
    void setup_multishot() noexcept;
    void drop_multishot() noexcept;
    void on_multishot(const core::Completion& c) noexcept;
    void deliver(const sockaddr* peer, socklen_t peer_len, msghdr& control, const uint8_t* data,
                 size_t n) noexcept;
    SendStatus send_one(const ngtcp2_path& path, const uint8_t* data, size_t len,
                        size_t segment) noexcept;

    DatagramSink* sink_;
    core::UniqueFd fd_;
    sockaddr_storage local_{};
    socklen_t local_len_ = 0;
    bool wildcard_ = false;
    bool gso_ = false;
    bool gro_ = false;
    bool blocked_ = false;
    int read_error_ = 0;
    SocketBuffers buffers_;

    // Receive state: one op in flight at a time; buffers live in the endpoint (no per-packet heap).
    msghdr rx_msg_{};
    iovec rx_iov_{};
    sockaddr_storage rx_peer_{};
    alignas(cmsghdr) uint8_t rx_cmsg_[128];
    alignas(16) uint8_t rx_[kRxCapacity];
    alignas(16) uint8_t tx_[kTxCapacity];
    // Multishot receive: the template (name and control sizes) and the buffer ring's storage.
    msghdr ms_msg_{};
    int buf_group_ = -1;
    bool multishot_ok_ = false;  // a multishot completion arrived (the kernel supports it)
    std::unique_ptr<uint8_t[]> rx_bufs_;

    uint64_t dgrams_in_ = 0;
    uint64_t dgrams_out_ = 0;
    uint64_t send_errors_ = 0;
    int64_t rx_time_ = 0;
    uint64_t gro_reads_ = 0;
    uint64_t gso_sends_ = 0;
    uint64_t blocked_sends_ = 0;
};

}  // namespace runewarp::quic
