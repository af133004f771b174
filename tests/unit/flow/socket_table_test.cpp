#include <catch2/catch.hpp>

#include "flow/socket_table.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

TEST_CASE("only TCP entries stalled in a closing state are verified, in every netns", "[tracer]") {
  const uint64_t s = 1000000000ull;
  std::vector<nl_conn> active;
  auto add = [&](uint8_t proto, uint8_t state, uint64_t last_s, uint32_t netns) {
    nl_conn c = make_conn(active.size() + 1, "10.0.0.1", 1, "10.0.0.2", 2, proto);
    c.tcp_state = state;
    c.last_ns = last_s * s;
    c.netns = netns;
    active.push_back(c);
  };
  add(6, 4, 0, 7);  // FIN_WAIT1, idle 100 s: verify
  add(6, 5, 0, 7);  // FIN_WAIT2: verify
  add(6, 11, 0, 7); // CLOSING: verify
  add(6, 9, 0, 7);  // LAST_ACK: verify
  add(6, 1, 0, 7);  // ESTABLISHED: idle is normal
  add(6, 8, 0, 7);  // CLOSE_WAIT: the application's business
  add(6, 4, 90, 7); // FIN_WAIT1 but recent
  add(6, 4, 0, 8);  // another namespace (a container's): verify there
  add(17, 4, 0, 7); // UDP never
  auto got = closing_entries_to_verify(active, 100 * s, 30 * s);
  REQUIRE(got.size() == 5);
  CHECK(got[0]->cookie == 1);
  CHECK(got[3]->cookie == 4);
  CHECK(got[4]->cookie == 8);
}
