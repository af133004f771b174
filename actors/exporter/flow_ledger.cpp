#include "actors/exporter/flow_ledger.hpp"

namespace netlens {
namespace {

void add(conn_counters& to, const conn_counters& d) {
  to.bytes_sent += d.bytes_sent;
  to.bytes_recv += d.bytes_recv;
  to.packets_sent += d.packets_sent;
  to.packets_recv += d.packets_recv;
  to.retransmits += d.retransmits;
}

void add(device_counts& to, const device_counts& d) {
  to.packets_in += d.packets_in;
  to.bytes_in += d.bytes_in;
  to.packets_out += d.packets_out;
  to.bytes_out += d.bytes_out;
}

bool moved(const conn_counters& d) {
  return d.bytes_sent || d.bytes_recv || d.packets_sent || d.packets_recv || d.retransmits;
}

// The classifiers forget a flow idle past tc_flow_idle_s and count it afresh if it comes back,
// so a total below the one seen before is a new count, all of it new.
uint64_t since(uint64_t now, uint64_t before) {
  return now >= before ? now - before : now;
}

device_counts device_since(const device_counts& now, const device_counts& before) {
  return {since(now.packets_in, before.packets_in), since(now.bytes_in, before.bytes_in),
          since(now.packets_out, before.packets_out), since(now.bytes_out, before.bytes_out)};
}

flow_end_reason end_reason_of(const nl_conn& c) {
  return (c.flags & NL_FLAG_IDLE_EXPIRED) ? flow_end_reason::idle_timeout
                                          : flow_end_reason::end_of_flow;
}

} // namespace

uint64_t poll_clock::unix_ms_of(uint64_t mono) const {
  if (mono >= mono_ns)
    return unix_ms;
  uint64_t ago_ms = (mono_ns - mono) / 1000000;
  return ago_ms < unix_ms ? unix_ms - ago_ms : 0;
}

flow_report flow_ledger::report_of(const open_flow& f, flow_end_reason why,
                                   const poll_clock& now) const {
  flow_report r = f.last;
  r.delta = f.pending;
  r.device_delta = f.device_pending;
  r.reason = why;
  r.first_report = false;
  r.start_unix_ms = now.unix_ms_of(r.conn.start_ns);
  r.end_unix_ms = now.unix_ms_of(r.conn.last_ns ? r.conn.last_ns : r.conn.start_ns);
  return r;
}

void flow_ledger::poll(const std::vector<connection_view>& views, const poll_clock& now,
                       const sink& to_metrics, const sink& to_ipfix, bool all_closed) {
  begin_poll();
  poll_page(views, now, to_metrics, to_ipfix);
  end_poll(now, to_ipfix, all_closed);
}

void flow_ledger::poll_page(const std::vector<connection_view>& views, const poll_clock& now,
                            const sink& to_metrics, const sink& to_ipfix) {
  for (const connection_view& v : views) {
    auto it = open_.find(v.conn.sock_id);
    bool fresh = it == open_.end();
    if (fresh) {
      open_flow f;
      f.next_report_ns = v.conn.start_ns + active_timeout_ns_;
      it = open_.emplace(v.conn.sock_id, std::move(f)).first;
    }
    open_flow& f = it->second;
    f.seen_in_poll = poll_;
    flow_report& last = f.last;
    last.conn = v.conn;
    last.has_nat = v.has_nat;
    if (v.has_nat)
      last.nat = v.nat;
    last.container_id = v.container_id;
    last.has_device = last.has_device || v.has_device;
    device_counts device_delta{};
    if (v.has_device) {
      device_delta = device_since(v.device, f.device_seen);
      f.device_seen = v.device;
      add(f.device_pending, device_delta);
    }
    add(f.pending, v.last);

    flow_end_reason ended = v.closed ? end_reason_of(v.conn) : flow_end_reason::none;
    if (fresh || ended != flow_end_reason::none || moved(v.last)) {
      flow_report m = report_of(f, ended, now);
      m.delta = v.last;
      m.device_delta = device_delta;
      m.first_report = fresh;
      to_metrics(m);
    }
    if (ended != flow_end_reason::none) {
      to_ipfix(report_of(f, ended, now));
      ++stats_.reports;
      ++stats_.ends;
      open_.erase(it);
      continue;
    }
    if (now.mono_ns >= f.next_report_ns) {
      // Nothing moved: no record (a collector keeps no flow without packets), the clock restarts.
      if (moved(f.pending)) {
        to_ipfix(report_of(f, flow_end_reason::active_timeout, now));
        ++stats_.reports;
      }
      f.pending = {};
      f.device_pending = {};
      f.next_report_ns = now.mono_ns + active_timeout_ns_;
    }
  }
}

void flow_ledger::end_poll(const poll_clock& now, const sink& to_ipfix, bool all_closed) {
  // Open before, absent for two polls in a row: its close record was dropped before this client
  // read it (the tracer's closed buffer overflowed). One poll of grace, because a closed record
  // whose NAT translation is still being looked up is held back from one answer. What moved
  // since its last report is all there is.
  if (!all_closed) {
    // Their close records may be among those left for the next poll: nobody is missing yet.
    for (auto& [id, f] : open_)
      f.seen_in_poll = poll_;
    return;
  }
  for (auto it = open_.begin(); it != open_.end();) {
    if (it->second.seen_in_poll + 2 > poll_) {
      ++it;
      continue;
    }
    to_ipfix(report_of(it->second, flow_end_reason::lack_of_resources, now));
    ++stats_.reports;
    ++stats_.ends;
    ++stats_.lost_closes;
    it = open_.erase(it);
  }
}

void flow_ledger::force_end(const poll_clock& now, const sink& to_ipfix) {
  for (auto& [id, f] : open_) {
    to_ipfix(report_of(f, flow_end_reason::forced_end, now));
    ++stats_.reports;
    ++stats_.ends;
  }
  open_.clear();
}

flow_ledger_stats flow_ledger::stats() const {
  flow_ledger_stats s = stats_;
  s.open = open_.size();
  return s;
}

} // namespace netlens
