// `runewarp server cert init|renew|rotate-ca`: the private Server CA material.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_server_cert_init(const Invocation& inv, Console& console);
int run_server_cert_renew(const Invocation& inv, Console& console);
int run_server_cert_rotate_ca(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
