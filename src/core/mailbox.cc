#include "core/mailbox.hh"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace runewarp::core {

Result<std::unique_ptr<Mailbox>> Mailbox::create(Worker& w) {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return Error::sys(errno, "eventfd");
    std::unique_ptr<Mailbox> m(new Mailbox(w));
    m->efd_.reset(fd);
    if (!m->open()) return Error::msg("mailbox: the worker has no free slot");
    m->arm();
    return m;
}

Mailbox::~Mailbox() = default;

void Mailbox::post(std::function<void()> fn) {
    {
        std::lock_guard lock(mu_);
        if (closed_) return;
        queue_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    // EAGAIN only when the counter would overflow: a wakeup is pending anyway.
    [[maybe_unused]] ssize_t n = ::write(efd_.get(), &one, sizeof one);
}

void Mailbox::arm() noexcept {
    read(kOpRead, efd_.get(), &counter_, sizeof counter_);
}

void Mailbox::on_event(const Completion& c) noexcept {
    if (aborting()) return;
    if (c.result < 0 && c.result != -EAGAIN && c.result != -EINTR) {
        // The eventfd cannot fail a read of 8 bytes; stop rather than spin.
        abort(0);
        return;
    }
    std::vector<std::function<void()>> batch;
    {
        std::lock_guard lock(mu_);
        batch.swap(queue_);
    }
    for (auto& fn : batch) fn();
    if (!aborting()) arm();
}

void Mailbox::shutdown() noexcept {
    {
        std::lock_guard lock(mu_);
        closed_ = true;
        queue_.clear();
    }
    abort(0);
}

void Mailbox::on_quiesced() noexcept {
    close_fd(efd_);
    quiesced_ = true;
}

}  // namespace runewarp::core
