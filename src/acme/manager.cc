#include "acme/manager.hh"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "acme/flow.hh"
#include "acme/state.hh"

namespace runewarp::acme {

namespace {

// Long waits are cut into slices so a wall-clock jump (suspend, NTP) is noticed.
constexpr std::chrono::seconds kMaxWaitSlice{3600};

// Operator WARN lines keep one short cause: the text before the first ": " (spec 7).
std::string short_cause(const std::string& message) {
    return message.substr(0, message.find(": "));
}

std::chrono::milliseconds seconds_ms(std::int64_t s) {
    return std::chrono::milliseconds(std::max<std::int64_t>(s, 0) * 1000);
}

}  // namespace

struct Manager::Impl {
    ManagerOptions opts;
    std::shared_ptr<ChallengeBoard> board;
    OnCertificate on_certificate;
    OnFatal on_fatal;

    obs::FdSink sink{2};
    std::optional<obs::Logger> log;  // used by create() and then only by the thread
    std::string prefix;              // "server acme" / "client acme"
    const char* host_key = nullptr;  // "server-hostname" / "public-hostname"

    mutable std::mutex mu;
    std::condition_variable cv;
    std::shared_ptr<const Certificate> current;  // guarded by mu
    bool have_unusable_cache = false;            // expired or unreadable at create()

    std::atomic<bool> stopping{false};
    std::thread thread;
    bool started = false;

    std::string event(const char* what) const { return prefix + " " + what; }

    // Sleeps until `d` passed or stop(); false when stopping.
    bool wait_for(std::chrono::milliseconds d) {
        std::unique_lock lock(mu);
        return !cv.wait_for(lock, d, [&] { return stopping.load(); });
    }

    bool wait_until_wall(std::time_t when) {
        for (;;) {
            std::time_t now = std::time(nullptr);
            if (now >= when) return !stopping.load();
            auto left = std::min<std::chrono::milliseconds>(seconds_ms(when - now), kMaxWaitSlice);
            if (!wait_for(left)) return false;
        }
    }

    void fatal(const std::string& why) {
        log->error(event("stopped"), {{host_key, opts.hostname}, {"error", short_cause(why)}}, why);
        if (on_fatal) on_fatal(why);
    }

