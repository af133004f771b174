#include "actors/tracer/tracer_actor.hpp"

#include "messages/registry.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "actors/tracer/tracer_loader.hpp"
#include "flow/clock.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<tracer_self_actor, tracer_state>;

// Longest a connections answer or a closed record waits for its NAT translation.
constexpr auto k_nat_timeout = std::chrono::seconds(2);
// Longest a connections answer waits for the consumer to hand over what has closed.
constexpr auto k_flush_timeout = std::chrono::seconds(1);

nat_lookup_request nat_request_for(const std::vector<nl_conn>& conns) {
  nat_lookup_request req;
  req.tuples.reserve(conns.size());
  for (const nl_conn& c : conns)
    req.tuples.push_back(tuple_of(c));
  return req;
}

// Closed connections the assembler admitted enter the client buffer at once, in order; with
// conntrack running they wait there (unseen by clients) until their translation is claimed, so
// none is handed out without it. Conntrack answers in order, so a connections request sent
// later finds them resolved.
void buffer_closed(self_ptr self, const std::vector<nl_conn>& records) {
  auto& st = self->state;
  if (records.empty())
    return;
  auto ct = find_conntrack(self->system());
  if (!ct) {
    st.flows->buffer_closed(records, false);
    return;
  }
  uint64_t first = st.flows->buffer_closed(records, true);
  size_t n = records.size();
  // No timeout: a timeout is an entry in CAF's clock thread per request, a context switch at
  // every closed batch. If conntrack goes down, the request bounces with an error at once.
  self->request(ct, caf::infinite, claim_atom::value, nat_request_for(records))
      .then(
          [=](const nat_lookup_reply& r) {
            self->state.flows->resolve_nat(first, n, r.hits);
            self->state.nat_closed += r.hits.size();
          },
          [=](caf::error&) {
            self->state.flows->resolve_nat(first, n, {});
            ++self->state.nat_errors;
          });
}

// A closed batch from the kernel: what of it is a flow (admit_closed), into the buffer.
void add_closed(self_ptr self, std::vector<nl_conn> records) {
  buffer_closed(self, self->state.flows->admit_closed(std::move(records)));
}

