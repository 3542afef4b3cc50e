// An HTTPS backend for end-to-end tests: Debian's nginx in the foreground, one process.
#include "tests/support/nginx.hh"

#include <sys/resource.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace runewarp::test {
namespace {

std::string listen_addr(const std::string& addr, std::uint16_t port) {
    return host_port(addr, port);
}

// One listener's server block; every listener serves the same endpoints.
struct Listener {
    std::uint16_t port = 0;
    bool tls = true;
    bool proxy = false;  // expects a PROXY header first
    bool http2 = false;  // plain HTTP/2 (h2c); only without TLS
};

std::string server_block(const NginxOptions& o, const std::string& dir, const TlsMaterial& tls,
                         const Listener& l) {
    std::ostringstream c;
    c << "    server {\n"
      << "        listen " << listen_addr(o.address, l.port) << (l.tls ? " ssl" : "")
      << (l.http2 ? " http2" : "")
      << (l.proxy ? " proxy_protocol" : "")
      // Tests open a thousand backend connections at once; nginx's default accept queue (511)
      // would make a starved single worker drop some of them.
      << " backlog=4096;\n"
      << "        server_name";
    for (const auto& h : o.hostnames) c << " " << h;
    c << ";\n";
    if (l.tls)
        c << "        ssl_certificate " << tls.leaf.cert << ";\n"
          << "        ssl_certificate_key " << tls.leaf.key << ";\n";
    c << "        root " << dir << "/www;\n"
      << "        location /files/ { }\n"
      // The same files at 32 KiB/s per connection: transfers that stay open for a while.
      << "        location /slow/ { alias " << dir << "/www/files/; limit_rate 32k; }\n"
      << "        location /upload/ {\n"
      << "            dav_methods PUT;\n"
      << "            create_full_put_path on;\n"
      << "            client_max_body_size 0;\n"
      << "        }\n"
      << "        location = /small { return 200 \"ok\\n\"; }\n"
      // A plaintext listener sees no SNI: the Host name stands in for it.
      << "        location = /name { return 200 \"" << o.name << " "
      << (l.tls ? "$ssl_server_name" : "$host") << "\\n\"; }\n"
      << "        location = /proto { return 200 \"$server_protocol\\n\"; }\n"
      << "        location = /peer { return 200 \"$remote_addr:$remote_port "
         "$server_addr:$server_port\\n\"; }\n";
    if (l.proxy)
        c << "        location = /proxy { return 200 \"$proxy_protocol_addr:$proxy_protocol_port "
             "$proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }\n";
    c << "    }\n";
    return c.str();
}

// Every listener the options ask for, the TLS one first.
std::vector<Listener> listeners_of(const NginxOptions& o) {
    std::vector<Listener> ls{{.port = o.port}};
    if (o.proxy_protocol) ls.push_back({.port = o.proxy_port, .proxy = true});
    if (o.plaintext) ls.push_back({.port = o.plain_port, .tls = false});
    if (o.plaintext && o.proxy_protocol)
        ls.push_back({.port = o.plain_proxy_port, .tls = false, .proxy = true});
    if (o.h2c) ls.push_back({.port = o.h2c_port, .tls = false, .http2 = true});
    return ls;
}

std::string render_config(const NginxOptions& o, const std::string& dir, const TlsMaterial& tls) {
    std::ostringstream c;
    // One process: the test owns the only PID, so nothing can outlive it.
    c << "master_process off;\n";
    if (::geteuid() == 0) c << "user root;\n";  // the temp dirs are 0700 root
    c << "worker_rlimit_nofile 16384;\n"
      << "pid " << dir << "/nginx.pid;\n"
      << "error_log " << dir << "/error.log info;\n"
      << "events { worker_connections 8192; }\n"
      << "http {\n"
      << "    access_log " << dir << "/access.log;\n"
      << "    client_body_temp_path " << dir << "/tmp/body;\n"
      << "    proxy_temp_path " << dir << "/tmp/proxy;\n"
      << "    fastcgi_temp_path " << dir << "/tmp/fastcgi;\n"
      << "    uwsgi_temp_path " << dir << "/tmp/uwsgi;\n"
      << "    scgi_temp_path " << dir << "/tmp/scgi;\n"
      << "    default_type application/octet-stream;\n"
      << "    sendfile on;\n"
      << "    keepalive_requests 1000000;\n"
      << "    keepalive_timeout 300s;\n"
      << "    ssl_protocols TLSv1.2 TLSv1.3;\n";
    for (const Listener& l : listeners_of(o)) c << server_block(o, dir, tls, l);
    c << "}\n";
    return c.str();
}

}  // namespace

