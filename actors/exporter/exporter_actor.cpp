#include "actors/exporter/exporter_actor.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "flow/clock.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<exporter_self_actor, exporter_state>;
using steady = std::chrono::steady_clock;
using millis = std::chrono::milliseconds;

// How often the links are driven (TCP connects and partial writes, reconnect backoff): often
// enough that a collector coming back is reconnected soon, rarely enough to cost nothing.
constexpr auto k_link_tick = millis(100);
// Closed connections one answer of the tracer holds at most: after a mass close (65,536 at
// once), polls of this size one after the other keep the transient memory to a few MB.
constexpr uint32_t k_poll_max_closed = 4096;
// A poll that brought this many closed connections is followed by the next one a link tick later.
constexpr size_t k_busy_poll_closed = 256;
// While a link has datagrams waiting for their pace, it is driven this often: each tick sends
// what the pace allowed since the last one, a handful of datagrams, never a burst.
constexpr auto k_pace_tick = millis(5);
// Bytes one collector link may hold: a UDP link more than a second of a very busy host (38,000
// connection ends/s is ~5 MB of IPFIX a second) when the exporter's thread is starved, a TCP link
// what a collector that is briefly slow or away needs. Beyond it messages are dropped and counted.
constexpr size_t k_udp_queue_bytes = 8u << 20;
// The window a UDP link spreads a flush over.
constexpr auto k_pace_window = millis(800);
constexpr size_t k_tcp_queue_bytes = 8u << 20;
// Longest one poll of the tracer may take before it counts as failed.
constexpr auto k_poll_timeout = std::chrono::seconds(5);
// At shutdown: the last poll, and the time TCP collectors get to take what is queued.
constexpr auto k_final_poll_timeout = millis(1000);
constexpr auto k_close_deadline = millis(600);

poll_clock clock_now() {
  poll_clock c;
  c.mono_ns = monotonic_now_ns();
  c.unix_ms = realtime_now_ns() / 1000000;
  return c;
}

bool ipfix_on(const exporter_state& st) {
  return !st.links.empty();
}

millis poll_interval(const exporter_state& st) {
  return millis(ipfix_on(st) ? st.cfg.ipfix.flush_interval_ms : st.cfg.metrics.interval_ms);
}

// Templates go first on a new session (TCP), after an error (UDP: the collector may have
// restarted and lost them), and every template_refresh_s over UDP.
void send_templates_if_due(exporter_state& st, size_t i, steady::time_point now) {
  auto& link = *st.links[i];
  bool refresh =
      st.cfg.ipfix.transport == ipfix_transport::udp &&
      now - st.templates_sent_at[i] >= std::chrono::seconds(st.cfg.ipfix.template_refresh_s);
  if (!link.needs_templates() && !refresh)
    return;
  for (auto& m : st.encoder->template_messages())
    link.send(std::move(m), now);
  st.templates_sent_at[i] = now;
}

// One report into the encoder: it waits there, in messages being filled, until the flush at the
// end of this poll. A poll that brings more than max_queued_records is cut there, counted.
void encode_report(exporter_state& st, const flow_report& r) {
  if (!ipfix_on(st))
    return;
  if (st.queued >= st.cfg.max_queued_records) {
    ++st.queue_dropped;
    return;
  }
  uint32_t records = 0;
  if (auto status = encode_flow_report(*st.encoder, r, &records); status != ipfix_status::ok) {
    ++st.encode_errors;
    st.last_error = std::string("encoding a record: ") + to_string(status);
    return;
  }
  ++st.queued;
  ++st.reports_queued;
  st.records_encoded += records;
}

// Hands every message encoded since the last flush to every collector.
void flush(exporter_state& st) {
  st.queued = 0;
  if (!ipfix_on(st))
    return;
  st.messages_scratch.clear();
  st.encoder->flush(st.messages_scratch);
  st.messages_built += st.messages_scratch.size();
  auto now = steady::now();
  for (size_t i = 0; i < st.links.size(); ++i) {
    send_templates_if_due(st, i, now);
    // Each link stamps its own sequence numbers into its copy; the last one takes the originals.
    bool last = i + 1 == st.links.size();
    for (auto& m : st.messages_scratch) {
      if (last)
        st.links[i]->send(std::move(m), now);
      else
        st.links[i]->send(m, now);
    }
  }
  std::vector<ipfix_message>().swap(st.messages_scratch); // a burst's buffers are not kept
}

flow_ledger::sink ipfix_sink(exporter_state& st) {
  return [&st](const flow_report& r) { encode_report(st, r); };
}

// One page of a poll into the ledger; what it made due goes out at once.
void ingest_page(exporter_state& st, const connections_reply& page) {
  flow_ledger::sink to_metrics = [&st](const flow_report& r) {
    if (st.metrics)
      st.metrics->observe(r);
  };
  st.ledger->poll_page(page.connections, clock_now(), to_metrics, ipfix_sink(st));
  flush(st);
}

