// The tracer actor: owns the loaded BPF object (programs, links, maps) and the connection
// assembler around it (flow/connection_assembler: per-client state, the join, the tick), and
// asks conntrack and the netns actor what the answers need. A shell of messages and timers.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/common/self_interface.hpp"
#include "bpf/tracer_object.hpp"
#include "config/config.hpp"
#include "flow/closed_buffer.hpp"
#include "flow/connection_assembler.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// The loaded tracer's map as the assembler reads it; empty while nothing is loaded (before the
// load, after a purge).
class loaded_table : public active_table {
public:
  explicit loaded_table(const std::unique_ptr<tracer_object>& bpf) : bpf_(bpf) {}
  void read_active_page(active_cursor& cursor, std::vector<nl_conn>& out,
                        uint32_t max) const override {
    if (bpf_)
      bpf_->read_active_page(cursor, out, max);
    else
      cursor.done = true;
  }
  bool remove_active(uint64_t sock_id) override { return bpf_ && bpf_->remove_active(sock_id); }

private:
  const std::unique_ptr<tracer_object>& bpf_;
};

// Private: the bound on a flush the tracer set for itself (flush_timeout, ticket).
using flush_timeout_atom = caf::atom_constant<caf::atom("flushtmo")>;

// Its public interface, the fault switch, and its flush timer.
using tracer_self_actor =
    self_interface<tracer_actor, caf::reacts_to<flush_timeout_atom, uint64_t>>;

struct tracer_state {
  static inline const char* name = "tracer";
  // However the actor ends (a crash too): its buffer leaves the slot, so the maps go with the
  // object once the consumer that reads them stops.
  ~tracer_state() { unload(); }
  // The object goes: its buffer leaves the slot (a consumer still reading keeps it until it
  // stops), then every link, map and program is released.
  void unload() {
    if (buffer && buffer_slot)
      buffer_slot->clear_if(buffer.get());
    buffer.reset();
    bpf.reset();
  }
  tracer_config cfg;
  std::unique_ptr<tracer_object> bpf;
  // The reading side of bpf's closed buffer, and where the perf consumer's spawn takes it.
  std::shared_ptr<const closed_buffer> buffer;
  std::shared_ptr<closed_buffer_slot> buffer_slot;
  loaded_table table{bpf};
  kernel_live_sockets sockets;
  // The core: the join of active, closed, NAT; idle expiry and reconciliation.
  std::unique_ptr<connection_assembler> flows;
  uint64_t handled = 0;
  uint64_t nat_closed = 0;   // closed connections that carried a translation
  uint64_t nat_errors = 0;   // lookups conntrack did not answer in time
  uint64_t netns_errors = 0; // attributions the netns actor did not answer in time
  uint64_t flush_errors = 0; // the consumer did not hand over closed records in time
  // Answers waiting for the consumer's flush, by ticket: each runs once a closed batch
  // completes its ticket (every connection closed before it was asked is in), or at its bound.
  uint64_t flush_ticket = 0;
  std::map<uint64_t, std::function<void()>> flush_waiters;
  actor_state state = actor_state::starting;
  // How the programs were loaded: the build in use and why the ones before it were skipped.
  std::vector<std::pair<std::string, std::string>> load_info;
};

// guesser: asked for struct offsets when tracer.mode lets it fall back to the prebuilt build
// (null when it does not); guess_timeout bounds that wait. buffer_slot: where the loaded
// object's closed buffer is left for the perf consumer, which is spawned after this start.
tracer_self_actor::behavior_type tracer_fn(counted_self<tracer_self_actor, tracer_state> self,
                                           tracer_config cfg, offset_guesser_actor guesser,
                                           std::chrono::milliseconds guess_timeout,
                                           std::shared_ptr<closed_buffer_slot> buffer_slot);

} // namespace netlens
