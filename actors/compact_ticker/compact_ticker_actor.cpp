#include "actors/compact_ticker/compact_ticker_actor.hpp"

#include "messages/registry.hpp"

#include <caf/typed_event_based_actor.hpp>

#include "actors/common/lifecycle.hpp"

namespace netlens {

compact_ticker_self_actor::behavior_type
compact_ticker_fn(counted_self<compact_ticker_self_actor, compact_ticker_state> self,
                  tracer_actor tracer, std::chrono::milliseconds interval,
                  std::chrono::milliseconds compact_interval) {
  self->state.tracer = tracer;
  self->state.interval = interval;
  self->state.compact_interval = compact_interval;
  return {
      [=](init_atom) {
        self->delayed_send(self, self->state.interval, tick_atom::value);
        self->delayed_send(self, self->state.compact_interval, compact_atom::value);
        return caf::ok_atom::value;
      },
      [=](tick_atom) {
        auto& st = self->state;
        if (st.stopped)
          return; // a tick already in flight when stop came: swallowed, not re-armed
        ++st.ticks;
        self->send(st.tracer, expire_atom::value);
        self->delayed_send(self, st.interval, tick_atom::value);
      },
      [=](compact_atom) {
        auto& st = self->state;
        if (st.stopped)
          return;
        if (auto ct = find_conntrack(self->system())) {
          self->send(ct, compact_atom::value);
          ++st.compactions;
        }
        self->delayed_send(self, st.compact_interval, compact_atom::value);
      },
      [=](stop_atom) {
        self->state.stopped = true;
        return caf::ok_atom::value;
      },
      [=](reload_atom, uint32_t interval_ms, uint32_t compact_interval_ms) {
        auto& st = self->state;
        st.interval = std::chrono::milliseconds(interval_ms);
        st.compact_interval = std::chrono::milliseconds(compact_interval_ms);
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        actor_stats s = make_actor_stats(
            "compact_ticker", st.stopped ? actor_state::stopped : actor_state::running, st.handled,
            {{"ticks", st.ticks},
             {"interval_ms", static_cast<uint64_t>(st.interval.count())},
             {"compactions", st.compactions},
             {"compact_interval_ms", static_cast<uint64_t>(st.compact_interval.count())}});
        s.mailbox_size = mailbox_size(self);
        return s;
      },
  };
}

} // namespace netlens
