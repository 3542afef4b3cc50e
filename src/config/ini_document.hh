// Raw INI layer: pre-scan (duplicate headers, long lines), inih parse, section-name checks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hh"
#include "config/registry.hh"

namespace runewarp::config {

struct RawEntry {
    std::string key;
    std::string value;  // trimmed, one pair of surrounding quotes removed
    int line = 0;
};

struct RawSection {
    SectionKind kind = SectionKind::kTop;
    std::string label;   // labelled kinds only
    std::string header;  // raw text between the brackets
    int line = 0;        // header line; 0 for the top level
    bool valid = true;   // false: bad name, unknown or duplicate (its keys are not checked)
    std::vector<RawEntry> entries;
};

struct RawDocument {
    std::vector<RawSection> sections;  // [0] is the top level
    std::vector<Problem> problems;     // pre-scan, syntax and section-name problems
    bool any_service_header = false;   // any header naming a service, even a malformed one
};

inline constexpr std::size_t kMaxLineBytes = 199;

// Never fails: every problem lands in RawDocument::problems.
RawDocument parse_ini(std::string_view text, const std::string& file);

}  // namespace runewarp::config
