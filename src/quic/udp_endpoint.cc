// UdpEndpoint: GRO receive into the endpoint's own buffers, GSO batch send, buffer sizing.
#include "quic/udp_endpoint.hh"

#include <fcntl.h>

#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace runewarp::quic {

namespace {

bool is_wildcard(const sockaddr_storage& ss) noexcept {
    if (ss.ss_family == AF_INET) {
        return reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr == htonl(INADDR_ANY);
    }
    if (ss.ss_family == AF_INET6) {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr;
        return IN6_IS_ADDR_UNSPECIFIED(&a) != 0;
    }
    return false;
}

int int_opt(int fd, int level, int name) noexcept {
    int v = 0;
    socklen_t l = sizeof v;
    if (::getsockopt(fd, level, name, &v, &l) != 0) return 0;
    return v;
}

// Asks for `want` bytes of socket buffer: the FORCE variant beats net.core.[rw]mem_max when the
// process holds CAP_NET_ADMIN; otherwise the plain option, which the kernel silently caps.
SocketBuffers size_buffers(int fd, int want) noexcept {
    SocketBuffers b;
    b.requested = want;
    bool rf = ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) == 0;
    if (!rf) (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    bool sf = ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) == 0;
    if (!sf) (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    b.forced = rf && sf;
    b.rcvbuf = int_opt(fd, SOL_SOCKET, SO_RCVBUF);
    b.sndbuf = int_opt(fd, SOL_SOCKET, SO_SNDBUF);
    // The kernel reports twice what it granted (bookkeeping overhead).
    b.capped = b.rcvbuf < want || b.sndbuf < want;
    return b;
}

}  // namespace

