// What the console needs of the supervisor: shutdown phase reports to a listener that exits
// last, statistics with a deadline that mark a silent child, and message rates.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/supervisor/message_rate.hpp"
#include "actors/supervisor/supervisor_actor.hpp"

using namespace netlens;

namespace {

struct journal {
  std::vector<std::string> lines;
  std::set<std::string> silent_on_stats;
  size_t index_of(const std::string& line) const {
    return static_cast<size_t>(std::find(lines.begin(), lines.end(), line) - lines.begin());
  }
};

// A child answering the lifecycle messages; `listens` also takes phase reports (as the
// console does), so it can be the shutdown's listener.
caf::behavior child(caf::event_based_actor* self, std::string name, std::shared_ptr<journal> j) {
  self->attach_functor([=](const caf::error&) { j->lines.push_back("down:" + name); });
  return {
      [=](init_atom) { return caf::ok_atom::value; },
      [=](stop_atom) { return caf::ok_atom::value; },
      [=](purge_atom) { return caf::ok_atom::value; },
      [=](stats_atom) -> caf::result<actor_stats> {
        if (j->silent_on_stats.count(name))
          return self->make_response_promise<actor_stats>(); // never delivered
        actor_stats s;
        s.name = name;
        s.state = actor_state::running;
        s.messages_handled = 10;
        return s;
      },
      [=](fault_atom) {},
      [=](const shutdown_phase_report& r) {
        j->lines.push_back("report:" + r.phase + (r.last ? ":last" : ""));
      },
  };
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::shared_ptr<journal> j = std::make_shared<journal>();
  std::map<std::string, caf::actor> spawned;
  int exit_code = -1;
  supervisor_self_actor sup;

  fixture() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    sched->clock().current_time += std::chrono::hours(1);
    std::vector<child_spec> specs;
    for (auto [name, stop, purge] :
         {std::tuple{"tracer", false, true}, std::tuple{"api", true, false},
          std::tuple{"console", false, false}}) {
      std::string n = name;
      specs.push_back({n,
                       {},
                       stop,
                       purge,
                       [this, n](caf::actor_system& s, const child_directory&) -> lifecycle_actor {
                         auto h = s.spawn(child, n, j);
                         spawned[n] = h;
                         return caf::actor_cast<lifecycle_actor>(h);
                       }});
    }
    supervisor_hooks hooks;
    hooks.on_exit = [this](int code, std::string) { exit_code = code; };
    sup = sys->spawn(supervisor_fn, supervisor_config{}, std::move(specs), hooks);
    sched->run();
  }

  ~fixture() {
    if (exit_code == -1) {
      caf::anon_send(sup, shutdown_atom::value);
      for (int i = 0; i < 3 && exit_code == -1; ++i) {
        sched->run();
        sched->trigger_timeouts();
      }
      sched->run();
    }
  }
};

} // namespace

TEST_CASE("the shutdown's listener hears each phase end and exits after the others",
          "[supervisor]") {
  fixture f;
  caf::anon_send(f.sup, shutdown_atom::value, f.spawned["console"]);
  f.sched->run();
  REQUIRE(f.exit_code == 0);
  auto& j = *f.j;
  size_t stop = j.index_of("report:stop");
  size_t purge = j.index_of("report:purge");
  size_t exit = j.index_of("report:exit:last");
  REQUIRE(exit < j.lines.size());
  CHECK(stop < purge);
  CHECK(purge < exit);
  // The exit phase ends when the others are down; the listener goes after hearing it.
  CHECK(j.index_of("down:tracer") < exit);
  CHECK(j.index_of("down:api") < exit);
  CHECK(exit < j.index_of("down:console"));
  CHECK(j.index_of("down:console") < j.lines.size());
}

TEST_CASE("without a listener the exit phase takes every child at once", "[supervisor]") {
  fixture f;
  caf::anon_send(f.sup, shutdown_atom::value);
  f.sched->run();
  REQUIRE(f.exit_code == 0);
  CHECK(f.j->index_of("report:exit:last") == f.j->lines.size());       // nobody asked to hear
  CHECK(f.j->index_of("down:console") < f.j->index_of("down:tracer")); // reverse start order
}

TEST_CASE("stats with a deadline mark a child that did not answer and keep the others",
          "[supervisor]") {
  fixture f;
  f.j->silent_on_stats.insert("api");
  caf::scoped_actor self{*f.sys};
  auto answer = self->request(f.sup, std::chrono::seconds(10), stats_atom::value, uint32_t{50});
  f.sched->run();
  CHECK(f.j->lines.empty());                            // still waiting for api
  f.sched->advance_time(std::chrono::milliseconds(60)); // past the children's deadline only
  f.sched->run();
  bool got = false;
  std::string error;
  answer.receive(
      [&](agent_stats& s) {
        got = true;
        REQUIRE(s.actors.size() == 4);
        CHECK(s.actors[0].name == "supervisor");
        CHECK(s.actors[0].id != 0);
        CHECK(s.actors[0].mailbox_size >= 0);
        const actor_stats& tracer = s.actors[1];
        CHECK(tracer.name == "tracer");
        CHECK(tracer.answered);
        CHECK(tracer.messages_handled == 10);
        CHECK(tracer.id == f.spawned["tracer"].id());
        const actor_stats& api = s.actors[2];
        CHECK(api.name == "api");
        CHECK_FALSE(api.answered);
        CHECK(api.id == f.spawned["api"].id());
        CHECK(s.actors[3].answered);
      },
      [&](caf::error& e) { error = f.sys->render(e); });
  CHECK(error.empty());
  CHECK(got);
}

TEST_CASE("message rates come from readings at least the minimum interval apart", "[supervisor]") {
  using namespace std::chrono;
  message_rate r(milliseconds(500));
  auto t = message_rate::clock::time_point{} + hours(1);
  CHECK(r.update(100, t) == 0);                          // first reading: no rate yet
  CHECK(r.update(150, t + milliseconds(100)) == 0);      // too soon: previous rate
  CHECK(r.update(600, t + seconds(1)) == Approx(500.0)); // 500 in 1 s
  CHECK(r.update(700, t + milliseconds(1100)) == Approx(500.0));
  CHECK(r.update(1600, t + seconds(2)) == Approx(1000.0));
  CHECK(r.update(5, t + seconds(3)) == 0); // restarted actor: counts from zero again
  CHECK(r.update(55, t + seconds(4)) == Approx(50.0));
}
