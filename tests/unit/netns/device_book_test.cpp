#include <catch2/catch.hpp>

#include "actors/netns/device_book.hpp"

using namespace netlens;

TEST_CASE("a complete link dump says which devices are gone, in its namespace only",
          "[device_book]") {
  device_book book;
  book.seen(1, 2, "eth0");
  book.seen(1, 3, "veth-old"); // its removal event was lost
  book.seen(7, 3, "veth-other-ns");
  CHECK(book.name_of(1, 3) == "veth-old");
  CHECK_FALSE(book.dump_ends(1)); // no dump was counted: nothing can be said to be gone

  book.dump_begins(1);
  book.seen(1, 1, "lo");
  book.seen(1, 2, "eth0");
  auto listed = book.dump_ends(1);
  REQUIRE(listed);
  CHECK(*listed == std::unordered_set<int32_t>{1, 2});
  CHECK(book.name_of(1, 3).empty()); // gone
  CHECK(book.name_of(1, 2) == "eth0");
  CHECK(book.name_of(7, 3) == "veth-other-ns"); // another namespace is not touched
  CHECK(book.size() == 3);
  CHECK_FALSE(book.dump_ends(1)); // that dump is over
}

TEST_CASE("a removed device and a namespace let go lose their names", "[device_book]") {
  device_book book;
  book.dump_begins(4);
  book.seen(4, 10, "eth1");
  book.seen(4, 11, "eth2");
  book.seen(5, 10, "lo");
  book.removed(4, 10);
  CHECK(book.name_of(4, 10).empty());
  book.forget(4);
  CHECK(book.name_of(4, 11).empty());
  CHECK_FALSE(book.dump_ends(4)); // its dump went with it
  CHECK(book.name_of(5, 10) == "lo");
  book.clear();
  CHECK(book.size() == 0);
}
