#include "tests/support/pebble.hh"

#include <stdexcept>
#include <utility>

#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/tls.hh"

namespace runewarp::test {

namespace {

std::string port_text(std::uint16_t p) {
    return std::to_string(p);
}

}  // namespace

Pebble::Pebble(std::string dir, PebbleOptions opts) : dir_(std::move(dir)), opts_(opts) {
    make_dirs(dir_);
    acme_port_ = free_port();
    mgmt_port_ = free_port();
    dns_port_ = free_port();
    dns_mgmt_port_ = free_port();
    if (opts_.tls_port == 0) opts_.tls_port = free_port();

    // pebble's own HTTPS listener: a throwaway CA whose certificate is the ACME `ca-file`.
    TestCa ca("pebble HTTPS test CA");
    ca.write_cert(https_ca_file());
    ca.issue({"127.0.0.1", "localhost"}, dir_, "pebble-https");

    std::string cfg = "{\n  \"pebble\": {\n";
    cfg += "    \"listenAddress\": \"127.0.0.1:" + port_text(acme_port_) + "\",\n";
    cfg += "    \"managementListenAddress\": \"127.0.0.1:" + port_text(mgmt_port_) + "\",\n";
    cfg += "    \"certificate\": \"" + dir_ + "/pebble-https.crt\",\n";
    cfg += "    \"privateKey\": \"" + dir_ + "/pebble-https.key\",\n";
    // HTTP-01 is never used; pebble still wants a port for it.
    cfg += "    \"httpPort\": " + port_text(free_port()) + ",\n";
    cfg += "    \"tlsPort\": " + port_text(opts_.tls_port) + ",\n";
    cfg += "    \"ocspResponderURL\": \"\",\n";
    if (opts_.validity_s > 0) {
        cfg += "    \"certificateValidityPeriod\": " + std::to_string(opts_.validity_s) + ",\n";
    }
    cfg += "    \"externalAccountBindingRequired\": false\n  }\n}\n";
    write_file(dir_ + "/pebble-config.json", cfg);

    SpawnOptions so;
    so.argv = {"pebble-challtestsrv",
               "-dns01",
               "127.0.0.1:" + port_text(dns_port_),
               "-management",
               "127.0.0.1:" + port_text(dns_mgmt_port_),
               "-http01",
               "",
               "-https01",
               "",
               "-tlsalpn01",
               "",
               "-defaultIPv4",
               "127.0.0.1",
               "-defaultIPv6",
               ""};
    so.out = Output::file(dir_ + "/challtestsrv.log");
    so.err = Output::same_as_stdout();
    challtest_ = Process::spawn(std::move(so));
    if (!wait_tcp_accepting("127.0.0.1", dns_mgmt_port_, Millis{10000})) {
        throw std::runtime_error("pebble-challtestsrv did not start: " +
                                 read_file(dir_ + "/challtestsrv.log"));
    }
}

Pebble::~Pebble() {
    stop();
    if (challtest_.valid()) challtest_.stop(Millis{2000});
}

void Pebble::start() {
    if (running()) return;
    ++starts_;
    root_fetched_ = false;
    SpawnOptions so;
    so.argv = {"pebble", "-config", dir_ + "/pebble-config.json", "-dnsserver",
               "127.0.0.1:" + port_text(dns_port_)};
    so.env = {"PEBBLE_VA_NOSLEEP=1"};
    if (opts_.always_valid) so.env.push_back("PEBBLE_VA_ALWAYS_VALID=1");
    if (opts_.nonce_reject_percent >= 0) {
        so.env.push_back("PEBBLE_WFE_NONCEREJECT=" + std::to_string(opts_.nonce_reject_percent));
    }
    so.out = Output::file(dir_ + "/pebble-" + std::to_string(starts_) + ".log");
    so.err = Output::same_as_stdout();
    pebble_ = Process::spawn(std::move(so));
    bool up = wait_until(
        [&] {
            return !pebble_.running() || (tcp_accepting("127.0.0.1", acme_port_) &&
                                          tcp_accepting("127.0.0.1", mgmt_port_));
        },
        Millis{15000});
    if (!up || !pebble_.running()) {
        throw std::runtime_error("pebble did not start: " + log());
    }
}

void Pebble::stop() {
    if (pebble_.valid()) pebble_.stop(Millis{2000});
    pebble_ = Process();
}

std::string Pebble::directory_url() const {
    return "https://127.0.0.1:" + port_text(acme_port_) + "/dir";
}

std::string Pebble::issuer_root_file() {
    std::string path = dir_ + "/pebble-root.crt";
    if (root_fetched_) return path;
    SpawnOptions so;
    so.argv = {"curl",
               "-sS",
               "--fail",
               "--cacert",
               https_ca_file(),
               "-o",
               path,
               "https://127.0.0.1:" + port_text(mgmt_port_) + "/roots/0"};
    so.err = Output::file(dir_ + "/root-fetch.log");
    Process p = Process::spawn(std::move(so));
    auto st = p.wait_exit(Millis{10000});
    if (!st || !st->success() || read_file(path).find("BEGIN CERTIFICATE") == std::string::npos) {
        throw std::runtime_error("cannot fetch pebble's root: " +
                                 read_file(dir_ + "/root-fetch.log"));
    }
    root_fetched_ = true;
    return path;
}

std::string Pebble::log() const {
    std::string out;
    for (int i = 1; i <= starts_; ++i) {
        out += read_file(dir_ + "/pebble-" + std::to_string(i) + ".log");
    }
    return out;
}

}  // namespace runewarp::test
