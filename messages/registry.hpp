// The actors other actors reach by name in CAF's registry, not by a handle given at spawn: they
// may have been restarted since, and whoever asks reaches the instance running now. No actor
// includes another actor's folder to find it. Publishing and finding, both here.
#pragma once

#include <caf/actor_cast.hpp>
#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>

#include "messages/interfaces.hpp"

namespace netlens {

// Puts an actor in the registry under name, for the others to find.
template <class Self> void publish_as(Self self, caf::atom_value name) {
  self->system().registry().put(name, self);
}

// Leaves the registry only if it still names this instance: a restarted one may be there.
inline void unpublish_if(caf::actor_system& sys, caf::atom_value name,
                         const caf::actor_addr& addr) {
  auto current = sys.registry().template get<caf::strong_actor_ptr>(name);
  if (current && current->address() == addr)
    sys.registry().erase(name);
}

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

// The perf consumer running now, or an invalid handle (not started yet, restarting).
inline perf_consumer_actor find_perf_consumer(caf::actor_system& sys) {
  return find_registered<perf_consumer_actor>(sys, k_perf_consumer_registry_name);
}

// The exporter running now, or an invalid handle (export off, restarting).
inline exporter_actor find_exporter(caf::actor_system& sys) {
  return find_registered<exporter_actor>(sys, k_exporter_registry_name);
}

} // namespace netlens
