// What a configuration reload may change in a running Server. Listeners, the PROXY ingress mode,
// the event backend and the ACME manager are set up once per process: a reload that changes them
// keeps the running values and says so (spec 10.1); everything else applies live.
#pragma once

#include <string>
#include <vector>

#include "config/config.hh"

namespace runewarp::server {

// Copies every restart-only value of `running` into `next` where they differ and returns one
// note per such key ("<key>: changed to X; needs a restart, the running value Y stays").
// `tunnel_bound`: the tunnel listener exists (a Server that had no [tunnel] binds
// tunnel-bind-address when a reload adds the first one).
std::vector<std::string> keep_restart_only(const config::ServerConfig& running,
                                           config::ServerConfig& next, bool tunnel_bound);

}  // namespace runewarp::server
