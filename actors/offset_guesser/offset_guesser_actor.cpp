#include "actors/offset_guesser/offset_guesser_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"

namespace netlens {
namespace {

guessed_offsets reply_of(const guess_report& r) {
  guessed_offsets g;
  g.ok = r.ok;
  g.offsets = r.offsets;
  g.error = r.error;
  g.tries = r.tries;
  g.duration_us = r.duration_us;
  g.from_cache = r.from_cache;
  return g;
}

} // namespace

guess_settings guess_settings_of(const config& cfg) {
  guess_settings s;
  s.max_tries = cfg.offset_guesser.max_tries;
  s.try_timeout_ms = cfg.offset_guesser.try_timeout_ms;
  s.cache_dir = cfg.tracer.cache_dir;
  return s;
}

offset_guesser_self_actor::behavior_type
offset_guesser_fn(counted_self<offset_guesser_self_actor, offset_guesser_state> self,
                  guess_settings settings) {
  self->state.settings = std::move(settings);
  return {
      [=](init_atom) { return caf::ok_atom::value; },
      [=](guess_atom) {
        auto& st = self->state;
        if (st.answer) {
          guessed_offsets again = *st.answer;
          again.from_cache = true;
          return again;
        }
        ++st.guesses;
        guess_report r = guess_offsets(st.settings);
        st.last_tries = r.tries;
        st.last_duration_us = r.duration_us;
        st.last_from_cache = r.from_cache;
        if (!r.cache_note.empty())
          spdlog::warn("offset guesser: {}", r.cache_note);
        if (!r.ok) {
          ++st.failures;
          st.state = actor_state::failed;
          st.last_error = r.error;
          spdlog::warn("offset guesser: {}", r.error);
          return reply_of(r);
        }
        st.state = actor_state::guessed;
        st.last_error.clear();
        spdlog::info("offset guesser: struct offsets {} in {} us ({} tries)",
                     r.from_cache ? "read from the cache" : "guessed", r.duration_us, r.tries);
        st.answer = reply_of(r);
        return *st.answer;
      },
      [=](stop_atom) {
        self->state.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      // The guessing object and sockets live only inside a guess; what is left is the answer.
      [=](purge_atom) {
        self->state.answer.reset();
        self->state.state = actor_state::purged;
        return caf::ok_atom::value;
      },
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        actor_stats s = make_actor_stats("offset_guesser", st.state, st.handled,
                                         {{"guesses", st.guesses},
                                          {"failures", st.failures},
                                          {"last_tries", st.last_tries},
                                          {"last_duration_us", st.last_duration_us},
                                          {"last_from_cache", st.last_from_cache ? 1u : 0u},
                                          {"have_answer", st.answer ? 1u : 0u}});
        s.last_error = st.last_error;
        s.mailbox_size = mailbox_size(self);
        return s;
      },
  };
}

offset_guesser_actor spawn_offset_guesser(caf::actor_system& sys, guess_settings settings) {
  return sys.spawn<caf::detached>(offset_guesser_fn, std::move(settings));
}

} // namespace netlens
