// Running the real binary with an /etc/hosts of the test's choosing: a private mount namespace
// (unshare -m) whose /etc/hosts is a bind mount of a file, so name resolution sees exactly what a
// stock host would, whatever the machine running the tests has.
#pragma once

#include <string>
#include <vector>

namespace runewarp::test {

// What Debian and Ubuntu install: `localhost` has an IPv6 address too, and resolvers that sort
// by RFC 6724 (glibc, c-ares) answer ::1 first.
inline const std::string kStockHosts =
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\n"
    "ff02::2\t\tip6-allrouters\n";

// argv that runs `argv` with `hosts_file` mounted over /etc/hosts. The file is bind-mounted, so
// rewriting it in place (same inode, e.g. write_file) changes what the process resolves.
// With `resolv_conf`, /etc/resolv.conf is replaced too (e.g. by an empty file: no name server
// but the default 127.0.0.1, where nothing answers, so lookups fail at once and offline).
inline std::vector<std::string> with_hosts_file(const std::string& hosts_file,
                                                std::vector<std::string> argv,
                                                const std::string& resolv_conf = {}) {
    std::string mounts = "mount --bind '" + hosts_file + "' /etc/hosts && ";
    if (!resolv_conf.empty()) mounts += "mount --bind '" + resolv_conf + "' /etc/resolv.conf && ";
    std::vector<std::string> out = {"unshare", "-m", "sh", "-c", mounts + "exec \"$@\"", "sh"};
    for (std::string& a : argv) out.push_back(std::move(a));
    return out;
}

}  // namespace runewarp::test