counter_list telemetry_of(const tracer_state& st) {
  counter_list out;
  auto s = st.flows->client_stats();
  out.emplace_back("closed_received", s.closed_received);
  out.emplace_back("closed_dropped", s.closed_dropped);
  out.emplace_back("closed_buffered", s.closed_buffered);
  out.emplace_back("clients", s.clients);
  out.emplace_back("clients_expired", s.clients_expired);
  for (size_t i = 0; i < k_connect_failure_kinds; ++i)
    out.emplace_back("connect_failures_" +
                         std::string(connect_failure_name(static_cast<connect_failure>(i))),
                     s.connect_failures[i]);
  const assembler_stats& a = st.flows->stats();
  out.emplace_back("udp_idle_expired", a.idle_expired);
  out.emplace_back("udp_peer_flows_ended", a.udp_peer_flows_ended);
  out.emplace_back("answer_pages", a.pages_served);
  if (st.bpf)
    out.emplace_back("tcp_refresh_failures", st.bpf->refresh_failures());
  out.emplace_back("nat_closed", st.nat_closed);
  out.emplace_back("nat_lookup_errors", st.nat_errors);
  out.emplace_back("netns_resolve_errors", st.netns_errors);
  out.emplace_back("flush_errors", st.flush_errors);
  out.emplace_back("tcp_reconciled", a.tcp_reconciled);
  out.emplace_back("tcp_reconcile_failures", a.tcp_reconcile_failures);
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

// Runs then once the perf consumer has pushed everything closed so far (its batches are
// applied first: they come before the one that completes the ticket), or after k_flush_timeout
// without it. Without a consumer running, at once.
void after_flush(self_ptr self, std::function<void()> then) {
  auto consumer = find_perf_consumer(self->system());
  if (!consumer) {
    then();
    return;
  }
  auto& st = self->state;
  uint64_t ticket = ++st.flush_ticket;
  st.flush_waiters.emplace(ticket, std::move(then));
  self->send(consumer, flush_atom::value, ticket);
  self->delayed_send(self, k_flush_timeout, flush_timeout_atom::value, ticket);
}

// The waiters whose ticket a closed batch completed, oldest first.
void flushed_to(self_ptr self, uint64_t ticket) {
  auto& waiters = self->state.flush_waiters;
  while (!waiters.empty() && waiters.begin()->first <= ticket) {
    auto then = std::move(waiters.begin()->second);
    waiters.erase(waiters.begin());
    then();
  }
}

caf::error not_loaded(const tracer_state& st) {
  return caf::make_error(caf::sec::runtime_error,
                         std::string("tracer is ") + actor_state_name(st.state));
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
            // Per-peer flows of wildcard-bound UDP sockets: the address their datagrams
            // reached (a translated one has it from conntrack already).
            for (const auto& [index, local] : r.local_addresses)
              if (index < conns.size())
                fill_unspecified(conns[index].conn.saddr, local.data());
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
  auto active = std::make_shared<std::vector<nl_conn>>(st.flows->read_active());
  auto deliver = [self, client, max_closed, active, rp](const nat_hits* nat) mutable {
    auto& st = self->state;
    connections_reply reply =
        st.flows->answer(client, max_closed, *active, nat, monotonic_now_ns());
    reply.telemetry = telemetry_of(st);
    reply.telemetry.emplace_back("map_entries", active->size());
    active.reset();
    attribute_and_deliver(self, std::move(reply), rp);
  };
  auto ct = find_conntrack(self->system());
  if (!ct) {
    deliver(nullptr);
    return;
  }
  self->request(ct, k_nat_timeout, lookup_atom::value, nat_request_for(*active))
      .then([=](const nat_lookup_reply& r) mutable { deliver(&r.hits); },
            [=](caf::error&) mutable {
              ++self->state.nat_errors;
              deliver(nullptr);
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
  auto page = std::make_shared<page_read>();
  if (!st.bpf || !st.flows->read_page(id, monotonic_now_ns(), *page)) {
    rp.deliver(unknown_listing(id));
    return;
  }
  auto finish = [self, id, page, rp](const nat_hits* nat) mutable {
    auto& st = self->state;
    if (!st.flows->finish_page(id, monotonic_now_ns(), *page, nat)) {
      rp.deliver(unknown_listing(id));
      return;
    }
    if (page->last) {
      // map_entries, the page's own figure, goes after the tracer's telemetry.
      counter_list telemetry = telemetry_of(st);
      telemetry.insert(telemetry.end(), page->reply.telemetry.begin(), page->reply.telemetry.end());
      page->reply.telemetry = std::move(telemetry);
    }
    bool last = page->last;
    connections_reply reply = std::move(page->reply);
    page.reset();
    attribute_and_deliver(self, std::move(reply), rp, id, last);
  };
  auto ct = find_conntrack(self->system());
  if (!ct || page->active.empty()) {
    finish(nullptr);
    return;
  }
  self->request(ct, k_nat_timeout, lookup_atom::value, nat_request_for(page->active))
      .then([=](const nat_lookup_reply& r) mutable { finish(&r.hits); },
            [=](caf::error&) mutable {
              ++self->state.nat_errors;
              finish(nullptr);
            });
}

// conns_page: listing 0 begins a paged answer for client (after everything closed so far has
// come from the consumer, as for a whole answer); any other is the next page of that one.
caf::result<connections_reply> get_page(self_ptr self, const std::string& client, uint64_t listing,
                                        size_t max_closed = SIZE_MAX) {
  auto& st = self->state;
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
    serve_page(self, st.flows->open_listing(client, monotonic_now_ns(), max_closed), rp);
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
    buffer_closed(self, self->state.flows->end_peer_flows());
    begin();
  };
  after_flush(self, swept_begin);
  return rp;
}

// The tracer is in the kernel: takes the loaded object, leaves its closed buffer's reading side
// in the slot for the perf consumer's spawn, says how it loaded, and starts serving. An error
// (no descriptor left to share the buffer with) fails the start.
std::optional<std::string> loaded_with(self_ptr self, std::unique_ptr<tracer_object> loaded,
                                       const tracer_loader& loader) {
  auto& st = self->state;
  closed_buffer_info info;
  info.perf = loaded->uses_perf();
  info.map_fd = info.perf ? loaded->closed_perf_fd() : loaded->closed_ring_fd();
  info.batches_fd = info.perf ? loaded->closed_batches_fd() : -1;
  info.perf_pages = st.cfg.perf_buffer_pages;
  info.closed_batch_size = st.cfg.closed_batch_size;
  info.flush_interval_ms = st.cfg.closed_flush_interval_ms;
  auto shared = closed_buffer::share(info);
  if (auto* err = std::get_if<std::string>(&shared))
    return "tracer: " + *err;
  st.bpf = std::move(loaded);
  st.buffer = std::move(std::get<0>(shared));
  st.buffer_slot->put(st.buffer);
  st.load_info = loader.report(*st.bpf);
  st.state = actor_state::running;
  return std::nullopt;
}

// A connections answer for one client: first everything closed so far (the consumer sends it
// before it answers, so it is ahead of the answer in this mailbox and in this reply).
caf::result<connections_reply> get_connections(self_ptr self, const std::string& client,
                                               size_t max_closed) {
  auto& st = self->state;
  if (!st.bpf)
    return not_loaded(st);
  auto rp = self->make_response_promise<connections_reply>();
  // First everything closed so far: it comes in the batches up to the one that completes the
  // flush, so it is in the buffer before this answer.
  after_flush(self, [=]() mutable { answer_connections(self, client, max_closed, rp); });
  return rp;
}

} // namespace

tracer_self_actor::behavior_type tracer_fn(self_ptr self, tracer_config cfg,
                                           offset_guesser_actor guesser,
                                           std::chrono::milliseconds guess_timeout,
                                           std::shared_ptr<closed_buffer_slot> buffer_slot) {
  self->state.cfg = cfg;
  self->state.buffer_slot = std::move(buffer_slot);
  assembler_settings flows;
  flows.clients = client_registry_limits{cfg.max_closed_connections_buffered,
                                         uint64_t{cfg.client_expiry_s} * 1000000000ull};
  flows.udp_idle_ns = uint64_t{cfg.udp_idle_timeout_s} * 1000000000ull;
  // Listing ids unique across restarts of the tracer, so that the netns actor never takes a
  // new listing for one it still holds from an instance before.
  flows.listing_id_prefix = uint64_t{self->id()} << 32;
  self->state.flows =
      std::make_unique<connection_assembler>(self->state.table, self->state.sockets, flows);
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
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
          if (auto err = loaded_with(self, std::move(loaded), *loader)) {
            st.state = actor_state::failed;
            return caf::make_error(caf::sec::runtime_error, *err);
          }
          return caf::ok_atom::value;
        }
        if (!loader->wants_offsets() || !guesser) {
          st.state = actor_state::failed;
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
                    if (auto err = loaded_with(self, std::move(loaded), *loader)) {
                      self->state.state = actor_state::failed;
                      rp.deliver(caf::make_error(caf::sec::runtime_error, *err));
                      return;
                    }
                    rp.deliver(caf::ok_atom::value);
                    return;
                  }
                  self->state.state = actor_state::failed;
                  rp.deliver(caf::make_error(caf::sec::runtime_error, loader->failure()));
                },
                [=](caf::error& e) mutable {
                  loader->try_prebuilt(std::string("the offset guesser did not answer: ") +
                                       self->system().render(e));
                  self->state.state = actor_state::failed;
                  rp.deliver(caf::make_error(caf::sec::runtime_error, loader->failure()));
                });
        return rp;
      },
      [=](closed_batch& batch) {
        add_closed(self, std::move(batch.records));
        if (batch.flushed)
          flushed_to(self, batch.flushed);
      },
      [=](flush_timeout_atom, uint64_t ticket) {
        auto& st = self->state;
        auto it = st.flush_waiters.find(ticket);
        if (it == st.flush_waiters.end())
          return; // flushed in time
        ++st.flush_errors;
        auto then = std::move(it->second);
        st.flush_waiters.erase(it);
        then();
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
        tick_result r = st.flows->tick(monotonic_now_ns());
        for (const std::string& why : r.reconcile_failures)
          spdlog::warn("tracer: cannot check {} against the kernel", why);
        if (r.reconciled)
          spdlog::warn("tracer: {} TCP connections had closed without their close being seen; "
                       "reported closed now",
                       r.reconciled);
        buffer_closed(self, r.ended); // admitted by the tick
      },
      [=](stop_atom) { return caf::ok_atom::value; },
      fault_handler(self),
      [=](purge_atom) {
        auto& st = self->state;
        st.unload();
        st.state = actor_state::purged;
        spdlog::info("tracer: BPF links detached, programs and maps released");
        return caf::ok_atom::value;
      },
      [=](stats_atom) {
        auto& st = self->state;
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
