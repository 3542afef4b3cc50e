// Process resource limits a relay daemon needs.
#pragma once

namespace runewarp::sys {

// Raises the soft fd limit to the hard one: every relay holds two sockets and, while bytes flow,
// pipes. A daemon started from a shell, or by systemd (soft 1024), would otherwise stop at 1024.
void raise_nofile_limit() noexcept;

}  // namespace runewarp::sys
