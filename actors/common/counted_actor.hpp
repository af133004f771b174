// The one place an actor's handled messages are counted: every message its behavior consumes
// (requests, one-way messages, responses to its own requests, its timers) adds one to
// state.handled, which the actor reports in its stats (messages_handled). An actor is a
// function of counted_self<interface, state>; CAF spawns this class for it.
#pragma once

#include <caf/invoke_message_result.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/stateful_actor.hpp>

namespace netlens {

template <class Interface, class State>
class counted_actor : public caf::stateful_actor<State, typename Interface::base> {
public:
  using super = caf::stateful_actor<State, typename Interface::base>;
  using super::super;

  caf::invoke_message_result consume(caf::mailbox_element& x) override {
    auto result = super::consume(x);
    if (result == caf::invoke_message_result::consumed)
      ++this->state.handled;
    return result;
  }
};

template <class Interface, class State> using counted_self = counted_actor<Interface, State>*;

} // namespace netlens
