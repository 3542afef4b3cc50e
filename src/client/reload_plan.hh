// What a configuration reload changes in a running Client, decided without touching the loop:
// which Server addresses to start and to stop retrying, and which settings keep their running
// value until a restart.
#pragma once

#include <string>
#include <vector>

#include "config/config.hh"

namespace runewarp::client {

// Server addresses compared by their canonical text ("host:port", "[v6]:port").
struct AddressDiff {
    std::vector<config::HostPort> added;  // in the new file's order
    std::vector<std::string> removed;     // texts, in the running order
};
AddressDiff diff_server_addresses(const std::vector<std::string>& running,
                                  const std::vector<config::HostPort>& next);

struct RestartOnly {
    // One line per restart-only setting whose new value was not applied, e.g.
    // "event-backend: changed; applies on restart".
    std::vector<std::string> notes;
    // The terminate certificates keep coming from where they came at startup ([client.acme]
    // managers or public-cert-dir): the reload's own certificate snapshot is not used.
    bool keep_certificate_source = false;
};

// Puts the running value of every restart-only setting into `next` (event-backend, log-format,
// [client.acme] and with it where terminate certificates come from) and says what changed.
// With [client.acme] running, a terminating hostname of `next` outside `acme_hostnames` (the
// sorted hostnames the process has managers for) has no certificate until a restart: that is a
// note too.
RestartOnly keep_restart_only(const config::ClientConfig& running, config::ClientConfig& next,
                              const std::vector<std::string>& acme_hostnames);

// The note lines joined with '\n' (no trailing newline), as a reload reports them.
std::string join_notes(const std::vector<std::string>& notes);

}  // namespace runewarp::client