NginxFixture::NginxFixture(NginxOptions opts) : opts_(std::move(opts)), dir_("runewarp-nginx") {
    if (const char* b = std::getenv("RUNEWARP_TEST_NGINX"); b && *b) opts_.binary = b;
    const Family fam = opts_.address.find(':') != std::string::npos ? Family::kV6 : Family::kV4;
    if (opts_.port == 0) opts_.port = free_port(fam);
    if (opts_.proxy_protocol && opts_.proxy_port == 0) opts_.proxy_port = free_port(fam);
    if (opts_.plaintext && opts_.plain_port == 0) opts_.plain_port = free_port(fam);
    if (opts_.plaintext && opts_.proxy_protocol && opts_.plain_proxy_port == 0)
        opts_.plain_proxy_port = free_port(fam);
    if (opts_.h2c && opts_.h2c_port == 0) opts_.h2c_port = free_port(fam);
    for (const char* sub : {"/www/files", "/www/upload", "/tmp", "/tls"})
        make_dirs(dir_.path() + sub);
    tls_ = make_tls_material(dir_ / "tls", opts_.hostnames);
    const std::string conf = dir_ / "nginx.conf";
    write_file(conf, render_config(opts_, dir_.path(), tls_));

    SpawnOptions so;
    // With master_process off nginx never applies worker_rlimit_nofile: it would serve with the
    // soft limit it inherits (1024 on a stock host) and refuse connections past a thousand. It
    // starts through prlimit (same pid) with the soft limit at the hard one instead.
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        std::string hard = rl.rlim_max == RLIM_INFINITY ? "unlimited" : std::to_string(rl.rlim_max);
        so.argv = {"prlimit", "--nofile=" + hard + ":" + hard, "--"};
    }
    so.argv.insert(so.argv.end(), {opts_.binary, "-p", dir_.path() + "/", "-c", conf, "-e",
                                   error_log(), "-g", "daemon off;"});
    so.out = Output::file(dir_ / "stdout.log");
    so.err = Output::file(dir_ / "stderr.log");
    proc_ = Process::spawn(std::move(so));

    const std::vector<Listener> listeners = listeners_of(opts_);
    auto up = [&] {
        if (!proc_.running()) return true;  // stop waiting, reported below
        for (const Listener& l : listeners)
            if (!tcp_accepting(opts_.address, l.port)) return false;
        return true;
    };
    wait_until(up, opts_.start_deadline, Millis{10});
    if (!proc_.running() || !up()) {
        std::string why = proc_.running() ? "did not accept in time" : proc_.status()->describe();
        std::string log = file_exists(error_log()) ? read_file(error_log()) : "";
        log += file_exists(dir_ / "stderr.log") ? read_file(dir_ / "stderr.log") : "";
        throw std::runtime_error("nginx " + why + ":\n" + log);
    }
}

NginxFixture::~NginxFixture() {
    stop();
}

void NginxFixture::stop() {
    if (!proc_.valid() || !proc_.running()) return;
    proc_.signal(SIGQUIT);
    if (!proc_.wait_exit(Millis{3000})) proc_.stop(Millis{0});
}

std::string NginxFixture::add_random_file(const std::string& name, std::uint64_t size,
                                          std::uint64_t seed) {
    return write_random_file(dir_.path() + "/www/files/" + name, size, seed);
}

void NginxFixture::add_file(const std::string& name, const std::string& source) {
    const std::string dst = dir_.path() + "/www/files/" + name;
    ::unlink(dst.c_str());
    if (::symlink(source.c_str(), dst.c_str()) != 0)
        throw std::runtime_error("symlink " + dst + " failed");
}

std::string NginxFixture::upload_path(const std::string& name) const {
    return dir_.path() + "/www/upload/" + name;
}

CachedFile cached_random_file(std::uint64_t size, std::uint64_t seed) {
    const char* base = std::getenv("TMPDIR");
    const std::string dir = std::string(base && *base ? base : "/tmp") + "/runewarp-test-cache";
    make_dirs(dir);
    const std::string stem = dir + "/random-" + std::to_string(size) + "-" + std::to_string(seed);
    CachedFile f{stem + ".bin", {}};
    const std::string sum = stem + ".sha256";
    if (file_exists(sum) && file_exists(f.path) && file_size(f.path) == size) {
        f.sha256 = read_file(sum);
        return f;
    }
    // Write under unique names, then rename: concurrent test processes never see a partial file.
    const std::string tmp = stem + ".tmp." + std::to_string(::getpid());
    f.sha256 = write_random_file(tmp + ".bin", size, seed);
    write_file(tmp + ".sha256", f.sha256);
    if (::rename((tmp + ".bin").c_str(), f.path.c_str()) != 0 ||
        ::rename((tmp + ".sha256").c_str(), sum.c_str()) != 0)
        throw std::runtime_error("cannot publish " + f.path);
    return f;
}

}  // namespace runewarp::test
