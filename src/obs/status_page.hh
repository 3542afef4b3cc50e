// The status page served at `/` by the metrics listener of either role: one self-contained HTML
// document (inline CSS and script, no external assets) that polls /status.json every second and
// draws what it holds. Read-only; /status.json never carries Visitor addresses or SNI.
#pragma once

#include <string_view>

namespace runewarp::obs {

std::string_view status_page_html() noexcept;

}  // namespace runewarp::obs
