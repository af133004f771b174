// Bounded lines: what the console session reads its commands with.
#include <catch2/catch.hpp>

#include "actors/console/line_reader.hpp"
#include "actors/console/rate_limiter.hpp"

using namespace netlens;

TEST_CASE("lines come out whole however the bytes arrive", "[console]") {
  line_reader r(64);
  r.feed("act");
  CHECK_FALSE(r.next());
  r.feed("ors\r\nhe");
  auto a = r.next();
  REQUIRE(a);
  CHECK(a->line == "actors");
  CHECK_FALSE(a->too_long);
  CHECK_FALSE(r.next());
  r.feed("lp\n\n");
  CHECK(r.next()->line == "help");
  auto empty = r.next();
  REQUIRE(empty);
  CHECK(empty->line.empty());
}

TEST_CASE("an over-long line is reported once and the next line is read normally", "[console]") {
  line_reader r(8);
  r.feed("12345678"); // exactly the bound: fine
  r.feed("\n");
  CHECK(r.next()->line == "12345678");
  r.feed(std::string(5000, 'x'));
  CHECK_FALSE(r.next()); // nothing until the newline: the reader never holds the long line
  r.feed(std::string(100, 'y') + "\nhelp\n");
  auto big = r.next();
  REQUIRE(big);
  CHECK(big->too_long);
  CHECK(big->line.empty());
  CHECK(big->length == 5100);
  auto next = r.next();
  REQUIRE(next);
  CHECK_FALSE(next->too_long);
  CHECK(next->line == "help");
}

TEST_CASE("the rate limiter allows a burst, then the configured rate", "[console]") {
  using namespace std::chrono;
  auto t = rate_limiter::clock::time_point{} + hours(1);
  rate_limiter lim(5, t);
  for (int i = 0; i < 5; ++i)
    CHECK(lim.allow(t));
  CHECK_FALSE(lim.allow(t));
  CHECK_FALSE(lim.allow(t + milliseconds(100))); // half a token
  CHECK(lim.allow(t + milliseconds(200)));       // one earned
  CHECK_FALSE(lim.allow(t + milliseconds(200)));
  // A long pause refills to the burst, no more.
  t += seconds(60);
  int allowed = 0;
  for (int i = 0; i < 20; ++i)
    allowed += lim.allow(t) ? 1 : 0;
  CHECK(allowed == 5);
  CHECK(lim.per_second() == 5);
}

TEST_CASE("input already read is taken as the key a waiting command wants", "[console]") {
  line_reader r(64);
  CHECK_FALSE(r.take_pending());
  r.feed("top\n\n");
  CHECK(r.next()->line == "top");
  CHECK(r.take_pending()); // the empty line after it: the key that ends top
  CHECK_FALSE(r.next());
  CHECK_FALSE(r.take_pending());
  r.feed("q"); // a key without its newline yet
  CHECK(r.take_pending());
  r.feed("\nhelp\n"); // the partial line is gone: its newline ends an empty line
  CHECK(r.next()->line.empty());
  CHECK(r.next()->line == "help");
}
