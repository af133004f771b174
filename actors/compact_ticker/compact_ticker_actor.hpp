// The compact ticker: one timer. Each interval it asks the tracer to expire idle UDP flows
// and stale clients (and, with the conntrack issue, the conntrack cache to compact).
#pragma once

#include <chrono>
#include <string>

#include "messages/interfaces.hpp"

namespace netlens {

struct compact_ticker_state {
  static inline const char* name = "compact_ticker";
  tracer_actor tracer;
  std::chrono::milliseconds interval{10000};
  bool stopped = false;
  uint64_t handled = 0;
  uint64_t ticks = 0;
};

compact_ticker_actor::behavior_type
compact_ticker_fn(compact_ticker_actor::stateful_pointer<compact_ticker_state> self,
                  tracer_actor tracer, std::chrono::milliseconds interval);

} // namespace netlens
