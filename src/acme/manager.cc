#include "acme/manager.hh"

namespace runewarp::acme {

struct Manager::Impl {
    ManagerOptions opts;
    std::shared_ptr<ChallengeBoard> board;
    OnCertificate on_certificate;
    OnFatal on_fatal;
    std::shared_ptr<const Certificate> cached;
};

Result<std::unique_ptr<Manager>> Manager::create(ManagerOptions opts,
                                                 std::shared_ptr<ChallengeBoard> board,
                                                 OnCertificate on_certificate, OnFatal on_fatal) {
    std::unique_ptr<Manager> m(new Manager());
    m->impl_ = std::make_unique<Impl>();
    m->impl_->opts = std::move(opts);
    m->impl_->board = std::move(board);
    m->impl_->on_certificate = std::move(on_certificate);
    m->impl_->on_fatal = std::move(on_fatal);
    return m;
}

Manager::~Manager() {
    stop();
}

std::shared_ptr<const Certificate> Manager::cached() const {
    return impl_->cached;
}
void Manager::start() {}
void Manager::stop() {}
const ManagerOptions& Manager::options() const noexcept {
    return impl_->opts;
}

}  // namespace runewarp::acme