// One poll of the tracer, a paged answer (client "exporter"): each page goes into the ledger as
// it comes, so the exporter holds one page at a time, not every connection of the host. A page
// that does not come ends the poll as one that did not see everything closed.
void poll_tracer(self_ptr self, std::chrono::milliseconds timeout, std::function<void()> then) {
  auto& st = self->state;
  st.polling = true;
  ++st.polls;
  st.ledger->begin_poll();
  auto closed = std::make_shared<size_t>(0);
  auto next_page = std::make_shared<std::function<void(uint64_t)>>();
  *next_page = [self, timeout, then, closed, next_page](uint64_t listing) {
    self->request(self->state.tracer, timeout, conns_page_atom::value,
                  std::string(k_exporter_client), listing, k_poll_max_closed)
        .then(
            [=](const connections_reply& page) mutable {
              auto& s = self->state;
              ingest_page(s, page);
              for (const auto& v : page.connections)
                *closed += v.closed ? 1 : 0;
              if (!page.last) {
                (*next_page)(page.listing);
                return;
              }
              *next_page = nullptr; // the cycle through its own capture ends here
              s.ledger->end_poll(clock_now(), ipfix_sink(s), !page.more_closed);
              flush(s);
              s.polling = false;
              s.last_more_closed = page.more_closed;
              // A busy host closes thousands of connections a second: polling again soon keeps
              // each answer, and what the exporter holds at once, small.
              if (*closed >= k_busy_poll_closed)
                s.next_poll = std::min(s.next_poll, steady::now() + k_link_tick);
              if (page.more_closed) // the rest at the next tick
                s.next_poll = steady::now();
              then();
            },
            [=](caf::error& err) mutable {
              *next_page = nullptr;
              auto& s = self->state;
              s.ledger->end_poll(clock_now(), ipfix_sink(s), false);
              flush(s);
              s.polling = false;
              s.last_more_closed = false; // no answer: nothing to chain a poll on
              ++s.poll_errors;
              s.last_error = "polling the tracer: " + self->system().render(err);
              then();
            });
  };
  (*next_page)(0);
}

// A poll while running. An answer that left closed connections for the next one (the tracer
// hands at most k_poll_max_closed) is followed by that one at once, not a tick later: at 40,000
// connection ends a second a tick's wait lets the tracer's closed buffer grow by thousands.
void poll_while_running(self_ptr self) {
  poll_tracer(self, k_poll_timeout, [self] {
    auto& st = self->state;
    if (auto next = std::move(st.after_poll)) { // stop came while this poll was in flight
      st.after_poll = nullptr;
      next();
      return;
    }
    if (st.state == actor_state::running && st.last_more_closed) {
      st.next_poll = steady::now() + poll_interval(st);
      poll_while_running(self);
    }
  });
}

