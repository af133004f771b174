// The one handled-message counter: every message an actor's behavior consumes counts once, the
// responses to its own requests included, with no increment in any handler.
#include <catch2/catch.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/common/counted_actor.hpp"
#include "messages/interfaces.hpp"

using namespace netlens;

namespace {

// stats: how many it had handled before this one; tick: one-way; init: asks helper for its
// stats, so a response comes back into the mailbox.
using probe_actor =
    caf::typed_actor<caf::replies_to<stats_atom>::with<uint64_t>, caf::reacts_to<tick_atom>,
                     caf::replies_to<init_atom>::with<caf::ok_atom>>;
using helper_actor = caf::typed_actor<caf::replies_to<stats_atom>::with<actor_stats>>;

struct probe_state {
  static inline const char* name = "probe";
  uint64_t handled = 0;
};

// An argument, because CAF 0.17 spawns a function without any through a null pointer to its
// empty argument tuple, which UBSan reports (a reference bound to null).
helper_actor::behavior_type helper(int) {
  return {[](stats_atom) { return actor_stats{}; }};
}

probe_actor::behavior_type probe(counted_self<probe_actor, probe_state> self, helper_actor h) {
  return {
      [=](stats_atom) { return self->state.handled; },
      [=](tick_atom) {},
      [=](init_atom) {
        auto rp = self->make_response_promise<caf::ok_atom>();
        self->request(h, caf::infinite, stats_atom::value).then([=](const actor_stats&) mutable {
          rp.deliver(caf::ok_atom::value);
        });
        return rp;
      },
  };
}

} // namespace

TEST_CASE("every message an actor consumes counts once, responses to its requests too",
          "[counted_actor]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor me{sys};
  auto h = sys.spawn(helper, 0);
  auto p = sys.spawn(probe, h);
  for (int i = 0; i < 3; ++i)
    me->send(p, tick_atom::value);
  uint64_t seen = 99;
  me->request(p, caf::infinite, stats_atom::value)
      .receive([&](uint64_t n) { seen = n; }, [&](caf::error&) { FAIL("no stats answer"); });
  CHECK(seen == 3); // the three ticks; this request counts once it is handled
  me->request(p, caf::infinite, init_atom::value)
      .receive([](caf::ok_atom) {}, [&](caf::error&) { FAIL("no init answer"); });
  me->request(p, caf::infinite, stats_atom::value)
      .receive([&](uint64_t n) { seen = n; }, [&](caf::error&) { FAIL("no stats answer"); });
  CHECK(seen == 6); // + the stats request, the init request, the helper's response
  me->send_exit(p, caf::exit_reason::user_shutdown);
  me->send_exit(h, caf::exit_reason::user_shutdown);
}
