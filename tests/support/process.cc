// Child processes for end-to-end tests: fork/exec with a CLOEXEC error pipe, a process group per
// child, PR_SET_PDEATHSIG, and an at-exit sweep so a failed assertion never leaks a daemon.
#include "tests/support/process.hh"

#include "tests/support/files.hh"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace runewarp::test {
namespace {

using Clock = std::chrono::steady_clock;

// Children still alive. Criterion aborts a failed test with longjmp (no destructors) and then the
// test process exits normally, so an atexit sweep is the backstop; PDEATHSIG covers crashes.
// Never destroyed: the at-exit sweep may run after static destructors.
std::mutex& live_mutex() {
    static auto* m = new std::mutex;
    return *m;
}
std::set<pid_t>& live_pids() {
    static auto* s = new std::set<pid_t>;
    return *s;
}

void sweep_children() {
    std::lock_guard lock(live_mutex());
    for (pid_t pid : live_pids()) {
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
        int st = 0;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
    }
    live_pids().clear();
}

void track(pid_t pid) {
    static std::once_flag once;
    std::call_once(once, [] { std::atexit(sweep_children); });
    std::lock_guard lock(live_mutex());
    live_pids().insert(pid);
}

void untrack(pid_t pid) {
    std::lock_guard lock(live_mutex());
    live_pids().erase(pid);
}

ExitStatus decode_status(int st) {
    ExitStatus s;
    if (WIFEXITED(st)) {
        s.exited = true;
        s.code = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        s.signal = WTERMSIG(st);
    }
    return s;
}

bool is_executable(const std::string& p) {
    struct stat sb {};
    return ::stat(p.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// A runtime directory of this process' own, made on first use and removed at exit (TempDir's
// sweep). A process forked from one that made it (Criterion runs each test in one) makes its own.
const std::string& private_runtime_dir() {
    // Never destroyed, as the sweep may run after static destructors; a forked process keeps its
    // parent's entry as it is and adds its own.
    static auto* m = new std::mutex;
    static auto* made = new std::vector<std::unique_ptr<TempDir>>;
    static pid_t owner = 0;
    std::lock_guard lock(*m);
    if (owner != ::getpid()) {
        made->push_back(std::make_unique<TempDir>("runewarp-run"));
        owner = ::getpid();
    }
    return made->back()->path();
}

std::vector<std::string> build_env(const SpawnOptions& o) {
    std::vector<std::string> env;
    if (!o.clear_env) {
        // A runewarp daemon puts its control socket in RUNTIME_DIRECTORY, and without one (as
        // root) in /run/runewarp-<role>/, which the daemons of test processes running at the
        // same time would share, and a daemon outside the tests too. Children get this test
        // process' own directory instead of an inherited one, unless o.env names one (Daemon
        // gives each daemon its own).
        for (char** e = environ; e && *e; ++e) {
            if (!std::string_view(*e).starts_with("RUNTIME_DIRECTORY=")) env.emplace_back(*e);
        }
        env.push_back("RUNTIME_DIRECTORY=" + private_runtime_dir());
    }
    for (const auto& add : o.env) {
        auto eq = add.find('=');
        std::string name = add.substr(0, eq == std::string::npos ? add.size() : eq + 1);
        std::erase_if(env, [&](const std::string& cur) { return cur.starts_with(name); });
        env.push_back(add);
    }
    return env;
}

std::vector<char*> c_array(std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

void set_nonblock(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Opens the child side of an Output; returns the fd to dup2, or -1 for "inherit".
// For pipes, parent_fd receives the read end.
int open_output(const Output& o, int& parent_fd) {
    switch (o.kind) {
        case Output::Kind::kInherit:
        case Output::Kind::kStdout:  // handled after stdout is in place
            return -1;
        case Output::Kind::kNull: {
            int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (fd < 0) throw std::runtime_error("open /dev/null failed");
            return fd;
        }
        case Output::Kind::kFile: {
            int fd = ::open(o.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0)
                throw std::runtime_error("cannot create " + o.path + ": " + std::strerror(errno));
            return fd;
        }
        case Output::Kind::kPipe: {
            int p[2];
            if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
            parent_fd = p[0];
            set_nonblock(parent_fd);
            return p[1];
        }
    }
    return -1;
}

[[noreturn]] void child_fail(int errfd, int err) {
    (void)!::write(errfd, &err, sizeof err);
    ::_exit(127);
}

}  // namespace

bool wait_until(const std::function<bool()>& cond, Millis deadline, Millis interval) {
    const auto end = Clock::now() + deadline;
    for (;;) {
        if (cond()) return true;
        if (Clock::now() >= end) return cond();
        std::this_thread::sleep_for(interval);
    }
}

std::string ExitStatus::describe() const {
    if (exited) return "exit code " + std::to_string(code);
    if (signal != 0) return std::string("killed by signal ") + ::strsignal(signal);
    return "unknown status";
}

namespace {

// A /proc file read whole; empty when the process is gone.
std::string read_proc(const std::string& path) {
    try {
        return read_file(path);
    } catch (const std::runtime_error&) {
        return {};
    }
}

}  // namespace

std::uint64_t proc_rss_kib(pid_t pid) {
    const std::string status = read_proc("/proc/" + std::to_string(pid) + "/status");
    const std::size_t at = status.find("\nVmRSS:");
    if (at == std::string::npos) return 0;
    return std::strtoull(status.c_str() + at + 7, nullptr, 10);
}

Millis proc_cpu_time(pid_t pid) {
    const std::string stat = read_proc("/proc/" + std::to_string(pid) + "/stat");
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) return Millis{0};
    // After ") " come field 3 (state) onwards; utime and stime are fields 14 and 15.
    const char* p = stat.c_str() + close + 1;
    unsigned long long field[16] = {};
    for (int i = 3; i <= 15 && *p != '\0'; ++i) {
        while (*p == ' ') ++p;
        field[i] = std::strtoull(p, nullptr, 10);
        while (*p != ' ' && *p != '\0') ++p;  // the state is a letter, not a number
    }
    const long hz = ::sysconf(_SC_CLK_TCK);
    return Millis{static_cast<long long>((field[14] + field[15]) * 1000 / (hz > 0 ? hz : 100))};
}

std::size_t proc_open_fds(pid_t pid) {
    DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
    if (d == nullptr) return 0;
    std::size_t n = 0;
    while (const dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n;
}

std::size_t proc_open_sockets(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return 0;
    std::size_t n = 0;
    char target[64];
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        ssize_t len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        if (len > 0 &&
            std::string_view(target, static_cast<std::size_t>(len)).starts_with("socket:"))
            ++n;
    }
    ::closedir(d);
    return n;
}

pid_t find_thread(pid_t pid, const std::string& name) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return 0;
    pid_t found = 0;
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string comm = read_file(dir + "/" + e->d_name + "/comm");
        while (!comm.empty() && comm.back() == '\n') comm.pop_back();
        if (comm == name) {
            found = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
            break;
        }
    }
    ::closedir(d);
    return found;
}

ThreadStall::ThreadStall(pid_t tid) : tid_(tid) {
    if (::ptrace(PTRACE_SEIZE, tid_, nullptr, nullptr) != 0) {
        error_ = std::string("PTRACE_SEIZE: ") + std::strerror(errno);
        return;
    }
    attached_ = true;
    if (::ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) {
        error_ = std::string("PTRACE_INTERRUPT: ") + std::strerror(errno);
        resume();
        return;
    }
    // The thread reports its stop to its tracer (this thread) through waitpid on its tid.
    int st = 0;
    pid_t r;
    while ((r = ::waitpid(tid_, &st, __WALL)) < 0 && errno == EINTR) {
    }
    if (r != tid_ || !WIFSTOPPED(st)) {
        error_ = "the thread did not stop";
        resume();
    }
}

void ThreadStall::resume() {
    if (!attached_) return;
    attached_ = false;
    (void)::ptrace(PTRACE_DETACH, tid_, nullptr, nullptr);
}

std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) return name;
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    dirs += ":/usr/local/sbin:/usr/sbin:/sbin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        auto colon = dirs.find(':', start);
        if (colon == std::string::npos) colon = dirs.size();
        std::string dir = dirs.substr(start, colon - start);
        if (!dir.empty() && is_executable(dir + "/" + name)) return dir + "/" + name;
        start = colon + 1;
    }
    return {};
}