Result<core::UniqueFd> bind_udp_socket(const sockaddr* addr, socklen_t len, bool reuseport,
                                       int v6only) {
    core::UniqueFd fd(::socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return Error::sys(errno, "socket(udp)");
    if (addr->sa_family == AF_INET6 && v6only >= 0 &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) != 0)
        return Error::sys(errno, "setsockopt(IPV6_V6ONLY)");
    int one = 1;
    // Before bind: the kernel puts a socket into a reuseport group when it binds.
    if (reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        return Error::sys(errno, "setsockopt(SO_REUSEPORT)");
    if (::bind(fd.get(), addr, len) != 0) return Error::sys(errno, "bind(udp)");
    return fd;
}

Result<UdpEndpoint*> UdpEndpoint::bind(core::Worker& w, const sockaddr* addr, socklen_t len,
                                       DatagramSink& sink, const EndpointOptions& opts) {
    auto fd = bind_udp_socket(addr, len, false);
    if (!fd) return std::move(fd).error();
    return adopt(w, std::move(*fd), sink, opts);
}

Result<UdpEndpoint*> UdpEndpoint::adopt(core::Worker& w, core::UniqueFd fd, DatagramSink& sink,
                                        const EndpointOptions& opts) {
    sockaddr_storage bound{};
    socklen_t bound_len = sizeof bound;
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
        return Error::sys(errno, "getsockname(udp)");
    const int family = bound.ss_family;
    if (family != AF_INET && family != AF_INET6)
        return Error::msg("not an IPv4 or IPv6 UDP socket");
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) != 0)
        return Error::sys(errno, "fcntl(udp)");
    int one = 1;
    if (family == AF_INET6) {
        (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    } else {
        (void)::setsockopt(fd.get(), IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    }
    // QUIC does its own path MTU discovery: never fragment.
    int pmtu = IP_PMTUDISC_PROBE;
    if (family == AF_INET6) {
        int p6 = IPV6_PMTUDISC_PROBE;
        (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_MTU_DISCOVER, &p6, sizeof p6);
    } else {
        (void)::setsockopt(fd.get(), IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    }

    UdpEndpoint* ep = new UdpEndpoint(w, sink);
    ep->fd_ = std::move(fd);
    ep->local_len_ = sizeof ep->local_;
    ::getsockname(ep->fd_.get(), reinterpret_cast<sockaddr*>(&ep->local_), &ep->local_len_);
    ep->wildcard_ = is_wildcard(ep->local_);
    ep->buffers_ = size_buffers(ep->fd_.get(), opts.socket_buffer);
    ep->gro_ = opts.gro && ::setsockopt(ep->fd_.get(), SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
    if (opts.gso) {
        // Probe: setting a per-socket segment size works iff the kernel knows UDP_SEGMENT.
        int seg = 1452;
        ep->gso_ = ::setsockopt(ep->fd_.get(), SOL_UDP, UDP_SEGMENT, &seg, sizeof seg) == 0;
        int zero = 0;
        if (ep->gso_) (void)::setsockopt(ep->fd_.get(), SOL_UDP, UDP_SEGMENT, &zero, sizeof zero);
    }
    if (!ep->open()) {
        // No slot: nothing submitted yet, so the fd can go directly.
        delete ep;
        return Error::msg("worker full: no slot for a UDP endpoint");
    }
    ep->setup_multishot();
    ep->arm_recv();
    return ep;
}

Result<void> UdpEndpoint::connect_peer(const sockaddr* addr, socklen_t len) noexcept {
    if (::connect(fd_.get(), addr, len) != 0) return Error::sys(errno, "connect(udp)");
    local_len_ = sizeof local_;
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local_), &local_len_);
    wildcard_ = false;
    return {};
}

void UdpEndpoint::prepare_rx() noexcept {
    rx_iov_ = iovec{rx_, kRxCapacity};
    rx_msg_ = msghdr{};
    rx_msg_.msg_name = &rx_peer_;
    rx_msg_.msg_namelen = sizeof rx_peer_;
    rx_msg_.msg_iov = &rx_iov_;
    rx_msg_.msg_iovlen = 1;
    rx_msg_.msg_control = rx_cmsg_;
    rx_msg_.msg_controllen = sizeof rx_cmsg_;
}

void UdpEndpoint::setup_multishot() noexcept {
    core::Loop& loop = worker().loop();
    if (!loop.caps().buffer_rings) return;
    rx_bufs_.reset(new (std::nothrow) uint8_t[size_t{kRxBuffers} * kRxBufferSize]);
    if (!rx_bufs_) return;
    int g = loop.add_buffer_ring(rx_bufs_.get(), kRxBuffers, kRxBufferSize);
    if (g < 0) {
        rx_bufs_.reset();
        return;
    }
    buf_group_ = g;
    ms_msg_ = msghdr{};
    ms_msg_.msg_namelen = sizeof(sockaddr_storage);
    ms_msg_.msg_controllen = sizeof rx_cmsg_;
}

void UdpEndpoint::drop_multishot() noexcept {
    if (buf_group_ < 0) return;
    worker().loop().remove_buffer_ring(buf_group_);
    buf_group_ = -1;
    rx_bufs_.reset();
}

void UdpEndpoint::arm_recv() noexcept {
    if (buf_group_ >= 0) {
        recvmsg_multishot(kOpRecvMulti, fd_.get(), &ms_msg_, buf_group_);
        return;
    }
    prepare_rx();
    recvmsg(kOpRecv, fd_.get(), &rx_msg_, 0);
}

void UdpEndpoint::on_multishot(const core::Completion& c) noexcept {
    int bid = core::completion_buffer(c);
    if (bid >= 0) {
        multishot_ok_ = true;
        if (c.result > 0 && !aborting()) {
            uint8_t* buf = rx_bufs_.get() + static_cast<size_t>(bid) * kRxBufferSize;
            core::RecvmsgBuffer rb;
            if (core::parse_recvmsg_buffer(buf, static_cast<size_t>(c.result), ms_msg_, rb) &&
                !rb.truncated) {
                deliver(rb.name, rb.namelen, rb.control, rb.payload, rb.payload_len);
                if (!aborting()) sink_->on_read_batch_done(*this);
            }
        }
        // The datagram was handled synchronously: the buffer goes straight back to the kernel.
        worker().loop().recycle_buffer(buf_group_, static_cast<uint16_t>(bid));
    }
    if (c.more || aborting()) return;
    // The op ended: buffers ran dry (-ENOBUFS), a per-datagram error, or the kernel cannot do
    // multishot recvmsg at all (-EINVAL before any datagram): then fall back to single reads.
    if (c.result == -EINVAL && !multishot_ok_) {
        drop_multishot();
    } else if (c.result == -EBADF || c.result == -ENOTSOCK || c.result == -EINVAL ||
               c.result == -EFAULT) {
        read_error_ = -c.result;
        return;
    }
    arm_recv();
}

void UdpEndpoint::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpWritable) {
        if (aborting()) return;
        blocked_ = false;
        sink_->on_writable(*this);
        return;
    }
    if (c.token.op == kOpRecvMulti) return on_multishot(c);
    if (c.token.op != kOpRecv || aborting()) return;
    if (c.result >= 0) {
        deliver(reinterpret_cast<sockaddr*>(&rx_peer_), rx_msg_.msg_namelen, rx_msg_, rx_,
                static_cast<size_t>(c.result));
        // Drain what else is queued without a loop round trip per datagram, bounded for fairness.
        for (int i = 0; i < kDirectReads && !aborting(); ++i) {
            prepare_rx();
            ssize_t n = ::recvmsg(fd_.get(), &rx_msg_, MSG_DONTWAIT);
            if (n < 0) break;
            deliver(reinterpret_cast<sockaddr*>(&rx_peer_), rx_msg_.msg_namelen, rx_msg_, rx_,
                    static_cast<size_t>(n));
        }
        if (!aborting()) sink_->on_read_batch_done(*this);
    }
    // Errors such as ECONNREFUSED (an ICMP for an earlier send) are per-datagram: keep reading.
    // A broken socket is not: stop instead of spinning, and say so through read_failed().
    if (c.result == -EBADF || c.result == -ENOTSOCK || c.result == -EINVAL || c.result == -EFAULT) {
        read_error_ = -c.result;
        return;
    }
    if (!aborting()) arm_recv();
}

