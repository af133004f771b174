// The tracer actor: owns the loaded BPF object (programs, links, maps) and the per-client
// state; answers get_connections and takes closed batches from the perf consumer.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/tracer/client_registry.hpp"
#include "bpf/tracer_object.hpp"
#include "config/config.hpp"
#include "flow/udp_peer_flows.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

struct tracer_state {
  static inline const char* name = "tracer";
  tracer_config cfg;
  std::unique_ptr<tracer_object> bpf;
  std::unique_ptr<client_registry> clients;
  std::vector<nl_conn> active; // scratch, reused across requests
  // Paged answers being read, by listing id: the client registry's listing and where the read
  // of the active map stands.
  struct paged {
    uint64_t listing = 0; // the registry's
    tracer_object::active_cursor cursor;
    uint64_t entries = 0; // active connections read so far
  };
  std::unordered_map<uint64_t, paged> pages;
  uint64_t pages_served = 0;
  uint64_t handled = 0;
  uint64_t idle_expired = 0;
  // UDP per peer: sockets closed whose peers' flows the next read of the map ends.
  udp_socket_closes udp_closes;
  uint64_t udp_peer_flows_ended = 0;   // peers' flows ended with their socket
  uint64_t tcp_reconciled = 0;         // entries whose close was missed, found gone in sock_diag
  uint64_t tcp_reconcile_failures = 0; // namespaces whose socket table could not be read
  uint64_t nat_closed = 0;             // closed connections that carried a translation
  uint64_t nat_errors = 0;             // lookups conntrack did not answer in time
  uint64_t netns_errors = 0;           // attributions the netns actor did not answer in time
  uint64_t flush_errors = 0;           // the consumer did not hand over closed records in time
  perf_consumer_actor consumer; // who reads the closed buffer (asked to flush before answers)
  uint32_t own_netns = 0;
  std::string state = "starting";
  // How the programs were loaded: the build in use and why the ones before it were skipped.
  std::vector<std::pair<std::string, std::string>> load_info;
};

// guesser: asked for struct offsets when tracer.mode lets it fall back to the prebuilt build
// (null when it does not); guess_timeout bounds that wait.
tracer_actor::behavior_type tracer_fn(tracer_actor::stateful_pointer<tracer_state> self,
                                      tracer_config cfg, offset_guesser_actor guesser,
                                      std::chrono::milliseconds guess_timeout);

} // namespace netlens
