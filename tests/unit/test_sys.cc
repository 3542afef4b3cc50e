// sys: the Reloader (one reload at a time, check off the loop thread, apply on it, folded
// triggers, systemd RELOADING=1 then READY=1, shutdown answering whoever still waits) and the
// control socket (mode, stale and live sockets, answers now or later, peers that leave); the
// descriptor limit raised at startup.
#include <criterion/criterion.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "sys/control.hh"
#include "sys/limits.hh"
#include "sys/reload.hh"

using namespace runewarp;
using runewarp::Error;
using runewarp::Result;
using runewarp::sys::Reloader;
using runewarp::sys::ReloadOutcome;

namespace {

std::unique_ptr<core::Worker> make_worker() {
    core::WorkerOptions o;
    o.loop.honour_env = false;
    o.max_slots = 64;
    auto w = core::Worker::create(o);
    cr_assert(w.ok(), "worker: %s", w.ok() ? "" : w.error().message.c_str());
    return std::move(*w);
}

void run_until(core::Worker& w, auto done, int64_t ms, const char* what) {
    auto r = w.run_until(done, core::now_ns() + ms * core::kNsPerMs);
    cr_assert(r.ok(), "loop broken: %s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(*r, "timed out waiting for: %s", what);
}

// A NOTIFY_SOCKET the test reads: an abstract AF_UNIX datagram socket.
struct NotifyProbe {
    int fd = -1;
    NotifyProbe() {
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert(fd >= 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::string name = "runewarp-test-notify-" + std::to_string(::getpid());
        std::memcpy(a.sun_path + 1, name.data(), name.size());
        socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
        cr_assert_eq(::bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0);
        ::setenv("NOTIFY_SOCKET", ("@" + name).c_str(), 1);
    }
    ~NotifyProbe() {
        ::unsetenv("NOTIFY_SOCKET");
        ::close(fd);
    }
    // Every datagram that arrived so far (waits up to `ms` for the first).
    std::vector<std::string> drain(int ms) {
        std::vector<std::string> out;
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, out.empty() ? ms : 0) == 1) {
            char buf[512];
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            out.emplace_back(buf, static_cast<size_t>(n));
        }
        return out;
    }
};

struct Snapshot {
    int value = 0;
    std::thread::id checked_on;
};

}  // namespace

Test(sys, reload_checks_off_the_loop_applies_on_it_and_notifies_in_order) {
    NotifyProbe probe;
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    const std::thread::id loop_thread = std::this_thread::get_id();
    int applied = 0;
    bool apply_on_loop = false;
    std::thread::id checked_on;
    auto r = Reloader::create(
        *w, log,
        [] {
            auto s = std::make_shared<Snapshot>();
            s->value = 7;
            s->checked_on = std::this_thread::get_id();
            return Reloader::Prepared{s, {}};
        },
        [&](std::shared_ptr<void> snap, Reloader::Done done) {
            auto s = std::static_pointer_cast<Snapshot>(snap);
            applied = s->value;
            checked_on = s->checked_on;
            apply_on_loop = std::this_thread::get_id() == loop_thread;
            done(std::string("listener change needs a restart"));
        },
        [] { return std::string("serving"); });
    cr_assert(r.ok());
    Reloader& rl = **r;
    cr_assert_eq(rl.generation(), 1u);

    std::vector<ReloadOutcome> got;
    rl.request([&](const ReloadOutcome& o) { got.push_back(o); });
    run_until(
        *w, [&] { return !got.empty(); }, 5000, "the reload outcome");
    cr_assert(got[0].ok);
    cr_assert_eq(got[0].generation, 2u);
    cr_assert_str_eq(got[0].text.c_str(), "listener change needs a restart");
    cr_assert_eq(applied, 7);
    cr_assert(apply_on_loop, "apply ran off the loop thread");
    cr_assert(checked_on != loop_thread, "the check ran on the loop thread");
    cr_assert(sink.text.find("config reloaded: generation=2") != std::string::npos, "%s",
              sink.text.c_str());

    auto msgs = probe.drain(2000);
    cr_assert_geq(msgs.size(), 2u, "notify messages: %zu", msgs.size());
    cr_assert(msgs[0].find("RELOADING=1") != std::string::npos, "%s", msgs[0].c_str());
    cr_assert(msgs[0].find("MONOTONIC_USEC=") != std::string::npos, "%s", msgs[0].c_str());
    cr_assert(msgs[1].find("READY=1") != std::string::npos, "%s", msgs[1].c_str());
    cr_assert(msgs[1].find("STATUS=serving") != std::string::npos, "%s", msgs[1].c_str());
    rl.shutdown();
}

