#include <catch2/catch.hpp>

#include "actors/tracer/closed_ring.hpp"

using netlens::closed_ring;

namespace {

// The ring's contents, oldest first.
std::vector<int> contents(const closed_ring<int>& r) {
  std::vector<int> out;
  for (size_t i = 0; i < r.size(); ++i)
    out.push_back(r[i]);
  return out;
}

} // namespace

TEST_CASE("closed ring: first in, first out across the wrap", "[registry][ring]") {
  closed_ring<int> r(1 << 20);
  std::vector<int> expected;
  int next = 0;
  // Push and pop in uneven steps so the head walks around the array many times.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 37; ++i) {
      r.push_back(next);
      expected.push_back(next++);
    }
    size_t n = static_cast<size_t>(round % 5) * 9;
    r.pop_front(n);
    expected.erase(expected.begin(), expected.begin() + static_cast<std::ptrdiff_t>(
                                                          std::min(n, expected.size())));
    REQUIRE(contents(r) == expected);
  }
  REQUIRE(r.size() == expected.size());
}

TEST_CASE("closed ring: grows to its limit, never past it", "[registry][ring]") {
  closed_ring<int> r(1000);
  for (int i = 0; i < 1000; ++i)
    r.push_back(i);
  CHECK(r.size() == 1000);
  CHECK(r.capacity() == 1000); // 256, 512, then the limit rather than 1024
  CHECK(r[0] == 0);
  CHECK(r[999] == 999);
}

TEST_CASE("closed ring: gives memory back as it empties", "[registry][ring]") {
  closed_ring<int> r(1 << 16);
  for (int i = 0; i < (1 << 16); ++i)
    r.push_back(i);
  REQUIRE(r.capacity() == (1 << 16));
  r.pop_front((1 << 16) - 100);
  CHECK(r.size() == 100);
  CHECK(r.capacity() <= 4 * 256); // halved while a quarter full, down to a few hundred
  for (size_t i = 0; i < r.size(); ++i)
    REQUIRE(r[i] == static_cast<int>((1 << 16) - 100 + i));
  r.pop_front(1000); // more than it holds: empties it
  CHECK(r.empty());
  r.push_back(7);
  CHECK(r[0] == 7);
}
