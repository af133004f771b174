#include "apps/netlens/agent.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

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

namespace netlens {

std::vector<child_spec> agent_children(const config& cfg) {
  std::vector<child_spec> specs;
  // First, so the initial conntrack dump is in the cache before connections are served. The
  // others find it through the registry, so its restart does not restart them.
  specs.push_back({"conntrack",
                   {},
                   true,
                   true,
                   [cfg](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                     return caf::actor_cast<lifecycle_actor>(
                         sys.spawn<caf::detached>(conntrack_fn, cfg.conntrack));
                   }});
  // After conntrack, which it hands each namespace it finds; before the tracer, whose answers it
  // attributes. Found through the registry too, so its restart restarts no one else.
  specs.push_back({"netns",
                   {},
                   true,
                   true,
                   [cfg](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                     return caf::actor_cast<lifecycle_actor>(spawn_netns(sys, cfg.netns));
                   }});
  // Only when the tracer may need the prebuilt build's offsets; before the tracer, which asks
  // it during its own start only after the CO-RE and runtime builds failed.
  const bool may_guess =
      cfg.tracer.mode == tracer_mode::auto_select || cfg.tracer.mode == tracer_mode::prebuilt;
  if (may_guess)
    specs.push_back({"offset_guesser",
                     {},
                     false,
                     false,
                     [cfg](caf::actor_system& sys, const child_directory&) -> lifecycle_actor {
                       return caf::actor_cast<lifecycle_actor>(
                           spawn_offset_guesser(sys, guess_settings_of(cfg)));
                     }});
  specs.push_back(
      {"tracer",
       {},
       false,
       true,
       [cfg](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
         offset_guesser_actor guesser;
         if (auto it = dir.find("offset_guesser"); it != dir.end())
           guesser = caf::actor_cast<offset_guesser_actor>(it->second);
         // Every try, plus the time to open and read the cache.
         auto guess_timeout = std::chrono::milliseconds(
             uint64_t{cfg.offset_guesser.max_tries} * cfg.offset_guesser.try_timeout_ms + 1000);
         return sys.spawn(tracer_fn, cfg.tracer, guesser, guess_timeout);
       }});
  // Actors that block (joining their threads on stop) run detached, on threads of their own,
  // so they never hold a scheduler worker the others need.
  specs.push_back({"perf_consumer",
                   {"tracer"},
                   true,
                   false,
                   [](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
                     return sys.spawn<caf::detached>(perf_consumer_fn, tracer);
                   }});
  specs.push_back({"compact_ticker",
                   {"tracer"},
                   true,
                   false,
                   [cfg](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
                     return sys.spawn(
                         compact_ticker_fn, tracer,
                         std::chrono::milliseconds(cfg.compact_ticker.interval_ms),
                         std::chrono::milliseconds(cfg.compact_ticker.compact_interval_ms));
                   }});
  // After the tracer, which it polls as a client of its own; restarted with it (a new tracer
  // has a new active map, so the exporter's book of open flows starts again too). In the stop
  // phase: it sends what is queued and forced ends for what is still open before the tracer's
  // purge. Detached: closing a TCP collector may wait a moment for queued data.
  if (exporter_wanted(cfg.exporter))
    specs.push_back({"exporter",
                     {"tracer"},
                     true,
                     false,
                     [cfg](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                       auto tracer = caf::actor_cast<tracer_actor>(dir.at("tracer"));
                       return caf::actor_cast<lifecycle_actor>(
                           sys.spawn<caf::detached>(exporter_fn, cfg.exporter, tracer));
                     }});
  specs.push_back({"api",
                   {},
                   true,
                   false,
                   [cfg](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     auto sup = caf::actor_cast<supervisor_actor>(dir.at("supervisor"));
                     return sys.spawn<caf::detached>(api_fn, cfg.agent.api_socket,
                                                     cfg.agent.api_allowed_uid, cfg.metrics, sup);
                   }});
  // Last: it shows every other actor. Not in the stop or purge phase: a session that typed
  // `shutdown` reports all three phases, and the supervisor lets this listener exit last.
  specs.push_back({"console",
                   {},
                   false,
                   false,
                   [cfg](caf::actor_system& sys, const child_directory& dir) -> lifecycle_actor {
                     auto sup = caf::actor_cast<supervisor_actor>(dir.at("supervisor"));
                     return sys.spawn<caf::detached>(console_fn, cfg.console,
                                                     render_effective_config(cfg, config{}), sup);
                   }});
  return specs;
}

} // namespace netlens
