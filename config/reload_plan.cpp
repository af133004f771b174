#include "config/reload_plan.hpp"

#include "config/config_loader.hpp"

namespace netlens {
namespace {

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

} // namespace

std::string join_keys(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys)
    out += (out.empty() ? "" : ", ") + k;
  return out.empty() ? std::string("none") : out;
}

reload_plan plan_reload(const config& running, const config& next, bool exporter_running) {
  reload_plan plan;
  plan.running = running;
  bool export_applied = false;
  for (const auto& key : changed_config_keys(running, next)) {
    bool live = true;
    if (key == "agent.log_level")
      plan.running.agent.log_level = next.agent.log_level;
    else if (key == "console.max_sessions")
      plan.running.console.max_sessions = next.console.max_sessions;
    else if (key == "console.max_line_bytes")
      plan.running.console.max_line_bytes = next.console.max_line_bytes;
    else if (key == "console.max_commands_per_s")
      plan.running.console.max_commands_per_s = next.console.max_commands_per_s;
    else if (key == "console.actor_timeout_ms")
      plan.running.console.actor_timeout_ms = next.console.actor_timeout_ms;
    else if (key == "console.first_command_timeout_ms")
      plan.running.console.first_command_timeout_ms = next.console.first_command_timeout_ms;
    else if (key == "compact_ticker.interval_ms")
      plan.running.compact_ticker.interval_ms = next.compact_ticker.interval_ms;
    else if (key == "compact_ticker.compact_interval_ms")
      plan.running.compact_ticker.compact_interval_ms = next.compact_ticker.compact_interval_ms;
    else if (key == "metrics.port")
      plan.running.metrics.port = next.metrics.port;
    else if (key == "metrics.address")
      plan.running.metrics.address = next.metrics.address;
    else if (key == "conntrack.rate_limit" && running.conntrack.enabled)
      plan.running.conntrack.rate_limit = next.conntrack.rate_limit;
    else if (starts_with(key, "export.") && exporter_running)
      export_applied = true;
    else
      live = false;
    (live ? plan.applied : plan.need_restart).push_back(key);
  }
  if (export_applied)
    plan.running.exporter = next.exporter;
  return plan;
}

} // namespace netlens
