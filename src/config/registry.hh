// The key registry: every config section and key declared once (type, default, doc, validator).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "config/paths.hh"

namespace runewarp::config {

enum class SectionKind {
    kTop,  // keys before the first header
    kServer,
    kServerAcme,
    kTunnel,
    kRoute,
    kClient,
    kClientAcme,
    kService,
    kControl,
    kMetrics,  // both roles: the metrics listener
};

enum class ValueType {
    kString,         // free text (e.g. an e-mail address)
    kEnum,           // one of KeySpec::choices
    kHostname,       // DNS name: ASCII, LDH labels, no IP literal, no wildcard
    kHostnameList,   // list of hostnames
    kIdentity,       // 64 lowercase hex
    kIdentityList,   // list of identities
    kSocketAddress,  // literal IP socket address, port 0-65535
    kServerAddress,  // hostname[:port], port 1-65535, no IP literal
    kServerAddressList,
    kHostPort,  // literal socket address or host:port, port 1-65535
    kDuration,  // <unsigned integer><ms|s|m|h>
    kCidrList,  // list of addr/prefix
    kAlpnList,  // list of ALPN protocol ids: h2, http/1.1
    kPath,      // file or directory, relative to the config file
    kCount,     // whole number within KeySpec::min .. KeySpec::max
    kWorkers,   // `auto` (one per usable core) or 1..kMaxWorkers
};

struct KeySpec {
    SectionKind section;
    std::string_view name;
    ValueType type;
    std::string_view default_text;              // human text for docs and `config show`
    std::string_view doc;                       // one line
    std::span<const std::string_view> choices;  // kEnum only
    std::uint32_t min = 0;                      // kCount only
    std::uint32_t max = 0;                      // kCount only
};

bool is_list(ValueType t) noexcept;

// Every key of every section, in documentation order.
std::span<const KeySpec> key_registry() noexcept;
const KeySpec* find_key(SectionKind section, std::string_view name) noexcept;

// Header text of a section kind: "server", "tunnel", ... (labelled kinds take a "LABEL").
std::string_view section_kind_name(SectionKind k) noexcept;
bool section_is_labelled(SectionKind k) noexcept;

// Validates one value (one list item for list types) by its type; returns the problem text
// (without the key prefix), or nothing when the value is well formed.
std::optional<std::string> check_value(const KeySpec& spec, std::string_view value);

// The value the loader applies when a key is absent: `default_text` when it is a concrete value
// ("0.0.0.0:443", "60s", "info"); nothing for "(required)", "(unset)" and for path defaults.
std::optional<std::string_view> default_value(const KeySpec& spec) noexcept;

// A path default below a root: "<data>/server/cert" with roots.data = "/d" gives
// "/d/server/cert". Empty when the key has no path default or that root is unresolved.
std::string default_path(const KeySpec& spec, const Roots& roots);

// default_path of the key `name` in `section` (which must have a path default).
std::string default_path(SectionKind section, std::string_view name, const Roots& roots);

// Whether a key's path default lies below the state root (else below the data root).
bool default_path_is_state(const KeySpec& spec) noexcept;

}  // namespace runewarp::config