void UdpEndpoint::deliver(const sockaddr* peer, socklen_t peer_len, msghdr& control,
                          const uint8_t* data, size_t n) noexcept {
    rx_time_ = core::now_ns();
    ngtcp2_path path{};
    path.local.addr = reinterpret_cast<sockaddr*>(&local_);
    path.local.addrlen = local_len_;
    path.remote.addr = const_cast<sockaddr*>(peer);
    path.remote.addrlen = peer_len;
    sockaddr_storage dst = local_;  // the real destination when bound to a wildcard address
    size_t seg = n;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&control); cm != nullptr; cm = CMSG_NXTHDR(&control, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
            int g = 0;
            std::memcpy(&g, CMSG_DATA(cm), sizeof g);
            if (g > 0) seg = static_cast<size_t>(g);
        } else if (wildcard_ && cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
            in_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            reinterpret_cast<sockaddr_in&>(dst).sin_addr = pi.ipi_addr;
            path.local.addr = reinterpret_cast<sockaddr*>(&dst);
        } else if (wildcard_ && cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
            in6_pktinfo pi{};
            std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
            reinterpret_cast<sockaddr_in6&>(dst).sin6_addr = pi.ipi6_addr;
            path.local.addr = reinterpret_cast<sockaddr*>(&dst);
        }
    }
    if (seg < n) ++gro_reads_;
    for (size_t off = 0; off < n && !aborting(); off += seg) {
        size_t len = n - off < seg ? n - off : seg;
        ++dgrams_in_;
        sink_->on_datagram(*this, path, std::span<const uint8_t>(data + off, len));
    }
}

