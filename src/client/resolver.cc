// Name resolution off the event loop.
#include "client/resolver.hh"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>

namespace runewarp::client {

struct Resolver::Shared {
    struct Job {
        uint64_t id;
        std::string host;
        uint16_t port;
        int socktype;
    };
    struct Done {
        uint64_t id;
        std::string error;
        std::vector<ResolvedAddress> addrs;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> jobs;
    std::deque<Done> done;
    bool stop = false;
    int efd = -1;  // valid while !stop; written under mu
};

namespace {

struct ThreadArg {
    std::shared_ptr<Resolver::Shared> shared;
};

void* resolver_thread(void* p) {
    std::unique_ptr<ThreadArg> arg(static_cast<ThreadArg*>(p));
    std::shared_ptr<Resolver::Shared> sh = std::move(arg->shared);
    for (;;) {
        Resolver::Shared::Job job;
        {
            std::unique_lock lock(sh->mu);
            sh->cv.wait(lock, [&] { return sh->stop || !sh->jobs.empty(); });
            if (sh->stop) return nullptr;
            job = std::move(sh->jobs.front());
            sh->jobs.pop_front();
        }
        Resolver::Shared::Done d{job.id, {}, {}};
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = job.socktype;
        addrinfo* res = nullptr;
        std::string port = std::to_string(job.port);
        int rc = ::getaddrinfo(job.host.c_str(), port.c_str(), &hints, &res);
        if (rc != 0) {
            d.error = rc == EAI_SYSTEM ? std::string(std::strerror(errno)) : ::gai_strerror(rc);
        } else {
            for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
                if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
                if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
                ResolvedAddress r;
                std::memcpy(&r.addr, a->ai_addr, a->ai_addrlen);
                r.len = a->ai_addrlen;
                d.addrs.push_back(r);
            }
            ::freeaddrinfo(res);
            if (d.addrs.empty()) d.error = "no usable address";
        }
        std::lock_guard lock(sh->mu);
        if (sh->stop) return nullptr;
        sh->done.push_back(std::move(d));
        uint64_t one = 1;
        ssize_t n = ::write(sh->efd, &one, sizeof(one));
        (void)n;
    }
}

}  // namespace

std::string format_sockaddr(const sockaddr* sa, socklen_t len) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
        return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    return "unknown";
}

bool literal_address(const std::string& host, uint16_t port, ResolvedAddress& out) noexcept {
    out = ResolvedAddress{};
    auto* in = reinterpret_cast<sockaddr_in*>(&out.addr);
    if (::inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        out.len = sizeof(sockaddr_in);
        return true;
    }
    out = ResolvedAddress{};
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
    if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out.len = sizeof(sockaddr_in6);
        return true;
    }
    return false;
}

Result<Resolver*> Resolver::create(core::Worker& w, unsigned threads) {
    int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return Error::sys(errno, "eventfd");
    auto* r = new Resolver(w);
    r->efd_ = core::UniqueFd(fd);
    r->shared_ = std::make_shared<Shared>();
    r->shared_->efd = fd;
    if (!r->open()) {
        delete r;
        return Error::msg("resolver: no handler slot");
    }
    for (unsigned i = 0; i < threads; ++i) {
        auto* arg = new ThreadArg{r->shared_};
        pthread_t t;
        int rc = ::pthread_create(&t, nullptr, resolver_thread, arg);
        if (rc != 0) {
            delete arg;
            r->shutdown();
            return Error::sys(rc, "resolver thread");
        }
        ::pthread_detach(t);
    }
    r->arm_read();
    return r;
}

Resolver::~Resolver() = default;

uint64_t Resolver::resolve(const std::string& host, uint16_t port, int socktype,
                           ResolveListener& l) {
    uint64_t id = next_id_++;
    pending_[id] = &l;
    {
        std::lock_guard lock(shared_->mu);
        shared_->jobs.push_back(Shared::Job{id, host, port, socktype});
    }
    shared_->cv.notify_one();
    return id;
}

void Resolver::cancel(uint64_t id) noexcept {
    pending_.erase(id);
}

void Resolver::shutdown() noexcept {
    if (shared_) {
        std::lock_guard lock(shared_->mu);
        shared_->stop = true;
        shared_->jobs.clear();
        shared_->efd = -1;
    }
    if (shared_) shared_->cv.notify_all();
    pending_.clear();
    abort(0);
}

void Resolver::arm_read() noexcept {
    read(kOpRead, efd_.get(), &efd_buf_, sizeof(efd_buf_));
}

void Resolver::on_event(const core::Completion& c) noexcept {
    if (aborting()) return;
    if (c.result < 0 && c.result != -EAGAIN && c.result != -EINTR) {
        // The eventfd broke: nothing more can be resolved; leave the pending lookups waiting.
        return;
    }
    std::deque<Shared::Done> done;
    {
        std::lock_guard lock(shared_->mu);
        done.swap(shared_->done);
    }
    for (auto& d : done) {
        auto it = pending_.find(d.id);
        if (it == pending_.end()) continue;
        ResolveListener* l = it->second;
        pending_.erase(it);
        l->on_resolved(d.id, d.error, d.addrs);
        if (aborting()) return;
    }
    arm_read();
}

void Resolver::on_quiesced() noexcept {
    close_fd(efd_);
    delete this;
}

}  // namespace runewarp::client
