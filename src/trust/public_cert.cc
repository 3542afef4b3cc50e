// Public hostname certificate material: init, renew and rotate-ca over a private CA, the
// summary lines, and the loader the Client uses for terminating hostnames.
#include "trust/public_cert.hh"

#include <array>
#include <utility>

#include "trust/material.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

namespace {

constexpr std::string_view kInitAdvice =
    "Repair or remove these files and rerun `runewarp client public-cert init`";

std::string ca_crt_path(const std::string& dir) {
    return join_path(dir, kPublicCaFile);
}

std::string ca_key_path(const std::string& dir) {
    return join_path(dir, kPublicCaKeyFile);
}

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) {
        if (!out.empty()) out.append(", ");
        out.append(n);
    }
    return out;
}

// The four files that make up one hostname's material, relative to the directory.
struct HostFiles {
    std::array<std::string, 4> names;
    std::array<std::string_view, 4> views;

    explicit HostFiles(const std::string& hostname)
        : names{std::string(kPublicCaFile), std::string(kPublicCaKeyFile),
                hostname + "/" + std::string(kPublicLeafCertFile),
                hostname + "/" + std::string(kPublicLeafKeyFile)} {
        for (std::size_t i = 0; i < names.size(); ++i) views[i] = names[i];
    }
    HostFiles(const HostFiles&) = delete;
    HostFiles& operator=(const HostFiles&) = delete;
};

Error incomplete(const std::string& dir, const std::string& hostname, const std::string& detail) {
    HostFiles files(hostname);
    MaterialSurvey survey = survey_files(dir, files.views);
    return incomplete_material("Public hostname certificate material", dir, survey, detail,
                               kInitAdvice);
}

Error incomplete_ca(const std::string& dir, const std::string& detail) {
    constexpr std::array<std::string_view, 2> kCaFiles = {kPublicCaFile, kPublicCaKeyFile};
    MaterialSurvey survey = survey_files(dir, kCaFiles);
    return incomplete_material("Public hostname CA material", dir, survey, detail, kInitAdvice);
}

struct PairState {
    bool crt = false;
    bool key = false;
    bool both() const noexcept { return crt && key; }
    bool none() const noexcept { return !crt && !key; }
};

PairState ca_state(const std::string& dir) {
    return PairState{path_exists(ca_crt_path(dir)), path_exists(ca_key_path(dir))};
}

PairState leaf_state(const std::string& dir, const std::string& hostname) {
    return PairState{path_exists(public_cert_path(dir, hostname)),
                     path_exists(public_key_path(dir, hostname))};
}

// The existing CA pair, checked (key matches, CA certificate).
Result<KeyCertPem> existing_ca(const std::string& dir) {
    PairState ca = ca_state(dir);
    if (ca.none()) {
        return Error::msg("no Public hostname CA in " + dir +
                          ": run `runewarp client public-cert init` first");
    }
    if (!ca.both()) return incomplete_ca(dir, {});
    auto pem = load_private_ca(ca_key_path(dir), ca_crt_path(dir));
    if (!pem) return incomplete_ca(dir, pem.error().message);
    return pem;
}

struct PendingLeaf {
    std::string hostname;
    IssuedLeaf leaf;
};

// A leaf per hostname from `ca`, all generated before anything is written.
Result<std::vector<PendingLeaf>> issue_all(const std::string& dir, const KeyCertPem& ca,
                                           const std::vector<std::string>& hostnames) {
    std::vector<PendingLeaf> out;
    const std::time_t now = std::time(nullptr);
    for (const std::string& h : hostnames) {
        auto leaf = issue_private_leaf(ca, h, now, ca_key_path(dir), ca_crt_path(dir));
        if (!leaf) return std::move(leaf).error();
        out.push_back(PendingLeaf{h, std::move(*leaf)});
    }
    return out;
}

using PutFile = Result<void> (*)(const std::string&, std::string_view, mode_t);