Test(sys, failed_check_keeps_the_generation_and_reports_every_problem) {
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    bool applied = false;
    auto r = Reloader::create(
        *w, log,
        [] {
            return Reloader::Prepared{nullptr, "line 3: bad key\nline 9: bad value"};
        },
        [&](std::shared_ptr<void>, Reloader::Done done) {
            applied = true;
            done(std::string());
        },
        {});
    cr_assert(r.ok());
    std::vector<ReloadOutcome> got;
    (*r)->request([&](const ReloadOutcome& o) { got.push_back(o); });
    run_until(
        *w, [&] { return !got.empty(); }, 5000, "the reload outcome");
    cr_assert(!got[0].ok);
    cr_assert_eq(got[0].generation, 1u);
    cr_assert(got[0].text.find("line 9: bad value") != std::string::npos);
    cr_assert(!applied, "a failed check was applied");
    cr_assert(sink.text.find("ERROR config reload failed") != std::string::npos, "%s",
              sink.text.c_str());
    cr_assert(sink.text.find("line 3: bad key") != std::string::npos);
    (*r)->shutdown();
}

Test(sys, triggers_during_a_reload_fold_into_one_more) {
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> checks{0};
    auto r = Reloader::create(
        *w, log,
        [&] {
            int n = ++checks;
            if (n == 1) {
                std::unique_lock lk(mu);
                cv.wait(lk, [&] { return release; });
            }
            return Reloader::Prepared{std::make_shared<int>(n), {}};
        },
        [&](std::shared_ptr<void>, Reloader::Done done) {
            // The apply finishes later, from the loop (as new upstream names resolving would).
            done(std::string());
        },
        {});
    cr_assert(r.ok());
    Reloader& rl = **r;
    std::vector<ReloadOutcome> got(4);
    int answered = 0;
    for (int i = 0; i < 4; ++i) {
        rl.request([&, i](const ReloadOutcome& o) {
            got[i] = o;
            ++answered;
        });
    }
    rl.request({});  // SIGHUP: nobody to answer
    cr_assert(rl.busy());
    {
        std::lock_guard lk(mu);
        release = true;
    }
    cv.notify_all();
    run_until(
        *w, [&] { return answered == 4 && !rl.busy(); }, 5000, "every requester");
    cr_assert_eq(checks.load(), 2, "checks run: %d", checks.load());
    cr_assert_eq(got[0].generation, 2u);
    for (int i = 1; i < 4; ++i) cr_assert_eq(got[i].generation, 3u);
    cr_assert_eq(rl.generation(), 3u);
    rl.shutdown();
}

