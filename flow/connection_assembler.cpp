#include "flow/connection_assembler.hpp"

#include <algorithm>
#include <cstring>

#include "flow/idle_expiry.hpp"
#include "flow/record_decoder.hpp"
#include "flow/socket_table.hpp"

namespace netlens {

ct_tuple tuple_of(const nl_conn& c) {
  ct_tuple t;
  t.netns = c.netns;
  t.family = static_cast<uint8_t>(c.family);
  t.protocol = c.protocol;
  std::memcpy(t.ends.saddr, c.saddr, 16);
  std::memcpy(t.ends.daddr, c.daddr, 16);
  t.ends.sport = c.sport;
  t.ends.dport = c.dport;
  return t;
}

void apply_nat(std::vector<connection_view>& views, size_t from, const std::vector<nl_conn>& active,
               const nat_hits& nat) {
  if (nat.empty())
    return;
  std::unordered_map<uint64_t, const ct_hit*> by_id;
  by_id.reserve(nat.size());
  for (const auto& [index, ends] : nat)
    if (index < active.size())
      by_id.emplace(active[index].sock_id, &ends);
  for (size_t i = from; i < views.size(); ++i) {
    connection_view& v = views[i];
    if (v.closed)
      continue;
    auto it = by_id.find(v.conn.sock_id);
    if (it == by_id.end())
      continue;
    v.has_nat = true;
    v.nat = it->second->nat;
    // A per-peer flow of a socket bound to the wildcard: netfilter knows its local address.
    fill_unspecified(v.conn.saddr, it->second->local);
  }
}

connection_assembler::connection_assembler(active_table& table, live_sockets& sockets,
                                           assembler_settings s)
    : table_(table), sockets_(sockets), settings_(s), clients_(s.clients) {}

std::vector<nl_conn> connection_assembler::admit_closed(std::vector<nl_conn> records) {
  records.erase(std::remove_if(records.begin(), records.end(),
                               [&](const nl_conn& c) { return !udp_closes_.closed(c); }),
                records.end());
  if (udp_closes_.pending() >= settings_.udp_closes_held) {
    std::vector<nl_conn> ended = end_peer_flows();
    records.insert(records.end(), ended.begin(), ended.end());
  }
  return records;
}

std::vector<nl_conn> connection_assembler::end_peer_flows() {
  std::vector<nl_conn> ended;
  if (udp_closes_.pending() == 0)
    return ended;
  active_cursor cursor;
  cursor.refresh = false; // UDP only
  while (!cursor.done) {
    scratch_.clear();
    table_.read_active_page(cursor, scratch_, settings_.page_size);
    for (const nl_conn& c : scratch_)
      if (udp_closes_.ends(c) && table_.remove_active(c.sock_id)) {
        ended.push_back(c);
        normalize_family(ended.back());
      }
  }
  udp_closes_.swept();
  stats_.udp_peer_flows_ended += ended.size();
  return ended;
}

std::vector<nl_conn> connection_assembler::read_active() {
  std::vector<nl_conn> active;
  read_whole_table(table_, active, settings_.page_size);
  drop_empty_socket_entries(active);
  for (auto& c : active)
    normalize_family(c);
  return active;
}

connections_reply connection_assembler::answer(const std::string& client, size_t max_closed,
                                               const std::vector<nl_conn>& active,
                                               const nat_hits* nat, uint64_t now_ns) {
  connections_reply reply;
  reply.more_closed = clients_.collect(client, active, now_ns, reply.connections, max_closed);
  if (nat)
    apply_nat(reply.connections, 0, active, *nat);
  return reply;
}

void connection_assembler::end_idle_listings(uint64_t now_ns, size_t room_for) {
  clients_.expire_listings(now_ns, settings_.listing_idle_ns);
  while (!pages_.empty() && pages_.size() + room_for > settings_.max_listings) {
    auto oldest = std::min_element(pages_.begin(), pages_.end(), [](const auto& a, const auto& b) {
      return a.second.listing < b.second.listing;
    });
    clients_.end_listing(oldest->second.listing);
    pages_.erase(oldest);
  }
  for (auto it = pages_.begin(); it != pages_.end();)
    it = clients_.has_listing(it->second.listing) ? std::next(it) : pages_.erase(it);
}

uint64_t connection_assembler::open_listing(const std::string& client, uint64_t now_ns,
                                            size_t max_closed) {
  end_idle_listings(now_ns, 1);
  uint64_t local = clients_.begin_listing(client, now_ns, max_closed);
  uint64_t id = settings_.listing_id_prefix | (local & 0xffffffffu);
  pages_[id] = paged{local, {}, 0};
  return id;
}

bool connection_assembler::read_page(uint64_t id, uint64_t now_ns, page_read& page) {
  auto it = pages_.find(id);
  if (it == pages_.end() || !clients_.has_listing(it->second.listing)) {
    if (it != pages_.end())
      pages_.erase(it);
    return false;
  }
  paged& p = it->second;
  const uint32_t size = settings_.page_size;
  bool closed_left = clients_.closed_page(p.listing, now_ns, size, page.reply.connections);
  if (!closed_left && page.reply.connections.size() < size) {
    uint32_t room = size - static_cast<uint32_t>(page.reply.connections.size());
    page.active.reserve(room);
    table_.read_active_page(p.cursor, page.active, room);
    drop_empty_socket_entries(page.active);
    for (auto& c : page.active)
      normalize_family(c);
    p.entries += page.active.size();
  }
  page.last = !closed_left && p.cursor.done;
  return true;
}

bool connection_assembler::finish_page(uint64_t id, uint64_t now_ns, page_read& page,
                                       const nat_hits* nat) {
  auto it = pages_.find(id);
  if (it == pages_.end() || !clients_.has_listing(it->second.listing))
    return false;
  connections_reply& reply = page.reply;
  size_t from = reply.connections.size();
  clients_.active_page(it->second.listing, now_ns, page.active.data(), page.active.size(),
                       reply.connections);
  if (nat)
    apply_nat(reply.connections, from, page.active, *nat);
  reply.listing = id;
  reply.last = page.last;
  if (page.last) {
    reply.more_closed = clients_.end_listing(it->second.listing);
    reply.telemetry.emplace_back("map_entries", it->second.entries);
    pages_.erase(it);
  }
  ++stats_.pages_served;
  return true;
}

tick_result connection_assembler::tick(uint64_t now_ns) {
  clients_.expire_clients(now_ns);
  end_idle_listings(now_ns, 0);
  tick_result out;
  std::vector<nl_conn> closing;
  active_cursor cursor;
  // Idle UDP flows and closing TCP entries need no live TCP counters: the tick does not pay
  // for a refresh (a walk of every open file) each time.
  cursor.refresh = false;
  while (!cursor.done) {
    scratch_.clear();
    table_.read_active_page(cursor, scratch_, settings_.page_size);
    for (const nl_conn& c : scratch_)
      if (udp_closes_.ends(c) && table_.remove_active(c.sock_id)) {
        out.ended.push_back(c); // its socket closed: ended with it, not idle
        normalize_family(out.ended.back());
        ++stats_.udp_peer_flows_ended;
      }
    for (const nl_conn* c : idle_udp_flows(scratch_, now_ns, settings_.udp_idle_ns)) {
      if (!table_.remove_active(c->sock_id))
        continue; // closed meanwhile: its record is on the way
      nl_conn done = *c;
      done.flags |= NL_FLAG_IDLE_EXPIRED;
      normalize_family(done);
      out.ended.push_back(done);
      if (!is_empty_socket_entry(done))
        ++stats_.idle_expired; // an empty socket entry is no flow
    }
    for (const nl_conn* c :
         closing_entries_to_verify(scratch_, now_ns, settings_.verify_closing_after_ns))
      closing.push_back(*c);
  }
  udp_closes_.swept();
  reconcile(closing, out);
  // A full page of 65,536 connections is ~10 MB; kept between ticks it would hold that much
  // on the host for nothing.
  if (scratch_.capacity() * sizeof(nl_conn) > (1u << 20))
    std::vector<nl_conn>().swap(scratch_);
  // An unconnected UDP socket's own entry that counted nothing itself is no flow: admit_closed
  // takes it out (and remembers its close) like a closed record's.
  out.ended = admit_closed(std::move(out.ended));
  return out;
}

void connection_assembler::reconcile(const std::vector<nl_conn>& candidates, tick_result& out) {
  if (candidates.empty())
    return;
  std::unordered_map<uint32_t, std::vector<const nl_conn*>> by_netns;
  for (const nl_conn& c : candidates)
    by_netns[c.netns].push_back(&c);
  size_t before = out.ended.size();
  for (const auto& [netns, entries] : by_netns) {
    live_cookies live = sockets_.tcp_cookies(netns, entries);
    if (auto* err = std::get_if<std::string>(&live)) {
      ++stats_.tcp_reconcile_failures;
      out.reconcile_failures.push_back(std::to_string(entries.size()) +
                                       " stalled TCP entries of network namespace " +
                                       std::to_string(netns) + ": " + *err);
      continue;
    }
    const auto& cookies = std::get<std::unordered_set<uint64_t>>(live);
    for (const nl_conn* c : entries) {
      // A raw_tp tracer knows a cookie only once the kernel assigned one (the socket table
      // dump assigns them), so an entry without one is checked again next time.
      if (c->cookie == 0 || cookies.count(c->cookie) || !table_.remove_active(c->sock_id))
        continue;
      nl_conn done = *c;
      done.flags |= NL_FLAG_RECONCILED;
      normalize_family(done);
      out.ended.push_back(done);
    }
  }
  out.reconciled = out.ended.size() - before;
  stats_.tcp_reconciled += out.reconciled;
}

} // namespace netlens
