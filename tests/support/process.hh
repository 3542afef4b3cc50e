// Child processes for end-to-end tests: spawn with argv/env and captured output, wait with a
// deadline, signal, and never leak (killed on destruction, at exit, and when the test dies).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace runewarp::test {

using Millis = std::chrono::milliseconds;

// Polls cond() every `interval` until it returns true or `deadline` has passed. Returns whether
// the condition held. This is the only way tests wait for something to happen.
bool wait_until(const std::function<bool()>& cond, Millis deadline, Millis interval = Millis{5});

// Where a child's stdout or stderr goes.
struct Output {
    enum class Kind { kInherit, kNull, kFile, kPipe, kStdout };
    Kind kind = Kind::kNull;
    std::string path;  // kFile: created or truncated

    static Output inherit() { return {Kind::kInherit, {}}; }
    static Output null() { return {Kind::kNull, {}}; }
    static Output file(std::string p) { return {Kind::kFile, std::move(p)}; }
    static Output pipe() { return {Kind::kPipe, {}}; }
    // For stderr only: the same file description as stdout (one interleaved log).
    static Output same_as_stdout() { return {Kind::kStdout, {}}; }
};

struct SpawnOptions {
    std::vector<std::string> argv{};  // argv[0] is looked up in PATH when it has no '/'
    // Extra "NAME=value" entries layered over the current environment (same NAME replaces).
    // RUNTIME_DIRECTORY is a directory of the test process' own unless set here (or clear_env):
    // a runewarp daemon never falls back to the machine-wide /run/runewarp-<role>/.
    std::vector<std::string> env{};
    bool clear_env = false;  // start from an empty environment instead of the current one
    std::string cwd{};       // empty: inherit
    Output out = Output::null();
    Output err = Output::null();
    bool stdin_pipe = false;  // give the child a pipe as stdin (write with write_stdin)
};

// Exit status of a reaped child.
struct ExitStatus {
    bool exited = false;  // normal exit (code valid) vs killed by a signal (signal valid)
    int code = -1;
    int signal = 0;
    bool success() const { return exited && code == 0; }
    std::string describe() const;
};

class Process {
public:
    // Throws std::runtime_error when the program cannot be started (exec failure included).
    static Process spawn(SpawnOptions opts);

    Process() = default;
    Process(Process&& o) noexcept;
    Process& operator=(Process&& o) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    ~Process();  // SIGKILL to the whole process group, then reap

    pid_t pid() const { return pid_; }
    bool valid() const { return pid_ > 0; }

    // Non-blocking: true while the child has not exited (reaps it if it has).
    bool running();
    // Waits for exit until the deadline; nullopt if still running.
    std::optional<ExitStatus> wait_exit(Millis deadline);
    // Status once reaped.
    const std::optional<ExitStatus>& status() const { return status_; }

    // Sends sig to the child (or to its whole process group). False if already gone.
    bool signal(int sig, bool group = false);
    // SIGTERM, wait up to grace, then SIGKILL the group; returns the final status.
    ExitStatus stop(Millis grace = Millis{3000});

    // Pipe access (Output::pipe / stdin_pipe). read_* collect what is available until EOF or the
    // deadline and append it to the process' buffer, returned whole.
    const std::string& read_stdout(Millis deadline);
    const std::string& read_stderr(Millis deadline);
    bool write_stdin(const std::string& data);
    void close_stdin();

private:
    void reap_blocking_();
    void close_fds_();
    const std::string& read_pipe_(int& fd, std::string& buf, Millis deadline);

    pid_t pid_ = -1;
    std::optional<ExitStatus> status_;
    int out_fd_ = -1;
    int err_fd_ = -1;
    int in_fd_ = -1;
    std::string out_buf_;
    std::string err_buf_;
};

// Runs a program to completion (stdout captured); kills it at the deadline.
struct RunResult {
    ExitStatus status;
    std::string out;
    std::string err;
    bool timed_out = false;
};
RunResult run(const std::vector<std::string>& argv, Millis deadline = Millis{60000},
              const std::vector<std::string>& env = {});

// What /proc says about a running process, for resource bounds in tests (0 when unknown).
// VmRSS from /proc/<pid>/status, in KiB.
std::uint64_t proc_rss_kib(pid_t pid);
// utime + stime from /proc/<pid>/stat: CPU time used so far.
Millis proc_cpu_time(pid_t pid);
// Entries of /proc/<pid>/fd: open file descriptors.
std::size_t proc_open_fds(pid_t pid);
// Of those, the sockets (splice pipes and other descriptors a worker keeps idle are not counted).
std::size_t proc_open_sockets(pid_t pid);

// The thread of process `pid` whose name (/proc/<pid>/task/<tid>/comm) is `name`; 0 when none.
pid_t find_thread(pid_t pid, const std::string& name);

// Stops one thread of another process while its other threads run on, as a worker stuck in a busy
// loop would: ptrace(PTRACE_SEIZE) and PTRACE_INTERRUPT, waited for until the thread is in its
// ptrace stop. resume() (or the destructor, or this process exiting) detaches and lets it run.
// The tracer is the calling thread: construct, resume and destroy it on the same thread.
class ThreadStall {
public:
    explicit ThreadStall(pid_t tid);
    ~ThreadStall() { resume(); }
    ThreadStall(const ThreadStall&) = delete;
    ThreadStall& operator=(const ThreadStall&) = delete;
    // Empty when the thread is stopped; else why not.
    const std::string& error() const { return error_; }
    void resume();

private:
    pid_t tid_ = 0;
    bool attached_ = false;
    std::string error_;
};

// Full path of a program found in PATH (or the argument if it contains '/'); empty if none.
std::string find_program(const std::string& name);

}  // namespace runewarp::test
