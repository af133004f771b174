// A thread's batches to its actor, bounded: past the bound a batch is dropped and counted, a
// marker goes all the same, and a batch for an actor that is gone goes nowhere.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/common/bounded_handoff.hpp"

using namespace netlens;

TEST_CASE("a handoff drops past its bound, counts the drops and lets markers through",
          "[bounded_handoff]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor target{sys};
  bounded_handoff h(target->address(), 2);

  CHECK(h.send(int32_t{1}));
  CHECK(h.send(int32_t{2}));
  CHECK_FALSE(h.send(int32_t{3})); // two not handled yet: the bound
  CHECK(h.dropped() == 1);
  CHECK(h.send(int32_t{4}, true)); // a marker goes all the same
  CHECK(h.in_flight() == 3);

  // What arrived, in order: the dropped one did not.
  std::vector<int32_t> got;
  for (int i = 0; i < 3; ++i)
    target->receive([&](int32_t v) { got.push_back(v); },
                    caf::after(std::chrono::seconds(5)) >> [] { FAIL("a batch did not come"); });
  CHECK(got == std::vector<int32_t>{1, 2, 4});

  h.handled();
  h.handled();
  CHECK(h.in_flight() == 1);
  CHECK(h.send(int32_t{5})); // room again
  CHECK(h.dropped() == 1);
}

TEST_CASE("a handoff to an actor that is gone sends nothing and counts no drop",
          "[bounded_handoff]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::actor_addr gone;
  {
    caf::scoped_actor t{sys};
    gone = t->address();
  }
  bounded_handoff h(gone, 4);
  CHECK_FALSE(h.send(int32_t{1}));
  CHECK(h.in_flight() == 0);
  CHECK(h.dropped() == 0);
}