Result<void> write_ca(const std::string& dir, const KeyCertPem& ca, PutFile put) {
    if (auto d = ensure_dir(dir, 0755); !d) return d;
    if (auto d = ensure_dir(join_path(dir, kPublicStateDir), 0700); !d) return d;
    if (auto w = put(ca_key_path(dir), ca.key, 0600); !w) return w;
    return put(ca_crt_path(dir), ca.crt, 0644);
}

Result<void> write_leaves(const std::string& dir, const std::vector<PendingLeaf>& leaves,
                          PutFile put) {
    if (auto d = ensure_dir(dir, 0755); !d) return d;
    for (const PendingLeaf& p : leaves) {
        if (auto d = ensure_dir(join_path(dir, p.hostname), 0755); !d) return d;
        if (auto w = put(public_key_path(dir, p.hostname), p.leaf.pem.key, 0600); !w) return w;
        if (auto w = put(public_cert_path(dir, p.hostname), p.leaf.pem.crt, 0644); !w) return w;
    }
    return {};
}

std::vector<std::string> names_of(const std::vector<PendingLeaf>& leaves) {
    std::vector<std::string> out;
    for (const PendingLeaf& p : leaves) out.push_back(p.hostname);
    return out;
}

Result<void> need_hostnames(const std::vector<std::string>& hostnames) {
    if (hostnames.empty()) return Error::msg("no Public hostname to issue a certificate for");
    return {};
}

}  // namespace

std::string public_cert_path(const std::string& dir, const std::string& hostname) {
    return join_path(join_path(dir, hostname), kPublicLeafCertFile);
}

std::string public_key_path(const std::string& dir, const std::string& hostname) {
    return join_path(join_path(dir, hostname), kPublicLeafKeyFile);
}

std::string format_public_cert_summary(const PublicCertSummary& s) {
    std::string out;
    auto line = [&out](std::string_view label, const std::string& value) {
        out.append(label);
        out.append(value);
        out.push_back('\n');
    };
    switch (s.action) {
        case PublicCertAction::kInit:
            if (!s.existing.empty()) {
                line("Public hostname certificate material already exists for: ",
                     join_names(s.existing));
            }
            line("Public hostname CA: ", ca_crt_path(s.dir));
            if (!s.issued.empty()) {
                line("Initialized leaf certificate(s) for: ", join_names(s.issued));
            }
            break;
        case PublicCertAction::kRenew:
            line("Renewed leaf certificate(s) for: ", join_names(s.issued));
            break;
        case PublicCertAction::kRotateCa:
            line("Public hostname CA rotated: ", ca_crt_path(s.dir));
            line("Reissued leaf certificate(s) for: ", join_names(s.issued));
            break;
    }
    line("Leaf certificate lifetime: ", std::to_string(kPrivateLeafDays) + " days");
    line("Issued at (UTC): ", rfc3339_utc(s.not_before));
    line("Renew after (UTC): ",
         rfc3339_utc(s.not_before + kPrivateLeafRenewAfterDays * kDaySeconds));
    line("Expires at (UTC): ", rfc3339_utc(s.not_after));
    return out;
}

