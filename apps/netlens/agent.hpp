// Starting the agent: the child list in dependency order and the actor system around the
// supervisor. Shared by `netlens run` and the tests that run the whole agent in-process.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/supervisor/supervisor_actor.hpp"
#include "config/config.hpp"

namespace netlens {

// The configuration in force: what the file said at start, with what reloads changed live. A
// child the supervisor restarts is spawned from it, so a restart never undoes a reload.
class running_config {
public:
  explicit running_config(config c) : config_(std::move(c)) {}
  config get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return config_;
  }
  void set(config c) {
    std::lock_guard<std::mutex> lock(mutex_);
    config_ = std::move(c);
  }

private:
  mutable std::mutex mutex_;
  config config_;
};

// conntrack -> netns -> offset_guesser -> tracer -> perf_consumer -> compact_ticker ->
// exporter -> api -> console. Which children run is decided by the configuration at start.
std::vector<child_spec> agent_children(std::shared_ptr<running_config> live);

// Whether agent_children starts an exporter for this configuration.
bool agent_runs_exporter(const config& cfg);

// SIGHUP: reads path again. A file that does not load is refused with its file:line:key message
// and the running configuration stays; otherwise what can change live does (plan_reload) and
// the keys that need a restart are named in the log. The supervisor hears the report (for
// /stats) and hands the children their part. log_level_pinned: --log-level was given on the
// command line and stays in force.
void reload_agent(const std::string& path, running_config& live, bool exporter_running,
                  bool log_level_pinned, const supervisor_actor& supervisor);

} // namespace netlens
