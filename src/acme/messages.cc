#include "acme/messages.hh"

#include <nlohmann/json.hpp>

namespace runewarp::acme {

namespace {

using Json = nlohmann::json;

constexpr int kMaxDepth = 32;

// Rejects nesting deeper than kMaxDepth before nlohmann builds (and later destroys) the tree.
bool nesting_ok(std::string_view text) {
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > kMaxDepth) return false;
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    return true;
}

Result<Json> parse_object(std::string_view text, const char* what) {
    if (text.size() > kMaxDocument) return Error::msg(std::string(what) + " is too large");
    if (!nesting_ok(text)) return Error::msg(std::string(what) + " is nested too deeply");
    Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Error::msg(std::string(what) + " is not valid JSON");
    if (!j.is_object()) return Error::msg(std::string(what) + " is not a JSON object");
    return j;
}

// A string member: required ones must be present; a present member must be a string.
Result<std::string> get_string(const Json& obj, const char* key, bool required, const char* what) {
    auto it = obj.find(key);
    if (it == obj.end() || (!required && it->is_null())) {
        if (required) return Error::msg(std::string(what) + " has no \"" + key + "\"");
        return std::string();
    }
    if (!it->is_string()) {
        return Error::msg(std::string(what) + " has a non-string \"" + key + "\"");
    }
    return it->get<std::string>();
}

Result<Problem> problem_of(const Json& j) {
    if (!j.is_object()) return Error::msg("problem document is not a JSON object");
    Problem p;
    auto type = get_string(j, "type", false, "problem document");
    if (!type) return std::move(type).error();
    auto detail = get_string(j, "detail", false, "problem document");
    if (!detail) return std::move(detail).error();
    p.type = std::move(*type);
    p.detail = std::move(*detail);
    if (auto it = j.find("status"); it != j.end() && !it->is_null()) {
        if (!it->is_number_integer())
            return Error::msg("problem document has a non-integer status");
        auto v = it->get<std::int64_t>();
        if (v < 0 || v > 999) return Error::msg("problem document has an impossible status");
        p.status = static_cast<int>(v);
    }
    if (p.type.empty() && p.detail.empty()) return Error::msg("problem document is empty");
    return p;
}

Result<std::optional<Problem>> optional_problem(const Json& obj, const char* what) {
    auto it = obj.find("error");
    if (it == obj.end() || it->is_null()) return std::optional<Problem>();
    auto p = problem_of(*it);
    if (!p) return Error::msg(std::string(what) + ": " + p.error().message);
    return std::optional<Problem>(std::move(*p));
}

#define RW_TRY_STRING(dst, obj, key, required, what)          \
    do {                                                      \
        auto r_ = get_string((obj), (key), (required), what); \
        if (!r_) return std::move(r_).error();                \
        (dst) = std::move(*r_);                               \
    } while (0)

}  // namespace

Result<Directory> parse_directory(std::string_view text) {
    auto j = parse_object(text, "directory");
    if (!j) return std::move(j).error();
    Directory d;
    RW_TRY_STRING(d.new_nonce, *j, "newNonce", true, "directory");
    RW_TRY_STRING(d.new_account, *j, "newAccount", true, "directory");
    RW_TRY_STRING(d.new_order, *j, "newOrder", true, "directory");
    if (d.new_nonce.empty() || d.new_account.empty() || d.new_order.empty()) {
        return Error::msg("directory has an empty URL");
    }
    return d;
}

Result<Order> parse_order(std::string_view text) {
    auto j = parse_object(text, "order");
    if (!j) return std::move(j).error();
    Order o;
    RW_TRY_STRING(o.status, *j, "status", true, "order");
    RW_TRY_STRING(o.finalize, *j, "finalize", true, "order");
    RW_TRY_STRING(o.certificate, *j, "certificate", false, "order");
    auto it = j->find("authorizations");
    if (it == j->end()) return Error::msg("order has no \"authorizations\"");
    if (!it->is_array()) return Error::msg("order has a non-array \"authorizations\"");
    for (const auto& a : *it) {
        if (!a.is_string()) return Error::msg("order has a non-string authorization URL");
        o.authorizations.push_back(a.get<std::string>());
    }
    auto err = optional_problem(*j, "order error");
    if (!err) return std::move(err).error();
    o.error = std::move(*err);
    return o;
}

Result<Authorization> parse_authorization(std::string_view text) {
    auto j = parse_object(text, "authorization");
    if (!j) return std::move(j).error();
    Authorization a;
    RW_TRY_STRING(a.status, *j, "status", true, "authorization");
    auto id = j->find("identifier");
    if (id == j->end()) return Error::msg("authorization has no \"identifier\"");
    if (!id->is_object()) return Error::msg("authorization has a non-object \"identifier\"");
    RW_TRY_STRING(a.identifier.type, *id, "type", true, "authorization identifier");
    RW_TRY_STRING(a.identifier.value, *id, "value", true, "authorization identifier");
    if (auto w = j->find("wildcard"); w != j->end() && !w->is_null()) {
        if (!w->is_boolean()) return Error::msg("authorization has a non-boolean \"wildcard\"");
        a.wildcard = w->get<bool>();
    }
    auto chs = j->find("challenges");
    if (chs == j->end()) return Error::msg("authorization has no \"challenges\"");
    if (!chs->is_array()) return Error::msg("authorization has a non-array \"challenges\"");
    for (const auto& c : *chs) {
        if (!c.is_object()) return Error::msg("authorization has a non-object challenge");
        Challenge ch;
        RW_TRY_STRING(ch.type, c, "type", true, "challenge");
        RW_TRY_STRING(ch.url, c, "url", true, "challenge");
        RW_TRY_STRING(ch.token, c, "token", false, "challenge");
        RW_TRY_STRING(ch.status, c, "status", false, "challenge");
        auto err = optional_problem(c, "challenge error");
        if (!err) return std::move(err).error();
        ch.error = std::move(*err);
        a.challenges.push_back(std::move(ch));
    }
    return a;
}

Result<Problem> parse_problem(std::string_view text) {
    auto j = parse_object(text, "problem document");
    if (!j) return std::move(j).error();
    return problem_of(*j);
}

std::string describe(const Problem& p) {
    if (p.detail.empty()) return p.type;
    if (p.type.empty()) return p.detail;
    return p.type + ": " + p.detail;
}

}  // namespace runewarp::acme
