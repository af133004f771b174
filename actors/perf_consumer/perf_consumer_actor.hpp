// The perf consumer actor: owns the closed_reader (buffer + poll thread) and feeds the tracer.
// It is handed the buffer when it is spawned and only pushes: decoded batches, and the batch
// that completes each flush the tracer asks for.
#pragma once

#include <memory>
#include <string>

#include "actors/common/self_interface.hpp"
#include "flow/closed_reader.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Its public interface and the fault switch.
using perf_consumer_self_actor = self_interface<perf_consumer_actor>;

struct perf_consumer_state {
  static inline const char* name = "perf_consumer";
  tracer_actor tracer;
  std::unique_ptr<closed_reader> reader;
  closed_reader_stats final_stats; // kept after the reader is gone
  uint64_t handled = 0;
  uint64_t flushes_asked = 0; // flush requests from the tracer (each completed by a batch)
  actor_state state = actor_state::starting;
};

// buffer: the tracer's closed buffer, which this actor then reads alone (null: init fails, the
// tracer has nothing loaded).
perf_consumer_self_actor::behavior_type
perf_consumer_fn(counted_self<perf_consumer_self_actor, perf_consumer_state> self,
                 tracer_actor tracer, std::shared_ptr<const closed_buffer> buffer);

} // namespace netlens
