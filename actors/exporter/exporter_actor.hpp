// The exporter actor: a shell around the flow ledger (what each connection moved since its last
// report), the IPFIX encoder and layout, one collector link per collector, and the traffic
// metrics. It polls the tracer as its own client, so it never blocks the tracer: what it cannot
// queue it drops and counts.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/common/self_interface.hpp"
#include "actors/exporter/collector_link.hpp"
#include "actors/exporter/flow_ledger.hpp"
#include "actors/exporter/ipfix_encoder.hpp"
#include "actors/exporter/ipfix_layout.hpp"
#include "actors/exporter/traffic_metrics.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Private: the timer the exporter sets for itself.
using export_tick_atom = caf::atom_constant<caf::atom("exptick")>;
using exporter_self_actor = self_interface<exporter_actor, caf::reacts_to<export_tick_atom>>;

// The client id the exporter polls the tracer under.
constexpr const char* k_exporter_client = "exporter";

struct exporter_state {
  static inline const char* name = "exporter";

  export_config cfg;
  tracer_actor tracer;
  actor_state state = actor_state::starting;
  uint64_t handled = 0;
  std::string last_error;

  std::unique_ptr<flow_ledger> ledger;
  std::unique_ptr<traffic_metrics> metrics;
  std::unique_ptr<ipfix_encoder> encoder;
  std::vector<std::unique_ptr<collector_link>> links;
  std::vector<std::chrono::steady_clock::time_point> templates_sent_at; // per link (UDP refresh)
  collector_link_stats closed_links; // what links a reload replaced sent and dropped

  uint64_t queued = 0; // reports encoded since the last flush, at most max_queued_records
  std::vector<ipfix_message> messages_scratch;
  bool polling = false;
  bool last_more_closed = false;    // the last answer left closed connections for the next poll
  std::function<void()> after_poll; // the shutdown's last poll, when one was in flight
  std::chrono::steady_clock::time_point next_poll;

  // Figures for /stats, /metrics and the console.
  uint64_t polls = 0;
  uint64_t poll_errors = 0;
  uint64_t records_encoded = 0;
  uint64_t reports_queued = 0;
  uint64_t queue_dropped = 0;
  uint64_t encode_errors = 0;
  uint64_t messages_built = 0;
};

bool exporter_wanted(const export_config& cfg);

exporter_self_actor::behavior_type
exporter_fn(counted_self<exporter_self_actor, exporter_state> self, export_config cfg,
            tracer_actor tracer);

} // namespace netlens
