// What a configuration reload (SIGHUP) changes while the agent runs. No CAF: the agent's
// composition root applies the plan; this only decides it.
#pragma once

#include <string>
#include <vector>

#include "config/config.hpp"

namespace netlens {

struct reload_plan {
  // The configuration in force after the reload: the new file's values for the keys that
  // change live, the running values for the rest.
  config running;
  std::vector<std::string> applied; // changed keys that take effect now, as "table.key"
  std::vector<std::string>
      need_restart; // changed keys that keep their running value until a restart
};

// What can change live: agent.log_level; the console's limits and deadlines (for new sessions);
// every export.* key when the exporter runs (it rebuilds its collectors, encoder and traffic
// families). Everything else (sockets, BPF map sizes, which actors run) needs a restart.
reload_plan plan_reload(const config& running, const config& next, bool exporter_running);

// "a.b, c.d" for the log and /stats; "none" for no key.
std::string join_keys(const std::vector<std::string>& keys);

} // namespace netlens
