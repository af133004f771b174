// The vocabulary: every value that travels in a message. Messages stay inside one process
// (netlens is never distributed), so these types are allowed as local, unserialized payloads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "bpf/netlens_offsets.h"
#include "bpf/netlens_records.h"
#include "config/config.hpp"
#include "flow/connection.hpp"
#include "flow/netns_handle.hpp"

namespace netlens {

// Decoded closed connections, perf_consumer -> tracer. flushed: 0, or the highest flush
// ticket (tracer -> perf_consumer, flush) this batch completes: every connection closed before
// that flush was asked is in this batch or an earlier one. A batch that completes one may hold
// no records.
struct closed_batch {
  std::vector<nl_conn> records;
  uint64_t flushed = 0;
};

// Connections to resolve against the conntrack cache, tracer -> conntrack.
struct nat_lookup_request {
  std::vector<ct_tuple> tuples;
};

// The translations found, by index into the request's tuples; misses are left out (most
// connections are not NAT'd, so the answer stays small).
struct nat_lookup_reply {
  nat_hits hits;
};

// Connections to attribute, tracer -> netns: each one's namespace, family, protocol and
// endpoints, and the pid the tracer saw (same index).
struct netns_resolve_request {
  std::vector<ct_tuple> tuples;
  std::vector<uint32_t> pids;
  // Same index: the tuple as the packets carry it past NAT (the reverse of the translated reply
  // direction), family 0 when the connection is not translated. A DNAT'd connection's packets
  // leave with the real server's address, so the devices count them under this one.
  std::vector<ct_tuple> translated;
  // A page of a paged answer (connections_reply::listing): the devices' flows are read once,
  // at its first page, and each is owned by the first connection of any page that claims it;
  // the last page gets the flows no page claimed. 0: the request is the whole answer.
  uint64_t listing = 0;
  bool last = true;
};

// By index into the request; entries with nothing to say are left out. device_only: every flow
// the classifiers counted that matched none of the request's connections.
struct netns_resolve_reply {
  std::vector<std::pair<uint32_t, std::string>> container_ids;
  std::vector<std::pair<uint32_t, device_counts>> devices;
  std::vector<device_flow> device_only;
  // Per-peer flows of UDP sockets bound to the wildcard (local address zero): the address
  // their peer's datagrams reached, as the namespace's sk_lookup program saw it.
  std::vector<std::pair<uint32_t, std::array<uint8_t, 16>>> local_addresses;
};

// A namespace the netns actor holds a handle for, netns -> conntrack: run a consumer in it.
// The agent's own namespace comes too: it tells conntrack that namespaces are handed over.
// handle is a duplicate of the netns actor's own; it closes when the last copy goes, so a
// message that is never handled leaks nothing.
struct netns_joined {
  uint32_t inode = 0;
  std::shared_ptr<const netns_handle> handle;
};

// The netns actor let that namespace go (evicted, flushed, purged): stop serving it.
struct netns_left {
  uint32_t inode = 0;
};

// An actor's life-cycle state, as /stats, /metrics and the console show it (by name).
enum class actor_state : uint8_t {
  starting,
  running,
  degraded,    // running without part of what it owns (the log and last_error say which)
  disabled,    // turned off by the configuration
  unavailable, // running, but its socket could not be bound (the console)
  idle,        // nothing asked of it yet (the offset guesser)
  guessed,     // its one job done (the offset guesser)
  stopping,
  stopped,
  purged,
  failed,
  shutting_down, // the supervisor itself, once the shutdown began
  unresponsive,  // no stats answer in time (filled in by the supervisor)
  down,          // not running (filled in by the supervisor)
};

inline const char* actor_state_name(actor_state s) {
  switch (s) {
  case actor_state::starting:
    return "starting";
  case actor_state::running:
    return "running";
  case actor_state::degraded:
    return "degraded";
  case actor_state::disabled:
    return "disabled";
  case actor_state::unavailable:
    return "unavailable";
  case actor_state::idle:
    return "idle";
  case actor_state::guessed:
    return "guessed";
  case actor_state::stopping:
    return "stopping";
  case actor_state::stopped:
    return "stopped";
  case actor_state::purged:
    return "purged";
  case actor_state::failed:
    return "failed";
  case actor_state::shutting_down:
    return "shutting down";
  case actor_state::unresponsive:
    return "unresponsive";
  case actor_state::down:
    return "down";
  }
  return "unknown";
}

struct actor_stats {
  std::string name;
  actor_state state = actor_state::starting;
  uint64_t messages_handled = 0;
  uint32_t restarts = 0; // filled in by the supervisor
  std::string last_error;
  counter_list counters;
  // Named facts that are not numbers (the tracer's mode, why it skipped the modes before it).
  std::vector<std::pair<std::string, std::string>> info;
  // Runtime figures for the console and /metrics. The actor fills mailbox_size (only the owner
  // may read its mailbox); the supervisor fills the rest.
  uint64_t id = 0;           // CAF actor id of the instance running now
  int64_t mailbox_size = -1; // messages waiting when it answered; -1: not reported
  uint64_t uptime_ms = 0;    // since this instance was spawned
  double messages_per_s = 0; // from the supervisor's successive readings
  bool answered = true;      // false: no stats answer in time (the rest is the last known)
};

// The offset guesser's answer: the struct offsets the prebuilt tracer needs, or why they could
// not be found (the message names the field). from_cache: an earlier guess on this kernel.
struct guessed_offsets {
  bool ok = false;
  nl_offsets offsets{};
  std::string error;
  uint32_t tries = 0;
  uint64_t duration_us = 0;
  bool from_cache = false;
};

struct agent_stats {
  std::vector<actor_stats> actors;
};

// One phase of the ordered shutdown as it ends, supervisor -> whoever asked to hear of them.
struct shutdown_phase_report {
  std::string phase; // stop | purge | exit
  uint64_t duration_us = 0;
  std::vector<std::string> no_answer; // "actor (why)" for each that missed the deadline
  bool last = false;                  // the exit phase: nothing follows
  int exit_code = 0;                  // the agent's exit code, meaningful when last
};

// A configuration reload (SIGHUP) as the agent ran it, kept by the supervisor for /stats.
struct reload_report {
  bool ok = false;
  std::string error;                     // why the file was refused: "FILE:LINE:COL: key: ..."
  std::vector<std::string> applied;      // changed keys in effect now
  std::vector<std::string> need_restart; // changed keys that keep their running value
};

// The first entries of the conntrack cache, most recently used first.
struct conntrack_listing {
  uint64_t total = 0; // entries held, of which rows are the first
  std::vector<ct_cache_row> rows;
};

} // namespace netlens

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::closed_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::console_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::export_config)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::reload_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::nat_lookup_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::nat_lookup_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::actor_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::connections_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::agent_stats)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::guessed_offsets)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::shutdown_phase_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::conntrack_listing)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::netns_resolve_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::netns_resolve_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::netns_joined)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::netns_left)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<netlens::netns_joined>)
