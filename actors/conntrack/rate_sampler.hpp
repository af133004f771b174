// Measures the conntrack event rate (an EWMA over one-second windows) and, above the
// configured limit, samples new-entry events down to it: the consumer keeps reading the
// socket instead of letting it overflow, and reports the percentage it kept.
#pragma once

#include <cstdint>
#include <functional>

namespace netlens {

class rate_sampler {
public:
  using clock_fn = std::function<uint64_t()>; // nanoseconds, monotonic

  // limit_per_s < 0: no limit, every event is kept. The limit bounds the new-entry events kept
  // per second: destroy events are never sampled (dropping one would leave a stale entry), so
  // they count towards the measured rate but not against the limit.
  rate_sampler(int64_t limit_per_s, clock_fn clock);

  // Called once per new-entry event; true when the event is to be kept.
  bool keep();
  // Called once per event that is always kept (a destroy): measured, never sampled.
  void observe();
  // Closes the windows that have ended without an event, so an idle stream's rate decays.
  void advance();

  double rate_per_s() const;       // the EWMA estimate, every event counted
  double sampling_percent() const; // share of new-entry events kept over the last window, 100 = all
  uint64_t seen() const;           // new-entry events offered to keep()
  uint64_t dropped() const;        // of those, sampled out
  int64_t limit() const { return limit_; }
  // A new limit (a configuration reload), in force from the next event; the measured rate
  // carries on. Past the limit in the current window, the cap stops what is left of it.
  void set_limit(int64_t limit_per_s);

  static constexpr uint64_t k_window_ns = 1'000'000'000;
  static constexpr double k_alpha = 0.5; // weight of the newest window: half-life of one window

private:
  void roll(uint64_t now);

  int64_t limit_;
  clock_fn clock_;
  uint64_t window_start_ = 0;
  uint64_t window_events_ = 0;  // every event in the current window
  uint64_t window_offered_ = 0; // new-entry events in it
  uint64_t window_kept_ = 0;    // of those, kept
  bool measured_ = false;       // a window has closed: the EWMAs mean something
  double rate_ = 0;             // EWMA, every event
  double offered_rate_ = 0;     // EWMA, new-entry events: what the limit is compared with
  double keep_fraction_ = 1;    // for the current window
  double credit_ = 0;           // spreads the kept events evenly instead of at random
  double last_percent_ = 100;
  uint64_t seen_ = 0;
  uint64_t dropped_ = 0;
};

} // namespace netlens
