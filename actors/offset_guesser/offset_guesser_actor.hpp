// The offset guesser actor: a shell around guess_offsets (guess_offsets.hpp). Each guess owns
// its BPF object and loopback sockets only while it runs; the actor keeps the first good
// answer and hands it out again. A guess blocks for up to max_tries * try_timeout_ms: spawn
// it detached (spawn_offset_guesser) so it never holds a scheduler thread.
#pragma once

#include <optional>
#include <string>

#include "actors/common/self_interface.hpp"
#include "actors/offset_guesser/guess_offsets.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Its public interface and the fault switch.
using offset_guesser_self_actor = self_interface<offset_guesser_actor>;

struct offset_guesser_state {
  static inline const char* name = "offset_guesser";
  guess_settings settings;
  std::optional<guessed_offsets> answer; // the first successful guess
  actor_state state = actor_state::idle; // idle | guessed | failed | stopped | purged
  std::string last_error;
  uint64_t handled = 0;
  uint64_t guesses = 0;  // guess_offsets runs (cache reads included)
  uint64_t failures = 0; // runs that found no answer
  uint64_t last_tries = 0;
  uint64_t last_duration_us = 0;
  bool last_from_cache = false;
};

offset_guesser_self_actor::behavior_type
offset_guesser_fn(counted_self<offset_guesser_self_actor, offset_guesser_state> self,
                  guess_settings settings);

// The guesser's settings from the agent's configuration (cache in tracer.cache_dir).
guess_settings guess_settings_of(const config& cfg);

// Spawns the actor on a thread of its own: a guess is blocking kernel work.
offset_guesser_actor spawn_offset_guesser(caf::actor_system& sys, guess_settings settings);

} // namespace netlens
