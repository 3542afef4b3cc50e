// Trust anchors the Client verifies the Server with: an exclusive CA file or the system store.
#pragma once

#include <string>

#include "runewarp/result.hh"

namespace runewarp::trust {

// Reads a CA bundle for exclusive trust: a PEM file holding at least one certificate, every
// one of which parses. Returns the PEM text as read.
Result<std::string> load_ca_file(const std::string& path);

// How many trust anchors GnuTLS loads from the system store. 0 on a host without a CA bundle
// (no ca-certificates package): no Server certificate could ever verify there.
Result<unsigned> count_system_trust_anchors();

}  // namespace runewarp::trust
