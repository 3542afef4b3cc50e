// HTTPS Visitors driven by the curl binary.
#include "tests/support/curl.hh"

#include <cstdlib>

#include "tests/support/files.hh"
#include "tests/support/net.hh"

namespace runewarp::test {
namespace {

CurlResult result_of(const RunResult& r) {
    CurlResult c;
    c.status = r.status;
    c.timed_out = r.timed_out;
    c.stderr_text = r.err;
    // -w prints "<http_code> <size>" on stdout.
    c.http_code = std::atoi(r.out.c_str());
    auto sp = r.out.find(' ');
    if (sp != std::string::npos) c.bytes = std::strtoull(r.out.c_str() + sp + 1, nullptr, 10);
    return c;
}

}  // namespace

std::string https_url(const HttpsTarget& t, const std::string& path) {
    return "https://" + t.host + ":" + std::to_string(t.port) + path;
}

std::vector<std::string> curl_base_args(const HttpsTarget& t) {
    std::string addr = t.address;
    if (addr.find(':') != std::string::npos && addr.front() != '[') addr = "[" + addr + "]";
    std::vector<std::string> a{"curl",
                               "--silent",
                               "--show-error",
                               "--noproxy",
                               "*",
                               "--resolve",
                               t.host + ":" + std::to_string(t.port) + ":" + addr};
    if (!t.ca_file.empty()) {
        a.push_back("--cacert");
        a.push_back(t.ca_file);
    }
    return a;
}

CurlResult curl_download(const HttpsTarget& t, const std::string& path, const std::string& out_file,
                         Millis deadline) {
    auto args = curl_base_args(t);
    args.insert(args.end(), {"--output", out_file, "--write-out", "%{http_code} %{size_download}",
                             https_url(t, path)});
    CurlResult c = result_of(run(args, deadline));
    if (file_exists(out_file)) c.sha256 = sha256_file(out_file);
    return c;
}

CurlResult curl_upload(const HttpsTarget& t, const std::string& path, const std::string& in_file,
                       Millis deadline) {
    auto args = curl_base_args(t);
    args.insert(args.end(), {"--upload-file", in_file, "--output", "/dev/null", "--write-out",
                             "%{http_code} %{size_upload}", https_url(t, path)});
    CurlResult c = result_of(run(args, deadline));
    c.sha256 = sha256_file(in_file);
    return c;
}

CurlDownload::CurlDownload(const HttpsTarget& t, const std::string& path,
                           const std::string& out_file, Millis max_time)
    : out_file_(out_file) {
    auto args = curl_base_args(t);
    args.insert(args.end(),
                {"--max-time", std::to_string((max_time.count() + 999) / 1000), "--output",
                 out_file, "--write-out", "%{http_code} %{size_download}", https_url(t, path)});
    proc_ = Process::spawn({.argv = args, .out = Output::pipe(), .err = Output::pipe()});
}

std::optional<CurlResult> CurlDownload::finish(Millis deadline) {
    auto st = proc_.wait_exit(deadline);
    if (!st) return std::nullopt;
    RunResult r;
    r.status = *st;
    r.out = proc_.read_stdout(Millis{1000});
    r.err = proc_.read_stderr(Millis{1000});
    CurlResult c = result_of(r);
    if (file_exists(out_file_)) c.sha256 = sha256_file(out_file_);
    return c;
}

}  // namespace runewarp::test
