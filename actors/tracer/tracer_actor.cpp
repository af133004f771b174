#include "actors/tracer/tracer_actor.hpp"

#include "messages/registry.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "actors/common/clock.hpp"
#include "actors/common/lifecycle.hpp"
#include "actors/tracer/idle_expiry.hpp"
#include "actors/tracer/tracer_loader.hpp"
#include "flow/netns_handle.hpp"
#include "flow/record_decoder.hpp"
#include "flow/socket_table.hpp"

namespace netlens {
namespace {

using self_ptr = tracer_actor::stateful_pointer<tracer_state>;

// Longest a connections answer or a closed record waits for its NAT translation.
constexpr auto k_nat_timeout = std::chrono::seconds(2);
// Longest a connections answer waits for the consumer to hand over what has closed.
constexpr auto k_flush_timeout = std::chrono::seconds(1);
// A page of a paged answer holds at most this many connections (~1.3 MB of views).
constexpr uint32_t k_page_size = 4096;
// Paged answers open at once; past this the oldest is ended (a reader that went away).
constexpr size_t k_max_listings = 16;
// A paged answer whose reader asks for no page this long is ended by the expiry tick.
constexpr uint64_t k_listing_idle_ns = 30ull * 1000000000ull;

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

nat_lookup_request nat_request_for(const std::vector<nl_conn>& conns) {
  nat_lookup_request req;
  req.tuples.reserve(conns.size());
  for (const nl_conn& c : conns)
    req.tuples.push_back(tuple_of(c));
  return req;
}

// A full map read is ~10 MB at 65,536 connections; keeping it between requests would hold
// that much RSS on the host for nothing.
void release_scratch(tracer_state& st) {
  if (st.active.capacity() * sizeof(nl_conn) > (1u << 20))
    std::vector<nl_conn>().swap(st.active);
  else
    st.active.clear();
}

// Closed connections enter the client buffer at once, in order; with conntrack running they
// wait there (unseen by clients) until their translation is claimed, so none is handed out
// without it. Conntrack answers in order, so a connections request sent later finds them
// resolved.
void add_closed(self_ptr self, std::vector<nl_conn> records);

// Closes of UDP sockets with peers' flows held before those flows are ended at once, not at
// the next tick: each is a few bytes, but a client that makes a socket per query closes many.
constexpr size_t k_udp_closes_held = 4096;

// Ends the flows of the peers of every UDP socket closed since the last sweep (the kernel
// cannot find them from the socket's close), with one read of the map.
void end_peer_flows(self_ptr self) {
  auto& st = self->state;
  if (!st.bpf || st.udp_closes.pending() == 0)
    return;
  std::vector<nl_conn> ended;
  tracer_object::active_cursor cursor;
  cursor.refresh = false; // UDP only
  while (!cursor.done) {
    st.active.clear();
    st.bpf->read_active_page(cursor, st.active, k_page_size);
    for (const nl_conn& c : st.active)
      if (st.udp_closes.ends(c) && st.bpf->remove_active(c.sock_id)) {
        ended.push_back(c);
        normalize_family(ended.back());
      }
  }
  st.udp_closes.swept();
  st.udp_peer_flows_ended += ended.size();
  release_scratch(st);
  add_closed(self, std::move(ended));
}

void add_closed(self_ptr self, std::vector<nl_conn> records) {
  auto& st = self->state;
  // An unconnected UDP socket's own entry that counted nothing itself is no flow; its close
  // ends its peers' flows.
  records.erase(std::remove_if(records.begin(), records.end(),
                               [&](const nl_conn& c) { return !st.udp_closes.closed(c); }),
                records.end());
  if (st.udp_closes.pending() >= k_udp_closes_held)
    end_peer_flows(self);
  if (records.empty())
    return;
  auto ct = find_conntrack(self->system());
  if (!ct) {
    st.clients->add_closed(records);
    return;
  }
  uint64_t first = st.clients->add_closed(records, true);
  size_t n = records.size();
  // No timeout: a timeout is an entry in CAF's clock thread per request, a context switch at
  // every closed batch. If conntrack goes down, the request bounces with an error at once.
  self->request(ct, caf::infinite, claim_atom::value, nat_request_for(records))
      .then(
          [=](const nat_lookup_reply& r) {
            self->state.clients->resolve_nat(first, n, r.hits);
            self->state.nat_closed += r.hits.size();
          },
          [=](caf::error&) {
            self->state.clients->resolve_nat(first, n, {});
            ++self->state.nat_errors;
          });
}

counter_list telemetry_of(const tracer_state& st) {
  counter_list out;
  if (st.clients) {
    auto s = st.clients->stats();
    out.emplace_back("closed_received", s.closed_received);
    out.emplace_back("closed_dropped", s.closed_dropped);
    out.emplace_back("closed_buffered", s.closed_buffered);
    out.emplace_back("clients", s.clients);
    out.emplace_back("clients_expired", s.clients_expired);
    for (size_t i = 0; i < k_connect_failure_kinds; ++i)
      out.emplace_back("connect_failures_" +
                           std::string(connect_failure_name(static_cast<connect_failure>(i))),
                       s.connect_failures[i]);
  }
  out.emplace_back("udp_idle_expired", st.idle_expired);
  out.emplace_back("udp_peer_flows_ended", st.udp_peer_flows_ended);
  out.emplace_back("answer_pages", st.pages_served);
  if (st.bpf)
    out.emplace_back("tcp_refresh_failures", st.bpf->refresh_failures());
  out.emplace_back("nat_closed", st.nat_closed);
  out.emplace_back("nat_lookup_errors", st.nat_errors);
  out.emplace_back("netns_resolve_errors", st.netns_errors);
  out.emplace_back("flush_errors", st.flush_errors);
  out.emplace_back("tcp_reconciled", st.tcp_reconciled);
  out.emplace_back("tcp_reconcile_failures", st.tcp_reconcile_failures);
  if (st.bpf) {
    auto k = st.bpf->read_counters();
    out.emplace_back("kernel_closed_emitted", k.closed_emitted);
    out.emplace_back("kernel_wakeups", k.wakeups);
    out.emplace_back("kernel_closed_lost", k.closed_lost);
    out.emplace_back("failed_inserts", k.failed_inserts);
    out.emplace_back("udp_peer_key_clashes", k.peer_key_clashes);
    out.emplace_back("tcp_closes_at_destroy", k.closes_at_destroy);
    out.emplace_back("tcp_opens_completed_late", k.opens_completed_late);
    out.emplace_back("map_capacity", st.bpf->max_entries());
    out.emplace_back("bpf_recursion_misses", st.bpf->recursion_misses());
  }
  return out;
}

// A TCP entry in a closing state that has not moved for this long is checked against the
// kernel's socket table: its close may have been missed.
constexpr uint64_t k_verify_closing_after_ns = 30ull * 1000000000ull;

// The live TCP cookies of namespace netns: the tracer's own, or another one reached through a
// process of an entry there (/proc/<pid>/ns/net, its inode checked). A string says why not.
std::variant<std::unordered_set<uint64_t>, std::string>
live_cookies_of(const tracer_state& st, uint32_t netns, const std::vector<const nl_conn*>& in_ns) {
  if (netns == st.own_netns)
    return live_tcp_cookies();
  std::string why = "no process of its entries is in it any more";
  for (const nl_conn* c : in_ns) {
    if (c->pid == 0)
      continue;
    auto handle = netns_handle::open_for_pid(static_cast<pid_t>(c->pid), netns);
    if (auto* h = std::get_if<netns_handle>(&handle))
      return live_tcp_cookies_in(h->fd());
    why = std::get<netns_error>(handle).message;
  }
  return why;
}

// Entries whose socket the kernel no longer has, in whichever namespace: reported closed
// (flagged), and removed.
void reconcile_tcp(tracer_state& st, const std::vector<nl_conn>& candidates,
                   std::vector<nl_conn>& ended) {
  if (candidates.empty())
    return;
  std::unordered_map<uint32_t, std::vector<const nl_conn*>> by_netns;
  for (const nl_conn& c : candidates)
    by_netns[c.netns].push_back(&c);
  size_t before = ended.size();
  for (const auto& [netns, entries] : by_netns) {
    auto live = live_cookies_of(st, netns, entries);
    if (auto* err = std::get_if<std::string>(&live)) {
      ++st.tcp_reconcile_failures;
      spdlog::warn("tracer: cannot check {} stalled TCP entries of network namespace {} against "
                   "the kernel: {}",
                   entries.size(), netns, *err);
      continue;
    }
    const auto& cookies = std::get<std::unordered_set<uint64_t>>(live);
    for (const nl_conn* c : entries) {
      // A raw_tp tracer knows a cookie only once the kernel assigned one (the socket table
      // dump assigns them), so an entry without one is checked again next time.
      if (c->cookie == 0 || cookies.count(c->cookie) || !st.bpf->remove_active(c->sock_id))
        continue;
      nl_conn done = *c;
      done.flags |= NL_FLAG_RECONCILED;
      normalize_family(done);
      ended.push_back(done);
    }
  }
  st.tcp_reconciled += ended.size() - before;
  if (ended.size() > before)
    spdlog::warn("tracer: {} TCP connections had closed without their close being seen; "
                 "reported closed now",
                 ended.size() - before);
}

caf::error not_loaded(const tracer_state& st) {
  return caf::make_error(caf::sec::runtime_error, "tracer is " + st.state);
}

// The translations conntrack found for active (hits by index into it) set on the views of
// those connections among views[from...].
void apply_nat(std::vector<connection_view>& views, size_t from, const std::vector<nl_conn>& active,
               const nat_lookup_reply& nat) {
  if (nat.hits.empty())
    return;
  std::unordered_map<uint64_t, const ct_endpoints*> by_id;
  by_id.reserve(nat.hits.size());
  for (const auto& [index, ends] : nat.hits)
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
    v.nat = *it->second;
  }
}

// One client's answer from the active connections read at request time and the
// translations conntrack found for them (by index into active), if any.
connections_reply assemble(self_ptr self, const std::string& client, size_t max_closed,
                           const std::vector<nl_conn>& active, const nat_lookup_reply* nat) {
  auto& st = self->state;
  connections_reply reply;
  reply.more_closed =
      st.clients->collect(client, active, monotonic_now_ns(), reply.connections, max_closed);
  if (nat)
    apply_nat(reply.connections, 0, active, *nat);
  reply.telemetry = telemetry_of(st);
  reply.telemetry.emplace_back("map_entries", active.size());
  return reply;
}

// Has the netns actor attribute the answer (container ids, what the devices counted, the flows
// seen only at a device), then delivers it. Without a netns actor the answer goes as it is.
void attribute_and_deliver(self_ptr self, connections_reply reply,
                           caf::typed_response_promise<connections_reply> rp, uint64_t listing = 0,
                           bool last = true) {
  auto ns = find_netns(self->system());
  if (!ns) {
    rp.deliver(std::move(reply));
    return;
  }
  netns_resolve_request req;
  req.listing = listing;
  req.last = last;
  req.tuples.reserve(reply.connections.size());
  req.pids.reserve(reply.connections.size());
  req.translated.reserve(reply.connections.size());
  for (const auto& v : reply.connections) {
    req.tuples.push_back(tuple_of(v.conn));
    req.pids.push_back(v.conn.pid);
    ct_tuple past_nat;
    if (v.has_nat) {
      past_nat = req.tuples.back();
      past_nat.ends = reversed(v.nat);
    }
    req.translated.push_back(past_nat);
  }
  auto held = std::make_shared<connections_reply>(std::move(reply));
  self->request(ns, k_nat_timeout, resolve_atom::value, std::move(req))
      .then(
          [=](netns_resolve_reply& r) mutable {
            auto& conns = held->connections;
            for (auto& [index, id] : r.container_ids)
              if (index < conns.size())
                conns[index].container_id = std::move(id);
            for (const auto& [index, counts] : r.devices)
              if (index < conns.size()) {
                conns[index].has_device = true;
                conns[index].device = counts;
              }
            held->device_flows = std::move(r.device_only);
            rp.deliver(std::move(*held));
          },
          [=](caf::error&) mutable {
            ++self->state.netns_errors;
            rp.deliver(std::move(*held));
          });
}

// Reads the active map, has conntrack translate it, and delivers the client's answer.
void answer_connections(self_ptr self, const std::string& client, size_t max_closed,
                        caf::typed_response_promise<connections_reply> rp) {
  auto& st = self->state;
  if (!st.bpf) {
    rp.deliver(not_loaded(st));
    return;
  }
  st.bpf->read_active(st.active);
  drop_empty_socket_entries(st.active);
  for (auto& c : st.active)
    normalize_family(c);
  auto ct = find_conntrack(self->system());
  if (!ct) {
    attribute_and_deliver(self, assemble(self, client, max_closed, st.active, nullptr), rp);
    release_scratch(st);
    return;
  }
  // The read is kept aside for the answer; the scratch starts empty for the next use.
  auto active = std::make_shared<std::vector<nl_conn>>(std::move(st.active));
  st.active = std::vector<nl_conn>();
  self->request(ct, k_nat_timeout, lookup_atom::value, nat_request_for(*active))
      .then(
          [=](const nat_lookup_reply& r) mutable {
            attribute_and_deliver(self, assemble(self, client, max_closed, *active, &r), rp);
          },
          [=](caf::error&) mutable {
            ++self->state.nat_errors;
            attribute_and_deliver(self, assemble(self, client, max_closed, *active, nullptr), rp);
          });
}

caf::error unknown_listing(uint64_t id) {
  return caf::make_error(caf::sec::runtime_error,
                         "listing " + std::to_string(id) +
                             " is unknown: it ended, expired, or the tracer restarted");
}

// The next page of a paged answer: the closed connections set aside for it first, then active
// ones read from the map where the last page stopped, translated and attributed. The last page
// carries more_closed, the telemetry and the flows seen only at a device.
void serve_page(self_ptr self, uint64_t id, caf::typed_response_promise<connections_reply> rp) {
  auto& st = self->state;
  auto it = st.pages.find(id);
  if (!st.bpf || it == st.pages.end() || !st.clients->has_listing(it->second.listing)) {
    if (it != st.pages.end())
      st.pages.erase(it);
    rp.deliver(unknown_listing(id));
    return;
  }
  tracer_state::paged& p = it->second;
  auto held = std::make_shared<connections_reply>();
  bool closed_left =
      st.clients->closed_page(p.listing, monotonic_now_ns(), k_page_size, held->connections);
  auto active = std::make_shared<std::vector<nl_conn>>();
  if (!closed_left && held->connections.size() < k_page_size) {
    active->reserve(k_page_size - held->connections.size());
    st.bpf->read_active_page(p.cursor, *active,
                             k_page_size - static_cast<uint32_t>(held->connections.size()));
    drop_empty_socket_entries(*active);
    for (auto& c : *active)
      normalize_family(c);
    p.entries += active->size();
  }
  const bool last = !closed_left && p.cursor.done;
  auto finish = [self, id, last, held, active, rp](const nat_lookup_reply* nat) mutable {
    auto& st = self->state;
    auto it = st.pages.find(id);
    if (it == st.pages.end() || !st.clients->has_listing(it->second.listing)) {
      rp.deliver(unknown_listing(id));
      return;
    }
    size_t from = held->connections.size();
    st.clients->active_page(it->second.listing, monotonic_now_ns(), active->data(), active->size(),
                            held->connections);
    if (nat)
      apply_nat(held->connections, from, *active, *nat);
    held->listing = id;
    held->last = last;
    if (last) {
      held->more_closed = st.clients->end_listing(it->second.listing);
      held->telemetry = telemetry_of(st);
      held->telemetry.emplace_back("map_entries", it->second.entries);
      st.pages.erase(it);
    }
    ++st.pages_served;
    active.reset();
    attribute_and_deliver(self, std::move(*held), rp, id, last);
  };
  auto ct = find_conntrack(self->system());
  if (!ct || active->empty()) {
    finish(nullptr);
    return;
  }
  self->request(ct, k_nat_timeout, lookup_atom::value, nat_request_for(*active))
      .then([=](const nat_lookup_reply& r) mutable { finish(&r); },
            [=](caf::error&) mutable {
              ++self->state.nat_errors;
              finish(nullptr);
            });
}

// Ends the paged answers whose reader went away (no page for k_listing_idle_ns), or the oldest
// ones past k_max_listings.
void end_idle_listings(tracer_state& st, uint64_t now, size_t room_for = 0) {
  st.clients->expire_listings(now, k_listing_idle_ns);
  while (st.pages.size() + room_for > k_max_listings) {
    auto oldest =
        std::min_element(st.pages.begin(), st.pages.end(), [](const auto& a, const auto& b) {
          return a.second.listing < b.second.listing;
        });
    st.clients->end_listing(oldest->second.listing);
    st.pages.erase(oldest);
  }
  for (auto it = st.pages.begin(); it != st.pages.end();)
    it = st.clients->has_listing(it->second.listing) ? std::next(it) : st.pages.erase(it);
}

// conns_page: listing 0 begins a paged answer for client (after everything closed so far has
// come from the consumer, as for a whole answer); any other is the next page of that one.
caf::result<connections_reply> get_page(self_ptr self, const std::string& client, uint64_t listing,
                                        size_t max_closed = SIZE_MAX) {
  auto& st = self->state;
  ++st.handled;
  if (!st.bpf)
    return not_loaded(st);
  auto rp = self->make_response_promise<connections_reply>();
  if (listing != 0) {
    serve_page(self, listing, rp);
    return rp;
  }
  auto open_listing = [self, client, max_closed, rp]() mutable {
    auto& st = self->state;
    if (!st.bpf) {
      rp.deliver(not_loaded(st));
      return;
    }
    end_idle_listings(st, monotonic_now_ns(), 1);
    uint64_t local = st.clients->begin_listing(client, monotonic_now_ns(), max_closed);
    // Unique across restarts of the tracer, so that the netns actor never takes a new listing
    // for one it still holds from an instance before.
    uint64_t id = (uint64_t{self->id()} << 32) | (local & 0xffffffffu);
    st.pages[id] = tracer_state::paged{local, {}, 0};
    serve_page(self, id, rp);
  };
  // The closed connections the flush handed over wait for their translations (add_closed);
  // conntrack answers in order, so once an empty lookup sent now comes back they are resolved
  // and the listing sets all of them aside for this answer.
  auto begin = [self, open_listing]() mutable {
    auto ct = find_conntrack(self->system());
    if (!ct) {
      open_listing();
      return;
    }
    self->request(ct, k_nat_timeout, lookup_atom::value, nat_lookup_request{})
        .then([=](const nat_lookup_reply&) mutable { open_listing(); },
              [=](caf::error&) mutable {
                ++self->state.nat_errors;
                open_listing();
              });
  };
  // The peers' flows of sockets that closed are closed in this answer, not active.
  auto swept_begin = [self, begin]() mutable {
    end_peer_flows(self);
    begin();
  };
  if (!st.consumer) {
    swept_begin();
    return rp;
  }
  self->request(st.consumer, k_flush_timeout, flush_atom::value)
      .then([=](caf::ok_atom) mutable { swept_begin(); },
            [=](caf::error&) mutable {
              ++self->state.flush_errors;
              swept_begin();
            });
  return rp;
}

// The tracer is in the kernel: says how, and starts serving.
void loaded_with(self_ptr self, std::unique_ptr<tracer_object> loaded,
                 const tracer_loader& loader) {
  auto& st = self->state;
  st.bpf = std::move(loaded);
  const char* build = tracer_build_name(st.bpf->build());
  st.load_info.clear();
  st.load_info.emplace_back("mode", build);
  st.load_info.emplace_back("mode_configured", tracer_mode_name(st.cfg.mode));
  for (const auto& why : loader.skipped()) {
    spdlog::warn("tracer: skipped {}", why);
    st.load_info.emplace_back("skipped_" + why.substr(0, why.find(':')),
                              why.substr(why.find(':') + 2));
  }
  if (const runtime_build* rt = loader.runtime_info();
      rt && st.bpf->build() == tracer_build::runtime) {
    st.load_info.emplace_back("runtime_object", rt->path);
    st.load_info.emplace_back("runtime_from_cache", rt->from_cache ? "true" : "false");
    if (!rt->types_from.empty())
      st.load_info.emplace_back("runtime_types_from", rt->types_from);
    if (rt->rebuilt_corrupt)
      spdlog::warn("tracer: the cached runtime object {} was corrupt; rebuilt it", rt->path);
    if (!rt->from_cache)
      spdlog::info("tracer: compiled the runtime tracer in {} ms", rt->compile_us / 1000);
  }
  if (!st.bpf->udp_release_attached())
    spdlog::warn("tracer: no cgroup v2 hierarchy mounted; UDP flows end only by idle expiry");
  if (st.bpf->build() == tracer_build::core) {
    // Where the kernel has no iterator over open files, every TCP send and receive reads the
    // socket's counters, as the raw_tp builds always do.
    st.load_info.emplace_back("tcp_fast_path", st.bpf->fast_tcp() ? "on" : "off");
    if (!st.bpf->fast_tcp()) {
      st.load_info.emplace_back("tcp_fast_path_off_because", st.bpf->fast_tcp_off_reason());
      spdlog::warn("tracer: the TCP fast path is off, every send and receive counts: {}",
                   st.bpf->fast_tcp_off_reason());
    }
  }
  st.state = "running";
  std::string ids;
  for (uint32_t id : st.bpf->program_ids())
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  spdlog::info("tracer: BPF programs loaded ({} build, {}), closed buffer: {}, program ids {}",
               build, st.bpf->build() == tracer_build::core ? "tp_btf" : "raw_tp",
               st.bpf->uses_perf() ? "perf" : "ring", ids);
}

// A connections answer for one client: first everything closed so far (the consumer sends it
// before it answers, so it is ahead of the answer in this mailbox and in this reply).
caf::result<connections_reply> get_connections(self_ptr self, const std::string& client,
                                               size_t max_closed) {
  auto& st = self->state;
  ++st.handled;
  if (!st.bpf)
    return not_loaded(st);
  auto rp = self->make_response_promise<connections_reply>();
  if (!st.consumer) {
    answer_connections(self, client, max_closed, rp);
    return rp;
  }
  // First everything closed so far: the consumer sends it before it answers, so it is
  // ahead of the answer in this mailbox and in this reply.
  self->request(st.consumer, k_flush_timeout, flush_atom::value)
      .then([=](caf::ok_atom) mutable { answer_connections(self, client, max_closed, rp); },
            [=](caf::error&) mutable {
              ++self->state.flush_errors;
              answer_connections(self, client, max_closed, rp);
            });
  return rp;
}

} // namespace

