// The Prometheus text format's rules for names and escapes (exposition format 0.0.4), for
// everything that writes /metrics: the agent's own figures and the exporter's traffic families.
#pragma once

#include <string>
#include <string_view>

namespace netlens {

// Any byte outside [a-zA-Z0-9_] becomes '_' (':' too: it is reserved for recording rules), and
// a leading digit gets a '_' before it, so any text becomes a valid metric name.
std::string sanitize_metric_name(std::string_view name);
// Label values escape backslash, double quote and newline; HELP text backslash and newline.
std::string escape_label_value(std::string_view value);
std::string escape_help(std::string_view text);

} // namespace netlens