Process Process::spawn(SpawnOptions opts) {
    if (opts.argv.empty()) throw std::runtime_error("spawn: empty argv");
    std::string exe = find_program(opts.argv[0]);
    if (exe.empty()) throw std::runtime_error("spawn: program not found: " + opts.argv[0]);

    std::vector<std::string> env = build_env(opts);
    std::vector<char*> envp = c_array(env);
    std::vector<char*> argvp = c_array(opts.argv);

    Process p;
    int out_child = open_output(opts.out, p.out_fd_);
    int err_child = -1;
    try {
        err_child = open_output(opts.err, p.err_fd_);
    } catch (...) {
        if (out_child >= 0) ::close(out_child);
        throw;
    }
    int in_child = -1;
    if (opts.stdin_pipe) {
        int ip[2];
        if (::pipe2(ip, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        in_child = ip[0];
        p.in_fd_ = ip[1];
    } else {
        in_child = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    int errpipe[2];
    if (::pipe2(errpipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");

    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
        // Only async-signal-safe calls from here on.
        ::close(errpipe[0]);
        ::setpgid(0, 0);
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(errpipe[1], errno);
        if (::getppid() != parent) ::_exit(127);  // parent died before prctl took effect
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        if (in_child >= 0 && ::dup2(in_child, 0) < 0) child_fail(errpipe[1], errno);
        if (out_child >= 0 && ::dup2(out_child, 1) < 0) child_fail(errpipe[1], errno);
        if (err_child >= 0 && ::dup2(err_child, 2) < 0) child_fail(errpipe[1], errno);
        if (opts.err.kind == Output::Kind::kStdout && ::dup2(1, 2) < 0)
            child_fail(errpipe[1], errno);
        if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) child_fail(errpipe[1], errno);
        ::execve(exe.c_str(), argvp.data(), envp.data());
        child_fail(errpipe[1], errno);
    }
    // Parent: also set the group here so a signal to -pid works even before the child runs.
    ::setpgid(pid, pid);
    p.pid_ = pid;
    track(pid);
    ::close(errpipe[1]);
    for (int fd : {out_child, err_child, in_child}) {
        if (fd >= 0) ::close(fd);
    }
    int child_errno = 0;
    ssize_t n;
    do {
        n = ::read(errpipe[0], &child_errno, sizeof child_errno);
    } while (n < 0 && errno == EINTR);
    ::close(errpipe[0]);
    if (n > 0) {
        p.reap_blocking_();
        throw std::runtime_error("spawn: cannot exec " + exe + ": " + std::strerror(child_errno));
    }
    return p;
}

Process::Process(Process&& o) noexcept {
    *this = std::move(o);
}

Process& Process::operator=(Process&& o) noexcept {
    if (this != &o) {
        if (valid() && !status_) {
            signal(SIGKILL, true);
            reap_blocking_();
        }
        close_fds_();
        pid_ = std::exchange(o.pid_, -1);
        status_ = std::exchange(o.status_, std::nullopt);
        out_fd_ = std::exchange(o.out_fd_, -1);
        err_fd_ = std::exchange(o.err_fd_, -1);
        in_fd_ = std::exchange(o.in_fd_, -1);
        out_buf_ = std::move(o.out_buf_);
        err_buf_ = std::move(o.err_buf_);
    }
    return *this;
}

Process::~Process() {
    if (valid() && !status_) {
        signal(SIGKILL, true);
        reap_blocking_();
    } else if (valid()) {
        ::kill(-pid_, SIGKILL);  // leftovers of the group (e.g. forked workers)
    }
    close_fds_();
}

void Process::close_fds_() {
    for (int* fd : {&out_fd_, &err_fd_, &in_fd_}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
    }
}

void Process::reap_blocking_() {
    if (!valid() || status_) return;
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, 0);
    } while (r < 0 && errno == EINTR);
    status_ = r == pid_ ? decode_status(st) : ExitStatus{};
    untrack(pid_);
}

bool Process::running() {
    if (!valid() || status_) return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = decode_status(st);
        untrack(pid_);
        return false;
    }
    return r == 0;
}

