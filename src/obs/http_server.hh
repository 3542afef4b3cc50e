// HttpServer: the metrics listener — a small HTTP/1.1 server on the event loop. GET and HEAD only,
// each head bounded to 8 KiB with 5 s to send it and read the answer. HTTP/1.1 connections stay
// open for the next request (up to 60 s idle; pipelined heads are answered in order) unless the
// request says `Connection: close`, is HTTP/1.0 without keep-alive, announces a body, or was
// refused (400, 405, 431). At most 32 connections: when full, the one idle the longest is closed
// to make room. Nothing blocks the loop: accept, recv and send are loop ops.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "obs/http_request.hh"
#include "proto/endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::obs {

struct HttpResponse {
    int status = 200;
    std::string content_type;
    std::string body;
};

// Builds the answer for a GET of `path` (query removed). Runs on the loop thread.
using HttpHandler = std::function<HttpResponse(std::string_view path)>;

// The whole response for a status and body, with the headers the listener always sends.
// `keep_alive` leaves out `Connection: close`.
std::string http_response_text(const HttpResponse& r, bool head_only, bool keep_alive = false);
const char* http_status_text(int status) noexcept;

class HttpServer {
public:
    static constexpr size_t kMaxConnections = 32;
    // A request head must arrive within this from its first byte (or from accept).
    static constexpr int64_t kTimeoutNs = 5'000'000'000;
    // A kept-alive connection may wait this long for its next request.
    static constexpr int64_t kIdleTimeoutNs = 60'000'000'000;

    // Serves on `listen_fd` (a bound, listening, non-blocking TCP socket).
    HttpServer(core::Worker& w, core::UniqueFd listen_fd, HttpHandler handler);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // False when the loop has no slot for the listener.
    bool start() noexcept;
    // Stops accepting and cuts the connections still open (shutdown).
    void stop() noexcept;
    bool stopped() const noexcept;
    size_t connections() const noexcept { return conns_.size(); }
    // The listening address ("127.0.0.1:9100").
    const std::string& bind_text() const noexcept { return bind_text_; }
    uint64_t requests() const noexcept { return requests_; }

private:
    class Acceptor;
    class Conn;
    void on_accept(int fd) noexcept;
    void on_conn_closed(Conn* c) noexcept;

    core::Worker& worker_;
    HttpHandler handler_;
    std::unique_ptr<Acceptor> acceptor_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<std::unique_ptr<Conn>> done_;  // freed at the next accept or stop
    std::string bind_text_;
    uint64_t requests_ = 0;
    bool stopping_ = false;
};

// Binds and listens on `ep` (SO_REUSEADDR, non-blocking, close-on-exec). The error names the
// config key: "failed to bind metrics.prometheus-bind-address 127.0.0.1:9100: ...".
Result<core::UniqueFd> bind_metrics_listener(const proto::Endpoint& ep);

// The local address of a socket as text ("127.0.0.1:9100"), "?" if unknown.
std::string socket_local_text(int fd);

}  // namespace runewarp::obs
