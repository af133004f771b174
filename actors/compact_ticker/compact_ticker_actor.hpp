// The compact ticker: the agent's periodic housekeeping. Each interval it asks the tracer to
// expire idle UDP flows and stale clients; each compact interval it asks the conntrack actor
// (whichever instance runs now) to drop its expired orphans.
#pragma once

#include <chrono>
#include <string>

#include "actors/common/self_interface.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Its public interface and the fault switch and its two timers.
using compact_ticker_self_actor =
    self_interface<compact_ticker_actor, caf::reacts_to<tick_atom>, caf::reacts_to<compact_atom>>;

struct compact_ticker_state {
  static inline const char* name = "compact_ticker";
  tracer_actor tracer;
  std::chrono::milliseconds interval{10000};
  std::chrono::milliseconds compact_interval{60000};
  bool stopped = false;
  uint64_t handled = 0;
  uint64_t ticks = 0;
  uint64_t compactions = 0; // compact requests sent to a running conntrack actor
};

compact_ticker_self_actor::behavior_type
compact_ticker_fn(counted_self<compact_ticker_self_actor, compact_ticker_state> self,
                  tracer_actor tracer, std::chrono::milliseconds interval,
                  std::chrono::milliseconds compact_interval);

} // namespace netlens
