// What one of an actor's threads hands it, bounded: at most max batches sent and not handled
// yet. Past that a batch is dropped and counted (the actor answers drops with a resync or a
// rescan), unless the thread says it must go (a marker whose loss would leave work undone).
// The thread calls send(); the actor calls handled() once for each batch it takes. Shared by
// the actor's state and the thread's sink, so either may go first.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

namespace netlens {

class bounded_handoff {
public:
  bounded_handoff(caf::actor_addr target, int max_in_flight)
      : target_(std::move(target)), max_in_flight_(max_in_flight) {}

  // On the thread. False: dropped (counted), or the actor is gone.
  template <class Batch> bool send(Batch&& batch, bool must = false) {
    if (!must && in_flight_.load(std::memory_order_relaxed) >= max_in_flight_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    auto target = caf::actor_cast<caf::actor>(target_);
    if (!target)
      return false;
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    caf::anon_send(target, std::forward<Batch>(batch));
    return true;
  }

  // On the actor, for each batch it takes.
  void handled() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

private:
  caf::actor_addr target_;
  int max_in_flight_;
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> dropped_{0};
};

} // namespace netlens
