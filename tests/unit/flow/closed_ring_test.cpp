#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "flow/closed_ring.hpp"

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

TEST_CASE("closed ring: first in, first out across chunk boundaries", "[registry][ring]") {
  closed_ring<int> r;
  std::vector<int> expected;
  int next = 0;
  // Push and pop in uneven steps so the head walks across many chunks.
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < 37 + round % 300; ++i) {
      r.push_back(next);
      expected.push_back(next++);
    }
    size_t n = static_cast<size_t>(round % 7) * 61;
    r.pop_front(n);
    expected.erase(expected.begin(),
                   expected.begin() + static_cast<std::ptrdiff_t>(std::min(n, expected.size())));
    REQUIRE(contents(r) == expected);
  }
  REQUIRE(r.size() == expected.size());
}

TEST_CASE("closed ring: holds what is buffered, rounded up to a chunk, and one spare",
          "[registry][ring]") {
  constexpr size_t chunk = closed_ring<int>::k_chunk;
  closed_ring<int> r;
  CHECK(r.capacity() == 0);
  for (int i = 0; i < 1000; ++i) {
    r.push_back(i);
    REQUIRE(r.capacity() == (r.size() + chunk - 1) / chunk * chunk); // no doubling
  }
  CHECK(r[0] == 0);
  CHECK(r[999] == 999);
}

TEST_CASE("closed ring: a record never moves while it is buffered", "[registry][ring]") {
  closed_ring<int> r;
  r.push_back(-1);
  const int* first = &r[0];
  for (int i = 0; i < 100000; ++i)
    r.push_back(i);
  CHECK(&r[0] == first);
  CHECK(*first == -1);
}

TEST_CASE("closed ring: gives memory back as it empties", "[registry][ring]") {
  constexpr size_t chunk = closed_ring<int>::k_chunk;
  closed_ring<int> r;
  for (int i = 0; i < (1 << 16); ++i)
    r.push_back(i);
  REQUIRE(r.capacity() == (1 << 16));
  r.pop_front((1 << 16) - 100);
  CHECK(r.size() == 100);
  CHECK(r.capacity() <= 3 * chunk); // the chunk or two the last 100 span, and one spare
  for (size_t i = 0; i < r.size(); ++i)
    REQUIRE(r[i] == static_cast<int>((1 << 16) - 100 + i));
  r.pop_front(1000); // more than it holds: empties it
  CHECK(r.empty());
  CHECK(r.capacity() <= 2 * chunk); // at most a chunk to start over in and one spare
  r.push_back(7);
  CHECK(r[0] == 7);
  // Filling and draining across a chunk boundary again and again allocates nothing new.
  for (int round = 0; round < 1000; ++round) {
    for (size_t i = 0; i < chunk; ++i)
      r.push_back(static_cast<int>(i));
    r.pop_front(chunk);
    REQUIRE(r.capacity() <= 2 * chunk);
  }
}