SendStatus UdpEndpoint::send_one(const ngtcp2_path& path, const uint8_t* data, size_t len,
                                 size_t segment) noexcept {
    iovec iov{const_cast<uint8_t*>(data), len};
    msghdr msg{};
    msg.msg_name = path.remote.addr;
    msg.msg_namelen = path.remote.addrlen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr)
        uint8_t control[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(in6_pktinfo))]{};
    size_t clen = 0;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    if (segment < len) {
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s = static_cast<uint16_t>(segment);
        std::memcpy(CMSG_DATA(cm), &s, sizeof s);
        clen += CMSG_SPACE(sizeof(uint16_t));
        cm = CMSG_NXTHDR(&msg, cm);
    }
    if (wildcard_ && path.local.addr != nullptr) {
        if (path.local.addr->sa_family == AF_INET) {
            in_pktinfo pi{};
            pi.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(path.local.addr)->sin_addr;
            cm->cmsg_level = IPPROTO_IP;
            cm->cmsg_type = IP_PKTINFO;
            cm->cmsg_len = CMSG_LEN(sizeof pi);
            std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
            clen += CMSG_SPACE(sizeof pi);
        } else if (path.local.addr->sa_family == AF_INET6) {
            in6_pktinfo pi{};
            pi.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(path.local.addr)->sin6_addr;
            cm->cmsg_level = IPPROTO_IPV6;
            cm->cmsg_type = IPV6_PKTINFO;
            cm->cmsg_len = CMSG_LEN(sizeof pi);
            std::memcpy(CMSG_DATA(cm), &pi, sizeof pi);
            clen += CMSG_SPACE(sizeof pi);
        }
    }
    msg.msg_controllen = clen;
    if (clen == 0) msg.msg_control = nullptr;
    for (;;) {
        ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            dgrams_out_ += (len + segment - 1) / segment;
            if (segment < len) ++gso_sends_;
            return SendStatus::sent;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return SendStatus::blocked;
        if (errno == EIO && segment < len && gso_) {
            // The device cannot segment (no checksum offload): stop using GSO on this socket.
            gso_ = false;
            return SendStatus::dropped;  // caller retries packet by packet
        }
        // Larger than the device's MTU (IP_PMTUDISC_PROBE): a Path MTU probe that cannot leave
        // this host; to ngtcp2 it is lost like any failed probe.
        if (errno == EMSGSIZE) return SendStatus::dropped;
        ++send_errors_;
        return SendStatus::dropped;
    }
}

SendStatus UdpEndpoint::send(const ngtcp2_path& path, const uint8_t* data, size_t len,
                             size_t segment) noexcept {
    if (len == 0) return SendStatus::sent;
    if (aborting()) return SendStatus::dropped;
    if (segment == 0 || segment > len) segment = len;
    SendStatus st = SendStatus::dropped;
    if (gso_ || segment == len) st = send_one(path, data, len, segment);
    if (st == SendStatus::dropped && segment < len && !gso_) {
        // Without GSO (or after the device refused it): one sendmsg per packet.
        st = SendStatus::sent;
        for (size_t off = 0; off < len && st != SendStatus::blocked; off += segment) {
            size_t l = len - off < segment ? len - off : segment;
            st = send_one(path, data + off, l, l);
        }
    }
    if (st == SendStatus::blocked) ++blocked_sends_;
    if (st == SendStatus::blocked && !blocked_) {
        // What was not sent is left to QUIC's loss recovery; wait for room before writing more.
        blocked_ = true;
        poll(kOpWritable, fd_.get(), POLLOUT);
    }
    return st;
}

void UdpEndpoint::on_quiesced() noexcept {
    drop_multishot();  // no op selects from the ring any more
    close_fd(fd_);
    delete this;
}

}  // namespace runewarp::quic
