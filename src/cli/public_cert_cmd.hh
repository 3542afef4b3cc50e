// `runewarp client public-cert init|renew|rotate-ca`: manual certificates for the Public
// hostnames of terminating Services.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_client_public_cert_init(const Invocation& inv, Console& console);
int run_client_public_cert_renew(const Invocation& inv, Console& console);
int run_client_public_cert_rotate_ca(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