counter_list counters_of(const exporter_state& st) {
  counter_list out;
  out.emplace_back("polls", st.polls);
  out.emplace_back("poll_errors", st.poll_errors);
  out.emplace_back("reports_queued", st.reports_queued);
  out.emplace_back("queue_pending", st.queued);
  out.emplace_back("queue_capacity", st.cfg.max_queued_records);
  out.emplace_back("queue_dropped", st.queue_dropped);
  out.emplace_back("records_encoded", st.records_encoded);
  out.emplace_back("encode_errors", st.encode_errors);
  out.emplace_back("messages_built", st.messages_built);
  if (st.ledger) {
    auto l = st.ledger->stats();
    out.emplace_back("flows_open", l.open);
    out.emplace_back("flow_reports", l.reports);
    out.emplace_back("flow_ends", l.ends);
    out.emplace_back("flows_lost_close", l.lost_closes);
  }
  uint64_t up = 0;
  collector_link_stats sum = st.closed_links; // links a reload replaced count on
  sum.queued_bytes = 0;
  for (const auto& link : st.links) {
    auto s = link->stats();
    up += s.state == link_state::up ? 1 : 0;
    sum.messages_sent += s.messages_sent;
    sum.bytes_sent += s.bytes_sent;
    sum.records_sent += s.records_sent;
    sum.messages_dropped += s.messages_dropped;
    sum.records_dropped += s.records_dropped;
    sum.reconnects += s.reconnects;
    sum.queued_bytes += s.queued_bytes;
  }
  out.emplace_back("collectors_configured", st.links.size());
  out.emplace_back("collectors_up", up);
  out.emplace_back("messages_sent", sum.messages_sent);
  out.emplace_back("bytes_sent", sum.bytes_sent);
  out.emplace_back("records_sent", sum.records_sent);
  out.emplace_back("messages_dropped", sum.messages_dropped);
  out.emplace_back("records_dropped", sum.records_dropped);
  out.emplace_back("collector_reconnects", sum.reconnects);
  out.emplace_back("collector_queued_bytes", sum.queued_bytes);
  if (st.metrics) {
    auto m = st.metrics->stats();
    out.emplace_back("traffic_series", m.series);
    out.emplace_back("traffic_series_limit", m.series_limit);
    out.emplace_back("traffic_label_sets_folded", m.label_sets_folded);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> info_of(const exporter_state& st) {
  std::vector<std::pair<std::string, std::string>> out;
  out.emplace_back("ipfix", ipfix_on(st)
                                ? (st.cfg.ipfix.transport == ipfix_transport::tcp ? "tcp" : "udp")
                                : "off");
  out.emplace_back("traffic_metrics", st.metrics ? "on" : "off");
  for (size_t i = 0; i < st.links.size(); ++i) {
    auto s = st.links[i]->stats();
    std::string key = "collector_" + std::to_string(i);
    out.emplace_back(key, st.links[i]->describe());
    if (!s.last_error.empty())
      out.emplace_back(key + "_last_error", s.last_error);
  }
  return out;
}

void init_metrics(exporter_state& st) {
  st.metrics.reset();
  if (st.cfg.metrics.enabled)
    st.metrics =
        std::make_unique<traffic_metrics>(st.cfg.metrics.labels, st.cfg.metrics.max_series);
}

// The encoder and one link per collector, from st.cfg.ipfix (none when it names no collector).
std::string init_ipfix(exporter_state& st) {
  if (st.cfg.ipfix.collectors.empty())
    return {};
  ipfix_settings settings;
  settings.observation_domain_id = st.cfg.ipfix.observation_domain_id;
  settings.mtu = st.cfg.ipfix.mtu;
  settings.enterprise_number = st.cfg.ipfix.enterprise_number;
  st.encoder = std::make_unique<ipfix_encoder>(settings);
  if (auto status = add_netlens_templates(*st.encoder); status != ipfix_status::ok)
    return std::string("IPFIX templates: ") + to_string(status);
  for (const auto& address : st.cfg.ipfix.collectors) {
    collector_link_options opts;
    if (st.cfg.ipfix.transport == ipfix_transport::udp) {
      // What one flush sends leaves over the next k_pace_window, not in one burst. Longer would
      // hold more in memory for nothing: a busy host flushes every link tick anyway.
      opts.pace_window = std::min(
          k_pace_window, millis(std::max<uint32_t>(1, st.cfg.ipfix.flush_interval_ms * 4 / 5)));
      opts.queue_bound_bytes = k_udp_queue_bytes;
    } else {
      opts.queue_bound_bytes = k_tcp_queue_bytes;
    }
    auto link = make_collector_link(address, st.cfg.ipfix.transport == ipfix_transport::tcp, opts);
    if (auto* err = std::get_if<std::string>(&link))
      return "export.ipfix.collectors: " + address + ": " + *err;
    st.links.push_back(std::move(std::get<0>(link)));
    st.templates_sent_at.push_back(steady::time_point{});
  }
  return {};
}

std::string init_exporter(exporter_state& st) {
  st.ledger =
      std::make_unique<flow_ledger>(uint64_t{st.cfg.ipfix.active_timeout_s} * 1000000000ull);
  init_metrics(st);
  return init_ipfix(st);
}

void close_links(exporter_state& st) {
  auto deadline = steady::now() + k_close_deadline;
  for (auto& link : st.links) {
    if (st.cfg.ipfix.transport == ipfix_transport::tcp && link->stats().state == link_state::up)
      link->send(st.encoder->withdraw_all_message(), steady::now());
    link->close(deadline);
  }
}

// A configuration reload. What is encoded goes to the collectors it was made for, which then
// close (TCP ones get the templates withdrawn); the new collectors get new templates first.
// The ledger stays, so every connection's next report carries exactly what the last one did
// not. Traffic families start again only when their labels or budget changed.
void reload_exporter(exporter_state& st, const export_config& next) {
  if (ipfix_on(st)) {
    flush(st);
    close_links(st);
  }
  for (const auto& link : st.links) {
    auto s = link->stats();
    st.closed_links.messages_sent += s.messages_sent;
    st.closed_links.bytes_sent += s.bytes_sent;
    st.closed_links.records_sent += s.records_sent;
    st.closed_links.messages_dropped += s.messages_dropped;
    st.closed_links.records_dropped += s.records_dropped;
    st.closed_links.reconnects += s.reconnects;
  }
  st.links.clear();
  st.templates_sent_at.clear();
  st.encoder.reset();
  bool metrics_changed = !(st.cfg.metrics == next.metrics);
  st.cfg = next;
  st.ledger->set_active_timeout(uint64_t{next.ipfix.active_timeout_s} * 1000000000ull);
  if (metrics_changed)
    init_metrics(st);
  st.last_error.clear();
  if (auto err = init_ipfix(st); !err.empty()) {
    st.last_error = "reload: " + err;
    spdlog::error("exporter: reload: {}; no IPFIX until the next reload", err);
  }
  st.next_poll = std::min(st.next_poll, steady::now() + poll_interval(st));
  spdlog::info("exporter: reloaded; IPFIX to {} collector(s) over {}, traffic metrics {}",
               st.links.size(), st.cfg.ipfix.transport == ipfix_transport::tcp ? "tcp" : "udp",
               st.metrics ? "on" : "off");
}

} // namespace

bool exporter_wanted(const export_config& cfg) {
  return cfg.metrics.enabled || !cfg.ipfix.collectors.empty();
}

exporter_self_actor::behavior_type
exporter_fn(counted_self<exporter_self_actor, exporter_state> self, export_config cfg,
            tracer_actor tracer) {
  self->state.cfg = std::move(cfg);
  self->state.tracer = std::move(tracer);
  auto sys = &self->system();
  auto me = self->address();
  self->attach_functor(
      [sys, me](const caf::error&) { unpublish_if(*sys, k_exporter_registry_name, me); });
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.state != actor_state::starting)
          return caf::ok_atom::value;
        if (auto err = init_exporter(st); !err.empty()) {
          st.state = actor_state::failed;
          return caf::make_error(caf::sec::runtime_error, err);
        }
        st.state = actor_state::running;
        st.next_poll = steady::now() + poll_interval(st);
        publish_as(self, k_exporter_registry_name);
        self->send(self, export_tick_atom::value);
        spdlog::info("exporter: IPFIX to {} collector(s) over {}, traffic metrics {}",
                     st.links.size(),
                     st.cfg.ipfix.transport == ipfix_transport::tcp ? "tcp" : "udp",
                     st.metrics ? "on" : "off");
        return caf::ok_atom::value;
      },
      [=](export_tick_atom) {
        auto& st = self->state;
        if (st.state != actor_state::running)
          return;
        auto now = steady::now();
        for (size_t i = 0; i < st.links.size(); ++i) {
          st.links[i]->poll(now);
          send_templates_if_due(st, i, now);
        }
        if (!st.polling && now >= st.next_poll) {
          st.next_poll = now + poll_interval(st);
          poll_while_running(self);
        }
        bool backlog = false;
        for (const auto& link : st.links)
          backlog = backlog || link->backlog();
        self->delayed_send(self, backlog ? k_pace_tick : k_link_tick, export_tick_atom::value);
      },
      [=](reload_atom, const export_config& next) {
        auto& st = self->state;
        if (st.state == actor_state::running)
          reload_exporter(st, next);
      },
      [=](traffic_atom) -> std::string {
        auto& st = self->state;
        std::string out;
        if (st.metrics)
          st.metrics->render(out);
        return out;
      },
      // Stop: the connections closed so far (the consumer hands them to the tracer before it
      // answers our poll), then forced ends for those still open, sent before the links close.
      [=](stop_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.state != actor_state::running)
          return caf::ok_atom::value;
        st.state = actor_state::stopping;
        auto rp = self->make_response_promise<caf::ok_atom>();
        auto finish = [=]() mutable {
          auto& s = self->state;
          s.ledger->force_end(clock_now(), [&s](const flow_report& r) { encode_report(s, r); });
          if (ipfix_on(s)) {
            flush(s);
            close_links(s);
          }
          s.state = actor_state::stopped;
          spdlog::info("exporter: stopped; {} records encoded, {} dropped from the queue",
                       s.records_encoded, s.queue_dropped);
          rp.deliver(caf::ok_atom::value);
        };
        // The last polls: until the tracer has handed over everything closed (it hands at most
        // k_poll_max_closed per answer), within the stop deadline's share of the exporter.
        auto last_polls = std::make_shared<std::function<void()>>();
        auto until = steady::now() + k_final_poll_timeout;
        *last_polls = [=]() mutable {
          poll_tracer(self, k_final_poll_timeout, [=]() mutable {
            if (self->state.last_more_closed && steady::now() < until)
              (*last_polls)();
            else {
              *last_polls = nullptr; // the cycle through its own capture ends here
              finish();
            }
          });
        };
        // One poll at a time, so replies are taken in the order the tracer made them: a poll
        // in flight runs the last ones when it is done.
        if (st.polling) {
          st.after_poll = [=]() mutable { (*last_polls)(); };
          return rp;
        }
        (*last_polls)();
        return rp;
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        actor_stats s = make_actor_stats("exporter", st.state, st.handled, counters_of(st));
        s.info = info_of(st);
        s.last_error = st.last_error;
        s.mailbox_size = mailbox_size(self);
        return s;
      },
  };
}

} // namespace netlens
