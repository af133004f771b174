#include "actors/tracer/client_registry.hpp"

#include <algorithm>
#include <limits>
#include <unordered_set>

namespace netlens {
namespace {

uint64_t minus_or_zero(uint64_t now, uint64_t before) {
  return now > before ? now - before : 0;
}

conn_counters delta(const conn_counters& now, const conn_counters& before) {
  return {minus_or_zero(now.bytes_sent, before.bytes_sent),
          minus_or_zero(now.bytes_recv, before.bytes_recv),
          minus_or_zero(now.packets_sent, before.packets_sent),
          minus_or_zero(now.packets_recv, before.packets_recv),
          minus_or_zero(now.retransmits, before.retransmits)};
}

} // namespace

conn_counters counters_of(const nl_conn& c) {
  return {c.bytes_sent, c.bytes_recv, c.packets_sent, c.packets_recv, c.retransmits};
}

uint64_t client_registry::add_closed(const nl_conn* records, size_t n, bool nat_pending) {
  stats_.closed_received += n;
  for (size_t i = 0; i < n; ++i)
    if (closed_before_established(records[i]))
      ++stats_.connect_failures[static_cast<size_t>(classify_connect_failure(records[i].sk_err))];
  uint64_t first_seq = closed_base_seq_ + closed_.size();
  // Past the bound the oldest go first, so the buffer never holds more than the bound; records
  // of this batch that would be pushed out at once are counted and never stored.
  const size_t max = limits_.max_closed_buffered;
  const size_t skip = n > max ? n - max : 0;
  const size_t kept = n - skip;
  if (closed_.size() + kept > max) {
    size_t excess = closed_.size() + kept - max;
    closed_.pop_front(excess);
    closed_base_seq_ += excess;
    stats_.closed_dropped += excess;
  }
  closed_base_seq_ += skip;
  stats_.closed_dropped += skip;
  for (size_t i = skip; i < n; ++i) {
    closed_entry e;
    e.conn = records[i];
    e.nat_pending = nat_pending;
    closed_.push_back(e);
  }
  return first_seq;
}

void client_registry::resolve_nat(uint64_t first_seq, size_t n,
                                  const std::vector<std::pair<uint32_t, ct_endpoints>>& hits) {
  uint64_t end_seq = closed_base_seq_ + closed_.size();
  auto entry = [&](uint64_t seq) -> closed_entry* {
    if (seq < closed_base_seq_ || seq >= end_seq)
      return nullptr;
    return &closed_[static_cast<size_t>(seq - closed_base_seq_)];
  };
  for (uint64_t seq = first_seq; seq < first_seq + n; ++seq)
    if (auto* e = entry(seq))
      e->nat_pending = false;
  for (const auto& [index, nat] : hits) {
    if (index >= n)
      continue;
    if (auto* e = entry(first_seq + index)) {
      e->nat = nat;
      e->has_nat = true;
    }
  }
}

bool client_registry::collect(const std::string& client, const std::vector<nl_conn>& active,
                              uint64_t now_ns, std::vector<connection_view>& out,
                              size_t max_closed) {
  out.clear();
  auto [it, fresh] = clients_.try_emplace(client);
  client_state& st = it->second;
  if (fresh)
    st.cursor = closed_base_seq_; // a new client sees whatever is still buffered
  st.last_seen_ns = now_ns;

  uint64_t from = std::max(st.cursor, closed_base_seq_);
  uint64_t end_seq = from;
  bool more = false;
  for (uint64_t last = closed_base_seq_ + closed_.size(); end_seq < last; ++end_seq) {
    if (closed_[static_cast<size_t>(end_seq - closed_base_seq_)].nat_pending)
      break;
    if (end_seq - from >= max_closed) {
      more = true;
      break;
    }
  }
  out.reserve(active.size() + static_cast<size_t>(end_seq - from));
  std::unordered_set<uint64_t> closed_ids;
  closed_ids.reserve(static_cast<size_t>(end_seq - from));
  for (uint64_t seq = from; seq < end_seq; ++seq) {
    const closed_entry& e = closed_[static_cast<size_t>(seq - closed_base_seq_)];
    const nl_conn& c = e.conn;
    conn_counters now = counters_of(c);
    auto prev = st.last.find(c.sock_id);
    conn_counters d = prev == st.last.end() ? now : delta(now, prev->second);
    if (prev != st.last.end())
      st.last.erase(prev);
    closed_ids.insert(c.sock_id);
    out.push_back({c, true, d, e.has_nat, e.nat, {}, false, {}});
  }
  st.cursor = end_seq;

  // Rebuilt on every call, so connections that vanished without a closed record (lost, or
  // expired) do not stay in the client's state forever.
  std::unordered_map<uint64_t, conn_counters> next;
  next.reserve(active.size());
  for (const nl_conn& c : active) {
    if (!closed_ids.empty() && closed_ids.count(c.sock_id))
      continue;
    conn_counters now = counters_of(c);
    auto prev = st.last.find(c.sock_id);
    conn_counters d = prev == st.last.end() ? now : delta(now, prev->second);
    next.emplace(c.sock_id, now);
    out.push_back({c, false, d, false, {}, {}, false, {}});
  }
  st.last.swap(next);
  trim();
  return more;
}

void client_registry::trim() {
  if (clients_.empty())
    return;
  uint64_t min_cursor = std::numeric_limits<uint64_t>::max();
  for (const auto& [name, st] : clients_)
    min_cursor = std::min(min_cursor, st.cursor);
  if (closed_base_seq_ < min_cursor) {
    size_t n =
        static_cast<size_t>(std::min<uint64_t>(min_cursor - closed_base_seq_, closed_.size()));
    closed_.pop_front(n);
    closed_base_seq_ += n;
  }
}

size_t client_registry::expire_clients(uint64_t now_ns) {
  size_t dropped = 0;
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (now_ns - it->second.last_seen_ns > limits_.client_expiry_ns) {
      it = clients_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  stats_.clients_expired += dropped;
  if (dropped)
    trim();
  return dropped;
}

client_registry_stats client_registry::stats() const {
  client_registry_stats s = stats_;
  s.clients = clients_.size();
  s.closed_buffered = closed_.size();
  return s;
}

} // namespace netlens
