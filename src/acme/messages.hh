// ACME (RFC 8555) resources parsed into plain structs. The parsers never throw: a document that
// is not JSON, has a member of the wrong type or misses a required member is an Error.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runewarp/result.hh"

namespace runewarp::acme {

// Documents bigger than this are refused before parsing.
inline constexpr std::size_t kMaxDocument = 256 * 1024;

struct Problem {  // RFC 7807 / RFC 8555 section 6.7
    std::string type;
    std::string detail;
    int status = 0;  // 0 when absent
};

struct Directory {
    std::string new_nonce;
    std::string new_account;
    std::string new_order;
};

struct Order {
    std::string status;
    std::vector<std::string> authorizations;
    std::string finalize;
    std::string certificate;  // empty until valid
    std::optional<Problem> error;
};

struct Challenge {
    std::string type;
    std::string url;
    std::string token;  // empty for challenge types without one
    std::string status;
    std::optional<Problem> error;
};

struct Identifier {
    std::string type;
    std::string value;
};

struct Authorization {
    std::string status;
    Identifier identifier;
    std::vector<Challenge> challenges;
    bool wildcard = false;
};

inline constexpr std::string_view kBadNonce = "urn:ietf:params:acme:error:badNonce";

Result<Directory> parse_directory(std::string_view text);
Result<Order> parse_order(std::string_view text);
Result<Authorization> parse_authorization(std::string_view text);
Result<Problem> parse_problem(std::string_view text);

// "type: detail" (or whichever is present) for log lines.
std::string describe(const Problem& p);

}  // namespace runewarp::acme
