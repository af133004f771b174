#include <catch2/catch.hpp>

#include "actors/supervisor/restart_budget.hpp"

using namespace netlens;
using namespace std::chrono;

TEST_CASE("restarts are allowed up to the budget within the window", "[supervisor]") {
  restart_budget b(3, seconds(60), milliseconds(100));
  auto t0 = steady_clock::time_point{} + hours(1);
  CHECK(b.allow(t0));
  CHECK(b.backoff() == milliseconds(100));
  CHECK(b.allow(t0 + seconds(1)));
  CHECK(b.backoff() == milliseconds(200));
  CHECK(b.allow(t0 + seconds(2)));
  CHECK(b.backoff() == milliseconds(400));
  CHECK_FALSE(b.allow(t0 + seconds(3)));
  // Once the first crash leaves the window, one more restart is allowed.
  CHECK(b.allow(t0 + seconds(61)));
}

TEST_CASE("a zero budget never restarts", "[supervisor]") {
  restart_budget b(0, seconds(60), milliseconds(100));
  CHECK_FALSE(b.allow(steady_clock::now()));
}
