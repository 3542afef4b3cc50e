// ClientMetrics: the Client's counters, bumped on the loop thread (relaxed stores, no lock, no
// allocation) and read by the metrics listener. They live outside the configuration snapshots,
// so a reload never resets them; labels are Service labels and configured Server addresses.
#pragma once

#include "config/config.hh"
#include "obs/metrics.hh"

namespace runewarp::client {

struct ServiceCounts {
    obs::Counter streams;           // streams routed to this Service
    obs::Gauge active;              // of those, open now
    obs::Counter backend_failures;  // backend resolution or connect failed (or timed out)
    obs::Counter bytes_in;          // Visitor -> backend, finished streams
    obs::Counter bytes_out;         // backend -> Visitor, finished streams
};

struct ServerAddressCounts {
    obs::Counter connects;    // authenticated connections established
    obs::Counter reconnects;  // of those, after an earlier one to the same address closed
};

struct ClientMetrics {
    obs::LabelSlots<ServiceCounts> services;               // by [service "LABEL"]
    obs::LabelSlots<ServerAddressCounts> servers;          // by configured address text
    obs::Counter unmatched_streams;                        // no Service for the hostname
    obs::Histogram backend_connect{obs::setup_buckets()};  // resolve + connect

    void add_labels(const config::ClientConfig& cfg);
};

}  // namespace runewarp::client