Test(sys, shutdown_answers_everyone_still_waiting) {
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    Reloader::Done held;
    auto r = Reloader::create(
        *w, log,
        [] {
            return Reloader::Prepared{std::make_shared<int>(1), {}};
        },
        [&](std::shared_ptr<void>, Reloader::Done done) { held = std::move(done); }, {});
    cr_assert(r.ok());
    Reloader& rl = **r;
    std::vector<ReloadOutcome> got;
    rl.request([&](const ReloadOutcome& o) { got.push_back(o); });
    rl.request([&](const ReloadOutcome& o) { got.push_back(o); });
    run_until(
        *w, [&] { return held != nullptr; }, 5000, "the apply");
    rl.shutdown();
    cr_assert_eq(got.size(), 2u);
    for (const auto& o : got) {
        cr_assert(!o.ok);
        cr_assert(o.text.find("shutting down") != std::string::npos);
    }
    // A late completion from the role changes nothing, and new requests are refused at once.
    held(std::string());
    cr_assert_eq(rl.generation(), 1u);
    rl.request([&](const ReloadOutcome& o) { got.push_back(o); });
    cr_assert_eq(got.size(), 3u);
    cr_assert(!got[2].ok);
}

// --- control socket --------------------------------------------------------------------------

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/rw-control-XXXXXX";
        cr_assert_not_null(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() { (void)std::system(("rm -rf '" + path + "'").c_str()); }
};

}  // namespace

Test(sys, control_answer_round_trips_and_malformed_answers_are_errors) {
    auto a = sys::decode_reload_answer(sys::encode_reload_answer({true, 42, "note one\nnote two"}));
    cr_assert(a.ok());
    cr_assert(a->ok);
    cr_assert_eq(a->generation, 42u);
    cr_assert_str_eq(a->text.c_str(), "note one\nnote two");
    auto f = sys::decode_reload_answer(sys::encode_reload_answer({false, 3, "line 2: bad"}));
    cr_assert(f.ok());
    cr_assert(!f->ok);
    cr_assert_str_eq(f->text.c_str(), "line 2: bad");
    for (const char* bad : {"", "ok", "ok x\n", "maybe 1\n", "failed -1\n", "ok 1x\n"})
        cr_assert(!sys::decode_reload_answer(bad).ok(), "accepted: %s", bad);
}

Test(sys, control_socket_path_prefers_the_runtime_directory) {
    ::setenv("RUNTIME_DIRECTORY", "/run/runewarp-server:/run/other", 1);
    const std::string in_runtime_dir = sys::control_socket_path("server");
    ::unsetenv("RUNTIME_DIRECTORY");
    cr_assert_str_eq(in_runtime_dir.c_str(), "/run/runewarp-server/control.sock");
    if (::geteuid() == 0) {
        const std::string as_root = sys::control_socket_path("client");
        cr_assert_str_eq(as_root.c_str(), "/run/runewarp-client/control.sock");
    }
}