Result<PublicCertSummary> init_public_cert(const std::string& dir,
                                           const std::vector<std::string>& hostnames) {
    if (auto n = need_hostnames(hostnames); !n) return std::move(n).error();
    PublicCertSummary s;
    s.action = PublicCertAction::kInit;
    s.dir = dir;

    // Every hostname is looked at before anything is written.
    const PairState ca = ca_state(dir);
    std::vector<std::string> missing;
    std::vector<PublicCertMaterial> existing;
    for (const std::string& h : hostnames) {
        const PairState leaf = leaf_state(dir, h);
        if (!ca.both() && !ca.none()) return incomplete(dir, h, {});
        if (!leaf.both() && !leaf.none()) return incomplete(dir, h, {});
        if (leaf.none()) {
            missing.push_back(h);
            continue;
        }
        if (ca.none()) {
            return incomplete(dir, h, "the leaf certificate exists without the CA");
        }
        auto m = load_public_cert(dir, h);
        if (!m) return incomplete(dir, h, m.error().message);
        s.existing.push_back(h);
        existing.push_back(std::move(*m));
    }

    KeyCertPem ca_pem;
    if (ca.both()) {
        auto loaded = load_private_ca(ca_key_path(dir), ca_crt_path(dir));
        if (!loaded) return incomplete_ca(dir, loaded.error().message);
        ca_pem = std::move(*loaded);
    } else {
        auto made = make_private_ca(kPublicCaCommonName, std::time(nullptr));
        if (!made) return std::move(made).error();
        ca_pem = std::move(*made);
    }
    auto leaves = issue_all(dir, ca_pem, missing);
    if (!leaves) return std::move(leaves).error();

    if (!ca.both()) {
        if (auto w = write_ca(dir, ca_pem, write_new_file); !w) return std::move(w).error();
    }
    if (auto w = write_leaves(dir, *leaves, write_new_file); !w) return std::move(w).error();

    s.issued = names_of(*leaves);
    if (!leaves->empty()) {
        s.not_before = leaves->front().leaf.not_before;
        s.not_after = leaves->front().leaf.not_after;
    } else {
        s.not_before = existing.front().not_before;
        s.not_after = existing.front().not_after;
    }
    return s;
}

Result<PublicCertSummary> renew_public_cert(const std::string& dir,
                                            const std::vector<std::string>& hostnames) {
    if (auto n = need_hostnames(hostnames); !n) return std::move(n).error();
    auto ca = existing_ca(dir);
    if (!ca) return std::move(ca).error();
    auto leaves = issue_all(dir, *ca, hostnames);
    if (!leaves) return std::move(leaves).error();
    if (auto w = write_leaves(dir, *leaves, replace_file); !w) return std::move(w).error();
    PublicCertSummary s;
    s.action = PublicCertAction::kRenew;
    s.dir = dir;
    s.issued = names_of(*leaves);
    s.not_before = leaves->front().leaf.not_before;
    s.not_after = leaves->front().leaf.not_after;
    return s;
}

Result<PublicCertSummary> rotate_public_ca(const std::string& dir,
                                           const std::vector<std::string>& hostnames) {
    if (auto n = need_hostnames(hostnames); !n) return std::move(n).error();
    auto ca = make_private_ca(kPublicCaCommonName, std::time(nullptr));
    if (!ca) return std::move(ca).error();
    auto leaves = issue_all(dir, *ca, hostnames);
    if (!leaves) return std::move(leaves).error();
    if (auto w = write_ca(dir, *ca, replace_file); !w) return std::move(w).error();
    if (auto w = write_leaves(dir, *leaves, replace_file); !w) return std::move(w).error();
    PublicCertSummary s;
    s.action = PublicCertAction::kRotateCa;
    s.dir = dir;
    s.issued = names_of(*leaves);
    s.not_before = leaves->front().leaf.not_before;
    s.not_after = leaves->front().leaf.not_after;
    return s;
}

Result<PublicCertMaterial> load_public_cert(const std::string& dir, const std::string& hostname) {
    if (public_cert_absent(dir, hostname)) {
        return Error::msg("missing certificate for terminating hostname " + hostname +
                          ": run `runewarp client public-cert init --hostname " + hostname + "`");
    }
    PublicCertMaterial out;
    out.hostname = hostname;
    out.cert_path = public_cert_path(dir, hostname);
    auto leaf = load_leaf(out.cert_path, public_key_path(dir, hostname), hostname, nullptr, false);
    if (!leaf) return std::move(leaf).error();
    out.cert_pem = std::move(leaf->cert_pem);
    out.key_pem = std::move(leaf->key_pem);
    out.not_before = leaf->not_before;
    out.not_after = leaf->not_after;
    return out;
}

bool public_cert_absent(const std::string& dir, const std::string& hostname) {
    return !path_exists(public_cert_path(dir, hostname)) &&
           !path_exists(public_key_path(dir, hostname));
}

}  // namespace runewarp::trust
