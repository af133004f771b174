// The values the conntrack core works with: one conntrack entry as one network namespace's
// netfilter reports it, a lookup key built from a traced connection, and the translation a
// lookup returns. Plain structs with no implicit padding, so they hash and compare as bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace netlens {

// One direction of a flow. Addresses in network byte order, v4 in the first 4 bytes and the
// rest zero; ports in host byte order (as nl_conn has them).
struct ct_endpoints {
  uint8_t saddr[16] = {};
  uint8_t daddr[16] = {};
  uint16_t sport = 0;
  uint16_t dport = 0;
};
static_assert(sizeof(ct_endpoints) == 36, "no implicit padding");

// What a traced connection is looked up by: its namespace, family, protocol and endpoints as
// the socket has them.
struct ct_tuple {
  uint32_t netns = 0;   // inode of the network namespace
  uint8_t family = 0;   // AF_INET or AF_INET6
  uint8_t protocol = 0; // IPPROTO_TCP or IPPROTO_UDP
  uint8_t pad[2] = {};
  ct_endpoints ends;
};
static_assert(sizeof(ct_tuple) == 44, "no implicit padding");

// One conntrack entry: the original direction and the reply direction. It is NAT'd when the
// reply is not the original reversed.
struct ct_entry {
  uint32_t netns = 0;
  uint8_t family = 0;
  uint8_t protocol = 0;
  uint8_t pad[2] = {};
  ct_endpoints orig;
  ct_endpoints reply;
};
static_assert(sizeof(ct_entry) == 80, "no implicit padding");

// What a lookup finds: the translation (the entry's other direction) and the local address of
// the tuple it was found by. That address is the asked one's, except when a UDP socket bound
// to the wildcard (0.0.0.0 or ::) asked: its per-peer flows do not know theirs, and netfilter's
// entry does.
struct ct_hit {
  ct_endpoints nat;
  uint8_t local[16] = {};
};

// Lookups' answers by index into the tuples asked; misses are left out (most connections are
// not NAT'd, so an answer stays small).
using nat_hits = std::vector<std::pair<uint32_t, ct_hit>>;

// One cache entry as a listing shows it.
struct ct_cache_row {
  ct_entry entry;
  bool orphan = false; // from the event stream and not yet claimed by a lookup
};

enum class ct_event_kind : uint8_t {
  dumped,    // listed by a table dump (initial or resync)
  created,   // NEW event
  destroyed, // DESTROY event
};

struct ct_event {
  ct_event_kind kind = ct_event_kind::created;
  ct_entry entry;
};

inline bool operator==(const ct_endpoints& a, const ct_endpoints& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}
inline bool operator!=(const ct_endpoints& a, const ct_endpoints& b) {
  return !(a == b);
}
inline bool operator==(const ct_tuple& a, const ct_tuple& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}
inline bool operator!=(const ct_tuple& a, const ct_tuple& b) {
  return !(a == b);
}

// Whether a 16-byte address is all zero: 0.0.0.0 or ::, the local address of a socket bound to
// the wildcard.
inline bool is_unspecified(const uint8_t* addr) {
  static constexpr uint8_t zero[16] = {};
  return std::memcmp(addr, zero, sizeof zero) == 0;
}

// A local address the flow lacks (all zero) becomes the one learnt for it; one it has stays.
inline void fill_unspecified(uint8_t* addr, const uint8_t* learnt) {
  if (is_unspecified(addr))
    std::memcpy(addr, learnt, 16);
}

// The original direction reversed: what the reply would be without NAT.
inline ct_endpoints reversed(const ct_endpoints& e) {
  ct_endpoints r;
  std::memcpy(r.saddr, e.daddr, 16);
  std::memcpy(r.daddr, e.saddr, 16);
  r.sport = e.dport;
  r.dport = e.sport;
  return r;
}

inline bool has_nat(const ct_entry& e) {
  return e.reply != reversed(e.orig);
}

inline ct_tuple tuple_of(const ct_entry& e, const ct_endpoints& dir) {
  ct_tuple t;
  t.netns = e.netns;
  t.family = e.family;
  t.protocol = e.protocol;
  t.ends = dir;
  return t;
}

} // namespace netlens
