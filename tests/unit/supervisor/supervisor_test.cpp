// The supervisor's protocol under CAF's deterministic test scheduler, with fake children
// that record what they are asked.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/common/self_interface.hpp"
#include "actors/supervisor/supervisor_actor.hpp"

using namespace netlens;

namespace {

struct journal {
  std::vector<std::string> lines;
  std::map<std::string, std::vector<caf::actor>> spawned;
  std::set<std::string> fail_init;
  std::set<std::string> silent_on_stop; // never answer stop
  size_t index_of(const std::string& line) const {
    return static_cast<size_t>(std::find(lines.begin(), lines.end(), line) - lines.begin());
  }
};

struct fake_state {
  static inline const char* name = "fake";
};

self_interface<lifecycle_actor>::behavior_type
fake_child(self_interface<lifecycle_actor>::stateful_pointer<fake_state> self, std::string name,
           std::shared_ptr<journal> j) {
  self->attach_functor([=](const caf::error&) { j->lines.push_back("down:" + name); });
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        j->lines.push_back("init:" + name);
        if (j->fail_init.count(name))
          return caf::make_error(caf::sec::runtime_error, "cannot load " + name);
        return caf::ok_atom::value;
      },
      [=](stop_atom) -> caf::result<caf::ok_atom> {
        j->lines.push_back("stop:" + name);
        if (j->silent_on_stop.count(name))
          return self->make_response_promise<caf::ok_atom>(); // never delivered
        return caf::ok_atom::value;
      },
      [=](purge_atom) {
        j->lines.push_back("purge:" + name);
        return caf::ok_atom::value;
      },
      [=](stats_atom) {
        actor_stats s;
        s.name = name;
        s.state = actor_state::running;
        return s;
      },
      [=](fault_atom) { j->lines.push_back("fault:" + name); },
  };
}

// A tracer that takes a client's request for connections and never answers it, as one that dies
// in the middle of an answer does.
caf::behavior silent_tracer(caf::event_based_actor* self, std::shared_ptr<journal> j) {
  self->attach_functor([=](const caf::error&) { j->lines.push_back("down:tracer"); });
  return {
      [=](init_atom) {
        j->lines.push_back("init:tracer");
        return caf::ok_atom::value;
      },
      [=](stop_atom) { return caf::ok_atom::value; },
      [=](purge_atom) { return caf::ok_atom::value; },
      [=](get_conns_atom, const std::string& client) {
        j->lines.push_back("asked:" + client);
        return self->make_response_promise<connections_reply>(); // never delivered
      },
  };
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::shared_ptr<journal> j = std::make_shared<journal>();
  bool ready = false;
  int exit_code = -1;
  std::string exit_why;
  supervisor_self_actor sup;

  fixture() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    sched->clock().current_time += std::chrono::hours(1);
  }

  ~fixture() {
    // The actor system waits for every actor: a test that left the agent running ends it.
    if (exit_code == -1 && sup) {
      caf::anon_send(sup, shutdown_atom::value);
      for (int i = 0; i < 3 && exit_code == -1; ++i) {
        sched->run();
        sched->trigger_timeouts();
      }
      sched->run();
    }
  }

  child_spec spec(const std::string& name, std::vector<std::string> deps, bool stop, bool purge) {
    auto jj = j;
    return {name, std::move(deps), stop, purge,
            [name, jj](caf::actor_system& s, const child_directory&) -> lifecycle_actor {
              auto h = s.spawn(fake_child, name, jj);
              jj->spawned[name].push_back(caf::actor_cast<caf::actor>(h));
              return h;
            }};
  }

  void start(supervisor_config sc = {}, bool tracer_answers = true) {
    auto jj = j;
    auto tracer = spec("tracer", {}, false, true);
    if (!tracer_answers)
      tracer.spawn = [jj](caf::actor_system& s, const child_directory&) -> lifecycle_actor {
        auto h = s.spawn(silent_tracer, jj);
        jj->spawned["tracer"].push_back(h);
        return caf::actor_cast<lifecycle_actor>(h);
      };
    std::vector<child_spec> specs = {
        std::move(tracer), spec("perf_consumer", {"tracer"}, true, false),
        spec("compact_ticker", {"tracer"}, true, false), spec("api", {}, true, false)};
    supervisor_hooks hooks;
    hooks.on_ready = [this] { ready = true; };
    hooks.on_exit = [this](int code, std::string why) {
      exit_code = code;
      exit_why = std::move(why);
    };
    sup = sys->spawn(supervisor_fn, sc, std::move(specs), hooks);
    sched->run();
  }

  void crash(const std::string& name) {
    caf::anon_send_exit(j->spawned[name].back(), caf::exit_reason::unhandled_exception);
    sched->run();
  }
};

} // namespace

TEST_CASE("children start in dependency order and the supervisor reports ready", "[supervisor]") {
  fixture f;
  f.start();
  CHECK(f.ready);
  std::vector<std::string> expected = {"init:tracer", "init:perf_consumer", "init:compact_ticker",
                                       "init:api"};
  CHECK(f.j->lines == expected);
}

