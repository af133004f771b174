#include "flow/client_registry.hpp"

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

static_assert(
    offsetof(nl_conn, base_received) == offsetof(nl_conn, base_acked) + sizeof(uint64_t) &&
        offsetof(nl_conn, base_segs_out) == offsetof(nl_conn, base_received) + sizeof(uint64_t) &&
        offsetof(nl_conn, base_segs_in) == offsetof(nl_conn, base_segs_out) + sizeof(uint32_t),
    "the kernel's bases are adjacent: a closed_entry packs what is around them");

void client_registry::closed_entry::pack(const nl_conn& c) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(&c);
  std::memcpy(head, bytes, k_head);
  std::memcpy(tail, bytes + k_tail_at, k_tail);
}

nl_conn client_registry::closed_entry::unpack() const {
  nl_conn c{};
  auto* bytes = reinterpret_cast<unsigned char*>(&c);
  std::memcpy(bytes, head, k_head);
  std::memcpy(bytes + k_tail_at, tail, k_tail);
  return c;
}

void client_registry::closed_entry::fill_local(const uint8_t (&addr)[16]) {
  static_assert(offsetof(nl_conn, saddr) + 16 <= k_head, "saddr is in the head");
  fill_unspecified(head + offsetof(nl_conn, saddr), addr);
}

void client_registry::pop_closed(size_t n) {
  if (!nat_.empty())
    for (size_t i = 0; i < n && i < closed_.size(); ++i)
      if (closed_[i].has_nat)
        nat_.erase(closed_base_seq_ + i);
  closed_.pop_front(n);
  closed_base_seq_ += n;
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
    pop_closed(excess);
    stats_.closed_dropped += excess;
  }
  closed_base_seq_ += skip;
  stats_.closed_dropped += skip;
  for (size_t i = skip; i < n; ++i) {
    closed_entry e;
    e.pack(records[i]);
    e.nat_pending = nat_pending;
    closed_.push_back(e);
  }
  return first_seq;
}

void client_registry::resolve_nat(uint64_t first_seq, size_t n, const nat_hits& hits) {
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
      nat_[first_seq + index] = nat.nat;
      e->has_nat = true;
      e->fill_local(nat.local);
    }
  }
}

client_registry::client_state& client_registry::client(const std::string& name, uint64_t now_ns) {
  auto [it, fresh] = clients_.try_emplace(name);
  client_state& st = it->second;
  if (fresh)
    st.cursor = closed_base_seq_; // a new client sees whatever is still buffered
  st.last_seen_ns = std::max(st.last_seen_ns, now_ns);
  return st;
}

conn_counters client_registry::delta_for(client_state& st, const nl_conn& c, uint64_t round) {
  conn_counters now = counters_of(c);
  auto [it, fresh] = st.last.try_emplace(c.sock_id);
  seen& s = it->second;
  conn_counters d = fresh || s.start_ns != c.start_ns ? now : delta(now, s.counters);
  s.counters = now;
  s.start_ns = c.start_ns;
  s.round = round;
  return d;
}

uint64_t client_registry::begin_listing(const std::string& name, uint64_t now_ns,
                                        size_t max_closed) {
  client_state& st = client(name, now_ns);
  listing l;
  l.client = name;
  l.round = ++st.round;
  l.touched_ns = now_ns;
  l.next_seq = std::max(st.cursor, closed_base_seq_);
  l.end_seq = l.next_seq;
  for (uint64_t last = closed_base_seq_ + closed_.size(); l.end_seq < last; ++l.end_seq) {
    if (closed_[static_cast<size_t>(l.end_seq - closed_base_seq_)].nat_pending)
      break;
    if (l.end_seq - l.next_seq >= max_closed) {
      l.more_closed = true;
      break;
    }
  }
  // The client's next answer starts past these; the listing keeps them in the buffer (trim)
  // until it has handed them out.
  st.cursor = l.end_seq;
  uint64_t id = next_listing_++;
  listings_.emplace(id, std::move(l));
  return id;
}

client_registry::listing* client_registry::touch(uint64_t id, uint64_t now_ns) {
  auto it = listings_.find(id);
  if (it == listings_.end())
    return nullptr;
  it->second.touched_ns = std::max(it->second.touched_ns, now_ns);
  return &it->second;
}

