// Reloader: one reload at a time, the check on its own thread, the apply on the loop.
#include "sys/reload.hh"

#include "sys/systemd.hh"

namespace runewarp::sys {

Result<std::unique_ptr<Reloader>> Reloader::create(core::Worker& w, obs::Logger& log, CheckFn check,
                                                   ApplyFn apply, StatusFn status) {
    std::unique_ptr<Reloader> r(new Reloader(w, log));
    auto mb = core::Mailbox::create(w);
    if (!mb) return Error::msg("reload mailbox: " + mb.error().message);
    r->mailbox_ = std::move(*mb);
    r->check_ = std::move(check);
    r->apply_ = std::move(apply);
    r->status_ = std::move(status);
    return r;
}

Reloader::~Reloader() {
    if (thread_.joinable()) thread_.join();
}

void Reloader::request(ReloadReply reply) {
    if (stopped_) {
        if (reply) reply(ReloadOutcome{false, generation_, "the daemon is shutting down"});
        return;
    }
    if (running_) {
        pending_ = true;
        if (reply) next_.push_back(std::move(reply));
        return;
    }
    if (reply) current_.push_back(std::move(reply));
    start();
}

void Reloader::start() noexcept {
    running_ = true;
    notify_reloading();
    if (thread_.joinable()) thread_.join();
    core::Mailbox* mb = mailbox_.get();
    try {
        thread_ = std::thread([this, mb] {
            Prepared p;
            try {
                p = check_();
            } catch (const std::exception& e) {
                p.problems = std::string("reload check failed: ") + e.what();
            }
            mb->post([this, p = std::move(p)]() mutable { on_checked(std::move(p)); });
        });
    } catch (const std::exception& e) {
        finish(Error::msg(std::string("reload thread: ") + e.what()));
    }
}

void Reloader::on_checked(Prepared p) noexcept {
    if (thread_.joinable()) thread_.join();
    if (stopped_) return;
    if (!p.problems.empty() || p.snapshot == nullptr) {
        if (p.problems.empty()) p.problems = "reload check produced no configuration";
        return finish(Error::msg(std::move(p.problems)));
    }
    uint64_t seq = ++apply_seq_;
    apply_(std::move(p.snapshot), [this, seq](Result<std::string> r) {
        if (seq != apply_seq_ || stopped_) return;
        finish(std::move(r));
    });
}

void Reloader::finish(Result<std::string> r) noexcept {
    ++apply_seq_;
    ReloadOutcome o;
    if (r) {
        ++generation_;
        o.ok = true;
        o.text = std::move(*r);
        log_.info("config reloaded", {{"generation", std::to_string(generation_)}});
    } else {
        o.text = r.error().message;
        log_.error("config reload failed", {{"generation", std::to_string(generation_)}}, o.text);
    }
    o.generation = generation_;
    last_ok_ = o.ok;
    notify_ready(status_ ? status_() : std::string());
    running_ = false;
    std::vector<ReloadReply> replies;
    replies.swap(current_);
    answer(replies, o);
    if (pending_ && !stopped_) {
        pending_ = false;
        current_.swap(next_);
        start();
    }
}

void Reloader::answer(std::vector<ReloadReply>& replies, const ReloadOutcome& o) noexcept {
    for (auto& reply : replies) {
        if (reply) reply(o);
    }
    replies.clear();
}

void Reloader::shutdown() noexcept {
    if (stopped_) return;
    stopped_ = true;
    if (thread_.joinable()) thread_.join();
    mailbox_->shutdown();
    ReloadOutcome o{false, generation_, "the daemon is shutting down"};
    answer(current_, o);
    answer(next_, o);
    running_ = false;
    pending_ = false;
}

}  // namespace runewarp::sys