TEST_CASE("shutdown runs stop, then purge, then exit, and closes the exit channel",
          "[supervisor]") {
  fixture f;
  f.start();
  f.j->lines.clear();
  caf::anon_send(f.sup, shutdown_atom::value);
  f.sched->run();
  auto& l = f.j->lines;
  size_t last_stop = std::max({f.j->index_of("stop:perf_consumer"),
                               f.j->index_of("stop:compact_ticker"), f.j->index_of("stop:api")});
  REQUIRE(last_stop < l.size());
  size_t purge = f.j->index_of("purge:tracer");
  REQUIRE(purge < l.size());
  CHECK(last_stop < purge);
  for (const char* name : {"down:tracer", "down:perf_consumer", "down:compact_ticker", "down:api"})
    CHECK(purge < f.j->index_of(name));
  CHECK(f.j->index_of("down:api") < f.j->index_of("down:tracer")); // reverse start order
  // The tracer is not stopped and the others are not purged.
  CHECK(f.j->index_of("stop:tracer") == l.size());
  CHECK(f.j->index_of("purge:api") == l.size());
  CHECK(f.exit_code == 0);
}

TEST_CASE("a child that misses the stop deadline does not hang the shutdown", "[supervisor]") {
  fixture f;
  f.j->silent_on_stop.insert("perf_consumer");
  f.start();
  caf::anon_send(f.sup, shutdown_atom::value);
  f.sched->run();
  CHECK(f.j->index_of("purge:tracer") == f.j->lines.size()); // still waiting on the deadline
  CHECK(f.exit_code == -1);
  f.sched->trigger_timeouts();
  f.sched->run();
  CHECK(f.j->index_of("purge:tracer") < f.j->lines.size());
  CHECK(f.exit_code == 0);
}

TEST_CASE("a crashed child is restarted with the children that depend on it", "[supervisor]") {
  fixture f;
  f.start();
  f.crash("tracer");
  CHECK(f.j->spawned["tracer"].size() == 1); // waits for the backoff first
  f.sched->trigger_timeouts();
  f.sched->run();
  CHECK(f.j->spawned["tracer"].size() == 2);
  CHECK(f.j->spawned["perf_consumer"].size() == 2);
  CHECK(f.j->spawned["compact_ticker"].size() == 2);
  CHECK(f.j->spawned["api"].size() == 1); // does not depend on the tracer
  CHECK(f.exit_code == -1);
}

TEST_CASE("past the restart budget the agent shuts down in order, naming the actor",
          "[supervisor]") {
  fixture f;
  supervisor_config sc;
  sc.restart_budget = 2;
  f.start(sc);
  for (int i = 0; i < 2; ++i) {
    f.crash("compact_ticker");
    f.sched->trigger_timeouts();
    f.sched->run();
  }
  CHECK(f.j->spawned["compact_ticker"].size() == 3);
  CHECK(f.exit_code == -1);
  f.j->lines.clear();
  f.crash("compact_ticker");
  f.sched->run();
  CHECK(f.exit_code == k_exit_child_failed);
  CHECK(f.exit_why.find("compact_ticker exceeded its restart budget") != std::string::npos);
  CHECK(f.j->index_of("purge:tracer") < f.j->lines.size());
}

TEST_CASE("a child that cannot start stops the agent with the startup exit code", "[supervisor]") {
  fixture f;
  f.j->fail_init.insert("perf_consumer");
  f.start();
  CHECK_FALSE(f.ready);
  CHECK(f.exit_code == k_exit_startup);
  CHECK(f.exit_why.find("perf_consumer failed to start") != std::string::npos);
  CHECK(f.exit_why.find("cannot load perf_consumer") != std::string::npos);
  // What had started is still taken down in order: the tracer is purged.
  CHECK(f.j->index_of("purge:tracer") < f.j->lines.size());
  CHECK(f.j->index_of("init:api") == f.j->lines.size());
}

TEST_CASE("a client's answer in flight when the tracer dies fails at once, not at its timeout",
          "[supervisor]") {
  fixture f;
  f.start({}, false);
  auto answer = std::make_shared<std::string>();
  // The handles go in as spawn arguments: CAF 0.17 dereferences a null argument tuple when a
  // function actor takes none (UBSan: "reference binding to null pointer").
  f.sys->spawn(
      [](caf::event_based_actor* self, supervisor_self_actor sup,
         std::shared_ptr<std::string> out) {
        self->request(sup, std::chrono::seconds(10), get_conns_atom::value, std::string("cli"))
            .then([=](connections_reply&) { *out = "reply"; },
                  [=](caf::error& err) { *out = "error: " + self->system().render(err); });
      },
      f.sup, answer);
  f.sched->run();
  REQUIRE(f.j->index_of("asked:cli") < f.j->lines.size());
  CHECK(answer->empty()); // the tracer holds it
  f.crash("tracer");
  // No timeout has fired: the error comes from the tracer's down message.
  CHECK(answer->find("error: ") == 0);
  CHECK(answer->find("tracer went down before answering") != std::string::npos);
}

TEST_CASE("a child listed before one it depends on stops the start, naming both", "[supervisor]") {
  fixture f;
  std::vector<child_spec> specs = {f.spec("perf_consumer", {"tracer"}, true, false),
                                   f.spec("tracer", {}, false, true)};
  supervisor_hooks hooks;
  hooks.on_exit = [&f](int code, std::string why) {
    f.exit_code = code;
    f.exit_why = std::move(why);
  };
  f.sup = f.sys->spawn(supervisor_fn, supervisor_config{}, std::move(specs), hooks);
  f.sched->run();
  for (int i = 0; i < 3 && f.exit_code == -1; ++i) {
    f.sched->trigger_timeouts();
    f.sched->run();
  }
  CHECK(f.exit_code == k_exit_startup);
  CHECK(f.exit_why.find("perf_consumer depends on tracer, which starts after it") !=
        std::string::npos);
  CHECK(f.j->lines.empty()); // nothing was started
}
