// An actor's whole interface as it is spawned: what other actors may send it (Public, in
// messages/interfaces.hpp), the fault switch of test builds (fault_switch.hpp; the supervisor
// sends it through an untyped handle, so no public interface names it), and the messages only
// the actor itself or its own threads send (Private: timers, batches from its threads).
// Others hold the Public handle; a typed handle converts to any interface it contains.
#pragma once

#include <caf/replies_to.hpp>

#include "actors/common/counted_actor.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

template <class Public, class... Private>
using self_interface = typename Public::template extend<caf::reacts_to<fault_atom>, Private...>;

} // namespace netlens
