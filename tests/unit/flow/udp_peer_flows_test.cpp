#include <catch2/catch.hpp>

#include "flow/udp_peer_flows.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

namespace {

// An unconnected UDP socket's own entry (sock_id id), closed or read at last_ns.
nl_conn socket_entry(uint64_t id, uint64_t start_ns, uint64_t last_ns) {
  nl_conn c = make_conn(id, "10.0.0.1", 53, "0.0.0.0", 0, 17);
  c.flags = NL_FLAG_UDP_PEERS;
  c.start_ns = start_ns;
  c.last_ns = last_ns;
  return c;
}

// The flow of one peer of socket parent.
nl_conn peer_flow(uint64_t id, uint64_t parent, uint64_t start_ns, uint16_t peer_port) {
  nl_conn c = make_conn(id, "10.0.0.1", 53, "10.0.0.9", peer_port, 17);
  c.parent_sock_id = parent;
  c.start_ns = start_ns;
  c.last_ns = start_ns;
  c.bytes_recv = 40;
  c.packets_recv = 1;
  return c;
}

} // namespace

TEST_CASE("an empty socket entry is no flow, one with datagrams of its own is", "[udp_peers]") {
  nl_conn empty = socket_entry(1, 100, 200);
  CHECK(is_empty_socket_entry(empty));
  nl_conn own = empty;
  own.bytes_recv = 12; // a recv() that did not ask for the peer
  own.packets_recv = 1;
  CHECK_FALSE(is_empty_socket_entry(own));
  nl_conn plain = make_conn(2, "10.0.0.1", 5000, "10.0.0.2", 53, 17); // nothing sent yet
  CHECK_FALSE(is_empty_socket_entry(plain));

  std::vector<nl_conn> read{empty, own, plain, peer_flow(9, 1, 150, 4000)};
  drop_empty_socket_entries(read);
  REQUIRE(read.size() == 3);
  CHECK(read[0].bytes_recv == 12);
  CHECK(read[1].sock_id == 2);
  CHECK(read[2].sock_id == 9);
}

TEST_CASE("a socket's close ends its peers' flows and no one else's", "[udp_peers]") {
  udp_socket_closes closes;
  nl_conn a = peer_flow(10, 1, 150, 4000), b = peer_flow(11, 1, 190, 4001);
  nl_conn other = peer_flow(12, 2, 150, 4000); // a peer of another socket
  nl_conn plain = make_conn(3, "10.0.0.1", 5000, "10.0.0.2", 53, 17);
  CHECK(closes.pending() == 0);
  CHECK_FALSE(closes.ends(a));

  CHECK_FALSE(closes.closed(socket_entry(1, 100, 200))); // empty: not reported
  CHECK(closes.pending() == 1);
  CHECK(closes.ends(a));
  CHECK(closes.ends(b));
  CHECK_FALSE(closes.ends(other));
  CHECK_FALSE(closes.ends(plain));

  closes.swept();
  CHECK(closes.pending() == 0);
  CHECK_FALSE(closes.ends(a));
}

TEST_CASE("a socket entry with datagrams of its own is reported when it closes", "[udp_peers]") {
  udp_socket_closes closes;
  nl_conn own = socket_entry(1, 100, 200);
  own.bytes_sent = 7;
  own.packets_sent = 1;
  CHECK(closes.closed(own));
  CHECK(closes.ends(peer_flow(10, 1, 150, 4000)));
  // Any other record is reported and ends nothing.
  CHECK(closes.closed(make_conn(5, "10.0.0.1", 1, "10.0.0.2", 2)));
  CHECK(closes.pending() == 1);
}

TEST_CASE("a later socket at a reused address keeps its peers' flows", "[udp_peers]") {
  // raw_tp builds: sock_id is the socket's address, which a new socket may have again.
  udp_socket_closes closes;
  closes.closed(socket_entry(1, 100, 200));
  nl_conn old_flow = peer_flow(10, 1, 150, 4000);
  nl_conn new_flow = peer_flow(20, 1, 250, 4000); // started after the close
  CHECK(closes.ends(old_flow));
  CHECK_FALSE(closes.ends(new_flow));
  // That socket closes too before a sweep: both generations end.
  closes.closed(socket_entry(1, 240, 300));
  CHECK(closes.ends(old_flow));
  CHECK(closes.ends(new_flow));
  // A close record arriving late with an older time does not shorten it.
  closes.closed(socket_entry(1, 100, 120));
  CHECK(closes.ends(new_flow));
}
