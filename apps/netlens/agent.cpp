#include "apps/netlens/agent.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/api/api_actor.hpp"
#include "actors/compact_ticker/compact_ticker_actor.hpp"
#include "actors/conntrack/conntrack_actor.hpp"
#include "actors/console/console_actor.hpp"
#include "actors/exporter/exporter_actor.hpp"
#include "actors/netns/netns_actor.hpp"
#include "actors/offset_guesser/offset_guesser_actor.hpp"
#include "actors/perf_consumer/perf_consumer_actor.hpp"
#include "actors/tracer/tracer_actor.hpp"
#include "config/config_loader.hpp"
#include "config/reload_plan.hpp"

namespace netlens {

std::vector<child_spec> agent_children(std::shared_ptr<running_config> live) {
  const config cfg = live->get(); // decides which children run
  std::vector<child_spec> specs;
  // First, so the initial conntrack dump is in the cache before connections are served. The
  // others find it through the registry, so its restart does not restart them.
  specs.push_back({"conntrack",
                   {},
                   true,
                   true,
                   [live](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                     const config cfg = live->get();
                     return caf::actor_cast<lifecycle_actor>(
                         sys.spawn<caf::detached>(conntrack_fn, cfg.conntrack));
                   },
                   [](const caf::actor& running, const config& cfg) {
                     caf::anon_send(caf::actor_cast<conntrack_actor>(running), reload_atom::value,
                                    cfg.conntrack.rate_limit);
                   }});
  specs.back().finds = {"netns"};
  // After conntrack, which it hands each namespace it finds; before the tracer, whose answers it
  // attributes. Found through the registry too, so its restart restarts no one else.
  specs.push_back({"netns",
                   {},
                   true,
                   true,
                   [live](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                     const config cfg = live->get();
                     return caf::actor_cast<lifecycle_actor>(spawn_netns(sys, cfg.netns));
                   }});
  specs.back().finds = {"conntrack"};
  // Only when the tracer may need the prebuilt build's offsets; before the tracer, which asks
  // it during its own start only after the CO-RE and runtime builds failed.
  const bool may_guess =
      cfg.tracer.mode == tracer_mode::auto_select || cfg.tracer.mode == tracer_mode::prebuilt;
  if (may_guess)
    specs.push_back({"offset_guesser",
                     {},
                     false,
                     false,
                     [live](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                       const config cfg = live->get();
                       return caf::actor_cast<lifecycle_actor>(
                           spawn_offset_guesser(sys, guess_settings_of(cfg)));
                     }});
  // The tracer leaves its loaded object's closed buffer here; the perf consumer, spawned after
  // the tracer started (and again after each restart of it), is handed what it holds.
  auto buffers = std::make_shared<closed_buffer_slot>();
  specs.push_back(
      {"tracer",
       {},
       false,
       true,
       [live, buffers](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
         const config cfg = live->get();
         offset_guesser_actor guesser;
         if (auto it = dir.find("offset_guesser"); it != dir.end())
           guesser = caf::actor_cast<offset_guesser_actor>(it->second);
         // Every try, plus the time to open and read the cache.
         auto guess_timeout = std::chrono::milliseconds(
             uint64_t{cfg.offset_guesser.max_tries} * cfg.offset_guesser.try_timeout_ms + 1000);
         return sys.spawn(tracer_fn, cfg.tracer, guesser, guess_timeout, buffers);
       }});
  specs.back().finds = {"conntrack", "netns", "perf_consumer"};
  // Actors that block (joining their threads on stop) run detached, on threads of their own,
  // so they never hold a scheduler worker the others need.
  specs.push_back(
      {"perf_consumer",
       {"tracer"},
       true,
       false,
       [buffers](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
         auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
         return sys.spawn<caf::detached>(perf_consumer_fn, tracer, buffers->get());
       }});
  specs.push_back(
      {"compact_ticker",
       {"tracer"},
       true,
       false,
       [live](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
         const config cfg = live->get();
         auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
         return sys.spawn(compact_ticker_fn, tracer,
                          std::chrono::milliseconds(cfg.compact_ticker.interval_ms),
                          std::chrono::milliseconds(cfg.compact_ticker.compact_interval_ms));
       },
       [](const caf::actor& running, const config& cfg) {
         caf::anon_send(caf::actor_cast<compact_ticker_actor>(running), reload_atom::value,
                        cfg.compact_ticker.interval_ms, cfg.compact_ticker.compact_interval_ms);
       }});
  specs.back().finds = {"conntrack"};
  // After the tracer, which it polls as a client of its own; restarted with it (a new tracer
  // has a new active map, so the exporter's book of open flows starts again too). In the stop
  // phase: it sends what is queued and forced ends for what is still open before the tracer's
  // purge. Detached: closing a TCP collector may wait a moment for queued data.
  if (agent_runs_exporter(cfg))
    specs.push_back({"exporter",
                     {"tracer"},
                     true,
                     false,
                     [live](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                       const config cfg = live->get();
                       auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
                       return caf::actor_cast<lifecycle_actor>(
                           sys.spawn<caf::detached>(exporter_fn, cfg.exporter, tracer));
                     },
                     [](const caf::actor& running, const config& cfg) {
                       caf::anon_send(caf::actor_cast<exporter_actor>(running), reload_atom::value,
                                      cfg.exporter);
                     }});
  specs.push_back({"api",
                   {},
                   true,
                   false,
                   [live](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     const config cfg = live->get();
                     auto sup = caf::actor_cast<supervisor_actor>(dir.at("supervisor"));
                     return sys.spawn<caf::detached>(api_fn, cfg.agent.api_socket,
                                                     cfg.agent.api_allowed_uid, cfg.metrics, sup);
                   },
                   [](const caf::actor& running, const config& cfg) {
                     caf::anon_send(caf::actor_cast<api_actor>(running), reload_atom::value,
                                    cfg.metrics.address, cfg.metrics.port);
                   }});
  specs.back().finds = {"exporter"};
  // Last: it shows every other actor. Not in the stop or purge phase: a session that typed
  // `shutdown` reports all three phases, and the supervisor lets this listener exit last.
  specs.push_back({"console",
                   {},
                   false,
                   false,
                   [live](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     const config cfg = live->get();
                     auto sup = caf::actor_cast<supervisor_actor>(dir.at("supervisor"));
                     return sys.spawn<caf::detached>(console_fn, cfg.console,
                                                     render_effective_config(cfg, config{}), sup);
                   },
                   [](const caf::actor& running, const config& cfg) {
                     caf::anon_send(caf::actor_cast<console_actor>(running), reload_atom::value,
                                    cfg.console, render_effective_config(cfg, config{}));
                   }});
  specs.back().finds = {"conntrack"};
  return specs;
}

bool agent_runs_exporter(const config& cfg) {
  return exporter_wanted(cfg.exporter);
}

void reload_agent(const std::string& path, running_config& live, bool exporter_running,
                  bool log_level_pinned, const supervisor_actor& supervisor) {
  reload_report report;
  if (path.empty()) {
    report.error = "the agent was started without a configuration file (-c): nothing to read";
    spdlog::warn("reload: {}", report.error);
    caf::anon_send(supervisor, reload_atom::value, live.get(), std::move(report));
    return;
  }
  auto loaded = load_config_file(path);
  if (auto* err = std::get_if<config_error>(&loaded)) {
    report.error = err->message;
    spdlog::error("reload refused, the running configuration stays: {}", err->message);
    caf::anon_send(supervisor, reload_atom::value, live.get(), std::move(report));
    return;
  }
  const config before = live.get();
  auto plan = plan_reload(before, std::get<config>(loaded), exporter_running);
  live.set(plan.running);
  if (plan.running.agent.log_level != before.agent.log_level) {
    if (log_level_pinned)
      spdlog::info("reload: agent.log_level is {} in the file; --log-level on the command line "
                   "stays in force",
                   plan.running.agent.log_level);
    else
      spdlog::set_level(spdlog::level::from_str(plan.running.agent.log_level));
  }
  spdlog::info("reload: {}: applied: {}", path, join_keys(plan.applied));
  if (!plan.need_restart.empty())
    spdlog::warn("reload: these keys keep their running values until netlens restarts: {}",
                 join_keys(plan.need_restart));
  report.ok = true;
  report.applied = std::move(plan.applied);
  report.need_restart = std::move(plan.need_restart);
  caf::anon_send(supervisor, reload_atom::value, plan.running, std::move(report));
}

} // namespace netlens