std::optional<ExitStatus> Process::wait_exit(Millis deadline) {
    if (!valid()) return std::nullopt;
    wait_until([this] { return !running(); }, deadline, Millis{2});
    return status_;
}

bool Process::signal(int sig, bool group) {
    if (!valid() || status_) return false;
    return ::kill(group ? -pid_ : pid_, sig) == 0;
}

ExitStatus Process::stop(Millis grace) {
    if (!valid()) return {};
    if (!status_) {
        signal(SIGTERM);
        if (!wait_exit(grace)) {
            signal(SIGKILL, true);
            reap_blocking_();
        }
    }
    ::kill(-pid_, SIGKILL);
    return status_.value_or(ExitStatus{});
}

const std::string& Process::read_pipe_(int& fd, std::string& buf, Millis deadline) {
    const auto end = Clock::now() + deadline;
    char chunk[65536];
    while (fd >= 0) {
        ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n > 0) {
            buf.append(chunk, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            ::close(fd);
            fd = -1;
            break;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) break;
        auto left = std::chrono::duration_cast<Millis>(end - Clock::now()).count();
        if (left <= 0) break;
        pollfd pfd{fd, POLLIN, 0};
        ::poll(&pfd, 1, static_cast<int>(left));
    }
    return buf;
}

const std::string& Process::read_stdout(Millis deadline) {
    return read_pipe_(out_fd_, out_buf_, deadline);
}
const std::string& Process::read_stderr(Millis deadline) {
    return read_pipe_(err_fd_, err_buf_, deadline);
}

