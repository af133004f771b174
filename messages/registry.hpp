// The actors other actors reach by name in CAF's registry, not by a handle given at spawn: they
// may have been restarted since, and whoever asks reaches the instance running now. No actor
// includes another actor's folder to find it.
#pragma once

#include <caf/actor_cast.hpp>
#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>

#include "messages/interfaces.hpp"

namespace netlens {

template <class Handle> Handle find_registered(caf::actor_system& sys, caf::atom_value name) {
  return caf::actor_cast<Handle>(sys.registry().get<caf::strong_actor_ptr>(name));
}

// The conntrack actor running now, or an invalid handle (not started, restarting, disabled).
inline conntrack_actor find_conntrack(caf::actor_system& sys) {
  return find_registered<conntrack_actor>(sys, k_conntrack_registry_name);
}

// The netns actor running now, or an invalid handle (not started, restarting).
inline netns_actor find_netns(caf::actor_system& sys) {
  return find_registered<netns_actor>(sys, k_netns_registry_name);
}

// The exporter running now, or an invalid handle (export off, restarting).
inline exporter_actor find_exporter(caf::actor_system& sys) {
  return find_registered<exporter_actor>(sys, k_exporter_registry_name);
}

} // namespace netlens
