// Opens N TLS connections (GnuTLS, full handshake) to one address and SNI, then keeps them idle
// until SIGTERM or SIGINT arrives. Used by bench/run to measure a proxy's memory
// per idle connection: the proxy's RSS before and after, divided by N.
//
//   idle_conns --connect 127.0.0.1:8443 --sni app.bench.test --count 2000 [--ca ca.crt]
//              [--ready-file PATH]
//
// Prints "ready <n>" (and writes it to --ready-file) once every handshake has completed.
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) {
    g_stop = 1;
}

struct Target {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

bool parse_target(const std::string& s, Target& t) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = s.substr(0, colon);
    const int port = std::atoi(s.c_str() + colon + 1);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&t.ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&t.ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        t.len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(port));
        t.len = sizeof *v6;
        return true;
    }
    return false;
}

struct Conn {
    int fd = -1;
    gnutls_session_t session = nullptr;
};

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "idle_conns: %s\n", msg.c_str());
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    std::string connect_to, sni, ca, ready_file;
    long count = 2000;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i];
        if (k == "--connect")
            connect_to = argv[i + 1];
        else if (k == "--sni")
            sni = argv[i + 1];
        else if (k == "--count")
            count = std::atol(argv[i + 1]);
        else if (k == "--ca")
            ca = argv[i + 1];
        else if (k == "--ready-file")
            ready_file = argv[i + 1];
        else
            die("unknown option " + k);
    }
    Target t;
    if (!parse_target(connect_to, t) || sni.empty() || count <= 0)
        die("usage: idle_conns --connect ADDR:PORT --sni HOST --count N [--ca FILE] [--ready-file "
            "F]");

    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    // Block the stop signals until the idle wait, so none is lost before sigsuspend().
    sigset_t stop_set, wait_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_set, &wait_set);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    gnutls_certificate_credentials_t cred;
    gnutls_certificate_allocate_credentials(&cred);
    if (!ca.empty() &&
        gnutls_certificate_set_x509_trust_file(cred, ca.c_str(), GNUTLS_X509_FMT_PEM) <= 0)
        die("cannot load CA " + ca);

    std::vector<Conn> conns;
    conns.reserve(static_cast<std::size_t>(count));
    for (long i = 0; i < count; ++i) {
        Conn c;
        c.fd = socket(t.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c.fd < 0) die(std::string("socket: ") + std::strerror(errno));
        if (connect(c.fd, reinterpret_cast<sockaddr*>(&t.ss), t.len) != 0)
            die("connect #" + std::to_string(i) + ": " + std::strerror(errno));
        gnutls_init(&c.session, GNUTLS_CLIENT);
        gnutls_set_default_priority(c.session);
        gnutls_credentials_set(c.session, GNUTLS_CRD_CERTIFICATE, cred);
        gnutls_server_name_set(c.session, GNUTLS_NAME_DNS, sni.data(), sni.size());
        if (!ca.empty()) gnutls_session_set_verify_cert(c.session, sni.c_str(), 0);
        gnutls_transport_set_int(c.session, c.fd);
        gnutls_handshake_set_timeout(c.session, 10000);
        int rc;
        do {
            rc = gnutls_handshake(c.session);
        } while (rc < 0 && !gnutls_error_is_fatal(rc));
        if (rc < 0) die("handshake #" + std::to_string(i) + ": " + gnutls_strerror(rc));
        conns.push_back(c);
    }
    std::printf("ready %zu\n", conns.size());
    std::fflush(stdout);
    if (!ready_file.empty()) {
        if (FILE* f = std::fopen(ready_file.c_str(), "w")) {
            std::fprintf(f, "ready %zu\n", conns.size());
            std::fclose(f);
        }
    }
    // Idle until told to stop.
    while (!g_stop) sigsuspend(&wait_set);
    for (auto& c : conns) {
        gnutls_deinit(c.session);
        close(c.fd);
    }
    gnutls_certificate_free_credentials(cred);
    return 0;
}
