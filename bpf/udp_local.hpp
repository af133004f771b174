// The local address of UDP datagrams delivered to unconnected sockets: the sk_lookup program of
// udp_local.bpf.c, one instance attached in each network namespace served, all writing two
// shared maps: per port its one local address, and per peer for the few ports whose datagrams
// reached several. A per-peer flow of a socket bound to the wildcard asks it which of the
// namespace's addresses its peer's datagrams reached. Links are created with
// bpf_program__attach_netns and closed on detach: an sk_lookup link goes with its file
// descriptor, so nothing outlives the agent however it ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include "flow/unique_fd.hpp"

struct nl_udp_local;
struct bpf_link;

namespace netlens {

class udp_local_book {
public:
  // Creates the shared maps (max_entries ports and as many peers at most; the least recently
  // used go first).
  // The error names the step.
  static std::variant<std::unique_ptr<udp_local_book>, std::string> open(uint32_t max_entries);
  ~udp_local_book();
  udp_local_book(const udp_local_book&) = delete;
  udp_local_book& operator=(const udp_local_book&) = delete;

  // Loads an instance for the namespace (inode, its handle netns_fd) and attaches it there.
  // Attaching twice is a no-op. The error names the namespace and the step.
  std::optional<std::string> attach(uint32_t inode, int netns_fd);
  // Closes that namespace's link and frees its instance; false when none was attached.
  bool detach(uint32_t inode);
  void detach_all();
  size_t attached() const { return attached_.size(); }

  // The address peer's datagrams (family AF_INET or AF_INET6, network byte order, v4 in the
  // first 4 bytes) from peer_port reached at local_port in netns: the port's one address, or,
  // at a port that saw several, the peer's latest. False when none was recorded (none came,
  // it was pushed out, or the peer's came before the port saw a second address).
  bool local_address(uint32_t netns, uint8_t family, uint16_t local_port, const uint8_t* peer,
                     uint16_t peer_port, uint8_t* local) const; // local: 16 bytes

private:
  udp_local_book() = default;
  struct instance {
    nl_udp_local* skel = nullptr;
    bpf_link* link = nullptr;
  };
  static void destroy(instance& i);

  unique_fd ports_; // per port: its one local address, or "several"
  unique_fd peers_; // per peer, for ports that saw several
  std::unordered_map<uint32_t, instance> attached_;
};

} // namespace netlens
