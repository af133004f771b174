// What every actor shell does the same way for the supervisor's lifecycle messages.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <caf/actor_system.hpp>

#include "actors/common/fault_switch.hpp"
#include "messages/interfaces.hpp"
#include "messages/registry.hpp"

namespace netlens {

inline actor_stats make_actor_stats(std::string name, actor_state state, uint64_t handled,
                                    counter_list counters) {
  actor_stats s;
  s.name = std::move(name);
  s.state = state;
  s.messages_handled = handled;
  s.counters = std::move(counters);
  return s;
}

// Messages waiting in the actor's mailbox, for its stats answer; each actor fills this in its
// own stats handler. Messages sent since the actor last took from its mailbox still sit on
// CAF's lock-free stack: counting them (fifo_inbox::size) would move them into the queues in
// the middle of a handler, which CAF does not expect, and UBSan flags the downcast it makes
// there. This counts what the queues hold, and reports at least one while the stack is not
// empty.
template <class Self> int64_t mailbox_size(Self self) {
  auto& box = self->mailbox();
  auto queued = static_cast<int64_t>(box.queue().total_task_size());
  if (queued == 0 && !box.empty())
    queued = 1;
  return queued;
}

// The fault switch of test builds (fault_switch.hpp, never on in the release binary): the
// actor throws from a handler, as a bug would, and CAF takes it down with that error.
template <class Self> auto fault_handler(Self self) {
  return [=](fault_atom) {
    if (fault_injection::enabled())
      throw std::runtime_error("injected fault (throw)");
  };
}

// The stats handler of an actor that may run degraded (state.degraded_reason says why):
// counters(state) gives its figures, info(state) its named facts.
template <class Self, class Counters, class Info>
auto degradable_stats_handler(Self self, const char* name, Counters counters, Info info) {
  return [=](stats_atom) {
    auto& st = self->state;
    actor_stats s = make_actor_stats(name, st.state, st.handled, counters(st));
    s.last_error = st.degraded_reason;
    s.info = info(st);
    s.mailbox_size = mailbox_size(self);
    return s;
  };
}

template <class Self, class Counters>
auto degradable_stats_handler(Self self, const char* name, Counters counters) {
  return degradable_stats_handler(self, name, counters, [](const auto&) {
    return std::vector<std::pair<std::string, std::string>>{};
  });
}

// The purge handler of an actor that owns nothing the purge phase releases.
template <class Self> auto nothing_to_purge(Self self) {
  return [=](purge_atom) { return caf::ok_atom::value; };
}

} // namespace netlens