Test(sys, control_socket_carries_a_reload_and_its_answer) {
    TempDir dir;
    std::string path = dir.path + "/run/control.sock";
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    std::string asked;
    auto s = sys::ControlServer::start(*w, path, log,
                                       [&](const std::string& cfg, sys::ReloadReply reply) {
                                           asked = cfg;
                                           reply({false, 7, "line 4: unknown key"});
                                       });
    cr_assert(s.ok(), "%s", s.ok() ? "" : s.error().message.c_str());
    struct stat st {};
    cr_assert_eq(::stat(path.c_str(), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600u, "mode %o", st.st_mode & 0777);
    cr_assert_eq(::stat((dir.path + "/run").c_str(), &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700u);

    std::atomic<bool> done{false};
    Result<ReloadOutcome> got = Error::msg("none");
    std::thread cli([&] {
        got = sys::request_reload(path, "/etc/runewarp/config.ini", std::chrono::seconds(5));
        done = true;
    });
    run_until(
        *w, [&] { return done.load(); }, 5000, "the answer");
    cli.join();
    cr_assert(got.ok(), "%s", got.ok() ? "" : got.error().message.c_str());
    cr_assert(!got->ok);
    cr_assert_eq(got->generation, 7u);
    cr_assert_str_eq(got->text.c_str(), "line 4: unknown key");
    cr_assert_str_eq(asked.c_str(), "/etc/runewarp/config.ini");
    run_until(
        *w, [&] { return (*s)->peers() == 0; }, 3000, "the peer released");

    // A second daemon may not take a live socket over.
    auto second = sys::ControlServer::start(*w, path, log, {});
    cr_assert(!second.ok());
    cr_assert(second.error().message.find("in use") != std::string::npos);

    (*s)->stop();
    cr_assert_neq(::access(path.c_str(), F_OK), 0, "the socket file stays after stop");
    auto none = sys::request_reload(path, "", std::chrono::seconds(1));
    cr_assert(!none.ok());
    cr_assert(none.error().message.find("no running daemon") != std::string::npos, "%s",
              none.error().message.c_str());
}

Test(sys, control_socket_answers_later_and_survives_a_peer_that_left) {
    TempDir dir;
    std::string path = dir.path + "/control.sock";
    // A stale file from a daemon that died is replaced.
    {
        int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, path.data(), path.size());
        cr_assert_eq(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        ::close(fd);
    }
    auto w = make_worker();
    obs::StringSink sink;
    obs::Logger log(sink, obs::LoggerOptions{});
    std::vector<sys::ReloadReply> owed;
    auto s = sys::ControlServer::start(
        *w, path, log,
        [&](const std::string&, sys::ReloadReply reply) { owed.push_back(std::move(reply)); });
    cr_assert(s.ok(), "%s", s.ok() ? "" : s.error().message.c_str());

    // A peer that asks and leaves at once: its slot goes, answering it later changes nothing.
    {
        int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, path.data(), path.size());
        cr_assert_eq(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        cr_assert_eq(::send(fd, "reload\n", 7, 0), 7);
        run_until(
            *w, [&] { return owed.size() == 1; }, 3000, "the first request");
        ::close(fd);
    }
    run_until(
        *w, [&] { return (*s)->peers() == 0; }, 3000, "the departed peer released");
    owed[0]({true, 2, ""});

    std::atomic<bool> done{false};
    Result<ReloadOutcome> got = Error::msg("none");
    std::thread cli([&] {
        got = sys::request_reload(path, "x.ini", std::chrono::seconds(5));
        done = true;
    });
    run_until(
        *w, [&] { return owed.size() == 2; }, 3000, "the second request");
    owed[1]({true, 3, "public-bind-address changed: needs a restart"});
    run_until(
        *w, [&] { return done.load(); }, 3000, "the answer");
    cli.join();
    cr_assert(got.ok(), "%s", got.ok() ? "" : got.error().message.c_str());
    cr_assert(got->ok);
    cr_assert_eq(got->generation, 3u);
    cr_assert(got->text.find("needs a restart") != std::string::npos);
    (*s)->stop();
}

// A daemon started with `ulimit -Sn 1024` under a higher hard limit serves with the hard one; the
// result is the limit now in force. Runs in a child: the limit is process-wide.
Test(sys, nofile_limit_rises_to_the_hard_limit_and_reports_it) {
    pid_t pid = ::fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        rlimit rl{};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max < 2048) _exit(10);
        rl.rlim_cur = 512;
        rl.rlim_max = 2048;  // lowering the hard limit needs no privilege
        if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(11);
        // 2048 < wanted: a process without CAP_SYS_RESOURCE keeps the hard limit, and the soft
        // one rises to it; with the capability both rise to `wanted`.
        std::uint64_t now = sys::raise_nofile_limit(4096);
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(12);
        if (now != rl.rlim_cur) _exit(13);
        if (rl.rlim_cur != 2048 && rl.rlim_cur != 4096) _exit(14);
        if (rl.rlim_cur != rl.rlim_max) _exit(15);
        // Already above what is wanted: nothing is lowered.
        if (sys::raise_nofile_limit(1024) != rl.rlim_cur) _exit(16);
        _exit(0);
    }
    int status = 0;
    cr_assert_eq(::waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "step %d failed", WEXITSTATUS(status));
}
