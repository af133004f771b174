// The exporter's book of open connections: turns what each poll of the tracer hands the
// exporter (every connection once, with the delta since the previous poll) into flow reports.
// The traffic metrics get one report per connection that moved, every poll; IPFIX gets one per
// active timeout (the delta since the connection's previous IPFIX report) and one when it ends,
// so a collector sees every byte once and never twice. No CAF, no kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "actors/exporter/flow_report.hpp"

namespace netlens {

struct flow_ledger_stats {
  uint64_t open = 0;        // connections with an IPFIX report still to come
  uint64_t reports = 0;     // IPFIX reports made
  uint64_t ends = 0;        // of which ended a flow (closed, idle, forced, lost)
  uint64_t lost_closes = 0; // vanished without their close record (the tracer dropped it)
};

// The clocks of one poll: monotonic (as nl_conn's start_ns/last_ns) and wall, taken together.
struct poll_clock {
  uint64_t mono_ns = 0;
  uint64_t unix_ms = 0;
  uint64_t unix_ms_of(uint64_t mono) const;
};

class flow_ledger {
public:
  explicit flow_ledger(uint64_t active_timeout_ns) : active_timeout_ns_(active_timeout_ns) {}
  // A reload: open flows keep what they have not reported; the next report comes by the new
  // timeout from their last one.
  void set_active_timeout(uint64_t active_timeout_ns) { active_timeout_ns_ = active_timeout_ns; }

  // Reports go straight to their consumer, never into a vector: a busy host closes tens of
  // thousands of connections between two polls.
  using sink = std::function<void(const flow_report&)>;

  // One poll. to_metrics gets a report (reason none unless it ended) for every connection that
  // moved, opened or closed; to_ipfix gets the reports due now. A connection the previous poll
  // showed open that is neither open nor closed for two polls ended unseen: it is reported with
  // what it had (lack_of_resources), since its close record was dropped before this client read
  // it.
  // all_closed: the answer held every connection closed so far; an answer that left some for
  // the next poll says nothing about the connections it does not show.
  void poll(const std::vector<connection_view>& views, const poll_clock& now,
            const sink& to_metrics, const sink& to_ipfix, bool all_closed = true);

  // The same poll over a paged answer: begin_poll, poll_page for each page as it comes (what
  // poll does with its views), end_poll once the last page is in (what poll does after them:
  // the connections no page showed).
  void begin_poll() { ++poll_; }
  void poll_page(const std::vector<connection_view>& views, const poll_clock& now,
                 const sink& to_metrics, const sink& to_ipfix);
  void end_poll(const poll_clock& now, const sink& to_ipfix, bool all_closed);

  // Shutdown: every connection still open, with what moved since its last report, as a forced
  // end. The ledger is empty afterwards.
  void force_end(const poll_clock& now, const sink& to_ipfix);

  flow_ledger_stats stats() const;

private:
  struct open_flow {
    flow_report last;          // the connection as last seen (totals, context)
    conn_counters pending;     // moved since its previous IPFIX report
    device_counts device_seen; // device totals at the last poll
    device_counts device_pending;
    uint64_t next_report_ns = 0; // monotonic time its next active-timeout report is due
    uint64_t seen_in_poll = 0;
  };

  flow_report report_of(const open_flow& f, flow_end_reason why, const poll_clock& now) const;

  uint64_t active_timeout_ns_;
  uint64_t poll_ = 0;
  std::unordered_map<uint64_t, open_flow> open_; // by sock_id
  flow_ledger_stats stats_;
};

} // namespace netlens