bool Process::write_stdin(const std::string& data) {
    std::size_t off = 0;
    while (in_fd_ >= 0 && off < data.size()) {
        ssize_t n = ::write(in_fd_, data.data() + off, data.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        off += static_cast<std::size_t>(n);
    }
    return in_fd_ >= 0;
}

void Process::close_stdin() {
    if (in_fd_ >= 0) ::close(in_fd_);
    in_fd_ = -1;
}

RunResult run(const std::vector<std::string>& argv, Millis deadline,
              const std::vector<std::string>& env) {
    SpawnOptions o;
    o.argv = argv;
    o.env = env;
    o.out = Output::pipe();
    o.err = Output::pipe();
    Process p = Process::spawn(std::move(o));
    RunResult r;
    const auto end = Clock::now() + deadline;
    auto left = [&] {
        return std::max(Millis{0}, std::chrono::duration_cast<Millis>(end - Clock::now()));
    };
    // Drain both pipes while waiting, so a chatty child never blocks on a full pipe.
    while (p.running() && left().count() > 0) {
        p.read_stdout(Millis{0});
        p.read_stderr(Millis{0});
        p.wait_exit(std::min(left(), Millis{20}));
    }
    if (p.running()) {
        r.timed_out = true;
        p.signal(SIGKILL, true);
    }
    r.status = p.wait_exit(Millis{5000}).value_or(ExitStatus{});
    r.out = p.read_stdout(Millis{100});
    r.err = p.read_stderr(Millis{100});
    return r;
}

}  // namespace runewarp::test