bool client_registry::closed_page(uint64_t id, uint64_t now_ns, size_t max,
                                  std::vector<connection_view>& out) {
  listing* found = touch(id, now_ns);
  if (!found)
    return false;
  listing& l = *found;
  client_state& st = client(l.client, now_ns);
  // Records pushed out of a full buffer meanwhile were counted as dropped there.
  l.next_seq = std::max(l.next_seq, closed_base_seq_);
  for (size_t taken = 0; taken < max && l.next_seq < l.end_seq; ++taken, ++l.next_seq) {
    const closed_entry& e = closed_[static_cast<size_t>(l.next_seq - closed_base_seq_)];
    const nl_conn c = e.unpack();
    conn_counters d = delta_for(st, c, l.round);
    st.last.erase(c.sock_id); // closed: the client will not see it again
    l.closed_ids.insert(c.sock_id);
    ct_endpoints nat{};
    if (e.has_nat)
      if (auto it = nat_.find(l.next_seq); it != nat_.end())
        nat = it->second;
    out.push_back({c, true, d, e.has_nat, nat, {}, false, {}});
  }
  bool left = l.next_seq < l.end_seq;
  if (!left)
    trim();
  return left;
}

void client_registry::active_page(uint64_t id, uint64_t now_ns, const nl_conn* conns, size_t n,
                                  std::vector<connection_view>& out) {
  listing* found = touch(id, now_ns);
  if (!found)
    return;
  listing& l = *found;
  client_state& st = client(l.client, now_ns);
  for (size_t i = 0; i < n; ++i) {
    const nl_conn& c = conns[i];
    if (!l.closed_ids.empty() && l.closed_ids.count(c.sock_id))
      continue;
    out.push_back({c, false, delta_for(st, c, l.round), false, {}, {}, false, {}});
  }
}

bool client_registry::end_listing(uint64_t id) {
  auto it = listings_.find(id);
  if (it == listings_.end())
    return false;
  listing l = std::move(it->second);
  listings_.erase(it);
  auto cit = clients_.find(l.client);
  if (cit != clients_.end()) {
    client_state& st = cit->second;
    // Closed ones a listing left unread (its reader went away) go to the client's next call.
    if (l.next_seq < l.end_seq)
      st.cursor = std::min(st.cursor, l.next_seq);
    // Connections seen in neither this answer nor the one before: vanished without a closed
    // record (lost, expired), so the client's state does not keep them forever.
    for (auto s = st.last.begin(); s != st.last.end();)
      s = s->second.round + 1 < l.round ? st.last.erase(s) : std::next(s);
  }
  trim();
  return l.more_closed;
}

size_t client_registry::expire_listings(uint64_t now_ns, uint64_t idle_ns) {
  std::vector<uint64_t> idle;
  for (const auto& [id, l] : listings_)
    if (now_ns > l.touched_ns && now_ns - l.touched_ns > idle_ns)
      idle.push_back(id);
  for (uint64_t id : idle)
    end_listing(id);
  return idle.size();
}

bool client_registry::collect(const std::string& client, const std::vector<nl_conn>& active,
                              uint64_t now_ns, std::vector<connection_view>& out,
                              size_t max_closed) {
  out.clear();
  uint64_t id = begin_listing(client, now_ns, max_closed);
  out.reserve(active.size());
  while (closed_page(id, now_ns, SIZE_MAX, out)) {
  }
  active_page(id, now_ns, active.data(), active.size(), out);
  return end_listing(id);
}

void client_registry::trim() {
  if (clients_.empty())
    return;
  uint64_t min_cursor = std::numeric_limits<uint64_t>::max();
  for (const auto& [name, st] : clients_)
    min_cursor = std::min(min_cursor, st.cursor);
  for (const auto& [id, l] : listings_)
    if (l.next_seq < l.end_seq)
      min_cursor = std::min(min_cursor, l.next_seq);
  if (closed_base_seq_ < min_cursor) {
    size_t n =
        static_cast<size_t>(std::min<uint64_t>(min_cursor - closed_base_seq_, closed_.size()));
    pop_closed(n);
  }
}

size_t client_registry::expire_clients(uint64_t now_ns) {
  size_t dropped = 0;
  std::unordered_set<std::string> reading;
  for (const auto& [id, l] : listings_)
    reading.insert(l.client);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (now_ns - it->second.last_seen_ns > limits_.client_expiry_ns && !reading.count(it->first)) {
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
  s.closed_translations = nat_.size();
  return s;
}

} // namespace netlens
