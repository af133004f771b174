// What every actor shell does the same way for the supervisor's lifecycle messages.
#pragma once

#include <string>
#include <utility>

#include "messages/interfaces.hpp"

namespace netlens {

inline actor_stats make_actor_stats(std::string name, std::string state, uint64_t handled,
                                    counter_list counters) {
  actor_stats s;
  s.name = std::move(name);
  s.state = std::move(state);
  s.messages_handled = handled;
  s.counters = std::move(counters);
  return s;
}

// The purge handler of an actor that owns nothing the purge phase releases.
template <class Self> auto nothing_to_purge(Self self) {
  return [=](purge_atom) {
    ++self->state.handled;
    return caf::ok_atom::value;
  };
}

} // namespace netlens