tracer_actor::behavior_type tracer_fn(self_ptr self, tracer_config cfg,
                                      offset_guesser_actor guesser,
                                      std::chrono::milliseconds guess_timeout) {
  self->state.cfg = cfg;
  self->state.own_netns = own_netns_inode();
  self->state.clients = std::make_unique<client_registry>(client_registry_limits{
      cfg.max_closed_connections_buffered, uint64_t{cfg.client_expiry_s} * 1000000000ull});
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        ++st.handled;
        if (st.bpf)
          return caf::ok_atom::value;
        tracer_load_options opts;
        opts.max_tracked_connections = st.cfg.max_tracked_connections;
        opts.use_perf = st.cfg.closed_buffer == closed_buffer_kind::perf;
        opts.ring_buffer_bytes = st.cfg.ring_buffer_bytes;
        opts.closed_batch_size = st.cfg.closed_batch_size;
        runtime_build_options rt;
        rt.cache_dir = st.cfg.cache_dir;
        auto loader = std::make_shared<tracer_loader>(st.cfg.mode, opts, rt);
        // Test builds: NETLENS_FAULT_TRACER_BUILDS=core,runtime makes those builds fail, as on
        // a host without BTF or clang, so the fallback chain can be tested on this one.
        const char* off =
            fault_injection::enabled() ? std::getenv("NETLENS_FAULT_TRACER_BUILDS") : nullptr;
        if (off) {
          for (tracer_build b : {tracer_build::core, tracer_build::runtime, tracer_build::prebuilt})
            if (std::strstr(off, tracer_build_name(b)))
              loader->disable(b, "disabled by NETLENS_FAULT_TRACER_BUILDS");
        }
        if (auto loaded = loader->try_without_offsets()) {
          loaded_with(self, std::move(loaded), *loader);
          return caf::ok_atom::value;
        }
        if (!loader->wants_offsets() || !guesser) {
          st.state = "failed";
          return caf::make_error(caf::sec::runtime_error, loader->failure());
        }
        for (const auto& why : loader->skipped())
          spdlog::info("tracer: {}; asking the offset guesser for the prebuilt build", why);
        auto rp = self->make_response_promise<caf::ok_atom>();
        self->request(guesser, guess_timeout, guess_atom::value)
            .then(
                [=](const guessed_offsets& g) mutable {
                  std::variant<nl_offsets, std::string> offsets = g.offsets;
                  if (!g.ok)
                    offsets = "offset guesser: " + g.error;
                  else
                    spdlog::info("tracer: offsets {} in {} us after {} tries",
                                 g.from_cache ? "from the cache" : "guessed", g.duration_us,
                                 g.tries);
                  if (auto loaded = loader->try_prebuilt(offsets)) {
                    loaded_with(self, std::move(loaded), *loader);
                    rp.deliver(caf::ok_atom::value);
                    return;
                  }
                  self->state.state = "failed";
                  rp.deliver(caf::make_error(caf::sec::runtime_error, loader->failure()));
                },
                [=](caf::error& e) mutable {
                  loader->try_prebuilt(std::string("the offset guesser did not answer: ") +
                                       self->system().render(e));
                  self->state.state = "failed";
                  rp.deliver(caf::make_error(caf::sec::runtime_error, loader->failure()));
                });
        return rp;
      },
      [=](buffer_atom) -> caf::result<closed_buffer_info> {
        auto& st = self->state;
        ++st.handled;
        if (!st.bpf)
          return not_loaded(st);
        // The one who reads the buffer: asked to flush before each connections answer. A
        // restarted consumer asks again and replaces it.
        st.consumer = caf::actor_cast<perf_consumer_actor>(self->current_sender());
        closed_buffer_info info;
        info.perf = st.bpf->uses_perf();
        info.map_fd = info.perf ? st.bpf->closed_perf_fd() : st.bpf->closed_ring_fd();
        info.batches_fd = info.perf ? st.bpf->closed_batches_fd() : -1;
        info.perf_pages = st.cfg.perf_buffer_pages;
        info.closed_batch_size = st.cfg.closed_batch_size;
        info.flush_interval_ms = st.cfg.closed_flush_interval_ms;
        return info;
      },
      [=](closed_batch& batch) {
        auto& st = self->state;
        ++st.handled;
        add_closed(self, batch.records);
      },
      [=](get_conns_atom, const std::string& client) -> caf::result<connections_reply> {
        return get_connections(self, client, SIZE_MAX);
      },
      [=](get_conns_atom, const std::string& client, uint32_t max_closed)
          -> caf::result<connections_reply> { return get_connections(self, client, max_closed); },
      [=](conns_page_atom, const std::string& client, uint64_t listing)
          -> caf::result<connections_reply> { return get_page(self, client, listing); },
      [=](conns_page_atom, const std::string& client, uint64_t listing, uint32_t max_closed)
          -> caf::result<connections_reply> { return get_page(self, client, listing, max_closed); },
      [=](expire_atom) {
        auto& st = self->state;
        ++st.handled;
        uint64_t now = monotonic_now_ns();
        st.clients->expire_clients(now);
        end_idle_listings(st, now);
        if (!st.bpf)
          return;
        // The map is read a page at a time: this runs every tick, and a whole read of 65,536
        // connections would be ~10 MB on the host each time.
        std::vector<nl_conn> ended, closing;
        tracer_object::active_cursor cursor;
        // Idle UDP flows and closing TCP entries need no live TCP counters: the tick does not
        // pay for a refresh (a walk of every open file) each time.
        cursor.refresh = false;
        while (!cursor.done) {
          st.active.clear();
          st.bpf->read_active_page(cursor, st.active, k_page_size);
          for (const nl_conn& c : st.active)
            if (st.udp_closes.ends(c) && st.bpf->remove_active(c.sock_id)) {
              ended.push_back(c); // its socket closed: ended with it, not idle
              normalize_family(ended.back());
              ++st.udp_peer_flows_ended;
            }
          for (const nl_conn* c : idle_udp_flows(
                   st.active, now, uint64_t{st.cfg.udp_idle_timeout_s} * 1000000000ull)) {
            if (!st.bpf->remove_active(c->sock_id))
              continue; // closed meanwhile: its record is on the way
            nl_conn done = *c;
            done.flags |= NL_FLAG_IDLE_EXPIRED;
            normalize_family(done);
            ended.push_back(done);
            if (!is_empty_socket_entry(done))
              ++st.idle_expired; // an empty socket entry is no flow
          }
          for (const nl_conn* c :
               closing_entries_to_verify(st.active, now, k_verify_closing_after_ns))
            closing.push_back(*c);
        }
        st.udp_closes.swept();
        reconcile_tcp(st, closing, ended);
        add_closed(self, ended);
        release_scratch(st);
      },
      [=](stop_atom) {
        ++self->state.handled;
        return caf::ok_atom::value;
      },
      fault_handler(self),
      [=](purge_atom) {
        auto& st = self->state;
        ++st.handled;
        st.bpf.reset(); // detaches every link, frees every map and program
        st.state = "purged";
        spdlog::info("tracer: BPF links detached, programs and maps released");
        return caf::ok_atom::value;
      },
      [=](stats_atom) {
        auto& st = self->state;
        ++st.handled;
        actor_stats s = make_actor_stats("tracer", st.state, st.handled, telemetry_of(st));
        s.info = st.load_info;
        s.mailbox_size = mailbox_size(self);
        if (st.bpf) {
          s.counters.emplace_back("map_entries", st.bpf->count_active());
        }
        return s;
      },
  };
}

} // namespace netlens
