// The reload plan: which changed keys take effect at once and which wait for a restart, and
// the configuration in force afterwards. The files are parsed by the real loader.
#include <catch2/catch.hpp>

#include <variant>

#include "config/config_loader.hpp"
#include "config/reload_plan.hpp"

using namespace netlens;

namespace {

config parse(const std::string& text) {
  auto loaded = load_config_string(text, "test.toml");
  if (auto* err = std::get_if<config_error>(&loaded))
    FAIL(err->message);
  return std::get<config>(loaded);
}

using keys = std::vector<std::string>;

} // namespace

TEST_CASE("reload: the same file changes nothing", "[config][reload]") {
  config a = parse("[agent]\nlog_level = \"debug\"\n");
  auto plan = plan_reload(a, a, true);
  CHECK(plan.applied.empty());
  CHECK(plan.need_restart.empty());
  CHECK(changed_config_keys(plan.running, a).empty());
}

TEST_CASE("reload: live keys take effect, the rest wait for a restart and keep running values",
          "[config][reload]") {
  config before = parse("[tracer]\nudp_idle_timeout_s = 120\n[console]\nmax_sessions = 8\n");
  config after = parse("[agent]\nlog_level = \"debug\"\n"
                       "[tracer]\nudp_idle_timeout_s = 30\n"
                       "[console]\nmax_sessions = 2\nfirst_command_timeout_ms = 500\n"
                       "socket = \"/run/other.sock\"\n"
                       "[metrics]\nport = 9400\n");
  auto plan = plan_reload(before, after, false);
  CHECK(plan.applied == keys{"agent.log_level", "console.max_sessions",
                             "console.first_command_timeout_ms", "metrics.port"});
  CHECK(plan.need_restart == keys{"tracer.udp_idle_timeout_s", "console.socket"});
  CHECK(plan.running.agent.log_level == "debug");
  CHECK(plan.running.console.max_sessions == 2);
  CHECK(plan.running.console.first_command_timeout_ms == 500);
  CHECK(plan.running.tracer.udp_idle_timeout_s == 120);
  CHECK(plan.running.console.socket == before.console.socket);
  CHECK(plan.running.metrics.port == 9400); // the API actor moves its listener
  // What still differs from the file is exactly what waits for a restart.
  CHECK(changed_config_keys(plan.running, after) == plan.need_restart);
}

TEST_CASE("reload: export keys are live while the exporter runs, a restart otherwise",
          "[config][reload]") {
  config before = parse("[export.ipfix]\ncollectors = [\"127.0.0.1:4739\"]\n");
  config after = parse("[export.ipfix]\ncollectors = [\"127.0.0.1:4740\"]\nmtu = 1200\n"
                       "[export.metrics]\nenabled = true\nlabels = [\"comm\"]\n");
  auto running = plan_reload(before, after, true);
  CHECK(running.need_restart.empty());
  CHECK(running.applied.size() == 4);
  CHECK(running.running.exporter == after.exporter);

  auto stopped = plan_reload(config{}, after, false); // no exporter was started
  CHECK(stopped.applied.empty());
  CHECK(stopped.need_restart.size() == 4);
  CHECK(stopped.running.exporter == config{}.exporter);
}

TEST_CASE("reload: intervals and the conntrack rate limit are live", "[config][reload]") {
  config before = parse("[conntrack]\nrate_limit = 5000\n");
  config after = parse("[conntrack]\nrate_limit = 200\n"
                       "[compact_ticker]\ninterval_ms = 2500\ncompact_interval_ms = 7000\n");
  auto plan = plan_reload(before, after, false);
  CHECK(plan.need_restart.empty());
  CHECK(plan.applied == keys{"compact_ticker.interval_ms", "compact_ticker.compact_interval_ms",
                             "conntrack.rate_limit"});
  CHECK(plan.running.conntrack.rate_limit == 200);
  CHECK(plan.running.compact_ticker.interval_ms == 2500);
  CHECK(plan.running.compact_ticker.compact_interval_ms == 7000);

  // With conntrack off there is no consumer to take it: it waits for the restart.
  config off = parse("[conntrack]\nenabled = false\n");
  config off_limited = parse("[conntrack]\nenabled = false\nrate_limit = 200\n");
  auto waits = plan_reload(off, off_limited, false);
  CHECK(waits.need_restart == keys{"conntrack.rate_limit"});
}