    void run();
};

Result<std::unique_ptr<Manager>> Manager::create(ManagerOptions opts,
                                                 std::shared_ptr<ChallengeBoard> board,
                                                 OnCertificate on_certificate, OnFatal on_fatal) {
    if (opts.hostname.empty()) return Error::msg("ACME manager needs a hostname");
    if (opts.hostname.find('/') != std::string::npos || opts.hostname.starts_with('.')) {
        return Error::msg("ACME manager got a non-canonical hostname " + opts.hostname);
    }
    if (!board) return Error::msg("ACME manager needs a challenge board");
    struct stat st {};
    if (::stat(opts.state_dir.c_str(), &st) != 0) {
        return Error::sys(errno, "ACME state directory " + opts.state_dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        return Error::msg("ACME state directory " + opts.state_dir + " is not a directory");
    }
    if (::access(opts.state_dir.c_str(), R_OK | W_OK | X_OK) != 0) {
        return Error::sys(errno, "ACME state directory " + opts.state_dir);
    }

    std::unique_ptr<Manager> m(new Manager());
    m->impl_ = std::make_unique<Impl>();
    Impl& im = *m->impl_;
    im.opts = std::move(opts);
    im.board = std::move(board);
    im.on_certificate = std::move(on_certificate);
    im.on_fatal = std::move(on_fatal);
    im.log.emplace(im.sink, im.opts.log);
    bool server = im.opts.role == Role::kServer;
    im.prefix = server ? "server acme" : "client acme";
    im.host_key = server ? "server-hostname" : "public-hostname";

    std::time_t now = std::time(nullptr);
    CacheEntry e = load_cached(im.opts.state_dir, im.opts.hostname, now);
    switch (e.status) {
        case CacheStatus::kMissing:
            im.log->info(
                im.event("first issuance starting"),
                {{im.host_key, im.opts.hostname}, {"reason", "no-ready-cached-certificate"}});
            break;
        case CacheStatus::kUnreadable:
            im.have_unusable_cache = true;
            im.log->info(im.event("renewal starting"),
                         {{im.host_key, im.opts.hostname}, {"reason", "unreadable"}}, e.error);
            break;
        case CacheStatus::kExpired:
            im.have_unusable_cache = true;
            im.log->info(im.event("renewal starting"),
                         {{im.host_key, im.opts.hostname}, {"reason", "expired"}});
            break;
        case CacheStatus::kReady: {
            bool due = now >= renewal_time(e.cert);
            im.log->info(im.event("cached certificate ready"),
                         {{im.host_key, im.opts.hostname},
                          {"remaining-validity", seconds_ms(e.cert.not_after - now)},
                          {"renewal", due ? "due" : "not-due"}});
            im.current = std::make_shared<const Certificate>(std::move(e.cert));
            break;
        }
    }
    return m;
}

void Manager::Impl::run() {
    auto account = load_or_create_account_key(opts.state_dir);
    if (!account) {
        fatal(account.error().message);
        return;
    }
    FlowHooks hooks;
    hooks.wait = [this](std::chrono::milliseconds d) { return wait_for(d); };
    hooks.on_challenge = [this](bool valid, const std::string& detail) {
        if (valid) {
            log->debug(event("challenge handled"), {{host_key, opts.hostname}});
        } else {
            log->warn(event("challenge failed"),
                      {{host_key, opts.hostname}, {"error", short_cause(detail)}});
            log->debug(event("challenge failed detail"), {{host_key, opts.hostname}}, detail);
        }
    };
    Flow flow(opts.directory_url, opts.ca_file, opts.email, *account, board, &stopping,
              std::move(hooks));

    int failures = 0;
    bool renewal = have_unusable_cache;
    while (!stopping.load()) {
        std::shared_ptr<const Certificate> cur;
        {
            std::lock_guard lock(mu);
            cur = current;
        }
        if (cur) {
            renewal = true;
            stats().renewal_waits.fetch_add(1);
            if (!wait_until_wall(renewal_time(*cur))) break;
            if (failures == 0) {
                log->info(
                    event("renewal starting"),
                    {{host_key, opts.hostname},
                     {"reason", "due"},
                     {"remaining-validity", seconds_ms(cur->not_after - std::time(nullptr))}});
            }
        }

        Certificate issued;
        FlowError err;
        if (!flow.issue(opts.hostname, issued, err)) {
            if (stopping.load() || err.reason == FailReason::kStopped) break;
            ++failures;
            std::int64_t delay_s = backoff_seconds(failures, err.retry_after_s);
            log->warn(event("failed"), {{host_key, opts.hostname},
                                        {"reason", reason_name(err.reason)},
                                        {"error", short_cause(err.message)},
                                        {"next-retry-delay", seconds_ms(delay_s)}});
            log->debug(event("failed detail"), {{host_key, opts.hostname}}, err.message);
            if (!wait_for(seconds_ms(delay_s))) break;
            continue;
        }

        if (auto w = store_certificate(opts.state_dir, opts.hostname, issued); !w) {
            fatal(w.error().message);
            return;
        }
        failures = 0;
        auto cert = std::make_shared<const Certificate>(std::move(issued));
        {
            std::lock_guard lock(mu);
            current = cert;
        }
        log->info(event(renewal ? "certificate renewed" : "certificate issued"),
                  {{host_key, opts.hostname},
                   {"remaining-validity", seconds_ms(cert->not_after - std::time(nullptr))}});
        renewal = true;
        if (on_certificate) on_certificate(cert);
    }
}

Manager::~Manager() {
    stop();
}

std::shared_ptr<const Certificate> Manager::cached() const {
    std::lock_guard lock(impl_->mu);
    if (impl_->current && std::time(nullptr) >= impl_->current->not_after) return nullptr;
    return impl_->current;
}

void Manager::start() {
    Impl& im = *impl_;
    if (im.started) return;
    im.started = true;
    im.thread = std::thread([&im] { im.run(); });
}

void Manager::stop() {
    Impl& im = *impl_;
    {
        std::lock_guard lock(im.mu);
        im.stopping.store(true);
    }
    im.cv.notify_all();
    if (!im.thread.joinable()) return;
    if (im.thread.get_id() == std::this_thread::get_id()) {
        // Called from on_certificate/on_fatal: the thread ends when the callback returns.
        im.thread.detach();
        return;
    }
    im.thread.join();
}

ManagerOptions manager_options(Role role, std::string hostname, const config::Acme& acme,
                               const obs::LoggerOptions& log) {
    ManagerOptions mo;
    mo.role = role;
    mo.hostname = std::move(hostname);
    mo.email = acme.email;
    if (!acme.directory_url.empty()) mo.directory_url = acme.directory_url;
    mo.ca_file = acme.ca_file;
    mo.state_dir = acme.state_dir;
    mo.log = log;
    return mo;
}

const ManagerOptions& Manager::options() const noexcept {
    return impl_->opts;
}

}  // namespace runewarp::acme
